"""Synchronization: Argo's mutexes and semaphores, held on this machine with file locks.

As in Argo v4.1.2, ``synchronization`` sits on the workflow's spec (the lock is held from the
workflow's start to its end, exit handler included) or on a template (held while that
template's node runs, retries included), and holds ``mutexes`` (``{name, namespace}``) and
``semaphores`` (``{configMapKeyRef: {name, key}, namespace}``). Names may hold parameters.

In Argo a semaphore's limit is the value of a ConfigMap key. Locally the limit of
``configMapKeyRef {name: C, key: K}`` is given as ``C/K=LIMIT`` (``geomlops run --semaphore``),
or read from a ConfigMap found in the ``--templates`` files; a semaphore without a limit is
refused before anything runs. Database-backed locks (``database``) are refused by name.

A lock with limit N is N lock files under the runs folder's ``.locks/``; holding the lock is
holding one of them with ``flock``. So locks are shared by the tasks of a run and by every
run on this machine that uses the same runs folder, and the kernel frees them when a runner
dies, even killed.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from geomlops.errors import ManifestError, UnsupportedFeatureError

from .substitute import UnresolvedVariableError, substitute, to_argo_string
from .workflow import Workflow

#: how long a waiting node sleeps between tries
POLL_SECONDS = 0.02


@dataclass(frozen=True, order=True)
class Lock:
    """One mutex or semaphore: Argo's key (``ns/Mutex/name``, ``ns/ConfigMap/cm/key``) and limit."""

    key: str
    limit: int


def parse_limits(values: list[str] | tuple[str, ...]) -> dict[str, int]:
    """Parse ``CONFIGMAP/KEY=LIMIT`` options into semaphore limits.

    Raises:
        ManifestError: a value not of that form, or a limit that is not a positive integer.
    """
    limits: dict[str, int] = {}
    for value in values:
        name, sep, limit = value.partition("=")
        if not sep or name.count("/") != 1 or not all(name.split("/")) or not limit.strip().isdigit():
            raise ManifestError(
                f"--semaphore {value!r}: expected CONFIGMAP/KEY=LIMIT, e.g. my-config/workflow=2"
            )
        if int(limit) < 1:
            raise ManifestError(f"--semaphore {value!r}: the limit must be at least 1")
        limits[name] = int(limit)
    return limits


def locks_of(
    holder: Mapping[str, Any], scope: Mapping[str, str], limits: Mapping[str, int], namespace: str, where: str
) -> list[Lock]:
    """Return the locks ``holder`` (a workflow spec or a template) asks for, sorted.

    Raises:
        ManifestError: a malformed entry, or a semaphore with no limit given.
        UnsupportedFeatureError: a database-backed lock.
        UnresolvedVariableError: a variable in a name has no value.
    """
    sync = holder.get("synchronization")
    if sync is None:
        return []
    if not isinstance(sync, Mapping):
        raise ManifestError(f"synchronization of {where} must be a mapping")
    unknown = sorted(set(sync) - {"mutexes", "semaphores"})
    if unknown:
        raise ManifestError(
            f"synchronization of {where}: unknown field(s) {', '.join(unknown)} "
            "(Argo v4.1.2 has mutexes and semaphores)"
        )
    locks: set[Lock] = set()
    for mutex in _entries(sync, "mutexes", where):
        _refuse_database(mutex, where)
        name = substitute(to_argo_string(mutex.get("name", "")), scope)
        if not name:
            raise ManifestError(f"synchronization.mutexes of {where}: a mutex has no name")
        locks.add(Lock(f"{mutex.get('namespace') or namespace}/Mutex/{name}", 1))
    for semaphore in _entries(sync, "semaphores", where):
        _refuse_database(semaphore, where)
        ref = semaphore.get("configMapKeyRef")
        if not isinstance(ref, Mapping) or not ref.get("name") or not ref.get("key"):
            raise ManifestError(
                f"synchronization.semaphores of {where}: configMapKeyRef needs a name and a key"
            )
        config_map = substitute(to_argo_string(ref["name"]), scope)
        key = substitute(to_argo_string(ref["key"]), scope)
        limit = limits.get(f"{config_map}/{key}")
        if limit is None:
            raise ManifestError(
                f"semaphore {config_map}/{key} of {where} has no limit: in Argo it is key {key!r} of "
                f"ConfigMap {config_map!r}; locally pass --semaphore {config_map}/{key}=LIMIT (or a "
                "ConfigMap in a --templates file)"
            )
        locks.add(Lock(f"{semaphore.get('namespace') or namespace}/ConfigMap/{config_map}/{key}", limit))
    return sorted(locks)


def _entries(sync: Mapping[str, Any], field: str, where: str) -> list[Mapping[str, Any]]:
    entries = sync.get(field) or []
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise ManifestError(f"synchronization.{field} of {where} must be a list of mappings")
    return entries


def _refuse_database(entry: Mapping[str, Any], where: str) -> None:
    if entry.get("database"):
        raise UnsupportedFeatureError(
            f"the local runner does not support database-backed synchronization ({where}): "
            "its locks live in Argo's database; use a mutex or a ConfigMap semaphore"
        )


def check_synchronization(workflow: Workflow, limits: Mapping[str, int]) -> None:
    """Check every ``synchronization`` of a workflow before anything runs.

    Names holding variables are checked once substituted, when the node runs.

    Raises:
        ManifestError: a malformed entry, or a semaphore with no limit.
        UnsupportedFeatureError: a database-backed lock.
    """
    namespace = str(workflow.metadata.get("namespace") or "default")
    holders = [("spec", workflow.spec)]
    for templates in workflow.templates.values():
        holders += [(f"template {name!r}", t) for name, t in templates.items()]
    for where, holder in holders:
        try:
            locks_of(holder, {}, limits, namespace, where)
        except UnresolvedVariableError:
            continue


class Synchronizer:
    """Takes and gives back the locks of a run's workflow and nodes.

    Args:
        lock_dir: the folder of lock files (shared by every run using it).
        limits: semaphore limits, ``CONFIGMAP/KEY`` -> limit.
        namespace: the workflow's namespace (a lock's default namespace, as in Argo).
        aborted: set when the run stops: a node waiting for a lock gives up.
        notify: told once when a node starts waiting for a lock.
    """

    def __init__(
        self,
        lock_dir: Path,
        limits: Mapping[str, int],
        namespace: str,
        aborted: threading.Event,
        notify: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.lock_dir = lock_dir
        self.limits = dict(limits)
        self.namespace = namespace
        self.aborted = aborted
        self.notify = notify

    def locks(self, holder: Mapping[str, Any], scope: Mapping[str, str], who: str) -> list[Lock]:
        """Return the locks ``holder`` asks for, names substituted (see :func:`locks_of`)."""
        return locks_of(holder, scope, self.limits, self.namespace, who)

    @contextmanager
    def hold(self, locks: list[Lock], who: str) -> Iterator[bool]:
        """Hold ``locks`` while the block runs.

        Locks are taken in one order (sorted by key) so that two holders never wait on each
        other. Yields False, holding nothing, when the run was stopped while waiting.
        """
        held: list[IO[str]] = []
        try:
            for lock in sorted(locks):
                handle = self._acquire(lock, who)
                if handle is None:
                    break
                held.append(handle)
            yield len(held) == len(locks)
        finally:
            for handle in reversed(held):
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()

    def _acquire(self, lock: Lock, who: str) -> IO[str] | None:
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        stem = _file_stem(lock.key)
        waiting = False
        while not self.aborted.is_set():
            for slot in range(lock.limit):
                handle = (self.lock_dir / f"{stem}.{slot}").open("a")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                return handle
            if not waiting:
                waiting = True
                self.notify(f"… {who} waits for lock {lock.key} (limit {lock.limit})")
            time.sleep(POLL_SECONDS)
        return None


def _file_stem(key: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", key)
    return f"{cleaned}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
