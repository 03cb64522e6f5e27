"""Background processes tracked by PID files: start, identify, wait for, stop.

A PID file holds the PID on its first line and the process's start stamp on the second, so a
PID that the system has since given to another process is never mistaken for ours (and never
signalled). Each process leads its own process group, so stopping it stops its children too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Tracked:
    """A background process: its PID and when it started (as the system reports it)."""

    name: str
    pid: int
    stamp: str


def start_stamp(pid: int) -> str | None:
    """Return when process ``pid`` started, or None when it is gone (or a zombie)."""
    if Path("/proc/self/stat").exists():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return None if fields[0] in ("Z", "X") else fields[19]
    out = subprocess.run(["ps", "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True, text=True)
    text = out.stdout.strip()
    return None if out.returncode or not text or text.startswith("Z") else text.split(None, 1)[-1]


def pid_file(folder: Path, name: str) -> Path:
    """Where the PID of service ``name`` is kept."""
    return folder / f"{name}.pid"


def log_file(folder: Path, name: str) -> Path:
    """Where service ``name`` writes its output."""
    return folder / f"{name}.log"


def read_tracked(folder: Path, name: str) -> Tracked | None:
    """Return the process recorded for ``name`` if it is still that same process, else None."""
    try:
        lines = pid_file(folder, name).read_text().split()
        pid, stamp = int(lines[0]), lines[1]
    except (OSError, ValueError, IndexError):
        return None
    return Tracked(name, pid, stamp) if start_stamp(pid) == stamp else None


def spawn(folder: Path, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Tracked:
    """Start ``argv`` in the background, in its own session, logging to ``<name>.log``.

    Raises:
        OSError: the program cannot be started.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with log_file(folder, name).open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            cwd=folder,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stamp = start_stamp(proc.pid) or ""
    pid_file(folder, name).write_text(f"{proc.pid}\n{stamp}\n")
    return Tracked(name, proc.pid, stamp)


def is_running(tracked: Tracked) -> bool:
    """Whether the tracked process is still alive (reaping it if it was our child and died)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(tracked.pid, os.WNOHANG)
    return start_stamp(tracked.pid) == tracked.stamp


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(folder: Path, tracked: Tracked, timeout: float = 15.0) -> None:
    """Stop a tracked process and its process group: SIGTERM, then SIGKILL after ``timeout``.

    Only a process whose PID and start stamp still match is signalled; the PID file goes.
    """
    if is_running(tracked):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(tracked.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (is_running(tracked) or _group_alive(tracked.pid)):
            time.sleep(0.1)
        if is_running(tracked) or _group_alive(tracked.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(tracked.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and is_running(tracked):
                time.sleep(0.1)
    pid_file(folder, tracked.name).unlink(missing_ok=True)


def wait_until(ready: Callable[[], bool], tracked: Tracked, timeout: float) -> str:
    """Poll ``ready`` until it holds; return "" then, else why not ("exited", "timed out")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return ""
        if not is_running(tracked):
            return "exited"
        time.sleep(0.25)
    return "timed out"


def log_tail(folder: Path, name: str, lines: int = 15) -> str:
    """The last lines of a service's log."""
    try:
        text = log_file(folder, name).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def port_in_use(host: str, port: int) -> bool:
    """Whether something accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def python() -> str:
    """The interpreter geomlops runs in: services start from the same environment."""
    return sys.executable
