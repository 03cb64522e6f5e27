"""One line per node transition on stderr, so a person sees where a run is."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from geomlops.argo.task_progress import read_progress

#: seconds between two reads of a task's progress file (Argo's executor: 3 s)
PROGRESS_READ_SECONDS = 1.0


class Reporter:
    """Prints progress lines (``▶ train``, ``· predict ██░░░░░░░░ 16/64 (25%)``, ``✓ train
    12.3s``...) when enabled."""

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream
        self._lock = threading.Lock()
        #: each running node's total and the tenth of it last said to be reached
        self._tenths: dict[str, tuple[int, int]] = {}

    def line(self, text: str) -> None:
        """Print one line (thread-safe)."""
        if not self.enabled:
            return
        stream = self.stream or sys.stderr
        with self._lock:
            print(text, file=stream, flush=True)

    def started(self, node: str, attempt: int, attempts: int) -> None:
        """A node started; a retry says which attempt it is (``attempts`` 0: no fixed limit)."""
        total = f"/{attempts}" if attempts else ""
        suffix = f" (attempt {attempt}{total})" if attempt > 1 else ""
        with self._lock:  # an attempt's progress starts again
            self._tenths.pop(node, None)
        self.line(f"▶ {node}{suffix}")

    def succeeded(self, node: str, seconds: float) -> None:
        """A node succeeded."""
        self.line(f"✓ {node} {seconds:.1f}s")

    def failed(self, node: str, attempt: int, attempts: int, why: str, retry_in: float | None) -> None:
        """An attempt failed; ``retry_in`` is the delay before the next one, if any."""
        total = f"/{attempts}" if attempts else ""
        suffix = f" (attempt {attempt}{total})" if attempts != 1 else ""
        then = f", retrying in {retry_in:g}s" if retry_in is not None else ""
        self.line(f"✗ {node}{suffix}: {why}{then}")

    def progressed(self, node: str, done: int, total: int) -> None:
        """A running node reported ``done`` of ``total`` (its self-reported progress): said each
        time it reaches another tenth, so a long task shows it moves without flooding the log
        (again from the start when its total changes); not when it is done (its ``✓`` line
        follows)."""
        if total <= 0 or not 0 < done < total:
            return
        tenth = done * 10 // total
        with self._lock:
            said_total, said = self._tenths.get(node, (total, 0))
            if said_total == total and tenth <= said:
                return
            self._tenths[node] = (total, tenth)
        bar = "█" * tenth + "░" * (10 - tenth)
        self.line(f"· {node} {bar} {done}/{total} ({100 * done // total}%)")

    def skipped(self, node: str, why: str) -> None:
        """A node was skipped or omitted."""
        self.line(f"○ {node} skipped: {why}")

    def reused(self, node: str) -> None:
        """A resumed run reuses a node that succeeded before."""
        self.line(f"↷ {node} already succeeded, reusing its outputs")

    def pending(self, node: str, why: str) -> None:
        """A node waits for room on the machine before its process starts."""
        self.line(f"… {node} pending: {why}")

    def waiting(self, node: str, why: str) -> None:
        """A suspend node waits."""
        self.line(f"⏸ {node} {why}")


@contextmanager
def progress_read(path: Path, changed: Callable[[int, int], None]) -> Iterator[None]:
    """While the block runs (a task's process), read the progress the task writes to ``path``
    (:mod:`geomlops.argo.task_progress`) every :data:`PROGRESS_READ_SECONDS`, and once more at
    the end; ``changed`` gets each new ``(N, M)``."""
    stop = threading.Event()
    last = None

    def read() -> None:
        nonlocal last
        found = read_progress(path)
        if found is not None and found != last:
            last = found
            changed(*found)

    def loop() -> None:
        while not stop.wait(PROGRESS_READ_SECONDS):
            read()

    reader = threading.Thread(target=loop, name=f"progress {path.parent.name}", daemon=True)
    reader.start()
    try:
        yield
    finally:
        stop.set()
        reader.join()
        read()
