"""Scheduling of DAG and steps templates, and of fan-outs, with Argo's semantics.

A DAG launches each task once its dependencies are done and its ``depends`` holds (else
the task is Omitted); with ``failFast`` (the default) nothing new starts once the DAG is
known to fail. Its phase comes from its target tasks (the leaves, or ``dag.target``); an
omitted target inherits a failure of its branch. Steps run group by group. Fan-outs and the
threads nodes run on are in :mod:`.fanout`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any

from geomlops.argo.dag import Depends, ancestors, dag_dependencies, evaluate_depends

from ._expr_values import go_sprint
from .artifacts import ArtifactError, container_artifacts
from .context import RunContext
from .expr import ExpressionError, build_env, evaluate
from .fanout import run_parallel, run_task, spawn
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
from .retry import retry_strategy, run_retried
from .substitute import UnresolvedVariableError, substitute, to_argo_string

#: Argo's message for a template whose ``failFast`` stopped it (``checkParallelism``).
FAIL_FAST_MESSAGE = "template has failed or errored children and failFast enabled"


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
    """Run a DAG or steps template as node ``name`` (``""`` for the workflow's root).

    With ``failFast: true`` on the template (Argo's ``Template.IsFailFast``: off unless set),
    once one of its children fails or errors no other child starts, and the template fails
    with Argo's message once those running have finished. With a retry strategy (the
    template's or ``spec.retryStrategy``) it runs as a Retry node: :func:`.retry.run_retried`.
    """
    strategy = retry_strategy(template, engine.workflow.spec)
    if strategy is not None:

        def attempt(child: str, variables: Mapping[str, str]) -> Outcome:
            return _run_once(engine, child, source, template, inputs, {**scope, **variables})

        return run_retried(engine, name, template, strategy, scope, attempt)
    return _run_once(engine, name, source, template, inputs, scope)


def _run_once(
    engine: RunContext,
    name: str,
    source: str | None,
    template: dict[str, Any],
    inputs: dict[str, str],
    scope: dict[str, str],
) -> Outcome:
    kind = "DAG" if "dag" in template else "Steps"
    node = NodeState(name, str(template["name"]), kind, RUNNING, now_iso(), inputs=inputs)
    engine.store.put(node)
    stop = threading.Event() if template.get("failFast") is True else None
    try:
        if kind == "DAG":
            phase, local = _run_dag(engine, name, source, template, scope, stop)
        else:
            phase, local = _run_steps(engine, name, source, template, scope, stop)
        message = "" if phase == SUCCEEDED else f"{kind.lower()} {phase.lower()}"
    except (UnresolvedVariableError, ValueError) as err:
        phase, local, message = ERROR, {}, f"template {template['name']!r}: {err}"
    if stop is not None and stop.is_set():
        phase, message = FAILED, FAIL_FAST_MESSAGE
    if phase == SUCCEEDED:
        try:
            node.outputs = _container_outputs(template, {**scope, **local})
            node.artifacts = container_artifacts(template, {**scope, **local})
            engine.export_globals(template, node.outputs, node.artifacts)
        except (UnresolvedVariableError, ExpressionError, ArtifactError) as err:
            phase, message = ERROR, f"outputs of template {template['name']!r}: {err}"
    node.status, node.message = phase, message
    if phase != SUSPENDED:
        node.finished = now_iso()
    engine.store.put(node)
    outcome = Outcome(name, phase, dict(node.outputs), None, message, None, node.started, node.finished)
    outcome.artifacts = dict(node.artifacts)
    return outcome


def dag_targets(template: Mapping[str, Any], scope: Mapping[str, str]) -> list[str]:
    """Return the names in ``dag.target`` after substitution (as Argo splits it, on spaces).

    Raises:
        ValueError: a target names no task of the DAG.
        UnresolvedVariableError: a variable in it has no value.
    """
    dag = template["dag"]
    names = {str(t["name"]) for t in dag.get("tasks") or []}
    targets = substitute(to_argo_string(dag.get("target") or ""), scope).replace(",", " ").split()
    for target in targets:
        if target not in names:
            raise ValueError(f"dag.target: target {target!r} is not defined")
    return targets


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
            elif "expression" in value_from:  # Argo: expr.Eval over the scope, written with %v
                values[name] = go_sprint(evaluate(str(value_from["expression"]), build_env(scope)))
            elif "default" in value_from:
                values[name] = to_argo_string(value_from["default"])
        except (UnresolvedVariableError, ExpressionError):
            if "default" not in value_from:
                raise
            values[name] = to_argo_string(value_from["default"])
    return values


# --- DAG -----------------------------------------------------------------------------------


def _child(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _run_dag(
    engine: RunContext,
    prefix: str,
    source: str | None,
    template: dict[str, Any],
    scope: dict[str, str],
    stop: threading.Event | None,
) -> tuple[str, dict[str, str]]:
    dag = template["dag"]
    tasks = {str(t["name"]): t for t in dag.get("tasks") or []}
    graph = dag_dependencies(template)
    targets = dag_targets(template, scope)
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
        # as Argo's resolveReferences: global outputs published so far are seen by what starts now
        task_scope = {**scope, **engine.global_scope(), **local}
        child = _child(prefix, task_name)

        def work() -> Outcome:
            return run_task(engine, child, source, tasks[task_name], task_scope, parallelism, stop)

        running.add(task_name)
        spawn(engine, child, work, lambda outcome: done.put((task_name, outcome)))

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
        if stop is not None and outcome.phase in FAILED_PHASES:
            stop.set()
        if stop is not None and stop.is_set():
            stopped = True
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
    engine: RunContext,
    prefix: str,
    source: str | None,
    template: dict[str, Any],
    scope: dict[str, str],
    stop: threading.Event | None,
) -> tuple[str, dict[str, str]]:
    local: dict[str, str] = {}
    groups = [g if isinstance(g, list) else [g] for g in template.get("steps") or []]
    limit = int(template.get("parallelism") or 0)
    for index, group in enumerate(groups):
        step_scope = {**scope, **engine.global_scope(), **local}
        jobs = []
        for step in group:
            child = f"{prefix}[{index}].{step['name']}"
            jobs.append((child, _task_job(engine, child, source, step, step_scope, limit, stop)))
        results = run_parallel(engine, jobs, limit or len(jobs), stop)
        ran = [(step, o) for step, o in zip(group, results, strict=True) if o is not None]
        for step, outcome in ran:
            local.update(node_scope("steps", str(step["name"]), outcome))
        if stop is not None and stop.is_set():
            return FAILED, local
        for step, outcome in ran:
            if outcome.phase in FAILED_PHASES and not _continues_on(step, outcome.phase):
                return outcome.phase, local
        if any(o.phase == SUSPENDED for _, o in ran):
            return SUSPENDED, local
    return SUCCEEDED, local


def _task_job(
    engine: RunContext,
    name: str,
    source: str | None,
    call: Mapping[str, Any],
    scope: Mapping[str, str],
    limit: int,
    stop: threading.Event | None,
) -> Callable[[], Outcome]:
    return lambda: run_task(engine, name, source, call, scope, limit, stop)
