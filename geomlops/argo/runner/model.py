"""Run state of the local runner: what each node did, as objects and their JSON form.

These objects only convert to and from dicts; :mod:`.state_file` keeps them on disk.
``from_dict`` ignores fields it does not know, so a state written with a field added later
still reads (see :mod:`.state_file` for how the layout is versioned).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

PENDING = "Pending"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
ERROR = "Error"
SKIPPED = "Skipped"
OMITTED = "Omitted"
SUSPENDED = "Suspended"
#: A run stopped by a signal (or whose runner process died); ``resume`` continues it.
INTERRUPTED = "Interrupted"

#: Node phases after which a node does not change any more.
DONE_PHASES = frozenset({SUCCEEDED, FAILED, ERROR, SKIPPED, OMITTED})
FAILED_PHASES = frozenset({FAILED, ERROR})


def now_iso() -> str:
    """Return the current UTC time as an RFC 3339 string, as Argo writes timestamps."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> datetime | None:
    """Parse a timestamp written by :func:`now_iso` (``None`` stays ``None``)."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Approval:
    """Who approved a suspended step, and why; given up front or typed at the prompt.

    ``override`` says the approver explicitly overrides a policy the workflow applies (the
    promotion gate's ``override`` output); it is recorded with the approval.
    """

    approver: str
    reason: str
    override: bool = False
    #: values of the gate's other supplied output parameters, by name (``-o name=value``)
    outputs: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Attempt:
    """One execution of a pod-like node (a script or container), retries included."""

    number: int
    started: str
    finished: str | None = None
    status: str = RUNNING
    exit_code: int | None = None
    message: str = ""
    log: str = ""


@dataclass
class NodeState:
    """What one node of the workflow did: a task, a step, a fan-out group or a suspend."""

    name: str
    template: str
    type: str
    status: str = PENDING
    started: str | None = None
    finished: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    result: str | None = None
    exit_code: int | None = None
    message: str = ""
    log: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    approval: dict[str, str] | None = None
    #: output artifacts by name: where each is stored (see :mod:`.artifacts`)
    artifacts: dict[str, dict[str, str]] = field(default_factory=dict)
    #: what the task reported of its own progress, ``N/M`` (:mod:`geomlops.argo.task_progress`)
    progress: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeState:
        """Build a node from its JSON form, ignoring fields it does not know.

        Raises:
            ValueError: a field without a default is missing (in the node or an attempt).
        """
        attempts = [_build(Attempt, a) for a in data.get("attempts") or []]
        return _build(cls, {**data, "attempts": attempts})


@dataclass
class RunState:
    """Everything the runner records about one run (``state.json``)."""

    run_id: str
    workflow_name: str
    workflow_uid: str
    argo_name: str
    status: str
    started: str
    finished: str | None = None
    message: str = ""
    pid: int = 0
    #: when the runner process ``pid`` started (clock ticks after boot), to detect pid reuse
    pid_started: int = 0
    resumed: list[str] = field(default_factory=list)
    nodes: dict[str, NodeState] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form written to ``state.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        """Build a run state from its JSON form, ignoring fields it does not know.

        Raises:
            ValueError: a field without a default is missing (in the run, a node or an attempt).
        """
        nodes = {k: NodeState.from_dict(v) for k, v in (data.get("nodes") or {}).items()}
        return _build(cls, {**data, "nodes": nodes})


@dataclass(frozen=True)
class RunSummary:
    """The outcome of a run, as ``run``, ``resume`` and ``list_runs`` report it.

    ``outputs`` maps node names (task names for top-level DAG tasks) to their output
    parameters; ``message`` says why a run failed or is waiting.
    """

    run_id: str
    workflow_name: str
    status: str
    run_dir: Path
    started: datetime | None
    finished: datetime | None
    outputs: dict[str, dict[str, str]]
    message: str

    @classmethod
    def from_state(cls, state: RunState, run_dir: Path, message: str | None = None) -> RunSummary:
        """Summarise a run state; ``message`` replaces the recorded message when given."""
        outputs = {
            name: dict(node.outputs)
            for name, node in state.nodes.items()
            if node.outputs and node.status == SUCCEEDED
        }
        return cls(
            run_id=state.run_id,
            workflow_name=state.workflow_name,
            status=state.status,
            run_dir=run_dir,
            started=parse_time(state.started),
            finished=parse_time(state.finished),
            outputs=outputs,
            message=state.message if message is None else message,
        )


_Record = TypeVar("_Record", bound="DataclassInstance")


def _build(cls: type[_Record], data: dict[str, Any]) -> _Record:
    """Build dataclass ``cls`` from the fields of ``data`` it declares; others are ignored."""
    declared = dataclasses.fields(cls)
    missing = [
        f.name
        for f in declared
        if f.name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{cls.__name__} lacks field(s) {', '.join(missing)}")
    return cls(**{f.name: data[f.name] for f in declared if f.name in data})
