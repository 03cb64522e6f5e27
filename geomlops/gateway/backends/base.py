"""The one interface the gateway's run backends implement: the local runner and Argo Server.

A backend starts a pipeline's run with parameters, tells where it is (phase, each task with its
progress and outputs), hands its logs, stops it, and decides a waiting approval gate. The
gateway's routes speak only to :class:`RunBackend`, so the same API drives runs on one machine
(``backends/local.py``) and in a cluster (``backends/argo.py``).

Who may call what is the gateway's business, not the backend's: ``submitted_by`` and
``approver`` arrive already authenticated and checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from geomlops.errors import GeomlopsError


class Phase(StrEnum):
    """Where a run or a task is, in Argo's words (plus the local runner's ``Suspended`` and
    ``Interrupted``: a run whose process ended without finishing it)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ERROR = "Error"
    SKIPPED = "Skipped"
    OMITTED = "Omitted"
    INTERRUPTED = "Interrupted"


#: Phases after which a run does not change any more (unless resumed).
FINISHED_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.ERROR, Phase.INTERRUPTED})


class Approval(BaseModel):
    """A decision recorded on a passed or refused gate."""

    model_config = ConfigDict(extra="forbid")

    approver: str
    reason: str = ""
    at: str | None = None
    override: bool = False
    decision: Literal["approved", "refused"] = "approved"
    """``refused``: the person refused (the gate failed, or passed the refusal on to the workflow)."""


class TaskInfo(BaseModel):
    """One task (node) of a run."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Task name (a DAG task or step; fan-out children as NAME(i:…)).")
    template: str = Field(default="", description="The template the task runs.")
    type: str = Field(default="", description="Pod, DAG, Steps, Suspend, Retry, TaskGroup…")
    phase: Phase
    started: str | None = Field(default=None, description="RFC 3339 start time.")
    finished: str | None = Field(default=None, description="RFC 3339 end time.")
    progress: str = Field(default="0/1", description="Argo's progress: finished/total pods, e.g. '2/3'.")
    message: str = ""
    outputs: dict[str, str] = Field(default_factory=dict, description="Output parameters.")
    attempts: int = Field(default=0, description="How many times the task started (retries included).")
    approval: Approval | None = Field(default=None, description="The decision on a gate (Suspend).")


class BlockProgress(BaseModel):
    """How far a batch inference run is: blocks predicted of those planned, and the time left."""

    model_config = ConfigDict(extra="forbid")

    done: int = Field(description="Blocks predicted (groups, where unit is 'groups').")
    total: int = Field(description="Blocks planned (groups, where unit is 'groups').")
    unit: str = Field(default="blocks", description="'blocks', or 'groups' where no block file is readable.")
    started: str | None = Field(default=None, description="RFC 3339 start of the run.")
    elapsed_s: float | None = Field(default=None, description="Seconds since the run started (to its end).")
    eta_s: float | None = Field(
        default=None, description="Estimated seconds left, from the rate of predicting so far; null: unknown."
    )


class RunInfo(BaseModel):
    """One run of a pipeline, as every backend reports it."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    pipeline: str = Field(description="Pipeline (WorkflowTemplate) the run was started from.")
    phase: Phase
    started: str | None = None
    finished: str | None = None
    message: str = Field(default="", description="Why the run failed or is waiting.")
    submitted_by: str = Field(default="", description="The authenticated caller who started it.")
    parameters: dict[str, str] = Field(default_factory=dict)
    progress: str = Field(default="0/0", description="Finished/total pods of the whole run.")
    tasks: list[TaskInfo] = Field(default_factory=list)
    outputs: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Output parameters of succeeded tasks, by task."
    )
    waiting_gate: str | None = Field(default=None, description="The suspended gate waiting for a decision.")
    blocks: BlockProgress | None = Field(
        default=None, description="A batch inference run's blocks done and planned (GET of one run only)."
    )
    aoi_bbox: list[float] | None = Field(
        default=None,
        description="A batch inference run's area of interest as W,S,E,N (WGS84; west > east across "
        "the antimeridian) when the gateway gave it; null: the whole imagery, or an area given as a "
        "file (GET of one run only).",
    )


class RunNotFoundError(GeomlopsError):
    """Raised when a backend knows no run of that id."""


class GateNotWaitingError(GeomlopsError):
    """Raised when a run is approved, refused or resumed but no gate of it is waiting."""


class RunStateError(GeomlopsError):
    """Raised when a run cannot do what was asked in its phase (stop a finished run, ...)."""


class BackendUnavailableError(GeomlopsError):
    """Raised when the backend's engine (a runner process, Argo Server) cannot be reached."""


@runtime_checkable
class RunBackend(Protocol):
    """What the gateway asks of a place that runs pipelines."""

    name: str

    def submit(self, pipeline: str, parameters: Mapping[str, str], *, submitted_by: str) -> RunInfo:
        """Start a run of ``pipeline`` with ``parameters`` (already checked against what the
        pipeline declares); return it, usually still ``Pending`` or ``Running``.

        Raises:
            ParameterError: the engine refuses a parameter.
            BackendUnavailableError: the run could not be started.
        """
        ...

    def get(self, run_id: str) -> RunInfo:
        """Return a run with every task.

        Raises:
            RunNotFoundError: no run has that id.
        """
        ...

    def list(self) -> list[RunInfo]:
        """Return every run this backend knows, newest first (tasks may be left out)."""
        ...

    def logs(self, run_id: str, task: str | None = None) -> str:
        """Return the logs of a run, or of one of its tasks.

        Raises:
            RunNotFoundError: no run has that id, or it has no task ``task``.
        """
        ...

    def stop(self, run_id: str) -> RunInfo:
        """Stop a running run (its exit handlers still run where the engine does so).

        Raises:
            RunNotFoundError: no run has that id.
            RunStateError: the run has already finished.
        """
        ...

    def approve(
        self,
        run_id: str,
        *,
        approver: str,
        reason: str,
        override: bool = False,
        outputs: Mapping[str, str] | None = None,
    ) -> RunInfo:
        """Pass the run's waiting gate as ``approver`` and let the run go on.

        ``approver``, ``reason`` and ``override`` reach the gate's supplied outputs (and from
        there the MLflow tags and STAC item) as the CLI's approval does; ``outputs`` sets other
        supplied output parameters of the gate by name.

        Raises:
            RunNotFoundError: no run has that id.
            GateNotWaitingError: no gate of the run is waiting.
        """
        ...

    def refuse(self, run_id: str, *, approver: str, reason: str) -> RunInfo:
        """Refuse the run's waiting gate: the gate fails (recording who and why) and the run ends.

        Raises:
            RunNotFoundError: no run has that id.
            GateNotWaitingError: no gate of the run is waiting.
        """
        ...
