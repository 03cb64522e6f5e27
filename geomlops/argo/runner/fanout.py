"""Fan-outs (``withItems``, ``withParam``, ``withSequence``) and the threads nodes run on.

A fan-out runs its items on a bounded pool and is named ``task(0:value)``,
``task(1:value)``... as in Argo; :func:`run_parallel` runs named jobs at most ``width`` at a
time and starts none once its ``stop`` event is set (a ``failFast`` template with a failed
child, see :mod:`.scheduling`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from .context import RunContext
from .model import FAILED, FAILED_PHASES, RUNNING, SUCCEEDED, SUSPENDED, NodeState, now_iso
from .outcome import Outcome
from .substitute import UnresolvedVariableError, substitute, substitute_all, to_argo_string

LOOP_KEYS = ("withItems", "withParam", "withSequence")


def run_task(
    engine: RunContext,
    name: str,
    source: str | None,
    call: Mapping[str, Any],
    scope: Mapping[str, str],
    limit: int = 0,
    stop: threading.Event | None = None,
) -> Outcome:
    """Run a DAG task or step, expanding ``withItems``/``withParam``/``withSequence``.

    ``limit`` is the calling template's ``parallelism``; ``stop`` its ``failFast`` event
    (see :func:`run_parallel`).
    """
    if not any(key in call for key in LOOP_KEYS):
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
    single = {k: v for k, v in call.items() if k not in LOOP_KEYS}
    jobs = []
    for index, item in enumerate(items):
        child = f"{name}({index}:{item_label(item)})"
        child_scope = {**scope, **item_scope(item)}
        jobs.append((child, _call_job(engine, child, source, single, child_scope)))
    width = min(engine.workers, limit) if limit else engine.workers
    children = [c for c in run_parallel(engine, jobs, width, stop) if c is not None]
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


def spawn(
    engine: RunContext, name: str, work: Callable[[], Outcome], done: Callable[[Outcome], None]
) -> None:
    """Run ``work`` for node ``name`` on a new thread and hand its outcome to ``done``."""

    def target() -> None:
        try:
            outcome = work()
        except Exception as err:  # noqa: BLE001 - a bug must not hang the scheduler: the node errors
            outcome = engine.error_node(name, "", f"internal error: {type(err).__name__}: {err}")
        done(outcome)

    threading.Thread(target=target, name=f"node {name}", daemon=True).start()


def run_parallel(
    engine: RunContext,
    jobs: list[tuple[str, Callable[[], Outcome]]],
    width: int,
    stop: threading.Event | None = None,
) -> list[Outcome | None]:
    """Run named jobs, at most ``width`` at a time; return their outcomes in order.

    With ``stop`` (a ``failFast`` template's), a failed or errored job sets it and no job
    starts after that: those not started have no outcome (``None``), as Argo creates no
    node for them.
    """
    results: list[Outcome | None] = [None] * len(jobs)
    gate = threading.BoundedSemaphore(max(1, width))
    finished = threading.Semaphore(0)
    started: list[int] = []
    for index, (name, work) in enumerate(jobs):
        gate.acquire()
        if engine.aborted.is_set() or (stop is not None and stop.is_set()):
            gate.release()
            break

        def done(outcome: Outcome, index: int = index) -> None:
            results[index] = outcome
            if stop is not None and outcome.phase in FAILED_PHASES:
                stop.set()  # before the slot is freed, so that the next job sees it
            gate.release()
            finished.release()

        spawn(engine, name, work, done)
        started.append(index)
    for _ in started:
        finished.acquire()
    if stop is not None and stop.is_set():
        return results
    return [
        r if r is not None else Outcome(jobs[i][0], FAILED, message="interrupted")
        for i, r in enumerate(results)
    ]
