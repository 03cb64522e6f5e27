"""Resolving DVC datasets on a real repository and remote."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from geomlops.errors import DatasetNotFoundError
from steps.dataset import materialize_dataset, resolve_dataset


def test_revisions_resolve_to_their_content(dvc_repo: dict, tmp_path: Path) -> None:
    repo = str(dvc_repo["repo"])
    head = resolve_dataset(repo, "datasets/tiny")
    old = resolve_dataset(repo, "datasets/tiny", "v1")
    assert head.commit == dvc_repo["head"] and old.commit == dvc_repo["v1"]
    assert head.md5.endswith(".dir") and old.md5.endswith(".dir") and head.md5 != old.md5
    assert head.url.startswith(str(dvc_repo["remote"]))

    old_dir = materialize_dataset(old, tmp_path / "cache")
    assert sorted(p.name for p in old_dir.iterdir()) == ["a.txt"]
    head_dir = materialize_dataset(head, tmp_path / "cache")
    assert sorted(p.name for p in head_dir.iterdir()) == ["a.txt", "b.txt"]
    assert head_dir.name == head.content_id
    (head_dir / "marker").write_text("kept")  # a second call reuses the folder, fetches nothing
    assert materialize_dataset(head, tmp_path / "cache") == head_dir
    assert (head_dir / "marker").exists()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]


def test_data_comes_from_the_remote_in_a_fresh_clone(dvc_repo: dict, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(dvc_repo["repo"], clone, ignore=shutil.ignore_patterns("cache", "tiny"))
    ref = resolve_dataset(str(clone), "datasets/tiny")
    folder = materialize_dataset(ref, tmp_path / "cache")
    assert (folder / "b.txt").read_text() == "second\n"


def test_unknown_path(dvc_repo: dict) -> None:
    with pytest.raises(DatasetNotFoundError, match="'datasets/nope' does not exist at revision 'HEAD'"):
        resolve_dataset(str(dvc_repo["repo"]), "datasets/nope")


def test_unknown_revision(dvc_repo: dict) -> None:
    with pytest.raises(DatasetNotFoundError, match="revision 'no-such-tag'"):
        resolve_dataset(str(dvc_repo["repo"]), "datasets/tiny", "no-such-tag")


def test_file_not_tracked_by_dvc(dvc_repo: dict) -> None:
    with pytest.raises(DatasetNotFoundError, match="not tracked by DVC"):
        resolve_dataset(str(dvc_repo["repo"]), ".dvcignore")


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="cannot open DVC repository"):
        resolve_dataset(str(tmp_path / "missing"), "x")
