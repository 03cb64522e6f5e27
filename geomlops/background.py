"""Work in threads beside the caller's: how many CPUs there are for it, and queues of calls.

Publishing predictions writes the feature files and cuts each zoom level of the tiles while the
next batch of features is merged: each of those is an :class:`InOrder` queue.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may keep busy: those it may run on, fewer where its control group
    caps its CPU time (a container's CPU limit: ``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us``
    over ``cpu.cfs_period_us`` in v1, as a container sees its own group), at least one."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            quota, *rest = (cgroup / quota_file).read_text().split()
            period = rest[0] if period_file is None else (cgroup / period_file).read_text().strip()
            if quota not in ("max", "-1"):
                cpus = min(cpus, math.ceil(int(quota) / int(period)))
        except (OSError, ValueError, IndexError):
            continue
    return max(1, cpus)


class NotMadeError(RuntimeError):
    """A call of an :class:`InOrder` queue not made because an earlier one failed (in it, or in
    a queue sharing its failure): that failure is what leaving the queue raises."""


class InOrder:
    """Calls made one after the other in a thread of their own, at most ``ahead`` of them
    waiting (:meth:`submit` waits beyond that, and raises there the error of a call it waited
    for). Leaving the ``with`` block waits for them all and raises the first error. Once a call
    has failed, or the caller left the block on an error, the calls after it are not made:
    nothing is written after the work has failed, and their futures say so."""

    def __init__(self, name: str, ahead: int = 1, failed: threading.Event | None = None) -> None:
        """``failed``: shared by queues whose work fails as one (a failure in any of them
        stops the calls of all)."""
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: deque[Future[Any]] = deque()
        self._ahead = ahead
        self._failure = failed if failed is not None else threading.Event()

    @property
    def _failed(self) -> bool:
        return self._failure.is_set()

    def _fail(self) -> None:
        self._failure.set()

    def submit(self, call: Callable[..., T], *args: Any) -> Future[T]:
        while len(self._pending) > self._ahead:
            self._pending.popleft().result()
        future = self._pool.submit(self._make, call, args)
        self._pending.append(future)
        return future

    def _make(self, call: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._failed:
            raise NotMadeError(f"{getattr(call, '__name__', call)!s} not made: an earlier call failed")
        try:
            return call(*args)
        except BaseException:
            self._fail()
            raise

    def __enter__(self) -> InOrder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: Any) -> None:
        try:
            if exc_type is not None:
                self._fail()
            first: BaseException | None = None
            while self._pending:
                error = self._pending.popleft().exception()
                if first is None and not isinstance(error, NotMadeError):  # the failure, not its echoes
                    first = error
            if first is not None and exc_type is None:
                raise first
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
