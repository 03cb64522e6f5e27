"""A version item keeps every model asset of its package, resolves links, and is checked first."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

import examples
from catalog_sync.collections import VERSIONS
from catalog_sync.mlm_assets import absolute_href, version_assets
from catalog_sync.store import StaticCatalog
from catalog_sync.validation import validate_stac
from geomlops.errors import InvalidModelItemError
from steps.dataset import DatasetRef
from steps.publish import publish_version_item, retract_unpublished_versions
from steps.registry import register_model_version
from steps.training import WORKFLOW_TAG

MODEL = "five-artifacts"
DATASET = DatasetRef(
    repo="/data", path="datasets/x", rev="HEAD", commit="c" * 40, md5="d" * 32 + ".dir", url="/r/d"
)
#: five model artifacts of one model, as a package describes them
ARTIFACTS = {
    "onnx": ("weights/model.onnx", "onnx", "application/octet-stream; framework=onnx"),
    "torchscript": ("weights/model.pt", "torch.jit.script", "application/octet-stream; framework=pytorch"),
    "checkpoint": ("../checkpoints/last.ckpt", "torch.save", "application/octet-stream; framework=pytorch"),
    "weights": ("https://example.org/unet.safetensors", "safetensors", "application/octet-stream"),
    "model": ("./MLproject", "mlflow.pyfunc", "text/plain"),
}


class Constant(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        return model_input


def _base_item() -> dict[str, Any]:
    item: dict[str, Any] = json.loads(
        (Path(examples.__file__).parent / "cloud-mask" / "stac-item.json").read_text()
    )
    item["id"] = MODEL
    bands = item["assets"].pop("model")["bands"]
    for key, (href, artifact, media) in ARTIFACTS.items():
        item["assets"][key] = {
            "href": href,
            "type": media,
            "roles": ["mlm:model"],
            "mlm:artifact_type": artifact,
            **({"bands": bands} if key == "onnx" else {}),
        }
    item["links"].append({"rel": "describedby", "href": "./README.md", "type": "text/markdown"})
    return item


def _catalog(home: Path, item: dict[str, Any]) -> str:
    root = str(home / "catalog" / "catalog.json")
    StaticCatalog(root).put_item("models", item)
    return root


def _registered(workflow: str) -> tuple[str, str]:
    with mlflow.start_run(tags={WORKFLOW_TAG: workflow}) as run:
        mlflow.pyfunc.log_model(name="model", python_model=Constant())
    run_id = str(run.info.run_id)
    return run_id, register_model_version(MODEL, run_id)


def test_version_item_keeps_all_five_model_assets_and_validates(home: Path, schema_dir: Path) -> None:
    catalog = _catalog(home, _base_item())
    base_href = StaticCatalog(catalog).item_href("models", MODEL)
    run_id, version = _registered("wf-1")
    href = publish_version_item(MODEL, version, run_id, DATASET, catalog=catalog, schema_dir=schema_dir)
    item = json.loads(Path(href).read_text())
    models = {k: a for k, a in item["assets"].items() if "mlm:model" in a["roles"]}
    assert sorted(models) == sorted(ARTIFACTS)
    assert {k: a["mlm:artifact_type"] for k, a in models.items() if k != "model"} == {
        k: v[1] for k, v in ARTIFACTS.items() if k != "model"
    }
    folder = Path(base_href).parent
    assert models["onnx"]["href"] == str(folder / "weights" / "model.onnx")
    assert models["checkpoint"]["href"] == str(folder.parent / "checkpoints" / "last.ckpt")
    assert models["weights"]["href"] == "https://example.org/unet.safetensors"
    # the pyfunc asset is the trained model of this version
    assert models["model"]["mlm:artifact_type"] == "mlflow.pyfunc"
    assert Path(models["model"]["href"].removeprefix("file://")).is_dir()
    # bands where the data is: each model asset describes the ten input bands
    assert all(len(a["bands"]) == 10 for a in models.values())
    assert item["assets"]["mlm:training"]["href"] == "ghcr.io/geomlops/cloud-mask:0.1.0"
    described = next(link for link in item["links"] if link["rel"] == "describedby")
    assert described["href"] == str(folder / "README.md")
    result = validate_stac(item, schema_dir)
    assert result.status == "valid", result.summary()


def test_invalid_version_item_is_refused_and_leaves_no_version(home: Path, schema_dir: Path) -> None:
    broken = _base_item()
    del broken["assets"]["checkpoint"]["mlm:artifact_type"]  # MLM: a model asset names its type
    catalog = _catalog(home, broken)
    run_id, version = _registered("wf-2")
    with pytest.raises(
        InvalidModelItemError, match=r"(?s)was not written; version 1 was deleted.*checkpoint"
    ):
        publish_version_item(MODEL, version, run_id, DATASET, catalog=catalog, schema_dir=schema_dir)
    assert StaticCatalog(catalog).list_items(VERSIONS) == []
    assert MlflowClient().search_model_versions(f"name='{MODEL}'") == []
    # the exit handler then finds nothing left to retract
    assert retract_unpublished_versions(MODEL, "wf-2", catalog=catalog) == []


def test_trained_model_takes_the_key_model_and_the_package_asset_there_moves() -> None:
    assets = {"model": {"href": "m.onnx", "roles": ["mlm:model"], "mlm:artifact_type": "onnx"}}
    before = copy.deepcopy(assets)
    out = version_assets(assets, "/cat/models/x/x.json", model_href="s3://b/m", title="t")
    assert assets == before
    assert out["base-model"]["href"] == "/cat/models/x/m.onnx"
    assert out["model"]["href"] == "s3://b/m"
    assert out["model"]["mlm:artifact_type"] == "mlflow.pyfunc"


@pytest.mark.parametrize(
    ("href", "base", "expected"),
    [
        ("./a.json", "/c/models/x/x.json", "/c/models/x/a.json"),
        ("../a.json", "file:///c/models/x/x.json", "/c/models/a.json"),
        (
            "a.json",
            "https://stac.example.org/collections/models/items/x",
            "https://stac.example.org/collections/models/items/a.json",
        ),
        ("s3://bucket/key", "/c/x.json", "s3://bucket/key"),
        ("/abs/path", "/c/x.json", "/abs/path"),
        ("ghcr.io/org/image:1.0", "/c/x.json", "ghcr.io/org/image:1.0"),
    ],
)
def test_absolute_href(href: str, base: str, expected: str) -> None:
    assert absolute_href(href, base) == expected
