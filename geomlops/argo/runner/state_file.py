"""How a run's state sits on disk: ``<runs_dir>/<run_id>/state.json``, versioned.

The file is rewritten atomically (:func:`geomlops.files.write_atomic`) after every node
transition, so a run killed at any moment leaves a readable file behind, and ``resume`` can
tell which nodes already succeeded.

Every file records its layout's version in ``"format"``; a file without one is format 1, the
layout written before formats were recorded. Reading upgrades an older format one step at a
time to the current one (one function per step, as Raster Vision upgrades its configs) and
refuses a newer or unknown format rather than half-reading it. Fields this release does not
know are ignored (and dropped if it rewrites the file): a later release may add an optional
field without a new format, but a change an older release would misread needs a new format
and an upgrader here.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geomlops.errors import RunError
from geomlops.files import write_atomic

from .model import NodeState, RunState, now_iso

STATE_FILE = "state.json"

#: The format this release writes.
STATE_FORMAT = 2


def _from_format_1(data: dict[str, Any]) -> dict[str, Any]:
    """Format 1 is format 2 without the ``format`` field."""
    return {**data, "format": 2}


#: Upgraders by the format they read; each returns the next format.
_UPGRADERS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_format_1}

#: Every format this release reads.
READABLE_FORMATS = (*sorted(_UPGRADERS), STATE_FORMAT)


def state_json(state: RunState) -> str:
    """Return the text of ``state.json`` for ``state``, in the current format."""
    return json.dumps({"format": STATE_FORMAT, **state.to_dict()}, indent=2) + "\n"


def upgrade_state(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Return the JSON form of a run state upgraded to the current format.

    Args:
        data: the parsed content of a state file.
        path: where it was read (named in errors).

    Raises:
        RunError: the file's format is newer than this release's, or not one it knows.
    """
    found = data.get("format", 1)
    readable = ", ".join(str(f) for f in READABLE_FORMATS)
    if type(found) is not int or found not in READABLE_FORMATS:  # not bool, not 1.0
        if type(found) is int and found > STATE_FORMAT:
            raise RunError(
                f"run state {path} has format {found}, newer than this release reads (formats "
                f"{readable}): it was written by a later geomlops; use that release to resume or show it"
            )
        raise RunError(
            f"run state {path} has unknown format {found!r}; this release reads formats {readable}"
        )
    upgraded = data
    while (version := upgraded.get("format", 1)) != STATE_FORMAT:
        upgraded = _UPGRADERS[version](upgraded)
    return upgraded


def load_state(run_dir: Path) -> RunState:
    """Read ``state.json`` of a run folder, upgrading an older format.

    Raises:
        RunError: the folder holds no state, the file is unreadable, or its format is newer
            than (or unknown to) this release.
    """
    path = run_dir / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise RunError(f"no run state at {path}") from err
    except ValueError as err:
        raise RunError(f"run state {path} is unreadable: {err}") from err
    if not isinstance(data, dict):
        raise RunError(f"run state {path} is unreadable: expected a JSON object, got {type(data).__name__}")
    current = upgrade_state(data, path)
    try:
        return RunState.from_dict(current)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise RunError(f"run state {path} is unreadable: {err}") from err


class StateStore:
    """Thread-safe holder of a run's state, written to ``state.json`` after every change."""

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
        write_atomic(self.run_dir / STATE_FILE, state_json(self._state))
