"""The local runner: executes a rendered Argo Workflows manifest on one machine.

It runs the manifest itself (never a parallel Python definition), with Argo's semantics for
parameters, DAGs and steps, fan-outs, ``when``/``depends``, retries, suspend gates,
``templateRef``, exit handlers and artifacts; each task attempt runs in its own filesystem
view (a private ``/tmp``, the host read-only); it keeps each run's state on disk so that a
failed or interrupted run can be resumed, and it refuses, before running anything, every
Argo feature it does not execute (:func:`check_supported`).
"""

from __future__ import annotations

from .features import check_supported
from .model import Approval, Attempt, NodeState, RunState, RunSummary
from .runner import LocalRunner, RunInterrupted

__all__ = [
    "Approval",
    "Attempt",
    "LocalRunner",
    "NodeState",
    "RunInterrupted",
    "RunState",
    "RunSummary",
    "check_supported",
]
