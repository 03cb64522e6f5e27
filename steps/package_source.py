"""Where a model package comes from: a folder, an archive, or a git repository at a commit.

``geomlops package check`` and registration accept all three; each becomes a folder on this
machine. Nothing is ever fetched without being named exactly: a git source names its commit.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

from geomlops.errors import InvalidPackageError

#: archive suffixes a package may come in
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
#: ``git+<url>@<revision>``: the revision is a commit (hex), a tag or a branch
_GIT = re.compile(r"^git\+(?P<url>[a-z][a-z0-9+.-]*://.+?)@(?P<rev>[^@/]+)$")


def is_git_source(source: str) -> bool:
    """Whether ``source`` is a ``git+URL@REVISION`` package source."""
    return source.startswith("git+")


def open_package_source(source: str | Path, workdir: str | Path) -> Path:
    """The folder of the package at ``source``, unpacked or cloned under ``workdir`` if needed.

    Args:
        source: a package folder; a ``.tar.gz``/``.tgz``/``.tar``/``.zip`` archive of one (the
            package may sit in one top folder of the archive); or ``git+URL@REVISION``
            (``git+https://host/org/repo.git@<sha>``, ``git+file:///path/repo@<sha>``).
        workdir: where archives are unpacked and repositories cloned (created if needed; the
            package lands in ``workdir/package``, replacing what was there).

    Returns:
        The package folder (a folder source is returned as it is, resolved).

    Raises:
        InvalidPackageError: the source does not exist, is not a known kind, an archive holds
            a path outside itself, or git cannot fetch the revision.
    """
    text = str(source)
    if is_git_source(text):
        return _clone(text, Path(workdir) / "package")
    path = Path(text).expanduser().resolve()
    if path.is_dir():
        return path
    if not path.exists():
        raise InvalidPackageError(
            f"model package {text}: not found (expected a folder, an archive "
            f"({', '.join(ARCHIVE_SUFFIXES)}) or git+URL@COMMIT)"
        )
    if not path.name.endswith(ARCHIVE_SUFFIXES):
        raise InvalidPackageError(
            f"model package {text}: a file, but not an archive ({', '.join(ARCHIVE_SUFFIXES)})"
        )
    return _unpack(path, Path(workdir) / "package")


def _fresh(dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    return dest


def _unpack(archive: Path, dest: Path) -> Path:
    _fresh(dest)
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    _inside(dest, name, archive)
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter="data")  # refuses links and paths outside dest
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as err:
        shutil.rmtree(dest, ignore_errors=True)
        raise InvalidPackageError(f"model package {archive}: cannot unpack ({err})") from err
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    if not (dest / "MLproject").exists() and len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def _inside(dest: Path, name: str, archive: Path) -> None:
    target = (dest / name).resolve()
    if target != dest.resolve() and dest.resolve() not in target.parents:
        raise InvalidPackageError(f"model package {archive}: member {name!r} lies outside the archive")


def _clone(source: str, dest: Path) -> Path:
    match = _GIT.match(source)
    if match is None:
        raise InvalidPackageError(
            f"model package {source}: expected git+URL@REVISION, e.g. git+https://host/org/repo.git@<commit>"
        )
    url, rev = match["url"], match["rev"]
    _fresh(dest)
    steps = [
        ["git", "init", "-q", str(dest)],
        ["git", "-C", str(dest), "fetch", "-q", "--depth", "1", url, rev],
        ["git", "-C", str(dest), "checkout", "-q", "FETCH_HEAD"],
    ]
    for args in steps:
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(dest, ignore_errors=True)
            raise InvalidPackageError(
                f"model package {source}: git could not fetch revision {rev} of {url}: "
                f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
            )
    return dest


def materialize_package(source: str | Path, store: str | Path) -> Path:
    """The registered copy of the package at ``source``, for steps that run after this one.

    Every source, a folder too, is copied (a folder's package files only, as
    :func:`steps.package.stage_package` copies them), unpacked or cloned beside ``store``, then
    renamed to ``store/<first 16 hex of its content hash>``: the same content always lands in
    the same folder, a second registration reuses it, and no reader sees a half-written package.
    The copy is what the catalogue points at: later edits to the source do not change a
    registered model (register again), and tasks that cannot see the source (a sandboxed run,
    whose ``/tmp`` is its own; a pod) read the copy under the work folder.

    Args:
        source: as :func:`open_package_source` takes it.
        store: the folder keeping registered packages (e.g. ``$GEOMLOPS_HOME/packages``).

    Returns:
        The package folder.

    Raises:
        InvalidPackageError: as :func:`open_package_source`.
    """
    from steps.package import content_hash, stage_package

    text = str(source)
    store_dir = Path(store).resolve()
    folder = Path(text).expanduser().resolve()
    local = not is_git_source(text) and folder.is_dir()
    if local:
        if folder.parent == store_dir:  # a registered copy already
            return folder
        final = store_dir / content_hash(folder)[:16]
        if final.is_dir():
            return final
    store_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".incoming-", dir=store_dir))
    try:
        if local:  # the copy holds exactly the files the hash covers: the same hash
            root = stage_package(folder, work / "package")
        else:
            root = open_package_source(text, work)
            final = store_dir / content_hash(root)[:16]
        if not final.exists():
            try:
                root.rename(final)
            except OSError:  # another run put the same content there first
                if not final.is_dir():
                    raise
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)
