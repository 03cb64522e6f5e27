"""Resolve a DVC-versioned dataset to an exact, content-addressed version."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from geomlops.errors import DatasetNotFoundError
from geomlops.files import atomic_path


class DatasetRef(BaseModel):
    """One exact version of a dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    repo: str
    path: str
    rev: str
    commit: str
    md5: str
    url: str

    @property
    def content_id(self) -> str:
        """The content hash without DVC's ``.dir`` suffix."""
        return self.md5.removesuffix(".dir")


def resolve_dataset(repo: str, path: str, rev: str = "HEAD") -> DatasetRef:
    """Resolve ``path`` at ``rev`` of the DVC repository ``repo``.

    Args:
        repo: the DVC repository (local path or git URL).
        path: the dataset's path inside the repository (a file or folder tracked by DVC).
        rev: a git revision (branch, tag, commit); ``HEAD`` by default.

    Returns:
        The dataset's location in the remote, its content hash (md5, ``.dir`` for folders)
        and the git commit the revision resolved to.

    Raises:
        DatasetNotFoundError: the repository, revision or path is unknown, or not tracked by DVC.
    """
    from dvc.api import DVCFileSystem, get_url
    from dvc.exceptions import DvcException

    local = "://" not in repo and not repo.startswith("git@")
    hint = (
        f" (version a folder there with: geomlops data add FOLDER --as {path.strip('/') or 'datasets/NAME'})"
    )
    if path.startswith("/"):
        raise DatasetNotFoundError(
            f"dataset path {path!r}: expected a path inside the data repository {repo}, not a folder on "
            f"this machine (version it with: geomlops data add {path} --as datasets/NAME)"
        )
    if local and not (Path(repo) / ".git").exists():
        raise DatasetNotFoundError(f"cannot open DVC repository {repo}: no git repository there{hint}")
    try:
        fs = DVCFileSystem(repo, rev=rev)
        info = fs.info(path)
        commit = fs.repo.scm.resolve_rev(rev)
    except FileNotFoundError as err:
        raise DatasetNotFoundError(
            f"dataset path '{path}' does not exist at revision '{rev}' of {repo}" + (hint if local else "")
        ) from err
    except DvcException as err:
        raise DatasetNotFoundError(f"revision '{rev}' of {repo}: {err}") from err
    except Exception as err:  # git or file-system errors from opening the repository
        raise DatasetNotFoundError(f"cannot open DVC repository {repo}: {err}") from err
    md5 = info.get("md5") or (info.get("dvc_info") or {}).get("md5")
    if not md5:
        raise DatasetNotFoundError(
            f"dataset path '{path}' at revision '{rev}' of {repo} is not tracked by DVC"
        )
    try:
        url = get_url(path, repo=repo, rev=rev)
    except DvcException as err:
        raise DatasetNotFoundError(f"dataset '{path}' has no remote location: {err}") from err
    return DatasetRef(repo=repo, path=path, rev=rev, commit=commit, md5=md5, url=url)


def materialize_dataset(ref: DatasetRef, cache_dir: Path) -> Path:
    """Fetch a dataset version into ``cache_dir/<content hash>`` and return that folder.

    The folder is keyed by content, so a second call is free, and it appears whole or not at
    all (files are fetched into a temporary folder that is renamed at the end).
    """
    from dvc.api import DVCFileSystem

    target = cache_dir / ref.content_id
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        DVCFileSystem(ref.repo, rev=ref.commit).get(ref.path, str(tmp), recursive=True)
    return target
