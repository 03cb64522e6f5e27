"""The local backend: runs on this machine with the local runner, in detached processes.

Each action is ``geomlops run`` (start, ``--resume --approve``, or ``--resume --interactive``
answering "no" to refuse) in a process of its own session, so a run outlives the gateway that
started it and runs exactly as the command line runs it; the gateway knows a run
by reading the state file the runner keeps (``<runs_dir>/<run_id>/state.json``), and whether a
runner still holds it by its lock file, which the kernel releases when the process dies. A
restarted gateway therefore finds every run as it is. What the launcher printed goes to
``$GEOMLOPS_HOME/gateway/runs/<run_id>.log``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from geomlops.argo.runner.model import RunState
from geomlops.argo.runner.state_file import STATE_FILE, load_state
from geomlops.errors import ParameterError, RunError
from geomlops.gateway.backends._local_state import run_info
from geomlops.gateway.backends.base import (
    BackendUnavailableError,
    GateNotWaitingError,
    Phase,
    RunInfo,
    RunNotFoundError,
    RunStateError,
)
from geomlops.settings import Settings

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
_LAUNCH_WAIT_S = 120.0
#: how long ``geomlops run`` may take to check a request and create its run
_START_WAIT_S = 180.0


class LocalBackend:
    """Runs pipelines with the local runner in detached processes.

    Args:
        settings: the core settings (work folder and runs folder).
    """

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runs_dir = settings.runs_dir
        self.launch_dir = settings.home_dir / "gateway" / "runs"
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._children_lock = threading.Lock()
        self._decide_lock = threading.Lock()

    # --- RunBackend -------------------------------------------------------------------

    def submit(self, pipeline: str, parameters: Mapping[str, str], *, submitted_by: str) -> RunInfo:
        """Start ``geomlops run PIPELINE -p …`` detached and answer once its run exists.

        The run id is the one the runner gives it, found by the runner's pid in the new run's
        state file.

        Raises:
            ParameterError: ``geomlops run`` refused the request before starting it (exit 2,
                the message is its own).
            BackendUnavailableError: it ended otherwise, or did not start the run in time.
        """
        launch_id = f"launch-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        args = ["run", pipeline, "--no-interactive"]
        for name, value in parameters.items():
            args += ["-p", f"{name}={value}"]
        began = time.time()
        proc = self._launch(launch_id, args)
        found: list[str] = []

        def started() -> bool:
            found[:] = self._runs_of(proc.pid, began)
            return bool(found) or proc.poll() is not None

        self._wait(started, _START_WAIT_S)
        found = found or self._runs_of(proc.pid, began)
        log = self.launch_dir / f"{launch_id}.log"
        if not found:
            tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:])
            for leftover in (log, self.launch_dir / f"{launch_id}.pid"):  # nothing of it stays
                leftover.unlink(missing_ok=True)
            if proc.poll() == 2:
                raise ParameterError(
                    tail.removeprefix("Error: ").strip() or "geomlops run refused the request"
                )
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            raise BackendUnavailableError(f"geomlops run did not start the {pipeline} run: {tail}")
        run_id = found[0]
        log.rename(self.launch_dir / f"{run_id}.log")  # the process writes on into the same file
        (self.launch_dir / f"{launch_id}.pid").rename(self.launch_dir / f"{run_id}.pid")
        with self._children_lock:
            self._children[run_id] = self._children.pop(launch_id)
        launch = {"pipeline": pipeline, "submitted_by": submitted_by, "parameters": dict(parameters)}
        self._launch_file(run_id).write_text(json.dumps(launch, indent=2) + "\n", encoding="utf-8")
        return self.get(run_id)

    def _runs_of(self, pid: int, since: float) -> list[str]:
        """Runs whose state file names ``pid`` as their runner, made after ``since``."""
        if not self.runs_dir.is_dir():
            return []
        found = []
        for run_dir in self.runs_dir.iterdir():
            state = run_dir / STATE_FILE
            try:
                if run_dir.stat().st_mtime < since - 1 or not state.is_file():
                    continue
                if json.loads(state.read_text(encoding="utf-8")).get("pid") == pid:
                    found.append(run_dir.name)
            except (OSError, ValueError):
                continue  # a state being written: read again on the next look
        return found

    def get(self, run_id: str) -> RunInfo:
        """Return the run as its state file (and its runner's lock) say."""
        state = self._state(run_id)
        if state is None:
            return self._unstarted(run_id)
        return run_info(state, self._run_dir(run_id), self._launched(run_id), locked=self._locked(run_id))

    def list(self) -> list[RunInfo]:
        """Every run in the runs folder and every launch still without state, newest first."""
        runs: list[RunInfo] = []
        seen: set[str] = set()
        if self.runs_dir.is_dir():
            for run_dir in self.runs_dir.iterdir():
                if not (run_dir / STATE_FILE).is_file():
                    continue
                try:
                    state = load_state(run_dir)
                except RunError:
                    continue
                seen.add(run_dir.name)
                launched = self._launched(run_dir.name)
                locked = self._locked(run_dir.name)
                runs.append(run_info(state, run_dir, launched, locked=locked, with_tasks=False))
        if self.launch_dir.is_dir():
            for log in self.launch_dir.glob("*.log"):
                if log.stem not in seen and not log.stem.startswith("launch-"):
                    runs.append(self._unstarted(log.stem))
        return sorted(runs, key=lambda r: r.started or "", reverse=True)

    def logs(self, run_id: str, task: str | None = None) -> str:
        """The launcher's log (the runner's progress lines), or every attempt's log of ``task``."""
        if task is None:
            self._require(run_id)
            path = self.launch_dir / f"{run_id}.log"
            return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        state = self._state(run_id)
        node = state.nodes.get(task) if state is not None else None
        if node is None:
            raise RunNotFoundError(f"task {task!r}: run {run_id} has no such task")
        run_dir = self._run_dir(run_id)
        parts = []
        for attempt in node.attempts or []:
            if attempt.log and (run_dir / attempt.log).is_file():
                text = (run_dir / attempt.log).read_text(encoding="utf-8", errors="replace")
                parts.append(f"--- attempt {attempt.number} ({attempt.log}) ---\n{text}")
        if not parts and node.log and (run_dir / node.log).is_file():
            parts.append((run_dir / node.log).read_text(encoding="utf-8", errors="replace"))
        return "\n".join(parts)

    def stop(self, run_id: str) -> RunInfo:
        """Interrupt the runner (SIGINT to its process group): it stops its tasks, records the
        run as interrupted and exits; after two minutes it is killed."""
        info = self.get(run_id)
        if info.phase is Phase.SUSPENDED:
            raise RunStateError(f"run {run_id} is waiting at gate {info.waiting_gate}: refuse it instead")
        state = self._state(run_id)
        pid = state.pid if state is not None and self._locked(run_id) else self._child_pid(run_id)
        if not pid:
            raise RunStateError(f"run {run_id} is not running (phase {info.phase.value})")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(pid), signal.SIGINT)
        if not self._wait(lambda: not self._alive(run_id, pid)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            self._wait(lambda: not self._alive(run_id, pid), 5.0)
        return self.get(run_id)

    def approve(
        self,
        run_id: str,
        *,
        approver: str,
        reason: str,
        override: bool = False,
        outputs: Mapping[str, str] | None = None,
    ) -> RunInfo:
        """Resume the run with an approval, as ``geomlops run --resume ID --approve`` does; the
        supplied ``outputs`` are checked against the waiting gate before anything starts."""
        from geomlops.argo.runner import Approval

        self._check_outputs(run_id, Approval(approver, reason, override, dict(outputs or {})))
        args = ["run", "--resume", run_id, "--approve", approver, "--reason", reason, "--no-interactive"]
        args += ["--override"] if override else []
        for name, value in (outputs or {}).items():
            args += ["-o", f"{name}={value}"]
        return self._decide(run_id, args)

    def _check_outputs(self, run_id: str, approval: Any) -> None:
        """Refuse output names the waiting gate does not supply, or values outside its enum.

        Raises:
            ParameterError: naming the output (field ``outputs``).
        """
        from geomlops.argo.runner.manifest import load_workflow
        from geomlops.argo.runner.suspend import check_supplied, gates_of
        from pipelines import template_resolver

        state = self._state(run_id)
        waiting = {
            n.template
            for n in (state.nodes.values() if state is not None else ())
            if n.status == "Suspended" and n.type == "Suspend"
        }
        if not waiting:
            return  # nothing to check: the decision is refused as the run waits at no gate
        run_dir = self._run_dir(run_id)
        manifest = yaml.safe_load((run_dir / "manifest.yaml").read_text(encoding="utf-8"))
        refs_file = run_dir / "refs.yaml"
        refs = yaml.safe_load(refs_file.read_text(encoding="utf-8")) if refs_file.is_file() else {}
        # only its gates are read here (nothing runs): a container template the run has is no fault
        workflow = load_workflow(manifest, resolver=template_resolver, refs=refs, allow_host_containers=True)
        try:
            check_supplied(gates_of(workflow, waiting), approval)
        except ParameterError as err:
            raise ParameterError(f"outputs: {err}") from err

    def refuse(self, run_id: str, *, approver: str, reason: str) -> RunInfo:
        """Resume the run answering 'no' at its gate's prompt: the gate fails and the run ends.
        Who refused and why are kept with the launch and reported with the run."""
        refusal = {"refusal": {"approver": approver, "reason": reason}}
        answer = f"no\n{approver}\n{' '.join(reason.split())}\n"  # then who and why, one line each
        return self._decide(run_id, ["run", "--resume", run_id, "--interactive"], answer=answer, note=refusal)

    # --- internals --------------------------------------------------------------------

    def _decide(
        self,
        run_id: str,
        args: Sequence[str],
        answer: str | None = None,
        note: Mapping[str, Any] | None = None,
    ) -> RunInfo:
        """Resume a run waiting at a gate with ``geomlops ARGS``; ``note`` is added to what the
        run was launched with (reported with it) once the gate is known to wait."""
        with self._decide_lock:
            info = self.get(run_id)
            if info.phase is not Phase.SUSPENDED or info.waiting_gate is None:
                raise GateNotWaitingError(
                    f"run {run_id} has no gate waiting for a decision (phase {info.phase.value})"
                )
            if note:
                self.launch_dir.mkdir(parents=True, exist_ok=True)
                launched = {**self._launched(run_id), **note}
                self._launch_file(run_id).write_text(json.dumps(launched, indent=2) + "\n", encoding="utf-8")
            before = self._state_mtime(run_id)
            proc = self._launch(run_id, args, answer)
            # answer once the runner holds the run (or has already finished it)
            self._wait(lambda: self._state_mtime(run_id) != before or proc.poll() is not None)
        return self.get(run_id)

    def _launch(self, key: str, args: Sequence[str], answer: str | None = None) -> subprocess.Popen[bytes]:
        """Start ``geomlops ARGS`` in a session of its own (it outlives the gateway), its output
        appended to ``<launch_dir>/<key>.log``; ``answer`` is what it reads at a prompt."""
        env = {**os.environ, "GEOMLOPS_HOME": str(self.settings.home_dir), "PYTHONUNBUFFERED": "1"}
        self.launch_dir.mkdir(parents=True, exist_ok=True)
        stdin: Any = subprocess.DEVNULL
        if answer is not None:
            answers = self.launch_dir / f"{key}.answer"
            answers.write_text(answer, encoding="utf-8")
            stdin = answers.open("rb")
        try:
            with (self.launch_dir / f"{key}.log").open("ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "geomlops.cli.main", *args],
                    stdin=stdin,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.settings.home_dir,
                    env=env,
                    start_new_session=True,  # its own session: the run outlives the gateway
                )
        finally:
            if answer is not None:
                stdin.close()
        (self.launch_dir / f"{key}.pid").write_text(str(proc.pid), encoding="utf-8")
        with self._children_lock:
            self._children[key] = proc
        return proc

    def _child_pid(self, run_id: str) -> int:
        """The pid of the run's launcher while it lives (found after a restart by its pid file)."""
        with self._children_lock:  # reap the gateway's own children, so none lingers as a zombie
            for key, proc in list(self._children.items()):
                if proc.poll() is not None:
                    del self._children[key]
        pid_file = self.launch_dir / f"{run_id}.pid"
        if not pid_file.is_file():
            return 0
        pid = int(pid_file.read_text(encoding="utf-8").strip() or 0)
        return pid if pid and _process_exists(pid) else 0

    def _alive(self, run_id: str, pid: int) -> bool:
        return bool(self._child_pid(run_id)) or self._locked(run_id) or _process_exists(pid)

    def _launch_file(self, run_id: str) -> Path:
        return self.launch_dir / f"{run_id}.launch.json"

    def _launched(self, run_id: str) -> dict[str, Any]:
        """What the gateway launched the run with (pipeline, submitted_by, parameters); empty
        for a run started elsewhere (``geomlops run``)."""
        path = self._launch_file(run_id)
        if not path.is_file():
            return {}
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data

    def _wait(self, done: Any, timeout: float = _LAUNCH_WAIT_S) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return True
            time.sleep(0.1)
        return bool(done())

    def _run_dir(self, run_id: str) -> Path:
        if not _RUN_ID.fullmatch(run_id):
            raise RunNotFoundError(f"run_id {run_id!r}: no such run (letters, digits, '.', '_', '-')")
        return self.runs_dir / run_id

    def _require(self, run_id: str) -> None:
        if (
            not (self._run_dir(run_id) / STATE_FILE).is_file()
            and not (self.launch_dir / f"{run_id}.log").is_file()
        ):
            raise RunNotFoundError(f"run_id {run_id!r}: no such run")

    def _state(self, run_id: str) -> RunState | None:
        self._require(run_id)
        run_dir = self._run_dir(run_id)
        if not (run_dir / STATE_FILE).is_file():
            return None
        try:
            return load_state(run_dir)
        except RunError as err:
            raise RunStateError(str(err)) from err

    def _state_mtime(self, run_id: str) -> float:
        path = self._run_dir(run_id) / STATE_FILE
        return path.stat().st_mtime if path.is_file() else 0.0

    def _locked(self, run_id: str) -> bool:
        """Whether a runner process holds the run (the runner's ``.lock``, a kernel lock)."""
        lock = self._run_dir(run_id) / ".lock"
        if not lock.is_file():
            return False
        with lock.open("rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def _unstarted(self, run_id: str) -> RunInfo:
        """A launched run without state yet: pending while its launcher lives, else an error
        with the end of the launcher's log (a parameter the runner refused, ...)."""
        self._require(run_id)
        launched = self._launched(run_id)
        known = {
            "run_id": run_id,
            "pipeline": str(launched.get("pipeline", "")),
            "submitted_by": str(launched.get("submitted_by", "")),
            "parameters": dict(launched.get("parameters") or {}),
        }
        if self._child_pid(run_id):
            return RunInfo(**known, phase=Phase.PENDING)
        log = (self.launch_dir / f"{run_id}.log").read_text(encoding="utf-8", errors="replace")
        message = "\n".join(log.strip().splitlines()[-5:]) or "the run's launcher ended without starting it"
        return RunInfo(**known, phase=Phase.ERROR, message=message)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
