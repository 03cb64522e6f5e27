"""Writing files and folders so that no reader ever sees them half-written.

What geomlops writes for others to read while it may still be writing (run state, catalogue
items, predictions and their rasters, serving manifests, the DVC data cache, S3 snapshots, the
links to its own packages) goes through :func:`atomic_path`:
the content is written under a hidden temporary name beside the target, in the same folder (so
the final rename never crosses a file system), and renamed onto the target only when complete.
On any error the temporary file or folder is removed and the target is left as it was.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: the middle of every temporary name, so that leftovers of a killed process are recognisable
PARTIAL = ".partial-"


def temporary_beside(path: Path) -> Path:
    """Return an unused hidden name in ``path``'s folder: ``.<name>.partial-<random><suffix>``.

    The target's suffix is kept at the end, so libraries that choose a format by extension
    (GDAL, pyarrow) write the right one.
    """
    return path.with_name(f".{path.name}{PARTIAL}{uuid.uuid4().hex[:12]}{path.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content at; move it onto ``path`` on success.

    Works for a file, a folder or a symbolic link created at the yielded path. A file or link
    replaces an existing target atomically. A folder replaces an existing folder in two renames
    (the old one aside, the new one in, then the old one removed): readers see the old folder
    or the new one, each whole, and for an instant neither. The target's folder must exist.

    Raises:
        FileNotFoundError: the target's folder does not exist, or nothing was written.
    """
    target = Path(path)
    tmp = temporary_beside(target)
    try:
        yield tmp
        if not tmp.exists() and not tmp.is_symlink():
            raise FileNotFoundError(f"{target}: nothing was written")
        if tmp.is_dir() and not tmp.is_symlink() and target.is_dir() and not target.is_symlink():
            old = temporary_beside(target)
            os.rename(target, old)
            os.rename(tmp, target)
            remove(old)
        else:
            os.replace(tmp, target)
    except BaseException:
        remove(tmp)
        raise


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, encoding: str = "utf-8") -> None:
    """Write ``data`` (text or bytes) to ``path`` so that readers see the old or the new file, whole."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding=encoding)


def remove(path: Path) -> None:
    """Remove a file, link or folder if it exists (nothing happens if it does not)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
