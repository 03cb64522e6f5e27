"""Scheduling of DAG and steps templates, and of fan-outs, with Argo's semantics.

A DAG launches each task once its dependencies are done and its ``depends`` holds (else
the task is Omitted); with ``failFast`` (the default) nothing new starts once the DAG is
known to fail. Its phase comes from its target tasks (the leaves, or ``dag.target``); an
omitted target inherits a failure of its branch. Steps run group by group. A fan-out runs
its items on a bounded pool and is named ``task(0:value)``, ``task(1:value)``... as in Argo.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any

from geomlops.argo.dag import Depends, ancestors, dag_dependencies, evaluate_depends

from .context import RunContext
from .model import (
    ERROR,
    FAILED,
    FAILED_PHASES,
    OMITTED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    SUSPENDED,
    NodeState,
    now_iso,
)
from .outcome import Outcome, node_scope
from .substitute import UnresolvedVariableError, substitute, substitute_all, to_argo_string

_LOOP_KEYS = ("withItems", "withParam", "withSequence")


def _continues_on(call: Mapping[str, Any], phase: str) -> bool:
    continue_on = call.get("continueOn") or {}
    return bool(
        (phase == FAILED and continue_on.get("failed")) or (phase == ERROR and continue_on.get("error"))
    )


def run_container(
    engine: RunContext,
    name: str,
    source: str | None,
    template: dict[str, Any],
    inputs: dict[str, str],
    scope: dict[str, str],
) -> Outcome:
    """Run a DAG or steps template as node ``name`` (``""`` for the workflow's root)."""
    kind = "DAG" if "dag" in template else "Steps"
    node = NodeState(name, str(template["name"]), kind, RUNNING, now_iso(), inputs=inputs)
    engine.store.put(node)
    if kind == "DAG":
        phase, local = _run_dag(engine, name, source, template, scope)
    else:
        phase, local = _run_steps(engine, name, source, template, scope)
    message = "" if phase == SUCCEEDED else f"{kind.lower()} {phase.lower()}"
    if phase == SUCCEEDED:
        try:
            node.outputs = _container_outputs(template, {**scope, **local})
            engine.export_globals(template, node.outputs)
        except UnresolvedVariableError as err:
            phase, message = ERROR, f"outputs of template {template['name']!r}: {err}"
    node.status, node.message = phase, message
    if phase != SUSPENDED:
        node.finished = now_iso()
    engine.store.put(node)
    return Outcome(name, phase, dict(node.outputs), None, message, None, node.started, node.finished)


def _container_outputs(template: Mapping[str, Any], scope: Mapping[str, str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for param in (template.get("outputs") or {}).get("parameters") or []:
        name = str(param["name"])
        value_from = param.get("valueFrom") or {}
        try:
            if "value" in param:
                values[name] = substitute(to_argo_string(param["value"]), scope)
            elif "parameter" in value_from:
                values[name] = substitute(str(value_from["parameter"]), scope)
            elif "default" in value_from:
                values[name] = to_argo_string(value_from["default"])
        except UnresolvedVariableError:
            if "default" not in value_from:
                raise
            values[name] = to_argo_string(value_from["default"])
    return values


# --- DAG -----------------------------------------------------------------------------------


def _child(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _run_dag(
    engine: RunContext, prefix: str, source: str | None, template: dict[str, Any], scope: dict[str, str]
) -> tuple[str, dict[str, str]]:
    dag = template["dag"]
    tasks = {str(t["name"]): t for t in dag.get("tasks") or []}
    graph = dag_dependencies(template)
    targets = str(dag.get("target") or "").replace(",", " ").split()
    if targets:
        wanted = set(targets).union(*(ancestors(graph, t) for t in targets))
    else:
        depended = set().union(*(d.tasks for d in graph.values()))
        targets = [t for t in tasks if t not in depended]
        wanted = set(tasks)
    fail_fast = dag.get("failFast", True) is not False
    parallelism = int(template.get("parallelism") or 0)
    limit = parallelism or len(tasks)
    outcomes: dict[str, Outcome] = {}
    local: dict[str, str] = {}
    running: set[str] = set()
    done: queue.Queue[tuple[str, Outcome]] = queue.Queue()
    stopped = False

    def launch(task_name: str) -> None:
        task_scope = {**scope, **local}
        child = _child(prefix, task_name)

        def work() -> Outcome:
            return run_task(engine, child, source, tasks[task_name], task_scope, parallelism)

        running.add(task_name)
        _spawn(engine, child, work, lambda outcome: done.put((task_name, outcome)))

    while True:
        progressed = True
        while progressed:
            progressed = False
            for task_name in tasks:
                if task_name not in wanted or task_name in outcomes or task_name in running:
                    continue
                deps = graph[task_name].tasks
                if stopped or any(d not in outcomes or outcomes[d].phase == SUSPENDED for d in deps):
                    continue
                if not evaluate_depends(graph[task_name], _results(outcomes, tasks)):
                    outcomes[task_name] = engine.skipped_node(
                        _child(prefix, task_name),
                        {"name": tasks[task_name].get("template", "")},
                        "omitted: depends condition not met",
                        OMITTED,
                    )
                    local.update(node_scope("tasks", task_name, outcomes[task_name]))
                    progressed = True
                elif len(running) < limit and not engine.aborted.is_set():
                    launch(task_name)
        if not running:
            break
        task_name, outcome = done.get()
        running.discard(task_name)
        outcomes[task_name] = outcome
        local.update(node_scope("tasks", task_name, outcome))
        if fail_fast and _assess(targets, outcomes, tasks, graph) in FAILED_PHASES:
            stopped = True
    phase = _assess(targets, outcomes, tasks, graph)
    if phase == SUCCEEDED and any(o.phase == SUSPENDED for o in outcomes.values()):
        phase = SUSPENDED
    elif phase == RUNNING:
        suspended = any(o.phase == SUSPENDED for o in outcomes.values())
        phase = SUSPENDED if suspended else ERROR
    return phase, local


def _results(
    outcomes: Mapping[str, Outcome], tasks: Mapping[str, Mapping[str, Any]]
) -> Callable[[str, str | None], bool]:
    def result_of(task: str, result: str | None) -> bool:
        outcome = outcomes[task]
        phase = outcome.phase
        if result is None:
            return phase in (SUCCEEDED, SKIPPED) or _continues_on(tasks[task], phase)
        if result == "Errored":
            return phase == ERROR
        if result == "AnySucceeded":
            return any(c.phase == SUCCEEDED for c in outcome.children or [])
        if result == "AllFailed":
            children = outcome.children or []
            return bool(children) and all(c.phase == FAILED for c in children)
        return phase == result

    return result_of


def _assess(
    targets: list[str],
    outcomes: Mapping[str, Outcome],
    tasks: Mapping[str, Mapping[str, Any]],
    graph: Mapping[str, Depends],
) -> str:
    """The DAG's phase so far: a failed target branch fails it; unknown ones keep it running."""

    def branch(task: str) -> str | None:
        outcome = outcomes.get(task)
        if outcome is None or outcome.phase == SUSPENDED:
            return None
        if outcome.phase != OMITTED:
            return outcome.phase
        parents = [branch(d) for d in sorted(graph[task].tasks)]
        failed = [p for p in parents if p in FAILED_PHASES]
        return failed[0] if failed else SUCCEEDED

    result = SUCCEEDED
    for target in targets:
        phase = branch(target)
        if phase is None:
            result = RUNNING
        elif phase in FAILED_PHASES and not _continues_on(tasks[target], phase):
            return phase
    return result


# --- steps ---------------------------------------------------------------------------------


def _run_steps(
    engine: RunContext, prefix: str, source: str | None, template: dict[str, Any], scope: dict[str, str]
) -> tuple[str, dict[str, str]]:
    local: dict[str, str] = {}
    groups = [g if isinstance(g, list) else [g] for g in template.get("steps") or []]
    limit = int(template.get("parallelism") or 0)
    for index, group in enumerate(groups):
        step_scope = {**scope, **local}
        jobs = []
        for step in group:
            child = f"{prefix}[{index}].{step['name']}"
            jobs.append((child, _task_job(engine, child, source, step, step_scope, limit)))
        outcomes = run_parallel(engine, jobs, limit or len(jobs))
        for step, outcome in zip(group, outcomes, strict=True):
            local.update(node_scope("steps", str(step["name"]), outcome))
        for step, outcome in zip(group, outcomes, strict=True):
            if outcome.phase in FAILED_PHASES and not _continues_on(step, outcome.phase):
                return outcome.phase, local
        if any(o.phase == SUSPENDED for o in outcomes):
            return SUSPENDED, local
    return SUCCEEDED, local


# --- fan-out -------------------------------------------------------------------------------


def run_task(
    engine: RunContext,
    name: str,
    source: str | None,
    call: Mapping[str, Any],
    scope: Mapping[str, str],
    limit: int = 0,
) -> Outcome:
    """Run a DAG task or step, expanding ``withItems``/``withParam``/``withSequence``."""
    if not any(key in call for key in _LOOP_KEYS):
        return engine.run_call(name, source, call, scope)
    template_name = str(call.get("template") or (call.get("templateRef") or {}).get("template"))
    try:
        items = expand_items(call, scope)
    except (UnresolvedVariableError, ValueError) as err:
        return engine.error_node(name, template_name, str(err))
    if not items:
        callee = engine.workflow.template(*engine.workflow.resolve_call(source, call))
        return engine.skipped_node(name, callee, "Skipped, empty params")
    node = NodeState(name, template_name, "TaskGroup", RUNNING, now_iso())
    engine.store.put(node)
    single = {k: v for k, v in call.items() if k not in _LOOP_KEYS}
    jobs = []
    for index, item in enumerate(items):
        child = f"{name}({index}:{item_label(item)})"
        child_scope = {**scope, **item_scope(item)}
        jobs.append((child, _call_job(engine, child, source, single, child_scope)))
    width = min(engine.workers, limit) if limit else engine.workers
    children = run_parallel(engine, jobs, width)
    failed = [c for c in children if c.phase in FAILED_PHASES]
    suspended = any(c.phase == SUSPENDED for c in children)
    phase = failed[0].phase if failed else SUSPENDED if suspended else SUCCEEDED
    node.status = phase
    node.message = f"{len(failed)} of {len(children)} failed" if failed else ""
    if phase != SUSPENDED:
        node.finished = now_iso()
    engine.store.put(node)
    return Outcome(
        name, phase, message=node.message, started=node.started, finished=node.finished, children=children
    )


def _task_job(
    engine: RunContext,
    name: str,
    source: str | None,
    call: Mapping[str, Any],
    scope: Mapping[str, str],
    limit: int,
) -> Callable[[], Outcome]:
    return lambda: run_task(engine, name, source, call, scope, limit)


def _call_job(
    engine: RunContext, name: str, source: str | None, call: Mapping[str, Any], scope: Mapping[str, str]
) -> Callable[[], Outcome]:
    return lambda: engine.run_call(name, source, call, scope)


def expand_items(call: Mapping[str, Any], scope: Mapping[str, str]) -> list[Any]:
    """Return the items of a fan-out (``withItems``, ``withParam`` or ``withSequence``).

    Raises:
        ValueError: ``withParam`` is not a JSON list, or a malformed sequence.
        UnresolvedVariableError: a variable in them cannot be resolved.
    """
    if "withItems" in call:
        items = substitute_all(call["withItems"] or [], scope)
        if not isinstance(items, list):
            raise ValueError("withItems must be a list")
        return items
    if "withParam" in call:
        text = substitute(to_argo_string(call["withParam"]), scope)
        try:
            items = json.loads(text)
        except ValueError as err:
            raise ValueError(f"withParam value could not be parsed as a JSON list: {text.strip()}") from err
        if not isinstance(items, list):
            raise ValueError(f"withParam value is not a JSON list: {text.strip()}")
        return items
    sequence = substitute_all(call["withSequence"] or {}, scope)
    start = int(to_argo_string(sequence.get("start", 0)) or 0)
    if "count" in sequence:
        numbers = list(range(start, start + int(to_argo_string(sequence["count"]))))
    elif "end" in sequence:
        end = int(to_argo_string(sequence["end"]))
        numbers = list(range(start, end + 1)) if end >= start else list(range(start, end - 1, -1))
    else:
        raise ValueError("withSequence needs count or end")
    fmt = sequence.get("format")
    return [str(fmt) % n if fmt else str(n) for n in numbers]


def item_scope(item: Any) -> dict[str, str]:
    """Return ``{{item}}`` and, for a mapping, ``{{item.key}}``."""
    scope = {"item": to_argo_string(item)}
    if isinstance(item, dict):
        scope.update({f"item.{k}": to_argo_string(v) for k, v in item.items()})
    return scope


def item_label(item: Any) -> str:
    """Return how Argo shows an item in a node name (``a``, ``k:v,k2:v2``, ``[a b]``)."""
    if isinstance(item, dict):
        return ",".join(sorted(f"{k}:{to_argo_string(v)}" for k, v in item.items()))
    if isinstance(item, list):
        return "[" + " ".join(to_argo_string(v) for v in item) + "]"
    return to_argo_string(item)


# --- threads -------------------------------------------------------------------------------


def _spawn(
    engine: RunContext, name: str, work: Callable[[], Outcome], done: Callable[[Outcome], None]
) -> None:
    def target() -> None:
        try:
            outcome = work()
        except Exception as err:  # noqa: BLE001 - a bug must not hang the scheduler: the node errors
            outcome = engine.error_node(name, "", f"internal error: {type(err).__name__}: {err}")
        done(outcome)

    threading.Thread(target=target, name=f"node {name}", daemon=True).start()


def run_parallel(
    engine: RunContext, jobs: list[tuple[str, Callable[[], Outcome]]], width: int
) -> list[Outcome]:
    """Run named jobs, at most ``width`` at a time; return their outcomes in order."""
    results: list[Outcome | None] = [None] * len(jobs)
    gate = threading.BoundedSemaphore(max(1, width))
    finished = threading.Semaphore(0)
    started = 0
    for index, (name, work) in enumerate(jobs):
        gate.acquire()
        if engine.aborted.is_set():
            gate.release()
            break

        def done(outcome: Outcome, index: int = index) -> None:
            results[index] = outcome
            gate.release()
            finished.release()

        _spawn(engine, name, work, done)
        started += 1
    for _ in range(started):
        finished.acquire()
    return [
        r if r is not None else Outcome(jobs[i][0], FAILED, message="interrupted")
        for i, r in enumerate(results)
    ]
