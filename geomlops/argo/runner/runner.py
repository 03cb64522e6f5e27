"""``LocalRunner``: run a rendered Argo manifest on this machine, keep its state, resume it.

Each run lives in ``<runs_dir>/<run_id>/``: ``manifest.yaml`` (exactly what ran),
``refs.yaml`` (WorkflowTemplates reached through ``templateRef``), ``params.json``,
``state.json`` (rewritten atomically after every node transition), ``logs/<node>.log`` (one
file per attempt: ``<node>.log``, ``<node>.2.log``...), ``work/<node>/attempt-N/`` where each
attempt ran (its working folder, with ``tmp/`` and ``var-tmp/``: its private ``/tmp`` and
``/var/tmp``, see :mod:`.sandbox`) and ``artifacts/`` (the local artifact repository, see
:mod:`.artifacts`).

SIGINT and SIGTERM stop a run: every task's process group is stopped, the run is recorded
``Interrupted`` (:class:`RunInterrupted` says how to resume it). A run recorded ``Running``
whose runner process is gone (its pid dead, or reused by a process started later) is shown
``Interrupted``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from geomlops.errors import RunError

from .artifacts import Repository
from .context import EngineOptions, ImageEnvironment
from .engine import Engine
from .execute import process_start, terminate_groups
from .features import ignored_fields
from .manifest import load_workflow, resolve_parameters
from .model import (
    ERROR,
    FAILED,
    FAILED_PHASES,
    INTERRUPTED,
    RUNNING,
    SUCCEEDED,
    SUSPENDED,
    Approval,
    NodeState,
    RunState,
    RunSummary,
    now_iso,
)
from .progress import Reporter
from .sandbox import (
    UNISOLATED_NOTE,
    absent_paths,
    bwrap_path,
    parameter_paths,
    remove_if_empty,
    sandbox_wanted,
)
from .state_file import StateStore, load_state
from .suspend import check_supplied, gates_of, refused_at
from .synchronization import check_synchronization
from .workflow import Workflow

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
_LOG_TAIL = 20
_NO_TASK_FAILED = "workflow failed"
#: said of each absolute path parameter that did not exist, was made a folder and stayed empty
MADE_FOLDER_NOTE = "it was made as an empty folder for the run's outputs and removed again"
_SCHEDULED_TIME = "workflows.argoproj.io/scheduled-time"
#: seconds a task may take to exit after SIGTERM before SIGKILL (Argo's pods get 30 by default)
GRACE_SECONDS = 10.0
_DEAD_RUNNER = "interrupted: its runner process is gone"


class RunInterrupted(RunError):
    """A run stopped by SIGINT or SIGTERM: its tasks are stopped, its state says Interrupted.

    Attributes:
        run_id: the run, to resume with ``geomlops run --resume RUN_ID``.
        signum: the signal received.
    """

    def __init__(self, run_id: str, signum: int) -> None:
        self.run_id = run_id
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(f"run {run_id} interrupted by {name}; resume with: geomlops run --resume {run_id}")

    @property
    def exit_code(self) -> int:
        """The shell's status for a process ended by the signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


class _Stop(BaseException):
    """Raised in the main thread by the signal handler of a running run."""

    def __init__(self, signum: int, stopper: threading.Thread) -> None:
        super().__init__(signum)
        self.signum = signum
        self.stopper = stopper


class LocalRunner:
    """Runs Argo Workflows manifests locally, exactly as Argo would, with no cluster.

    Args:
        runs_dir: the folder holding one sub-folder per run.
        max_workers: the most processes running at once (``spec.parallelism`` may lower it).
        approval: approve every suspend gate up front (recorded in the node's state).
        interactive: ask at the terminal when a suspend gate is reached.
        allow_host_containers: run ``container`` templates' command on this machine.
        template_resolver: returns a WorkflowTemplate manifest by name (``templateRef``).
        progress: print one line per node transition to stderr.
        env: extra environment variables for every task (and secrets, by name).
        prompt: reads one answer at the prompt (``input`` by default; tests inject one).
        approver_check: checks and normalises an approver's name typed at the prompt (raises
            GeomlopsError to refuse it); the engine knows no rule of its own.
        sandbox: run each task attempt in its own filesystem view (:mod:`.sandbox`); None: unless
            ``GEOMLOPS_SANDBOX=off``.
        writable_paths: host folders tasks may write besides the folder holding ``runs_dir``
            (``$GEOMLOPS_HOME``), their own attempt folder and their private ``/tmp``.
        artifact_repository: where output artifacts are stored (default: a folder in each run's
            folder, ``artifacts/``); the services profile passes its S3 bucket.
        semaphores: semaphore limits, ``CONFIGMAP/KEY`` -> limit (see :mod:`.synchronization`).
        image_environment: stands in for images on this machine: given a template's image and
            the environment built for its process, returns the environment it runs with (an
            interpreter of the image's own, on ``PATH``), or None for an image it does not
            know. With it, ``container`` templates are accepted; one whose image it does not
            know fails unless ``allow_host_containers``. It may raise
            :class:`~geomlops.errors.GeomlopsError` (the task errors with its message).
        capacity: the node tasks are placed on by their containers' resource requests, as
            Kubernetes places pods (:mod:`.node`): ``cpu`` (cores) and ``memory`` (bytes), a
            resource not named not counted; None: this machine's usable CPUs and memory.
    """

    def __init__(
        self,
        runs_dir: Path,
        *,
        max_workers: int = 4,
        approval: Approval | None = None,
        interactive: bool = False,
        allow_host_containers: bool = False,
        template_resolver: Callable[[str], dict[str, Any]] | None = None,
        progress: bool = True,
        env: Mapping[str, str] | None = None,
        prompt: Callable[[str], str] = input,
        approver_check: Callable[[str], str] | None = None,
        semaphores: Mapping[str, int] | None = None,
        artifact_repository: Repository | None = None,
        sandbox: bool | None = None,
        writable_paths: Sequence[Path] = (),
        image_environment: ImageEnvironment | None = None,
        capacity: Mapping[str, float] | None = None,
    ) -> None:
        if max_workers < 1:
            raise RunError(f"max_workers must be at least 1, not {max_workers}")
        self.runs_dir = Path(runs_dir)
        self.max_workers = max_workers
        self.approval = approval
        self.interactive = interactive
        self.allow_host_containers = allow_host_containers
        self.template_resolver = template_resolver
        self.reporter = Reporter(progress)
        self.env = dict(env or {})
        self.prompt = prompt
        self.approver_check = approver_check
        self.semaphores = dict(semaphores or {})
        self.artifact_repository = artifact_repository
        self.capacity = None if capacity is None else dict(capacity)
        self.sandbox = sandbox_wanted(sandbox)
        self.writable_paths = (self.runs_dir.resolve().parent, *(Path(p) for p in writable_paths))
        self.image_environment = image_environment

    @property
    def _accepts_containers(self) -> bool:
        """Whether ``container`` templates load: their command runs on this machine, or in the
        stand-in of their image (checked when each starts)."""
        return self.allow_host_containers or self.image_environment is not None

    # --- public API -------------------------------------------------------------------

    def run(
        self,
        manifest: dict[str, Any],
        parameters: Mapping[str, str] | None = None,
        run_id: str | None = None,
    ) -> RunSummary:
        """Run a manifest to its end (or to a suspend gate) and return its summary.

        A failing task does not raise: the summary has status ``Failed`` and says why.

        Raises:
            ManifestError: malformed manifest (kind, entrypoint, template, cycle...).
            UnsupportedFeatureError: a feature the local runner does not execute.
            ParameterError: an undeclared, missing or out-of-enum parameter.
            RunError: the run id is taken or malformed, or the sandbox cannot run here.
        """
        if self.sandbox:
            bwrap_path()  # says how to install bubblewrap, or to run unisolated, before anything
        workflow = load_workflow(
            manifest,
            resolver=self.template_resolver,
            allow_host_containers=self._accepts_containers,
        )
        check_synchronization(workflow, self.semaphores)
        params = resolve_parameters(workflow, parameters or {})
        if self.approval is not None:  # refuse unknown or missing supplied outputs before anything runs
            check_supplied(gates_of(workflow), self.approval)
        if ignored := ignored_fields(manifest, *workflow.refs.values()):
            self.reporter.line(f"Ignored on one machine (no effect outside Kubernetes): {', '.join(ignored)}")
        run_id = run_id or _new_run_id(workflow.name)
        if not _RUN_ID.fullmatch(run_id):
            raise RunError(f"run id {run_id!r} must be letters, digits, '.', '_' or '-'")
        run_dir = self.runs_dir / run_id
        try:
            run_dir.mkdir(parents=True)
        except FileExistsError as err:
            raise RunError(f"run {run_id!r} already exists in {self.runs_dir}") from err
        (run_dir / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
        (run_dir / "params.json").write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
        if workflow.refs:
            (run_dir / "refs.yaml").write_text(
                yaml.safe_dump(workflow.refs, sort_keys=False), encoding="utf-8"
            )
        fixed = workflow.metadata.get("name") if workflow.kind == "Workflow" else None
        state = RunState(
            run_id=run_id,
            workflow_name=workflow.name,
            workflow_uid=str(uuid.uuid4()),
            argo_name=str(fixed or run_id),
            status=RUNNING,
            started=now_iso(),
            pid=os.getpid(),
            pid_started=process_start(os.getpid()) or 0,
        )
        with _run_lock(run_dir):
            return self._execute(workflow, params, state, run_dir, {})

    def resume(self, run_id: str) -> RunSummary:
        """Run again every node of ``run_id`` that did not succeed, reusing the others.

        Raises:
            RunError: unknown run id, another process is running it, or the sandbox cannot run here.
        """
        if self.sandbox:
            bwrap_path()
        run_dir = self._run_dir(run_id)
        with _run_lock(run_dir):
            state = load_state(run_dir)
            # a person's "no" is final for this run, and stays on record with it (a gate that
            # passed the refusal on to the workflow resumes: its later tasks record it)
            refused = [n for n in state.nodes.values() if refused_at(n) and n.status != SUCCEEDED]
            if refused:
                who = refused[0].approval or {}
                raise RunError(
                    f"run {run_id} was refused at gate {refused[0].name} by {who.get('approver')}"
                    + (f" ({who['reason']})" if who.get("reason") else "")
                    + "; a refused run is not resumed: start a new run to ask again"
                )
            waiting = [n.name for n in state.nodes.values() if n.status == SUSPENDED and n.type == "Suspend"]
            if self.approval is not None and not waiting:
                gated = [s.run_id for s in self.list_runs() if s.status == SUSPENDED]
                raise RunError(
                    f"run {run_id} is not waiting at an approval gate (status {state.status}): an "
                    "approval applies only to a run suspended at a gate; "
                    + (f"runs waiting at one: {', '.join(gated)}" if gated else "no run waits at one")
                )
            if state.status == SUCCEEDED:
                message = f"run {run_id} already succeeded; nothing to resume"
                self.reporter.line(message)
                return RunSummary.from_state(state, run_dir, message)
            manifest = yaml.safe_load((run_dir / "manifest.yaml").read_text(encoding="utf-8"))
            refs_file = run_dir / "refs.yaml"
            refs = yaml.safe_load(refs_file.read_text(encoding="utf-8")) if refs_file.exists() else {}
            workflow = load_workflow(
                manifest,
                resolver=self.template_resolver,
                refs=refs,
                allow_host_containers=self._accepts_containers,
            )
            if self.approval is not None:  # before the run resumes: unknown or missing supplied outputs
                check_supplied(gates_of(workflow, {state.nodes[n].template for n in waiting}), self.approval)
            params = json.loads((run_dir / "params.json").read_text(encoding="utf-8"))
            previous = {k: v for k, v in state.nodes.items() if not _is_exit_node(k)}
            for node in previous.values():
                for attempt in node.attempts:
                    if attempt.finished is None:  # the runner died during this attempt
                        attempt.status, attempt.message = ERROR, "interrupted: the runner stopped"
            state.nodes = {k: v for k, v in previous.items() if v.status == SUCCEEDED}
            state.status, state.message, state.finished = RUNNING, "", None
            state.resumed.append(now_iso())
            state.pid = os.getpid()
            state.pid_started = process_start(os.getpid()) or 0
            self.reporter.line(f"Resuming {run_id}: {len(state.nodes)} node(s) already succeeded")
            return self._execute(workflow, params, state, run_dir, previous)

    def list_runs(self) -> list[RunSummary]:
        """Return a summary of every run in ``runs_dir``, newest first."""
        summaries = []
        if not self.runs_dir.is_dir():
            return []
        for run_dir in self.runs_dir.iterdir():
            if not (run_dir / "state.json").is_file():
                continue
            try:
                state = load_state(run_dir)
            except RunError:
                continue
            message = None
            if state.status == RUNNING and not _runner_alive(state, run_dir):
                state.status, message = INTERRUPTED, f"{_DEAD_RUNNER}; resume it"
            summaries.append(RunSummary.from_state(state, run_dir, message))
        return sorted(summaries, key=lambda s: (s.started is not None, s.started), reverse=True)

    def show(self, run_id: str) -> RunState:
        """Return the full recorded state of a run: every node with its attempts and logs.

        A run recorded as Running whose runner process is gone is shown as Interrupted.

        Raises:
            RunError: unknown run id.
        """
        run_dir = self._run_dir(run_id)
        state = load_state(run_dir)
        if state.status == RUNNING and not _runner_alive(state, run_dir):
            state.status, state.message = INTERRUPTED, _DEAD_RUNNER
        return state

    # --- internals --------------------------------------------------------------------

    def _run_dir(self, run_id: str) -> Path:
        run_dir = self.runs_dir / run_id
        if not _RUN_ID.fullmatch(run_id) or not (run_dir / "state.json").is_file():
            raise RunError(f"unknown run id {run_id!r} (no state.json under {self.runs_dir})")
        return run_dir

    def _execute(
        self,
        workflow: Workflow,
        params: Mapping[str, str],
        state: RunState,
        run_dir: Path,
        previous: Mapping[str, NodeState],
    ) -> RunSummary:
        (run_dir / "logs").mkdir(exist_ok=True)
        absent = absent_paths(params.values()) if self.sandbox else set()
        given_files, given_folders = parameter_paths(params.values()) if self.sandbox else ([], [])
        made = [folder for folder in given_folders if folder in absent]  # output folders, made here
        store = StateStore(run_dir, state)
        options = EngineOptions(
            self.max_workers, self.approval, self.interactive, self.prompt, self.env, self.approver_check
        )
        options.semaphores = self.semaphores
        options.image_environment = self.image_environment
        options.allow_host_containers = self.allow_host_containers
        options.capacity = self.capacity
        engine = Engine(
            workflow=workflow,
            params=params,
            globals_=_global_scope(workflow, state, params),
            store=store,
            reporter=self.reporter,
            options=options,
            previous=previous,
            run_dir=run_dir,
            artifacts=self.artifact_repository,
            sandboxed=self.sandbox,
            writable=(*self.writable_paths, *given_folders),
            readable=given_files,
        )
        self.reporter.line(f"Running {workflow.name} as run {state.run_id} in {run_dir}")
        if not self.sandbox:
            self.reporter.line(UNISOLATED_NOTE)
        began = time.monotonic()
        try:
            with _stop_on_signals(engine):
                phase = engine.run()
        except _Stop as stop:
            stop.stopper.join()
            self._stop_tasks(engine)
            remove_if_empty(made)  # once no task can write there any more
            store.finish(INTERRUPTED, f"interrupted by {signal.Signals(stop.signum).name}")
            raise RunInterrupted(state.run_id, stop.signum) from None
        except BaseException as err:
            self._stop_tasks(engine)
            remove_if_empty(made)
            why = "interrupted" if isinstance(err, KeyboardInterrupt) else f"runner error: {err!r}"
            store.finish(INTERRUPTED if isinstance(err, KeyboardInterrupt) else FAILED, why)
            raise
        status = FAILED if phase == ERROR else phase
        message = _message(status, store.nodes(), run_dir)
        if message == _NO_TASK_FAILED and engine.root_message:
            message = f"{message}: {engine.root_message}"
        removed = remove_if_empty(made)
        if removed and status == FAILED:  # a mistyped input's folder explains an odd failure
            message += "".join(
                f"\nnote: {folder} did not exist; {MADE_FOLDER_NOTE} "
                "(if it names a file to read, that file must exist)"
                for folder in removed
            )
        final = store.finish(status, message)
        mark = {SUCCEEDED: "✓", SUSPENDED: "⏸"}.get(status, "✗")
        first = final.message.splitlines()[0] if final.message else ""
        self.reporter.line(
            f"{mark} {workflow.name} {status} in {time.monotonic() - began:.1f}s (run {state.run_id})"
            + (f": {first}" if first else "")
        )
        return RunSummary.from_state(final, run_dir)

    def _stop_tasks(self, engine: Engine) -> None:
        """Stop every task process of the run (and its children), as Argo stops pods."""
        engine.aborted.set()
        terminate_groups(engine.processes.groups(), GRACE_SECONDS)


@contextmanager
def _stop_on_signals(engine: Engine) -> Iterator[None]:
    """While a run runs in the main thread, SIGINT and SIGTERM stop it (raising ``_Stop``).

    The handler marks the run aborted (no task starts any more) and sends SIGTERM to every
    task's process group at once, so threads waiting on a task return; the caller then waits
    out the grace period and kills what is left.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if engine.aborted.is_set():
            return
        engine.aborted.set()
        # the groups are taken now: a task whose main process exits leaves the registry,
        # but children it left in its group must still be stopped
        stopper = threading.Thread(
            target=terminate_groups, args=(engine.processes.groups(), GRACE_SECONDS), daemon=True
        )
        stopper.start()
        raise _Stop(signum, stopper)

    before = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in before.items():
            signal.signal(sig, old)


def _runner_alive(state: RunState, run_dir: Path) -> bool:
    """Whether the process that runs ``state`` still runs it.

    The recorded pid must be alive and have started when the recorded one did (a later
    process reusing the pid is not the runner); a state without a start time falls back to
    the run's lock, which the kernel releases when its holder dies.
    """
    if state.pid and state.pid_started:
        return process_start(state.pid) == state.pid_started
    return _is_locked(run_dir)


def _new_run_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "workflow"
    return f"{slug}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def _is_exit_node(name: str) -> bool:
    return name == "onExit" or name.startswith(("onExit.", "onExit["))


@contextmanager
def _run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run's lock file; the kernel drops it if this process dies (even SIGKILL)."""
    with (run_dir / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise RunError(f"run {run_dir.name} is being executed by another process") from err
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_locked(run_dir: Path) -> bool:
    try:
        with _run_lock(run_dir):
            return False
    except RunError:
        return True


def _global_scope(workflow: Workflow, state: RunState, params: Mapping[str, str]) -> dict[str, str]:
    listing = json.dumps([{"name": k, "value": v} for k, v in params.items()], separators=(",", ":"))
    labels = {str(k): str(v) for k, v in (workflow.metadata.get("labels") or {}).items()}
    annotations = {str(k): str(v) for k, v in (workflow.metadata.get("annotations") or {}).items()}
    scope = {
        "workflow.name": state.argo_name,
        "workflow.uid": state.workflow_uid,
        "workflow.namespace": str(workflow.metadata.get("namespace") or "default"),
        "workflow.status": RUNNING,
        "workflow.creationTimestamp": state.started.split(".")[0] + "Z",
        "workflow.mainEntrypoint": workflow.entrypoint,
        "workflow.serviceAccountName": str(workflow.spec.get("serviceAccountName") or "default"),
        "workflow.parameters": listing,
        "workflow.parameters.json": listing,
        "workflow.labels.json": json.dumps(labels, separators=(",", ":")),
        "workflow.annotations.json": json.dumps(annotations, separators=(",", ":")),
    }
    scheduled = annotations.get(_SCHEDULED_TIME)
    if scheduled is None and workflow.kind == "CronWorkflow":
        # Argo's cron controller annotates each run with its scheduled time (RFC 3339); a run
        # submitted by hand from a CronWorkflow gets the time it was submitted (common/convert.go)
        scheduled = state.started.split(".")[0] + "Z"
    # elsewhere Argo leaves the tag as it is (util/variables/keys/runtime.go), it does not fail
    scope["workflow.scheduledTime"] = scheduled or "{{workflow.scheduledTime}}"
    scope.update({f"workflow.parameters.{k}": v for k, v in params.items()})
    scope.update({f"workflow.labels.{k}": v for k, v in labels.items()})
    scope.update({f"workflow.annotations.{k}": v for k, v in annotations.items()})
    return scope


def _message(status: str, nodes: Mapping[str, NodeState], run_dir: Path) -> str:
    """Say why a run did not succeed: the first failed task and the end of its log."""
    if status == SUSPENDED:
        waiting = sorted(n.name for n in nodes.values() if n.status == SUSPENDED and n.type == "Suspend")
        return (
            f"suspended at {', '.join(waiting)}: waiting for approval; resume the run with "
            "an approval (approver and reason)"
        )
    if status != FAILED:
        return ""
    failed = [
        n for n in nodes.values() if n.status in FAILED_PHASES and n.type in ("Pod", "Error", "Suspend")
    ]
    if not failed:
        return _NO_TASK_FAILED
    first = min(failed, key=lambda n: n.finished or "")
    message = f"task {first.name!r} (template {first.template!r}) failed: {first.message}"
    if first.attempts and len(first.attempts) > 1:
        message += f" after {len(first.attempts)} attempts"
    if first.log and (run_dir / first.log).is_file():
        lines = (run_dir / first.log).read_text(encoding="utf-8", errors="replace").splitlines()
        tail = "\n".join(lines[-_LOG_TAIL:])
        message += f"\n--- last lines of {first.log} ---\n{tail}" if tail else f" (log {first.log} is empty)"
    if len(failed) > 1:
        others = ", ".join(sorted(n.name for n in failed if n is not first))
        message += f"\n(also failed: {others})"
    return message
