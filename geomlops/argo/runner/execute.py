"""Running one script or container template as a host process, the way Argo runs a pod.

For a ``script`` template Argo writes ``source`` to a file and runs
``command + args + [that file]``; a ``container`` template runs ``command + args``. A
leading ``python``/``python3`` becomes this interpreter. Each attempt runs in its own
folder and filesystem view (:mod:`.sandbox`), in a session of its own so that stopping it
stops its children too.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .model import ERROR, FAILED, SUCCEEDED
from .sandbox import Sandbox
from .substitute import to_argo_string

RESULT_LIMIT = 256 * 1024  # Argo keeps the last 256 kB of stdout as outputs.result
#: Argo's message for a pod killed at its deadline (the executor's deadline monitor)
DEADLINE_MESSAGE = "Step exceeded its deadline"
_PYTHON = re.compile(r"python(3(\.\d+)?)?")


@dataclass
class ProcessRegistry:
    """The processes running now, so an interrupted run can stop them all."""

    _procs: set[subprocess.Popen[bytes]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, proc: subprocess.Popen[bytes]) -> None:
        """Track a started process."""
        with self._lock:
            self._procs.add(proc)

    def discard(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop tracking a finished process."""
        with self._lock:
            self._procs.discard(proc)

    def kill_all(self) -> None:
        """Kill every tracked process group."""
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            _kill_group(proc, signal.SIGKILL)

    def groups(self) -> list[int]:
        """Return the process group ids of the processes running now."""
        with self._lock:
            return [proc.pid for proc in self._procs]


def terminate_groups(groups: Sequence[int], grace: float) -> list[int]:
    """Stop process groups as a pod is stopped: SIGTERM, ``grace`` seconds, then SIGKILL.

    Every task runs in its own session (its process group id is its pid), so the signal
    reaches its children too, unless one left the group. Returns the groups that still had
    a live process at the end of the grace period (and were sent SIGKILL).
    """
    for group in groups:
        signal_group(group, signal.SIGTERM)
    end = time.monotonic() + grace
    alive = list(groups)
    while alive and time.monotonic() < end:
        time.sleep(0.05)
        alive = [g for g in alive if group_alive(g)]
    for group in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    return alive


def signal_group(group: int, sig: signal.Signals) -> None:
    """Send ``sig`` to process group ``group``; SIGTERM skips bubblewrap's own processes.

    bubblewrap does not pass a SIGTERM on: it would die and take the task with it at once
    (``--die-with-parent``), so the task would get no grace period. The task's processes get
    the SIGTERM themselves; once they exit, bubblewrap exits too. SIGKILL goes to the group.
    """
    members = _members(group) if sig == signal.SIGTERM else None
    if members is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
        return
    for pid, command in members:
        if command != "bwrap":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def _members(group: int) -> list[tuple[int, str]] | None:
    """The live processes of ``group`` with their command names; None without ``/proc``."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        command = text[text.find("(") + 1 : text.rfind(")")]
        fields = text.rpartition(")")[2].split()
        if len(fields) > 2 and fields[2] == str(group) and fields[0] != "Z":
            found.append((int(entry.name), command))
    return found


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def group_alive(group: int) -> bool:
    """Whether a process of group ``group`` still runs (zombies count as dead)."""
    members = _members(group)
    if members is not None:
        return bool(members)
    try:  # not Linux: ask the kernel, zombies included
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot), or None if it is not running.

    Stored next to a pid, it tells a live process from a later one that reused the pid.
    """
    fields = _proc_stat(pid)
    if not fields or len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 of stat; fields here start at field 3


@dataclass
class PodResult:
    """What one attempt produced."""

    phase: str
    exit_code: int | None = None
    result: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    message: str = ""


def build_env(
    template_env: Sequence[Mapping[str, Any]],
    extra: Mapping[str, str],
    sandbox: Sandbox,
) -> tuple[dict[str, str], list[str]]:
    """Return the process environment and the secret values it holds.

    ``os.environ`` + ``extra`` + the template's ``env``: plain values (sandboxed paths
    remapped); ``secretKeyRef``/``configMapKeyRef`` entries come from the variable of the
    same name in ``extra`` or ``os.environ`` when present and stay unset otherwise.
    """
    env = {**os.environ, **extra}
    env.setdefault("PYTHONUNBUFFERED", "1")
    secrets: list[str] = []
    for entry in template_env:
        name = str(entry["name"])
        value_from = entry.get("valueFrom")
        if isinstance(value_from, Mapping):
            value = extra.get(name, os.environ.get(name))
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
                if "secretKeyRef" in value_from and len(value) >= 4:
                    secrets.append(value)
            continue
        env[name] = sandbox.remap(to_argo_string(entry.get("value", "")))
    return env, secrets


def command_for(template: Mapping[str, Any], work_dir: Path, *, swap_python: bool = True) -> list[str]:
    """Return the argv of a script or container template (writing a script's source file).

    With ``swap_python``, a command that is a ``python`` runs with this interpreter (geomlops'
    image stands for this environment); without, the ``python`` on the process's ``PATH``.
    """
    if "script" in template:
        spec = template["script"]
        script_file = work_dir / "script"
        script_file.write_text(str(spec.get("source", "")), encoding="utf-8")
        script_file.chmod(0o755)
        argv = [*map(str, spec.get("command") or []), *map(str, spec.get("args") or [])]
        argv.append(str(script_file))
    else:
        spec = template["container"]
        argv = [*map(str, spec.get("command") or []), *map(str, spec.get("args") or [])]
    if swap_python and argv and _PYTHON.fullmatch(Path(argv[0]).name):
        argv[0] = sys.executable
    return argv


def _kill_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    signal_group(proc.pid, sig)


def _cannot_start(program: str, env: Mapping[str, str], work_dir: Path) -> str:
    """Why ``program`` cannot be executed ("" if it can), as ``execvp`` would say."""
    if "/" in program:
        path = work_dir / program
        if not path.exists():
            return "No such file or directory"
        return "" if os.access(path, os.X_OK) and path.is_file() else "Permission denied"
    return "" if shutil.which(program, path=env.get("PATH", os.defpath)) else "No such file or directory"


class _LogSink:
    """Writes a process's stdout and stderr to one log, hiding secret values."""

    def __init__(self, handle: IO[str], secrets: Sequence[str]) -> None:
        self.handle = handle
        self.secrets = sorted(secrets, key=len, reverse=True)
        self.lock = threading.Lock()
        self.stdout = bytearray()

    def pump(self, stream: IO[bytes], keep: bool) -> None:
        for raw in iter(stream.readline, b""):
            if keep:
                self.stdout.extend(raw)
                if len(self.stdout) > 2 * RESULT_LIMIT:
                    del self.stdout[: len(self.stdout) - RESULT_LIMIT - 1]
            line = raw.decode("utf-8", errors="replace")
            for secret in self.secrets:
                line = line.replace(secret, "***")
            with self.lock:
                self.handle.write(line)
                self.handle.flush()


def run_process(
    argv: list[str],
    *,
    work_dir: Path,
    env: Mapping[str, str],
    log_path: Path,
    secrets: Sequence[str],
    timeout: float | None,
    registry: ProcessRegistry,
    sandbox: Sandbox | None = None,
    working_dir: str = "",
) -> PodResult:
    """Run ``argv`` in ``work_dir`` (inside ``sandbox``), logging to ``log_path``; stdout is the result.

    ``working_dir`` is the container's ``workingDir`` (an absolute path of the task's
    filesystem, created if missing as the container runtime does); empty: ``work_dir``.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cwd = work_dir
    if working_dir:
        if not working_dir.startswith("/"):
            return PodResult(ERROR, message=f"workingDir {working_dir!r} is not an absolute path")
        cwd = sandbox.host_path(working_dir) if sandbox is not None else Path(working_dir)
        if sandbox is not None and sandbox.isolated and cwd == Path(working_dir) and not cwd.is_dir():
            # the host is read-only to the task: only its private folders can be made
            return PodResult(ERROR, message=f"workingDir {working_dir!r} does not exist (make it under /tmp)")
        try:
            cwd.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            why = err.strerror or err
            return PodResult(ERROR, message=f"cannot create workingDir {working_dir!r}: {why}")
    with log_path.open("a", encoding="utf-8") as handle:
        if sandbox is not None and sandbox.isolated and (why := _cannot_start(argv[0], env, cwd)):
            # bubblewrap would start, then fail to run it: say so as if the program itself failed to start
            handle.write(f"cannot start {argv[0]!r}: {why}\n")
            return PodResult(ERROR, message=f"cannot start {argv[0]!r}: {why}")
        try:
            proc = subprocess.Popen(
                sandbox.command(argv, working_dir) if sandbox is not None else argv,
                cwd=cwd if sandbox is None or not sandbox.isolated else work_dir,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as err:
            handle.write(f"cannot start {argv[0]!r}: {err}\n")
            # Argo: a pod whose main container cannot start is an Error, not a Failure
            return PodResult(ERROR, message=f"cannot start {argv[0]!r}: {err.strerror or err}")
        registry.add(proc)
        sink = _LogSink(handle, secrets)
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            threading.Thread(target=sink.pump, args=(proc.stdout, True), daemon=True),
            threading.Thread(target=sink.pump, args=(proc.stderr, False), daemon=True),
        ]
        for reader in readers:
            reader.start()
        timed_out = False
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc, signal.SIGTERM)
            try:
                code = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _kill_group(proc, signal.SIGKILL)
                code = proc.wait()
        finally:
            registry.discard(proc)
        for reader in readers:
            reader.join(timeout=5)
    out = bytes(sink.stdout).decode("utf-8", errors="replace")
    out = out[:-1] if out.endswith("\n") else out
    result = out[-RESULT_LIMIT:]
    if timed_out:
        return PodResult(FAILED, code, result, message=DEADLINE_MESSAGE)
    if code != 0:
        return PodResult(FAILED, code, result, message=f"exit code {code}")
    return PodResult(SUCCEEDED, code, result)


def read_outputs(template: Mapping[str, Any], sandbox: Sandbox) -> tuple[dict[str, str], str]:
    """Read a finished pod's output parameters; returns (values, error message or "")."""
    values: dict[str, str] = {}
    for param in (template.get("outputs") or {}).get("parameters") or []:
        name = str(param["name"])
        value_from = param.get("valueFrom") or {}
        if "value" in param:
            values[name] = to_argo_string(param["value"])
            continue
        path = value_from.get("path")
        if not path:
            continue
        where = sandbox.host_path(str(path))
        try:
            values[name] = where.read_text(encoding="utf-8").removesuffix("\n")
        except OSError:
            if "default" in value_from:
                values[name] = to_argo_string(value_from["default"])
            else:
                return values, f"output parameter {name!r}: file {path} was not written (looked in {where})"
    return values, ""
