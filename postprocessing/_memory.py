"""Hand freed heap memory back to the operating system (glibc), between rows of blocks.

The merge and the writer free large temporaries row after row; glibc keeps much of that memory
in its heaps, where the process's resident size still counts it, until ``malloc_trim`` returns
it. Elsewhere (musl, macOS, Windows) this does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable
from typing import Any


@functools.cache
def _malloc_trim() -> Callable[[int], Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter runs on
    except OSError:  # pragma: no cover - a Linux without a loadable C library
        return None
    trim: Callable[[int], Any] | None = getattr(libc, "malloc_trim", None)  # glibc only
    return trim


def release_freed_memory() -> bool:
    """Return the free pages of the C heap to the system; whether there was a way to."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
