"""The data repository: a git + DVC repository whose datasets training reads by path and revision.

On the embedded default it is a local folder (``$GEOMLOPS_HOME/data``) with a DVC remote
(``$GEOMLOPS_HOME/dvc-remote``, or the S3 remote of the services profile). :func:`add_dataset`
versions a folder in it, as ``dvc add`` + ``git commit`` + ``dvc push`` would by hand.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict

from geomlops.errors import GeomlopsError, ParameterError


class DatasetVersion(BaseModel):
    """A dataset just versioned: what ``geomlops run training`` takes to read it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    repo: str
    path: str
    commit: str
    changed: bool


def _sh(args: list[str], cwd: Path) -> str:
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise GeomlopsError(
            f"`{' '.join(args)}` failed in {cwd}:\n{out.stderr.strip() or out.stdout.strip()}"
        )
    return out.stdout


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` (committing as geomlops); its stdout."""
    ident = ["-c", "user.name=geomlops", "-c", "user.email=geomlops@localhost"]
    return _sh(["git", *ident, *args], repo)


def dvc(repo: Path, *args: str) -> str:
    """Run DVC (geomlops' own) in ``repo``; its stdout."""
    return _sh([sys.executable, "-m", "dvc", *args], repo)


def ensure_data_repo(repo: Path, remote: str) -> None:
    """A git + DVC repository with a default remote (created once)."""
    if (repo / ".dvc").is_dir():
        return
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q")
    dvc(repo, "init", "-q")
    dvc(repo, "remote", "add", "-d", "-f", "local", remote)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Initialise DVC with a local remote")


def check_dataset_path(path: str) -> str:
    """``path`` as a dataset path inside the repository (``datasets/water``).

    Raises:
        ParameterError: absolute, empty, or leaving the repository.
    """
    pure = PurePosixPath(path.strip().strip("/")) if not path.startswith("/") else None
    if pure is None or not pure.parts or ".." in pure.parts or pure.parts[0] in (".git", ".dvc"):
        raise ParameterError(
            f"dataset path {path!r}: expected a relative path inside the data repository, "
            "such as datasets/water"
        )
    return str(pure)


def add_dataset(source: Path, path: str, repo: Path, remote: str) -> DatasetVersion:
    """Version the folder ``source`` as ``path`` of the data repository and push it.

    The folder's content replaces what ``path`` held; the commit says so. A folder identical to
    the version at ``HEAD`` makes no commit.

    Args:
        source: the dataset folder (or file) to version.
        path: its path inside the repository.
        repo: the data repository (a local folder; created with ``remote`` if needed).
        remote: the DVC remote of a new repository.

    Raises:
        ParameterError: ``source`` does not exist, or ``path`` is not a relative path.
    """
    path = check_dataset_path(path)
    source = source.expanduser().resolve()
    if not source.exists():
        raise ParameterError(f"dataset folder {source}: not found")
    repo = repo.resolve()
    if source == repo or repo in source.parents:
        raise ParameterError(
            f"dataset folder {source} lies inside the data repository {repo}: pass a folder outside it"
        )
    ensure_data_repo(repo, remote)
    target = repo / path
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)
    dvc(repo, "add", "-q", path)
    git(repo, "add", "-A")
    changed = bool(git(repo, "status", "--porcelain").strip())
    if changed:
        git(repo, "commit", "-q", "-m", f"Version {path}")
    dvc(repo, "push", "-q")
    commit = git(repo, "rev-parse", "HEAD").strip()
    return DatasetVersion(repo=str(repo), path=path, commit=commit, changed=changed)
