"""Thin Dask layer: run one function over many blocks on any Dask scheduler, results in order.

Local schedulers (``synchronous``, ``threads``, ``processes``) get one pool for the whole run, so
workers keep their per-thread tracing buffers from block to block. A scheduler address
(``tcp://host:port``, also ``tls://``, ``ucx://``, ``inproc://``) goes to a ``distributed.Client``.
The per-block work stays a plain function; nothing here knows about polygons.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

from dask.base import compute
from dask.callbacks import Callback
from dask.delayed import delayed

from geomlops.errors import VectorizeError

R = TypeVar("R")

LOCAL_SCHEDULERS = ("synchronous", "threads", "processes")
_ADDRESS_SCHEMES = ("tcp://", "tls://", "ucx://", "inproc://")


def check_scheduler(scheduler: str) -> str:
    """Return ``scheduler`` if it names a local scheduler or a distributed scheduler address.

    Raises:
        VectorizeError: naming the value and what is accepted.
    """
    if scheduler in LOCAL_SCHEDULERS or scheduler.startswith(_ADDRESS_SCHEMES):
        return scheduler
    raise VectorizeError(
        f"scheduler {scheduler!r}: expected one of {', '.join(LOCAL_SCHEDULERS)} "
        "or a Dask scheduler address such as tcp://HOST:PORT"
    )


def _local_get(scheduler: str) -> Callable[..., Any]:
    """Dask's own function for a named local scheduler.

    Given the function rather than its name, ``dask.compute`` skips its search for a default
    ``distributed`` client, which imports ``distributed`` (some 15 MB and half a second) into a
    run that never uses it. The scheduler that runs the blocks is the same.
    """
    if scheduler == "threads":
        from dask import threaded

        return threaded.get
    if scheduler == "processes":
        from dask import multiprocessing as dask_processes

        return dask_processes.get
    from dask import local

    return local.get_sync


class _Failure:
    """An exception raised while computing a batch, carried to the consuming thread."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class BlockExecutor:
    """Runs a function over argument tuples on one Dask scheduler; use it as a context manager.

    Args:
        scheduler: ``synchronous``, ``threads``, ``processes`` or a scheduler address.
        workers: threads or processes for local schedulers (default: the CPU count).

    Raises:
        VectorizeError: on an unknown scheduler, or an address when ``distributed`` is missing.
    """

    def __init__(self, scheduler: str, workers: int | None = None) -> None:
        self.scheduler = check_scheduler(scheduler)
        self.workers = 1 if scheduler == "synchronous" else max(1, workers or os.cpu_count() or 1)
        self._pool: Executor | None = None
        self._client: Any = None
        if scheduler == "threads":
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="geomlops-block")
        elif scheduler == "processes":
            # spawn: no forked copies of the parent's buffers or locks
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context)
        elif scheduler not in LOCAL_SCHEDULERS:
            try:
                from distributed import Client  # type: ignore[import-not-found,unused-ignore]
            except ImportError as err:
                raise VectorizeError(
                    f"scheduler {scheduler}: a scheduler address needs the 'distributed' package"
                ) from err
            try:
                self._client = Client(scheduler, set_as_default=False, timeout=30)  # type: ignore[no-untyped-call,unused-ignore]
            except OSError as err:
                raise VectorizeError(f"scheduler {scheduler}: cannot connect ({err})") from err
            self.workers = max(1, sum(self._client.nthreads().values()))

    def map(
        self,
        func: Callable[..., R],
        args: Sequence[tuple[Any, ...]],
        on_done: Callable[[], None] | None = None,
    ) -> list[R]:
        """``[func(*a) for a in args]``, computed on the scheduler.

        Args:
            func: a module-level function (it may travel to other processes or machines).
            args: one argument tuple per call.
            on_done: called once for each finished call (progress bars).

        Returns:
            The results, in the order of ``args``.
        """
        if not args:
            return []
        if self._client is not None:
            return self._map_distributed(func, args, on_done)
        # partials wrapped untraversed: dask need not search the arguments for collections
        tasks = [delayed(functools.partial(func, *a), pure=False, traverse=False)() for a in args]
        options: dict[str, Any] = {"scheduler": _local_get(self.scheduler), "optimize_graph": False}
        if self._pool is not None:
            options.update(pool=self._pool, num_workers=self.workers)
        if on_done is None:
            return list(compute(*tasks, **options))  # type: ignore[no-untyped-call]
        with Callback(posttask=lambda *_: on_done()):  # type: ignore[no-untyped-call]
            return list(compute(*tasks, **options))  # type: ignore[no-untyped-call]

    def map_batches(
        self,
        func: Callable[..., R],
        batches: Iterable[Sequence[tuple[Any, ...]]],
        on_done: Callable[[], None] | None = None,
    ) -> Iterator[list[R]]:
        """``map`` over successive batches, computing the next batch while the caller uses one.

        At most one finished batch waits, so memory holds two batches and the one in progress.

        Args:
            func: a module-level function.
            batches: argument tuples, batch by batch.
            on_done: called once for each finished call.

        Yields:
            Each batch's results, in order.
        """
        done = object()
        results: queue.Queue[Any] = queue.Queue(maxsize=1)
        stop = threading.Event()

        def produce() -> None:
            try:
                for batch in batches:
                    if stop.is_set():
                        return
                    results.put(self.map(func, batch, on_done))
                results.put(done)
            except BaseException as err:  # noqa: BLE001 - re-raised in the consuming thread
                results.put(_Failure(err))

        worker = threading.Thread(target=produce, name="geomlops-batches", daemon=True)
        worker.start()
        try:
            while (item := results.get()) is not done:
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            stop.set()
            while worker.is_alive():  # let a producer blocked on put() finish
                with contextlib.suppress(queue.Empty):
                    results.get(timeout=0.1)
            worker.join()

    def _map_distributed(
        self, func: Callable[..., R], args: Sequence[tuple[Any, ...]], on_done: Callable[[], None] | None
    ) -> list[R]:
        from distributed import as_completed  # type: ignore[import-not-found,unused-ignore]

        columns = list(zip(*args, strict=True))
        futures = self._client.map(func, *columns, pure=False)
        for _ in as_completed(futures, loop=self._client.loop):  # type: ignore[no-untyped-call,unused-ignore]
            if on_done:
                on_done()
        results: list[R] = self._client.gather(futures)
        return results

    def close(self) -> None:
        """Shut down the pool or the client connection."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> BlockExecutor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
