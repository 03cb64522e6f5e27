"""The local runner's run state as the gateway reports it (:class:`.base.RunInfo`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from geomlops.argo.runner.model import DONE_PHASES, RUNNING, SUSPENDED, NodeState, RunState
from geomlops.argo.task_progress import parse_progress
from geomlops.gateway.backends.base import Approval, Phase, RunInfo, TaskInfo
from pipelines._naming import pipeline_named

_INTERRUPTED = "interrupted: no runner process holds this run any more"


def _phase(status: str) -> Phase:
    try:
        return Phase(status)
    except ValueError:
        return Phase.ERROR


#: a run's phases in which none of its tasks runs any more
_STOPPED = (Phase.INTERRUPTED, Phase.FAILED, Phase.ERROR)


def _is_pod(node: NodeState) -> bool:
    return node.type == "Pod"


def _pod_progress(node: NodeState) -> tuple[int, int]:
    """A pod's progress: what it reported (``N/M``), else ``1/1`` once done and ``0/1`` before."""
    return parse_progress(node.progress or "") or ((1 if node.status in DONE_PHASES else 0), 1)


def _progress(pods: list[NodeState]) -> str:
    """The pods' progress summed, as Argo sums a workflow's."""
    done = sum(_pod_progress(n)[0] for n in pods)
    return f"{done}/{sum(_pod_progress(n)[1] for n in pods)}"


def _task(node: NodeState, nodes: Mapping[str, NodeState], run_phase: Phase) -> TaskInfo:
    """A task as the run's state has it; in a run that has stopped (interrupted, failed), a
    task the state still shows running was stopped with it, and is reported as its run is."""
    if _is_pod(node):
        pods = [node]
    else:  # a group's pods: its fan-out children NAME(i:…), its steps NAME[i].step
        pods = [n for k, n in nodes.items() if _is_pod(n) and k[len(node.name) : len(node.name) + 1] in "([."]
        pods = [n for n in pods if n.name.startswith(node.name) and n.name != node.name]
    approval = None
    if node.approval:
        approval = Approval(
            approver=node.approval.get("approver", ""),
            reason=node.approval.get("reason", ""),
            at=node.approval.get("at"),
            override=node.approval.get("override") == "true",
            decision="refused" if node.approval.get("decision") == "refused" else "approved",
        )
    return TaskInfo(
        name=node.name,
        template=node.template,
        type=node.type,
        phase=run_phase if node.status == RUNNING and run_phase in _STOPPED else _phase(node.status),
        started=node.started,
        finished=node.finished,
        progress=_progress(pods) if pods else "{}/{}".format(*_pod_progress(node)),
        message=node.message,
        outputs=dict(node.outputs),
        attempts=len(node.attempts),
        approval=approval,
    )


def run_info(
    state: RunState,
    run_dir: Path,
    launched: Mapping[str, Any],
    *,
    locked: bool,
    with_tasks: bool = True,
) -> RunInfo:
    """Report a run from its state.

    Args:
        state: the run's state file, read.
        run_dir: the run's folder.
        launched: what the gateway launched it with (``pipeline``, ``submitted_by``,
            ``parameters``); empty for a run started from the command line.
        locked: whether a runner process holds the run now.
        with_tasks: list every task (the run list leaves them out).
    """
    phase, message = _phase(state.status), state.message
    if state.status == RUNNING and not locked:
        phase, message = Phase.INTERRUPTED, _INTERRUPTED
    refusal = launched.get("refusal")
    if refusal and phase is Phase.FAILED:
        message = f"refused by {refusal['approver']}: {refusal['reason']}\n{message}"
    nodes = state.nodes
    waiting = sorted(n.name for n in nodes.values() if n.status == SUSPENDED and n.type == "Suspend")
    parameters = dict(launched.get("parameters") or {})
    params_file = run_dir / "params.json"
    if not parameters and params_file.is_file():
        parameters = {str(k): str(v) for k, v in json.loads(params_file.read_text(encoding="utf-8")).items()}
    ordered = sorted(nodes.values(), key=lambda n: (n.started or "~", n.name))
    return RunInfo(
        run_id=state.run_id,
        # a run started from the command line: its WorkflowTemplate's pipeline, as the gateway names it
        pipeline=str(launched.get("pipeline") or pipeline_named(state.workflow_name) or state.workflow_name),
        phase=phase,
        started=state.started,
        finished=state.finished,
        message=message,
        submitted_by=str(launched.get("submitted_by") or ""),
        parameters=parameters,
        progress=_progress([n for n in nodes.values() if _is_pod(n)]),
        tasks=[_task(n, nodes, phase) for n in ordered] if with_tasks else [],
        outputs={k: dict(n.outputs) for k, n in nodes.items() if n.outputs and n.status == "Succeeded"},
        waiting_gate=waiting[0] if phase is Phase.SUSPENDED and waiting else None,
    )
