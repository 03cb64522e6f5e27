"""A task's own progress as Argo reads it: ``N/M`` (done of total) in the file that
``$ARGO_PROGRESS_FILE`` names, which Argo's executor reads while the pod runs and shows as the
node's progress (its self-reported progress, overriding the pod's ``0/1``). The local runner reads
it likewise (:mod:`geomlops.argo.runner`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: the variable naming the file, set in every task's environment
PROGRESS_ENV = "ARGO_PROGRESS_FILE"
_PROGRESS = re.compile(r"^(\d+)/(\d+)$")


def report_progress(done: int, total: int) -> None:
    """Say that ``done`` of ``total`` are done, where the task runs under Argo (or the local
    runner); nothing elsewhere. The file is replaced whole, so it is never read half-written; a
    file that cannot be written fails nothing (progress is not worth failing a task for)."""
    path = os.environ.get(PROGRESS_ENV)
    if not path:
        return
    staged = f"{path}.{os.getpid()}.tmp"
    try:
        Path(staged).write_text(f"{done}/{total}\n", encoding="ascii")
        os.replace(staged, path)
    except OSError:
        pass


def parse_progress(text: str) -> tuple[int, int] | None:
    """``(done, total)`` of a progress ``N/M``, or None where ``text`` is not one."""
    match = _PROGRESS.match(text.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def read_progress(path: Path) -> tuple[int, int] | None:
    """``(done, total)`` as the file says, or None where it is absent, not ``N/M``, or more
    done than the total."""
    try:
        found = parse_progress(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError):
        return None
    return found if found is not None and 0 < found[1] >= found[0] else None
