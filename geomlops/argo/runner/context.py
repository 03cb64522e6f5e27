"""What a DAG, steps or suspend template sees of the engine running it.

:mod:`.scheduling` and :mod:`.suspend` run templates for :class:`.engine.Engine` and call back
into it (to run a task, record a node). They see it through :class:`RunContext`, declared
here below all three, so that neither imports the engine that imports them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .model import SKIPPED, Approval, NodeState
from .outcome import Outcome
from .progress import Reporter
from .state_file import StateStore
from .workflow import Workflow

#: ``(image, environment) -> environment or None``: how a process of ``image`` runs here
ImageEnvironment = Callable[[str, Mapping[str, str]], "dict[str, str] | None"]


@dataclass
class EngineOptions:
    """How the engine runs: concurrency, approvals, prompt and extra environment."""

    max_workers: int = 4
    approval: Approval | None = None
    interactive: bool = False
    prompt: Callable[[str], str] = input
    env: Mapping[str, str] = field(default_factory=dict)
    #: checks and normalises a name typed at the prompt (a domain rule, passed in by the caller);
    #: raises GeomlopsError to refuse it. None accepts any name.
    approver_check: Callable[[str], str] | None = None
    #: semaphore limits, ``CONFIGMAP/KEY`` -> limit (Argo reads them from ConfigMaps)
    semaphores: Mapping[str, int] = field(default_factory=dict)
    #: the environment a process of an image runs with on this machine (a stand-in for the
    #: image, given the environment built so far), or None for an image with no stand-in
    image_environment: ImageEnvironment | None = None
    #: run ``container`` templates whose image has no stand-in on this machine's own programs
    allow_host_containers: bool = False
    #: the node tasks are placed on by their resource requests (:mod:`.node`): ``cpu`` (cores)
    #: and ``memory`` (bytes), a resource it does not name not counted; None: this machine's
    capacity: Mapping[str, float] | None = None


class RunContext(Protocol):
    """The engine, as the templates it runs see it (:class:`.engine.Engine` implements it)."""

    @property
    def workflow(self) -> Workflow:
        """The workflow being run."""

    @property
    def store(self) -> StateStore:
        """The run's state, saved after every change."""

    @property
    def reporter(self) -> Reporter:
        """Where progress lines go."""

    @property
    def options(self) -> EngineOptions:
        """How the run was asked to go."""

    @property
    def previous(self) -> Mapping[str, NodeState]:
        """The nodes an earlier run of this run id recorded (empty for a new run)."""

    @property
    def workers(self) -> int:
        """The most processes that may run at once."""

    @property
    def aborted(self) -> threading.Event:
        """Set when the run is being stopped: start nothing new."""

    def run_call(
        self, name: str, source: str | None, call: Mapping[str, Any], scope: Mapping[str, str]
    ) -> Outcome:
        """Run one (already expanded) DAG task or step as node ``name``."""

    def error_node(self, name: str, template: str, message: str) -> Outcome:
        """Record a node that could not run."""

    def skipped_node(self, name: str, template: Mapping[str, Any], why: str, phase: str = SKIPPED) -> Outcome:
        """Record a skipped or omitted node."""

    def close(self, node: NodeState, phase: str, message: str) -> Outcome:
        """Record a node's final phase (or Suspended) and return its outcome."""

    def export_globals(
        self,
        template: Mapping[str, Any],
        outputs: Mapping[str, str],
        artifacts: Mapping[str, dict[str, str]] | None = None,
    ) -> None:
        """Publish outputs (and output artifacts) that declare a ``globalName``."""

    def global_scope(self) -> dict[str, str]:
        """The workflow-wide variables now (global outputs published so far included)."""
