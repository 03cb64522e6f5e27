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


def test_a_folder_versioned_with_data_add_resolves_and_a_second_add_of_the_same_is_no_commit(
    tmp_path: Path,
) -> None:
    from steps.data_repo import add_dataset

    source = tmp_path / "water"
    (source / "chips").mkdir(parents=True)
    (source / "chips" / "a.tif").write_bytes(b"not really a tif, but bytes to version")
    repo, remote = tmp_path / "data", str(tmp_path / "remote")
    first = add_dataset(source, "datasets/water", repo, remote)
    assert first.changed and first.path == "datasets/water"
    ref = resolve_dataset(str(repo), "datasets/water", first.commit)
    assert ref.commit == first.commit and ref.md5.endswith(".dir")
    assert any(Path(remote).rglob("*"))  # pushed to the remote
    again = add_dataset(source, "datasets/water/", repo, remote)
    assert not again.changed and again.commit == first.commit
    (source / "chips" / "b.tif").write_bytes(b"a second chip")
    third = add_dataset(source, "datasets/water", repo, remote)
    assert third.changed and resolve_dataset(str(repo), "datasets/water").md5 != ref.md5


@pytest.mark.parametrize("path", ["/abs/path", "../outside", "", ".git/x"])
def test_data_add_refuses_a_path_outside_the_repository(tmp_path: Path, path: str) -> None:
    from geomlops.errors import ParameterError
    from steps.data_repo import add_dataset

    (tmp_path / "src").mkdir()
    with pytest.raises(ParameterError, match="expected a relative path inside the data repository"):
        add_dataset(tmp_path / "src", path, tmp_path / "data", str(tmp_path / "remote"))
    assert not (tmp_path / "data").exists()  # nothing created


def test_an_absolute_dataset_path_or_a_missing_repository_says_how_to_version_one(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="geomlops data add /tmp/x --as datasets/NAME"):
        resolve_dataset(str(tmp_path), "/tmp/x")
    (tmp_path / "data").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"no git repository there .*data add FOLDER --as d/w"):
        resolve_dataset(str(tmp_path / "data"), "d/w")
