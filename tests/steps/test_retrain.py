"""The retrain workflow's own steps: a checkout kept per repository and commit, reused, and
left whole or not at all; the registered dataset, refused with a reason when there is none."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from geomlops.cli.demo import default_package
from geomlops.errors import DatasetNotFoundError, InvalidPackageError
from steps.dataset import DatasetRef
from steps.retrain import checkout_source, registered_dataset


def test_a_checkout_is_kept_and_reused(tmp_path: Path, commit_package: Any) -> None:
    repo = tmp_path / "repo"
    first = commit_package(repo, default_package())
    (repo / "model" / "NOTES.md").write_text("second commit\n")
    second = commit_package(repo, default_package())
    root = tmp_path / "sources"
    package = checkout_source(str(repo), first, root, "model")
    assert package.parent.name == first and (package / "MLproject").is_file()
    assert not (package / "NOTES.md").exists()  # exactly the first commit
    assert (checkout_source(str(repo), second[:12], root, "model") / "NOTES.md").is_file()
    shutil.rmtree(repo)  # the repository is gone: a kept checkout is still found
    assert checkout_source(str(repo), first, root, "model") == package
    with pytest.raises(InvalidPackageError, match=r"repository .*repo: fatal: repository"):
        checkout_source(str(repo), "abcdef1", root)
    assert sorted(p.name for p in package.parents[1].iterdir()) == sorted([first, second[:12]])


def _version(client: MlflowClient, model: str, dataset: DatasetRef | None) -> str:
    if not client.search_registered_models(f"name = '{model}'"):
        client.create_registered_model(model)
    tags = {"geomlops.dataset": dataset.model_dump_json()} if dataset else {}
    return str(client.create_model_version(model, source="file:///nowhere", tags=tags).version)


def test_the_registered_dataset_is_productions_else_the_newest(home: Path) -> None:
    client = MlflowClient()
    with pytest.raises(
        DatasetNotFoundError, match=r"model 'm' has no registered version .* train it once first"
    ):
        registered_dataset("m")
    older = DatasetRef(repo="/data", path="d/a", rev="HEAD", commit="c1", md5="1.dir", url="file:///r/1")
    newer = older.model_copy(update={"commit": "c2", "md5": "2.dir"})
    _version(client, "m", older)
    _version(client, "m", newer)
    assert registered_dataset("m") == newer
    client.set_registered_model_alias("m", "production", "1")
    assert registered_dataset("m", package_model="m") == older
    with pytest.raises(
        InvalidPackageError, match="the package declares model 'x', but this run retrains 'm'"
    ):
        registered_dataset("m", package_model="x")
    client.set_registered_model_alias("m", "production", _version(client, "m", None))
    with pytest.raises(DatasetNotFoundError, match="version 3 of 'm' records no dataset"):
        registered_dataset("m")
