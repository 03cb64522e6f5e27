"""MLflow registry → catalogue sync on real MLflow (SQLite) and the static catalogue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from catalog_sync.collections import VERSIONS
from catalog_sync.store import StaticCatalog
from steps.dataset import DatasetRef
from steps.publish import DATASET_TAG, publish_version_item
from steps.registry import register_model_version
from steps.registry_sync import sync_registry

MODEL = "sync-model"
DATASET = DatasetRef(
    repo="/d", path="datasets/x", rev="HEAD", commit="c" * 40, md5="e" * 32 + ".dir", url="/r"
)


class Echo(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
    def predict(self, context: Any, model_input: list[Any], params: Any = None) -> list[Any]:
        return model_input


def _version() -> tuple[str, str]:
    with mlflow.start_run() as run:
        mlflow.log_metric("test_iou", 0.7)
        mlflow.pyfunc.log_model(name="model", python_model=Echo())
    version = register_model_version(MODEL, run.info.run_id, tags={DATASET_TAG: DATASET.model_dump_json()})
    return version, run.info.run_id


def test_sync_creates_updates_reports_and_then_rests(home: Path, shared_data: Path) -> None:
    catalog = str(home / "catalog" / "catalog.json")
    store = StaticCatalog(catalog)
    base = json.loads((shared_data / "mlm-examples" / "item_basic.json").read_text())
    base["id"] = MODEL
    store.put_item("models", base)
    v1, run1 = _version()
    v2, _ = _version()
    publish_version_item(MODEL, v1, run1, DATASET, catalog=catalog)
    ghost = {**store.get_item(VERSIONS, f"{MODEL}-v1"), "id": "ghost-v9"}
    store.put_item(VERSIONS, ghost)
    with mlflow.start_run() as run:  # a model whose base item is not catalogued
        mlflow.pyfunc.log_model(name="model", python_model=Echo())
    register_model_version("uncatalogued", run.info.run_id, tags={DATASET_TAG: DATASET.model_dump_json()})

    report = sync_registry(store)
    assert report.created == [f"{MODEL}-v2"]
    assert report.unchanged == [f"{MODEL}-v1"]
    assert report.only_in_catalog == ["ghost-v9"]
    assert report.only_in_mlflow == ["uncatalogued-v1"]
    created = store.get_item(VERSIONS, f"{MODEL}-v2")
    assert created["properties"]["mlflow:model_version"] == "2"
    assert created["properties"]["geomlops:dataset"]["md5"] == DATASET.md5
    assert any(link["rel"] == "predecessor-version" for link in created["links"])

    MlflowClient().set_registered_model_alias(MODEL, "production", v1)
    moved = sync_registry(store)
    assert moved.updated == [f"{MODEL}-v1"] and moved.created == []
    assert store.get_item(VERSIONS, f"{MODEL}-v1")["properties"]["mlflow:aliases"] == ["production"]

    MlflowClient().set_registered_model_alias(MODEL, "production", v2)
    assert sync_registry(store, dry_run=True).updated == [f"{MODEL}-v1", f"{MODEL}-v2"]
    assert store.get_item(VERSIONS, f"{MODEL}-v2")["properties"]["mlflow:aliases"] == []
    assert sync_registry(store).updated == [f"{MODEL}-v1", f"{MODEL}-v2"]

    again = sync_registry(store)
    assert again.nothing_to_do and again.created == [] and again.updated == []
    assert "nothing to do: 2 version item(s) match MLflow" in again.lines()

    # an item file lost by hand (the case sync exists for): the dry run says it would be
    # written again, and sync writes it
    lost = Path(store.item_href(VERSIONS, f"{MODEL}-v2"))
    lost.unlink()
    assert sync_registry(store, dry_run=True).created == [f"{MODEL}-v2"]
    assert not lost.exists()
    assert sync_registry(store).created == [f"{MODEL}-v2"]
    assert store.get_item(VERSIONS, f"{MODEL}-v2")["properties"]["mlflow:model_version"] == "2"
