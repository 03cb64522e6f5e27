"""Each task attempt in its own filesystem view, as a pod has, with bubblewrap.

On Argo every pod has a filesystem of its own: two tasks writing ``/tmp/out.txt`` at once
each see their own file, and nothing a task writes reaches the node. Here each attempt runs
under bubblewrap (``bwrap``, Debian's ``bubblewrap`` package) with:

- the host's root bound **read-only** (``--ro-bind / /``, submounts included), ``/dev`` as
  the host's (GPUs stay visible) with a private ``/dev/shm``, a fresh ``/proc``;
- a private, empty ``/tmp`` and ``/var/tmp`` (the attempt's ``tmp/`` and ``var-tmp/``
  folders, kept afterwards so that output parameters and artifacts are read from the task's
  own paths), and ``TMPDIR=/tmp``;
- read-write: the attempt's own folder (its working directory) and the folders the runner is
  told are writable: the folder holding the runs (``$GEOMLOPS_HOME`` for ``geomlops run``),
  where geomlops steps keep their work folders, MLflow's SQLite file, the static catalogue
  and the DVC repository, and any path ``geomlops run`` derives from the settings;
- absolute paths given as workflow parameters, as a volume would mount them on Argo
  (:func:`parameter_paths`): a file read-only, a folder writable, even under ``/tmp``;
- its own PID namespace and ``--die-with-parent``: when the runner stops an attempt (a
  signal, a deadline) or dies, every process of the attempt goes with it.

Why bubblewrap rather than ``unshare`` from util-linux: ``unshare`` only creates the
namespaces, and the mounts (bind each writable path before hiding ``/tmp`` under the private
one, remount every submount read-only one by one, create mount points) would be a shell
script of ours, order-sensitive and easy to get subtly wrong. bubblewrap builds the view
from a declarative list (later mounts on top of earlier ones, mount points created in the new
root, read-only binds recursive), is what Flatpak runs every application in, works as root
and unprivileged (user namespaces), and adds ``--die-with-parent`` and a PID namespace.

A stopped attempt gets SIGTERM in its own processes (bubblewrap passes no signal on) and
SIGKILL after the grace period (:func:`.execute.signal_group`).

Where bubblewrap is missing or cannot create namespaces (a container without them), the
runner refuses to start with a message saying so; ``GEOMLOPS_SANDBOX=off`` (or
``geomlops run --no-sandbox``, ``LocalRunner(sandbox=False)``) runs tasks unisolated on the
host, reported once per run. Unisolated, declared output paths are moved under the attempt's
``root/`` folder (see :meth:`Sandbox.remap`) so that parallel tasks writing them through
``{{outputs.parameters.X.path}}`` do not collide, as the runner did before it had a sandbox.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from geomlops.errors import RunError
from geomlops.settings import Settings

#: set to ``off`` to run tasks unisolated (no bubblewrap)
SANDBOX_ENV = "GEOMLOPS_SANDBOX"
#: the folders each attempt gets a private, empty copy of
PRIVATE_TMP = ("/tmp", "/var/tmp")
UNISOLATED_NOTE = (
    f"tasks run unisolated ({SANDBOX_ENV}=off): they share this machine's /tmp and can write "
    "anywhere this user can"
)


def sandbox_wanted(flag: bool | None) -> bool:
    """Whether tasks run in the sandbox: ``flag`` if given, else unless ``GEOMLOPS_SANDBOX=off``."""
    if flag is not None:
        return flag
    return os.environ.get(SANDBOX_ENV, "").strip().lower() not in ("off", "0", "false", "no")


@functools.cache
def bwrap_path() -> str:
    """The bubblewrap executable, checked to work here.

    Raises:
        RunError: bubblewrap is not installed or cannot create its namespaces; the message
            says how to install it and how to run unisolated instead.
    """
    found = shutil.which("bwrap")
    fallback = f"or set {SANDBOX_ENV}=off (geomlops run --no-sandbox) to run tasks unisolated"
    if found is None:
        raise RunError(
            "the local runner isolates each task with bubblewrap (bwrap), which is not installed: "
            "install it (Debian, Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap), "
            + fallback
        )
    probe = subprocess.run(
        [found, "--ro-bind", "/", "/", "--unshare-pid", "--die-with-parent", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        raise RunError(
            f"bubblewrap ({found}) cannot create a sandbox here: {probe.stderr.strip() or probe.returncode} "
            f"(user namespaces may be disabled: sysctl kernel.unprivileged_userns_clone=1) {fallback}"
        )
    return found


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


@dataclass(frozen=True)
class Sandbox:
    """The filesystem one attempt sees, and where its paths are on this machine.

    Args:
        root: ``<attempt folder>/root``: where unisolated declared output paths are moved.
        files: declared output paths moved under ``root`` (unisolated only).
        prefixes: their parent folders, moved likewise (never a top-level folder).
        isolated: whether the attempt runs under bubblewrap.
        writable: host folders the attempt may write (isolated only).
        readable: host files it reads where its private folders would hide them (isolated only).
        mounts: the pod's ``emptyDir`` volumes this container mounts: ``(mountPath, host
            folder)``. Isolated, each folder is bound at its mount path; unisolated, paths under a
            mount path are moved to its folder (:meth:`remap`), so two pods never share one.
    """

    root: Path
    files: frozenset[str]
    prefixes: tuple[str, ...]
    isolated: bool = False
    writable: tuple[Path, ...] = ()
    readable: tuple[Path, ...] = ()
    mounts: tuple[tuple[str, Path], ...] = ()

    def _mounted(self, path: str) -> Path | None:
        for mount_path, folder in self.mounts:
            if _under(path, mount_path):
                return folder.joinpath(*PurePosixPath(path).relative_to(mount_path).parts)
        return None

    @property
    def folder(self) -> Path:
        """The attempt's folder: its working directory."""
        return self.root.parent

    def private(self, folder: str) -> Path:
        """Where the attempt's private ``folder`` (``/tmp``, ``/var/tmp``) is on this machine."""
        return self.folder / folder.strip("/").replace("/", "-")

    def remap(self, value: str) -> str:
        """Return ``value`` moved under ``root`` when it is a moved absolute path."""
        if not value.startswith("/"):
            return value
        if not self.isolated and (mounted := self._mounted(value)) is not None:
            return str(mounted)
        if value in self.files or any(_under(value, prefix) for prefix in self.prefixes):
            return str(self.root / value.lstrip("/"))
        return value

    def host_path(self, path: str) -> Path:
        """Where ``path`` of the task's filesystem is on this machine (relative: its folder)."""
        if not path.startswith("/"):
            return self.folder / path
        if (mounted := self._mounted(path)) is not None:
            return mounted
        if self.isolated:
            for private in PRIVATE_TMP:
                given = (*self.writable, *self.readable)
                if _under(path, private) and not any(_under(path, str(w)) for w in given):
                    return self.private(private).joinpath(*PurePosixPath(path).relative_to(private).parts)
            return Path(self.remap(path))
        remapped = Path(self.remap(path))
        if not remapped.exists() and Path(path).exists():  # written at the literal path
            return Path(path)
        return remapped

    def command(self, argv: Sequence[str], working_dir: str = "") -> list[str]:
        """Return ``argv`` wrapped in bubblewrap (unchanged when unisolated), started in
        ``working_dir`` of the task's view (default: the attempt's folder)."""
        if not self.isolated:
            return list(argv)
        view = [
            bwrap_path(),
            "--ro-bind", "/", "/",
            "--dev-bind", "/dev", "/dev",
            "--tmpfs", "/dev/shm",
            "--proc", "/proc",
        ]  # fmt: skip
        for private in PRIVATE_TMP:
            view += ["--bind", str(self.private(private)), private]
        for path in self.readable:  # first: a writable folder inside one stays writable
            view += ["--ro-bind", str(path), str(path)]
        for path in (*self.writable, self.folder):
            view += ["--bind", str(path), str(path)]
        for mount_path, folder in self.mounts:  # last: a volume is mounted over what is there
            view += ["--bind", str(folder), mount_path]
        view += ["--setenv", "TMPDIR", "/tmp", "--unshare-pid", "--die-with-parent"]
        return [*view, "--chdir", working_dir or str(self.folder), "--", *argv]


def make_sandbox(
    work_dir: Path,
    output_paths: Sequence[str],
    *,
    isolated: bool = False,
    writable: Sequence[Path] = (),
    readable: Sequence[Path] = (),
    mounts: Sequence[tuple[str, Path]] = (),
) -> Sandbox:
    """Create the filesystem view of one attempt.

    Args:
        work_dir: the attempt's folder.
        output_paths: the template's declared paths (output parameters, artifacts).
        isolated: run under bubblewrap (a private ``/tmp``, the host read-only).
        writable: host folders the attempt may write when isolated.
        readable: host files the attempt reads, visible even under a private folder.
        mounts: ``(mountPath, host folder)`` of the pod's ``emptyDir`` volumes it mounts.

    Isolated, a declared path under a private ``/tmp`` is the task's own already; one
    elsewhere (``/mnt/out/x``) cannot be created on the read-only host, so it is moved under
    ``root/`` as unisolated paths are (``{{outputs.parameters.X.path}}`` and environment values
    name the moved path).
    """
    root = work_dir / "root"
    files: set[str] = set()
    prefixes: set[str] = set()
    kept = tuple(Path(os.path.realpath(p)) for p in writable)
    for path in output_paths:
        pure = PurePosixPath(path)
        if not pure.is_absolute():
            continue
        if isolated and (
            any(_under(str(pure), t) for t in PRIVATE_TMP) or any(_under(str(pure), str(w)) for w in kept)
        ):
            continue
        files.add(str(pure))
        prefixes.update(str(parent) for parent in pure.parents if len(parent.parts) > 2)
        (root / str(pure.parent).lstrip("/")).mkdir(parents=True, exist_ok=True)
    sandbox = Sandbox(
        root,
        frozenset(files),
        tuple(sorted(prefixes, key=len, reverse=True)),
        isolated,
        kept if isolated else (),
        (*readable, *interpreter_paths()) if isolated else (),
        tuple(mounts),
    )
    if isolated:
        for private in PRIVATE_TMP:
            sandbox.private(private).mkdir(parents=True, exist_ok=True)
        for path in output_paths:  # their folders exist, as they did before the sandbox
            if path.startswith("/") and path not in files:
                sandbox.host_path(path).parent.mkdir(parents=True, exist_ok=True)
    return sandbox


@functools.cache
def interpreter_paths() -> tuple[Path, ...]:
    """This interpreter's environment and the folders it imports from, where a private folder
    would hide them (a checkout or a virtual environment under ``/tmp``): tasks run geomlops'
    own code with it, so they must see it, read-only."""
    seen: list[Path] = []
    for value in (sys.prefix, sys.exec_prefix, sys.base_prefix, *sys.path):
        if not value or not os.path.isabs(value) or not os.path.exists(value):
            continue
        path = Path(os.path.realpath(value))
        inside = any(_under(str(path), private) and str(path) != private for private in PRIVATE_TMP)
        if inside and not any(_under(str(path), str(other)) for other in seen):
            seen = [other for other in seen if not _under(str(other), str(path))] + [path]
    return tuple(seen)


def settings_writable_paths(settings: Settings) -> list[Path]:
    """The host folders geomlops' own steps write, from the settings in force.

    The work folder (``$GEOMLOPS_HOME``: runs, work folders, and by default MLflow's SQLite
    file and artifacts, the static catalogue, the DVC repository and remote), and each of
    those configured elsewhere as a local path (a SQLite file's folder, since SQLite writes
    its journal beside it). Folders that do not exist yet are created, so they can be bound.
    """
    found = [settings.home_dir]
    if settings.sqlite_store is not None:
        found.append(settings.sqlite_store.parent)
    stores = [settings.artifact_root, settings.catalog_root]
    for value in [*stores, settings.data_repo_url, settings.dvc_remote_url]:
        if not value or ("://" in value and not value.startswith("file://")):
            continue
        path = Path(value.removeprefix("file://"))
        found.append(path.parent if path.suffix == ".json" else path)
    unique: list[Path] = []
    for path in found:
        path = path.expanduser().resolve()
        if path not in unique:
            path.mkdir(parents=True, exist_ok=True)
            unique.append(path)
    return unique


def absent_paths(values: Iterable[str]) -> set[Path]:
    """The absolute paths among ``values`` that do not exist (yet): :func:`parameter_paths`
    makes a folder of each whose parent folder exists, for a run's outputs."""
    return {
        Path(os.path.realpath(v))
        for v in values
        if v.startswith("/") and "\n" not in v and len(v) <= 4096 and not os.path.lexists(v)
    }


def remove_if_empty(folders: Iterable[Path]) -> list[Path]:
    """Remove each of ``folders`` that is still empty (made for a run that wrote nothing there:
    most likely a mistyped input path, which no folder should be left behind for).

    Returns:
        The folders removed.
    """
    removed = []
    for folder in folders:
        try:
            folder.rmdir()  # only an empty folder
        except OSError:
            continue
        removed.append(folder)
    return removed


def parameter_paths(values: Iterable[str]) -> tuple[list[Path], list[Path]]:
    """The host paths a run is given as parameter values: (files to read, folders to write).

    Locally a path passed with ``-p`` stands for what a volume would mount on Argo, so tasks
    see it at the same path even where their private ``/tmp`` would hide it: an existing file
    read-only; an existing folder, or a path that does not exist yet in an existing folder (an
    output folder, created here; :func:`remove_if_empty` removes it after the run if nothing
    was written there), writable; a ``file://`` or ``git+file://...@REV`` location
    read-only. ``/``, ``/tmp`` and ``/var/tmp`` themselves never
    are (that would undo the isolation).
    """
    files: list[Path] = []
    folders: list[Path] = []
    for value in values:
        if "\n" in value or len(value) > 4096:
            continue
        if value.startswith(("file://", "git+file://")):  # a local repository or file: read only
            location = value.split("file://", 1)[1]
            location = location.rsplit("@", 1)[0] if value.startswith("git+") else location
            if location.startswith("/") and os.path.exists(location):
                files.append(Path(os.path.realpath(location)))
            continue
        if not value.startswith("/"):
            continue
        path = Path(os.path.realpath(value))
        if str(path) in ("/", *PRIVATE_TMP):
            continue
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            folders.append(path)
        elif path.parent.is_dir() and str(path.parent) != "/":
            path.mkdir()
            folders.append(path)
    return files, folders
