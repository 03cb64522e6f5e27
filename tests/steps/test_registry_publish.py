"""Registering versions (idempotent on the run) and publishing their STAC items, on real MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from catalog_sync.collections import VERSIONS
from catalog_sync.store import StaticCatalog
from catalog_sync.validation import validate_stac
from geomlops.errors import InvalidItemError, RegistryError
from steps.dataset import DatasetRef
from steps.publish import publish_version_item, retract_unpublished_versions
from steps.registry import register_model_version
from steps.training import WORKFLOW_TAG

MODEL = "tiny-model"


class Echo(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
    def predict(self, context: Any, model_input: list[Any], params: Any = None) -> list[Any]:
        return model_input


def _logged_run(tags: dict[str, str] | None = None) -> str:
    with mlflow.start_run(tags=tags) as run:
        mlflow.log_param("max_iter", "7")
        mlflow.log_metric("test_iou", 0.8)
        mlflow.pyfunc.log_model(name="model", python_model=Echo())
    return str(run.info.run_id)


@pytest.fixture
def catalog(home: Path, shared_data: Path) -> str:
    root = str(home / "catalog" / "catalog.json")
    item = json.loads((shared_data / "mlm-examples" / "item_basic.json").read_text())
    item["id"] = MODEL
    StaticCatalog(root).put_item("models", item)
    return root


DATASET = DatasetRef(
    repo="/data", path="datasets/x", rev="HEAD", commit="c" * 40, md5="d" * 32 + ".dir", url="/r/d"
)


def test_register_twice_makes_one_version(home: Path) -> None:
    run_id = _logged_run()
    first = register_model_version(MODEL, run_id)
    assert register_model_version(MODEL, run_id) == first == "1"
    assert len(MlflowClient().search_model_versions(f"name='{MODEL}'")) == 1
    assert register_model_version(MODEL, _logged_run()) == "2"


def test_unfinished_or_unknown_run_is_refused(home: Path) -> None:
    with pytest.raises(RegistryError, match="no such MLflow run"):
        register_model_version(MODEL, "0" * 32)
    client = MlflowClient()
    run = client.create_run(client.get_experiment_by_name("Default").experiment_id)
    client.set_terminated(run.info.run_id, status="FAILED")
    with pytest.raises(RegistryError, match="status is FAILED, expected FINISHED"):
        register_model_version(MODEL, run.info.run_id)
    assert client.search_model_versions(f"name='{MODEL}'") == []


def test_publish_links_version_run_data_and_code(home: Path, catalog: str, schema_dir: Path) -> None:
    run_id = _logged_run({"mlflow.source.git.commit": "a" * 40, "geomlops.code.sha256": "b" * 64})
    version = register_model_version(MODEL, run_id)
    href = publish_version_item(MODEL, version, run_id, DATASET, catalog=catalog)
    assert href == publish_version_item(MODEL, version, run_id, DATASET, catalog=catalog)
    item = json.loads(Path(href).read_text())
    props = item["properties"]
    assert item["id"] == f"{MODEL}-v1"
    assert props["mlflow:run_id"] == run_id and props["mlflow:model_version"] == "1"
    assert props["mlflow:model_uri"] == f"models:/{MODEL}/1"
    assert props["geomlops:dataset"]["md5"] == DATASET.md5
    assert props["geomlops:dataset"]["commit"] == DATASET.commit
    assert props["geomlops:code"] == {"git_commit": "a" * 40, "sha256": "b" * 64}
    assert props["geomlops:metrics"] == {"test_iou": 0.8}
    assert props["mlm:hyperparameters"]["max_iter"] == "7"
    base = StaticCatalog(catalog).item_href("models", MODEL)
    assert {"rel": "derived_from", "href": base}.items() <= next(
        link for link in item["links"] if link["rel"] == "derived_from"
    ).items()
    assert item["assets"]["model"]["roles"] == ["mlm:model"]
    assert Path(item["assets"]["model"]["href"].removeprefix("file://")).exists()
    result = validate_stac(item, schema_dir)
    assert result.status == "valid", result.summary()
    assert [i["id"] for i in StaticCatalog(catalog).list_items(VERSIONS)] == [f"{MODEL}-v1"]


def test_a_version_keeps_what_it_was_trained_with_when_the_package_is_registered_again(
    home: Path, catalog: str
) -> None:
    """A later registration changes the base item (its code, inputs, entry points) for later
    versions: version 1's item, written again (an alias moved), and the spec batch inference
    reads for version 1, stay version 1's."""
    from steps.model_spec import fetch_model_spec
    from steps.publish import expected_version_item

    store = StaticCatalog(catalog)
    base = store.get_item("models", MODEL)
    base["assets"]["code"] = {"href": "/packages/first", "roles": ["code"]}
    store.put_item("models", base)
    first_run = _logged_run()
    publish_version_item(MODEL, register_model_version(MODEL, first_run), first_run, DATASET, catalog=catalog)

    base["properties"]["mlm:architecture"] = "U-Net"  # registered again: another package
    base["properties"]["mlm:input"][0]["geomlops:inference"] = "inference"
    base["assets"]["code"]["href"] = "/packages/second"
    store.put_item("models", base)
    second_run = _logged_run()
    publish_version_item(
        MODEL, register_model_version(MODEL, second_run), second_run, DATASET, catalog=catalog
    )
    MlflowClient().set_registered_model_alias(MODEL, "production", "1")

    again = expected_version_item(store, MODEL, "1", DATASET)
    assert again["properties"]["mlflow:aliases"] == ["production"]  # what moved is updated
    assert again["properties"]["mlm:architecture"] == "ResNet"
    assert "geomlops:inference" not in again["properties"]["mlm:input"][0]
    assert again["assets"]["code"]["href"] == "/packages/first"
    assert again["assets"]["model"] == store.get_item(VERSIONS, f"{MODEL}-v1")["assets"]["model"]
    second = store.get_item(VERSIONS, f"{MODEL}-v2")
    assert second["properties"]["mlm:architecture"] == "U-Net"
    assert second["assets"]["code"]["href"] == "/packages/second"

    assert fetch_model_spec(MODEL, catalog, "1").architecture == "ResNet"
    assert fetch_model_spec(MODEL, catalog, "1").package_uri == "/packages/first"
    assert fetch_model_spec(MODEL, catalog, "2").inputs[0].entry_point == "inference"
    assert fetch_model_spec(MODEL, catalog, "3").architecture == "U-Net"  # no item: the base's
    assert fetch_model_spec(MODEL, catalog).package_uri == "/packages/second"

    # the registered model deleted and made again: its new version 1 is another run, whose item
    # is built from the base item as it is now, not kept from the old version 1's
    MlflowClient().delete_registered_model(MODEL)
    third_run = _logged_run()
    assert register_model_version(MODEL, third_run) == "1"
    href = publish_version_item(MODEL, "1", third_run, DATASET, catalog=catalog)
    renewed = json.loads(Path(href).read_text())
    assert renewed["properties"]["mlflow:run_id"] == third_run
    assert renewed["properties"]["mlm:architecture"] == "U-Net"
    assert renewed["assets"]["code"]["href"] == "/packages/second"


def test_exit_handler_retracts_only_unpublished_versions(home: Path, catalog: str) -> None:
    published_run = _logged_run({WORKFLOW_TAG: "wf-1"})
    v1 = register_model_version(MODEL, published_run)
    publish_version_item(MODEL, v1, published_run, DATASET, catalog=catalog)
    orphan = register_model_version(MODEL, _logged_run({WORKFLOW_TAG: "wf-1"}))
    other = register_model_version(MODEL, _logged_run({WORKFLOW_TAG: "wf-2"}))
    assert retract_unpublished_versions(MODEL, "wf-1", catalog=catalog) == [orphan]
    left = sorted(str(mv.version) for mv in MlflowClient().search_model_versions(f"name='{MODEL}'"))
    assert left == sorted([v1, other])


def test_undefined_metric_is_published_as_null(home: Path, catalog: str) -> None:
    with mlflow.start_run() as run:
        mlflow.log_metric("test_iou", 0.0)
        mlflow.log_metric("test_precision", float("nan"))
        mlflow.pyfunc.log_model(name="model", python_model=Echo())
    run_id = str(run.info.run_id)
    version = register_model_version(MODEL, run_id)
    href = publish_version_item(MODEL, version, run_id, DATASET, catalog=catalog)

    def refuse(constant: str) -> None:
        raise AssertionError(f"{href} holds {constant}, which is not JSON")

    item = json.loads(Path(href).read_text(), parse_constant=refuse)
    assert item["properties"]["geomlops:metrics"] == {"test_iou": 0.0, "test_precision": None}


def test_static_store_refuses_nan_and_writes_nothing(tmp_path: Path) -> None:
    store = StaticCatalog(str(tmp_path / "catalog.json"))
    good = {"type": "Feature", "id": "a", "properties": {}, "links": []}
    bad = {"type": "Feature", "id": "b", "properties": {"x": float("nan")}, "links": []}
    with pytest.raises(InvalidItemError, match=r"refused item 'b' .* it is not a JSON document"):
        store.put_items("models", [good, bad])
    assert store.list_items("models") == []
