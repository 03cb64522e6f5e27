"""Run state of the local runner: what each node did, and how it sits on disk.

The state of a run lives in ``<runs_dir>/<run_id>/state.json``. It is rewritten atomically
(temporary file + ``os.replace``) after every node transition, so a run killed at any moment
leaves a readable file behind, and ``resume`` can tell which nodes already succeeded.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from geomlops.errors import RunError

PENDING = "Pending"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
ERROR = "Error"
SKIPPED = "Skipped"
OMITTED = "Omitted"
SUSPENDED = "Suspended"

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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeState:
        """Build a node from its JSON form."""
        attempts = [Attempt(**a) for a in data.get("attempts", [])]
        return cls(**{**data, "attempts": attempts})


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
    resumed: list[str] = field(default_factory=list)
    nodes: dict[str, NodeState] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form written to ``state.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        """Build a run state from the JSON form of ``state.json``."""
        nodes = {k: NodeState.from_dict(v) for k, v in data.get("nodes", {}).items()}
        return cls(**{**data, "nodes": nodes})


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


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so that readers never see a partial file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(run_dir: Path) -> RunState:
    """Read ``state.json`` of a run folder.

    Raises:
        RunError: the folder holds no readable state.
    """
    path = run_dir / "state.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RunState.from_dict(data)
    except FileNotFoundError as err:
        raise RunError(f"no run state at {path}") from err
    except (ValueError, TypeError, KeyError) as err:
        raise RunError(f"run state {path} is unreadable: {err}") from err


class StateStore:
    """Thread-safe holder of a run's state, persisted after every change."""

    def __init__(self, run_dir: Path, state: RunState) -> None:
        self.run_dir = run_dir
        self._state = state
        self._lock = threading.Lock()
        self._save()

    def put(self, node: NodeState) -> None:
        """Record a node's current state (a copy, so later edits need another ``put``)."""
        if not node.name:
            return
        snapshot = copy.deepcopy(node)
        with self._lock:
            self._state.nodes[node.name] = snapshot
            self._save()

    def nodes(self) -> dict[str, NodeState]:
        """Return a copy of every recorded node."""
        with self._lock:
            return copy.deepcopy(self._state.nodes)

    def finish(self, status: str, message: str) -> RunState:
        """Record the run's final status and return a copy of the whole state."""
        with self._lock:
            self._state.status = status
            self._state.message = message
            self._state.finished = now_iso()
            self._save()
            return copy.deepcopy(self._state)

    def snapshot(self) -> RunState:
        """Return a copy of the whole state."""
        with self._lock:
            return copy.deepcopy(self._state)

    def _save(self) -> None:
        write_json_atomic(self.run_dir / "state.json", self._state.to_dict())
