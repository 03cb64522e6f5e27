"""The local engine: walks a workflow's templates the way Argo's controller does.

``invoke`` runs one template as one node: a DAG or steps template through
:mod:`.scheduling`, a ``suspend`` through :mod:`.suspend`, a ``script``/``container`` here
as a host process with its retry strategy. Those modules call back into the engine through
:class:`.context.RunContext`, which it implements. Nodes that succeeded in an earlier run of
the same run id are reused.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from geomlops.argo.task_progress import PROGRESS_ENV, parse_progress
from geomlops.errors import GeomlopsError, ManifestError

from . import scheduling
from .artifacts import (
    ArtifactError,
    LocalRepository,
    Repository,
    S3Repository,
    call_artifacts,
    load_input,
    reference_json,
    save_outputs,
)
from .context import EngineOptions
from .execute import (
    DEADLINE_MESSAGE,
    PodResult,
    ProcessRegistry,
    build_env,
    command_for,
    read_outputs,
    run_process,
)
from .expressions import evaluate_when
from .manifest import bind_inputs, template_type
from .model import (
    ERROR,
    FAILED,
    FAILED_PHASES,
    PENDING,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    SUSPENDED,
    Attempt,
    NodeState,
    now_iso,
)
from .node import PODS, RESOURCES, Node, describe, pod_requests, this_machine
from .outcome import Outcome
from .progress import Reporter, progress_read
from .retry import RetryPolicy, deadline_of, last_retry, parse_duration
from .sandbox import Sandbox, make_sandbox
from .sidecars import Sidecar, mounts_of, start_sidecars, stop_sidecars, volume_folders
from .state_file import StateStore
from .substitute import UnresolvedVariableError, substitute, substitute_all, to_argo_string
from .suspend import run_suspend
from .synchronization import Synchronizer
from .workflow import Workflow


def safe_name(node: str) -> str:
    """Return a file name for a node name (``fan(0:a)`` → ``fan_0_a_-1a2b3c``, unique)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", node) or "node"
    if cleaned != node:
        cleaned = f"{cleaned}-{hashlib.sha1(node.encode()).hexdigest()[:6]}"
    return cleaned


def artifact_scope(artifacts: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """Return ``{{inputs.artifacts.A}}`` for each input artifact passed to a template."""
    return {f"inputs.artifacts.{k}": reference_json(v) for k, v in artifacts.items()}


def input_scope(inputs: Mapping[str, str]) -> dict[str, str]:
    """Return ``{{inputs.parameters.*}}`` and ``{{inputs.parameters}}`` (the JSON list)."""
    scope = {f"inputs.parameters.{k}": v for k, v in inputs.items()}
    listing = [{"name": k, "value": v} for k, v in inputs.items()]
    scope["inputs.parameters"] = json.dumps(listing, separators=(",", ":"), ensure_ascii=False)
    return scope


#: how a task's message starts while it waits for room on the machine
PENDING_MESSAGE = "pending: "


class Engine:
    """Executes one run of a workflow; ``run`` returns the workflow's phase."""

    def __init__(
        self,
        *,
        workflow: Workflow,
        params: Mapping[str, str],
        globals_: Mapping[str, str],
        store: StateStore,
        reporter: Reporter,
        options: EngineOptions,
        previous: Mapping[str, NodeState],
        run_dir: Path,
        artifacts: Repository | None = None,
        sandboxed: bool = False,
        writable: Sequence[Path] = (),
        readable: Sequence[Path] = (),
    ) -> None:
        self.workflow = workflow
        self.params = dict(params)
        self.store = store
        self.reporter = reporter
        self.options = options
        self.previous = dict(previous)
        self.run_dir = run_dir
        #: where output artifacts go (the run folder's ``artifacts`` unless told otherwise)
        self.artifacts: Repository = artifacts or LocalRepository(run_dir / "artifacts")
        #: whether each attempt runs in its own filesystem view, and the host folders it may write
        self.sandboxed = sandboxed
        self.writable = tuple(writable)
        self.readable = tuple(readable)
        workers = max(1, options.max_workers)
        if workflow.spec.get("parallelism"):
            workers = min(workers, int(workflow.spec["parallelism"]))
        self.workers = workers
        self.processes = ProcessRegistry()
        self.aborted = threading.Event()
        #: room for the tasks' processes by their resource requests, as on one Kubernetes node,
        #: and for ``workers`` of them at once
        capacity = this_machine() if options.capacity is None else options.capacity
        self.node = Node({**capacity, PODS: workers}, self.aborted)
        self._globals = dict(globals_)
        self._lock = threading.Lock()
        #: when each pod's first attempt of this run started (what its time is counted from)
        self._placed: dict[str, float] = {}
        self._started = time.monotonic()
        limit = workflow.spec.get("activeDeadlineSeconds")
        #: when spec.activeDeadlineSeconds runs out (monotonic); exit handlers are not bound by it
        self.deadline = None if limit in (None, "") else self._started + parse_duration(limit)
        namespace = str(workflow.metadata.get("namespace") or "default")
        #: mutexes and semaphores, shared with every run of this runs folder (:mod:`.synchronization`)
        self.sync = Synchronizer(
            run_dir.parent / ".locks", options.semaphores, namespace, self.aborted, reporter.line
        )
        #: what the entrypoint's node said when it ended (the root DAG's node is not recorded)
        self.root_message = ""

    # --- workflow ---------------------------------------------------------------------

    def run(self) -> str:
        """Run the workflow holding its ``spec.synchronization`` locks; return its phase."""
        locks = self.sync.locks(self.workflow.spec, self.global_scope(), "the workflow")
        with self.sync.hold(locks, "the workflow") as held:
            return self._run_holding_locks() if held else FAILED

    def _run_holding_locks(self) -> str:
        """Run the entrypoint, then the exit handler; return the workflow phase."""
        entry = self.workflow.template(None, self.workflow.entrypoint)
        root = "" if template_type(entry) in ("dag", "steps") else self.workflow.entrypoint
        main = self._invoke_with_params(root, entry)
        self.root_message = main.message
        phase = main.phase
        on_exit = self.workflow.spec.get("onExit")
        if phase == SUSPENDED or not on_exit:
            return phase
        failures = [
            {
                "displayName": n.name,
                "message": n.message,
                "templateName": n.template,
                "phase": n.status,
                "podName": n.name,
                "finishedAt": n.finished or "",
            }
            for n in self.store.nodes().values()
            if n.status in FAILED_PHASES and n.type in ("Pod", "Suspend", "Error")
        ]
        self.set_global("workflow.status", phase)
        self.set_global("workflow.failures", json.dumps(failures, separators=(",", ":")))
        self.set_global("workflow.duration", f"{time.monotonic() - self._started:.3f}")
        handler = self._invoke_with_params("onExit", self.workflow.template(None, str(on_exit)))
        if handler.phase in FAILED_PHASES and phase == SUCCEEDED:
            return FAILED
        return phase

    def _invoke_with_params(self, name: str, template: dict[str, Any]) -> Outcome:
        try:
            inputs = bind_inputs(template, self.params)
        except ValueError as err:
            return self.error_node(name or str(template["name"]), str(template["name"]), str(err))
        return self.invoke(name, None, template, inputs)

    def global_scope(self) -> dict[str, str]:
        """Return a copy of the workflow-wide variables."""
        with self._lock:
            return dict(self._globals)

    def set_global(self, key: str, value: str) -> None:
        """Set a workflow-wide variable (``workflow.status``, global outputs...)."""
        with self._lock:
            self._globals[key] = value

    # --- calls and templates -----------------------------------------------------------

    def reuse(self, name: str) -> Outcome | None:
        """Return the outcome of ``name`` if it succeeded in an earlier run of this run id."""
        node = self.previous.get(name)
        if node is None or node.status != SUCCEEDED:
            return None
        self.store.put(node)
        self.reporter.reused(name)
        return Outcome.from_node(node)

    def run_call(
        self, name: str, source: str | None, call: Mapping[str, Any], scope: Mapping[str, str]
    ) -> Outcome:
        """Run one (already expanded) DAG task or step as node ``name``."""
        reused = self.reuse(name)
        if reused is not None:
            return reused
        template_name = str(call.get("template") or (call.get("templateRef") or {}).get("template"))
        try:
            callee_source, template_name = self.workflow.resolve_call(source, call)
            template = self.workflow.template(callee_source, template_name)
            when = substitute(to_argo_string(call.get("when", "")), scope)
            arguments = {
                str(p["name"]): substitute(to_argo_string(p.get("value", "")), scope)
                for p in (call.get("arguments") or {}).get("parameters") or []
            }
            proceed = evaluate_when(when)
            if not proceed:
                return self.skipped_node(name, template, f"when '{when}' evaluated false")
            inputs = bind_inputs(template, arguments)
            artifacts = call_artifacts(call, scope, name)
        except (UnresolvedVariableError, ManifestError, ValueError, ArtifactError) as err:
            return self.error_node(name, template_name, str(err))
        return self.invoke(name, callee_source, template, inputs, artifacts)

    def invoke(
        self,
        name: str,
        source: str | None,
        template: dict[str, Any],
        inputs: Mapping[str, str],
        artifacts: Mapping[str, dict[str, str]] | None = None,
    ) -> Outcome:
        """Run ``template`` with ``inputs`` (and input ``artifacts``) as node ``name``."""
        kind = template_type(template)
        scope = {**self.global_scope(), **input_scope(inputs), **artifact_scope(artifacts or {})}
        try:
            locks = self.sync.locks(template, scope, f"template {template['name']!r}")
        except (ManifestError, UnresolvedVariableError) as err:
            return self.error_node(name, str(template["name"]), str(err))
        with self.sync.hold(locks, name) as held:
            if not held:
                return self.error_node(name, str(template["name"]), "interrupted while waiting for a lock")
            if kind in ("dag", "steps"):
                return scheduling.run_container(self, name, source, template, dict(inputs), scope)
            if kind == "suspend":
                return run_suspend(self, name, template, dict(inputs), scope)
            return self._pod(name, template, dict(inputs), scope, dict(artifacts or {}))

    # --- node records ------------------------------------------------------------------

    def error_node(self, name: str, template: str, message: str) -> Outcome:
        """Record a node that could not run (bad variable, missing input...)."""
        stamp = now_iso()
        node = NodeState(name, template, "Error", ERROR, stamp, stamp, message=message)
        self.store.put(node)
        self.reporter.failed(name, 1, 1, message, None)
        return Outcome(name, ERROR, message=message, started=stamp, finished=stamp)

    def skipped_node(self, name: str, template: Mapping[str, Any], why: str, phase: str = SKIPPED) -> Outcome:
        """Record a skipped (``when`` false, empty fan-out) or omitted node.

        As Argo does, a skipped node's outputs are the defaults its template declares.
        """
        outputs = {
            str(p["name"]): to_argo_string(p["valueFrom"]["default"])
            for p in (template.get("outputs") or {}).get("parameters") or []
            if "default" in (p.get("valueFrom") or {})
        }
        stamp = now_iso()
        node = NodeState(
            name, str(template.get("name", "")), "Skipped", phase, stamp, stamp, outputs=outputs, message=why
        )
        self.store.put(node)
        self.reporter.skipped(name, why)
        return Outcome(name, phase, outputs=outputs, message=why, started=stamp, finished=stamp)

    def close(self, node: NodeState, phase: str, message: str) -> Outcome:
        """Record a node's final phase (or Suspended) and return its outcome."""
        node.status = phase
        node.message = message
        if phase != SUSPENDED:
            node.finished = now_iso()
        self.store.put(node)
        return Outcome(
            node.name,
            phase,
            dict(node.outputs),
            node.result,
            message,
            node.exit_code,
            node.started,
            node.finished,
            artifacts=dict(node.artifacts),
        )

    # --- pods --------------------------------------------------------------------------

    def _pod(
        self,
        name: str,
        template: dict[str, Any],
        inputs: dict[str, str],
        scope: dict[str, str],
        artifacts: dict[str, dict[str, str]],
    ) -> Outcome:
        previous = self.previous.get(name)
        node = NodeState(name, str(template["name"]), "Pod", PENDING, inputs=inputs)
        node.attempts = list(previous.attempts) if previous else []
        try:
            retry = {"retryStrategy": template.get("retryStrategy")}
            policy = RetryPolicy.from_template(substitute_all(retry, scope))
        except (UnresolvedVariableError, ValueError) as err:
            return self.close(node, ERROR, str(err))
        first = time.monotonic()
        attempt_no = 0
        while not self.aborted.is_set():
            attempt_no += 1
            ran = len(node.attempts)
            outcome_phase, message = self._attempt(node, template, scope, attempt_no, policy, artifacts)
            if len(node.attempts) == ran:  # as in Argo, a template that cannot be resolved errors, unretried
                if outcome_phase in FAILED_PHASES and not self.aborted.is_set():
                    self.reporter.failed(name, attempt_no, 1, message, None)
                return self.close(node, outcome_phase, message)
            if outcome_phase == SUCCEEDED:
                # from the first attempt's start: not the time it waited for room, nor for a worker
                self.reporter.succeeded(name, time.monotonic() - self._placed.pop(name, first))
                self.export_globals(template, node.outputs, node.artifacts)
                return self.close(node, SUCCEEDED, "")
            if self.aborted.is_set():  # the run is being stopped: no retry follows, none is said
                self.reporter.failed(name, attempt_no, policy.attempts or 0, message, None)
                break
            done = node.attempts[-1]  # retryStrategy.expression sees it as lastRetry.*
            last = last_retry(done.exit_code, outcome_phase, done.started, done.finished, message)
            delay, outcome_phase, message = policy.decide(
                attempt_no, time.monotonic() - first, outcome_phase, message, last
            )
            self.reporter.failed(name, attempt_no, policy.attempts or 0, message, delay)
            if delay is not None and self.deadline is not None and time.monotonic() + delay >= self.deadline:
                message = "retry exceeded workflow deadline"  # Argo adds the deadline's time
                delay = None
            if delay is None:
                return self.close(node, outcome_phase, message)
            node.status = PENDING
            self.store.put(node)
            self.aborted.wait(delay)
        return self.close(node, FAILED, "interrupted")

    def _attempt(
        self,
        node: NodeState,
        template: dict[str, Any],
        scope: dict[str, str],
        attempt_no: int,
        policy: RetryPolicy,
        artifacts: Mapping[str, dict[str, str]],
    ) -> tuple[str, str]:
        number = len(node.attempts) + 1
        safe = safe_name(node.name)
        work_dir = self.run_dir / "work" / safe / f"attempt-{number}"
        work_dir.mkdir(parents=True, exist_ok=True)
        log_rel = f"logs/{safe}.log" if number == 1 else f"logs/{safe}.{number}.log"
        attempt_scope = {
            **scope,
            "retries": str(attempt_no - 1),
            "pod.name": node.name,
            "node.name": node.name,
        }
        try:
            outputs_spec = template.get("outputs") or {}
            outputs = substitute_all(outputs_spec.get("parameters") or [], attempt_scope)
            paths = {
                str(p["name"]): str(p["valueFrom"]["path"])
                for p in outputs
                if (p.get("valueFrom") or {}).get("path")
            }
            declared_arts = substitute_all(
                (template.get("outputs") or {}).get("artifacts") or [], attempt_scope
            )
            input_arts = substitute_all((template.get("inputs") or {}).get("artifacts") or [], attempt_scope)
            # unisolated, inputs stay at their literal paths (where scripts naming them look);
            # isolated, those outside the private /tmp move with the outputs (the host is read-only)
            moved = [*declared_arts, *input_arts] if self.sandboxed else declared_arts
            art_paths = [str(a["path"]) for a in moved if "path" in a]
            volumes = volume_folders(template, work_dir)
            kind = "script" if "script" in template else "container"
            sandbox = make_sandbox(
                work_dir,
                [*paths.values(), *art_paths],
                isolated=self.sandboxed,
                writable=self.writable,
                readable=self.readable,
                mounts=mounts_of(template.get(kind) or {}, volumes),
            )
            for key, path in paths.items():
                attempt_scope[f"outputs.parameters.{key}.path"] = sandbox.remap(path)
            for art in declared_arts:
                if "path" in art:
                    attempt_scope[f"outputs.artifacts.{art['name']}.path"] = sandbox.remap(str(art["path"]))
            for art in input_arts:
                if "path" in art:
                    attempt_scope[f"inputs.artifacts.{art['name']}.path"] = sandbox.remap(str(art["path"]))
            resolved = substitute_all(template, attempt_scope)
            requests = pod_requests(resolved)
            timeout = self._pod_timeout(node.name, deadline_of(resolved))
            for art in (resolved.get("inputs") or {}).get("artifacts") or []:
                load_input(art, artifacts.get(str(art["name"])), self._repository_for, sandbox.host_path)
        except (UnresolvedVariableError, ValueError) as err:
            return ERROR, str(err)
        except ArtifactError as err:
            return ERROR, f"failed to load artifacts: {err}"
        if timeout is not None and timeout <= 0:
            return FAILED, DEADLINE_MESSAGE
        env, secrets = build_env(resolved[kind].get("env") or [], self.options.env, sandbox)
        image = str(resolved[kind].get("image") or "")
        try:
            own = self.options.image_environment(image, env) if self.options.image_environment else None
        except GeomlopsError as err:
            return ERROR, f"image {image!r}: {err}"
        if own is not None:
            env = own
        elif kind == "container" and not self.options.allow_host_containers:
            return ERROR, (
                f"nothing on this machine stands in for image {image!r} of container template "
                f"{template.get('name')!r} (allow_host_containers runs its command with this "
                "machine's own programs)"
            )
        # the task's own progress, N/M, read while it runs (Argo: its executor reads the file)
        progress_file = work_dir / "argo-progress"  # not a name a task writes itself
        env = {**env, PROGRESS_ENV: str(progress_file)}
        # a script in geomlops' image runs with this interpreter; one with an image's own, with that
        argv = command_for(resolved, work_dir, swap_python=own is None)
        working_dir = str(resolved[kind].get("workingDir") or "")
        wanted = {**requests, PODS: 1.0}

        def placed_now() -> None:  # not said of a task a stopped run will not start
            if not self.aborted.is_set():
                self.reporter.started(node.name, attempt_no, policy.attempts or 0)

        with self.node.place(wanted, lambda: self._pending(node, requests), placed_now) as placed:
            if not placed or self.aborted.is_set():
                return FAILED, "interrupted"
            attempt = Attempt(number, now_iso(), log=log_rel)
            self._placed.setdefault(node.name, time.monotonic())
            node.attempts.append(attempt)
            node.status, node.log = RUNNING, log_rel
            if node.message.startswith(PENDING_MESSAGE):
                node.message = ""
            node.started = node.started or attempt.started
            self.store.put(node)
            try:
                sidecars = self._start_sidecars(resolved, work_dir, volumes, log_rel)
            except GeomlopsError as err:
                sidecars, result = [], PodResult(ERROR, message=str(err))
            else:
                try:
                    with progress_read(
                        progress_file, lambda done, total: self._progressed(node, done, total)
                    ):
                        result = run_process(
                            argv,
                            work_dir=work_dir,
                            env=env,
                            log_path=self.run_dir / log_rel,
                            secrets=secrets,
                            timeout=timeout,
                            registry=self.processes,
                            sandbox=sandbox,
                            working_dir=working_dir,
                        )
                finally:
                    stop_sidecars(sidecars, self.processes)
        reported = parse_progress(node.progress or "")
        if result.phase == SUCCEEDED and reported is not None:  # as Argo completes a fulfilled pod's
            node.progress = f"{reported[1]}/{reported[1]}"
        if self.aborted.is_set():
            result.phase, result.message = FAILED, "interrupted"
        elif result.phase == SUCCEEDED:
            result.outputs, problem = read_outputs(resolved, sandbox)
            if problem:
                result.phase, result.message = FAILED, problem
            else:
                try:
                    declared = (resolved.get("outputs") or {}).get("artifacts") or []
                    key_scope = {**attempt_scope, "pod.name": safe_name(node.name)}
                    node.artifacts = save_outputs(declared, sandbox.host_path, self.artifacts, key_scope)
                except ArtifactError as err:  # Argo: the pod errors when its outputs cannot be saved
                    result.phase, result.message = ERROR, f"failed to save outputs: {err}"
        attempt.finished, attempt.status = now_iso(), result.phase
        attempt.exit_code, attempt.message = result.exit_code, result.message
        node.exit_code, node.result, node.outputs = result.exit_code, result.result, result.outputs
        return result.phase, result.message

    def _start_sidecars(
        self, resolved: Mapping[str, Any], work_dir: Path, volumes: Mapping[str, Path], log_rel: str
    ) -> list[Sidecar]:
        """Start the pod's sidecars (none for most templates)."""
        specs = resolved.get("sidecars") or []
        if not specs:
            return []

        def sandbox_for(folder: Path, mounts: Sequence[tuple[str, Path]]) -> Sandbox:
            return make_sandbox(
                folder,
                [],
                isolated=self.sandboxed,
                writable=self.writable,
                readable=self.readable,
                mounts=mounts,
            )

        return start_sidecars(
            specs,
            work_dir=work_dir,
            log_prefix=self.run_dir / log_rel.removesuffix(".log"),
            sandbox_for=sandbox_for,
            folders=volumes,
            extra_env=self.options.env,
            image_environment=self.options.image_environment,
            registry=self.processes,
        )

    def _progressed(self, node: NodeState, done: int, total: int) -> None:
        """Record, as ``N/M``, and say what a running task says of its progress."""
        node.progress = f"{done}/{total}"
        self.store.put(node)
        self.reporter.progressed(node.name, done, total)

    def _pending(self, node: NodeState, requests: Mapping[str, float]) -> None:
        """Say, and record with the node, that a task waits for room on this machine, as a pod
        waits for room on a node."""
        held, capacity = self.node.held(), self.node.capacity
        why = []
        for k in RESOURCES:
            asked, cap = float(requests.get(k, 0.0)), capacity.get(k)
            if cap is None:
                continue
            if asked > cap + 1e-9:
                why.append(
                    f"requests {describe({k: asked})}, more than all {describe({k: cap})} tasks are "
                    "placed on: runs once nothing else does"
                )
            elif held[k] + asked > cap + 1e-9:
                free = max(0.0, cap - held[k])
                free_of = f"{describe({k: free})} of {describe({k: cap})} free"
                why.append(f"requests {describe({k: asked})}, {free_of}")
        told = "; ".join(why)
        if why:  # not for a task that waits only for a worker: the runner's own limit, as before
            self.reporter.pending(node.name, told)
        elif held.get(PODS, 0) + 1 > capacity.get(PODS, math.inf):
            told = f"waits for one of the {capacity[PODS]:g} tasks running at once (--workers) to end"
        node.message = f"{PENDING_MESSAGE}{told or 'waits for a task that asked first'}"
        self.store.put(node)

    def _pod_timeout(self, name: str, template_limit: float | None) -> float | None:
        """Seconds a pod may run: its template's limit, within the workflow's deadline."""
        if self.deadline is None or name == "onExit" or name.startswith(("onExit.", "onExit[")):
            return template_limit
        left = self.deadline - time.monotonic()
        return left if template_limit is None else min(left, template_limit)

    def export_globals(
        self,
        template: Mapping[str, Any],
        outputs: Mapping[str, str],
        artifacts: Mapping[str, dict[str, str]] | None = None,
    ) -> None:
        """Publish outputs that declare a ``globalName`` as ``workflow.outputs.parameters.*``
        (and ``workflow.outputs.artifacts.*``)."""
        for param in (template.get("outputs") or {}).get("parameters") or []:
            if param.get("globalName") and param["name"] in outputs:
                self.set_global(f"workflow.outputs.parameters.{param['globalName']}", outputs[param["name"]])
        for art in (template.get("outputs") or {}).get("artifacts") or []:
            if art.get("globalName") and art["name"] in (artifacts or {}):
                reference = reference_json((artifacts or {})[art["name"]])
                self.set_global(f"workflow.outputs.artifacts.{art['globalName']}", reference)

    def _repository_for(self, reference: Mapping[str, str]) -> Repository:
        """The repository an artifact reference points into."""
        if "bucket" in reference:
            endpoint = self.artifacts.endpoint_url if isinstance(self.artifacts, S3Repository) else None
            return S3Repository(reference["bucket"], endpoint)
        if "repository" in reference:
            return LocalRepository(Path(reference["repository"]))
        return self.artifacts
