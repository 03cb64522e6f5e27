"""Held-out evaluation of a segmentation run (steps.evaluation) on the cloud-mask example."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
import mlflow.pyfunc
import numpy as np
import pytest
import rasterio
from mlflow import MlflowClient
from mlflow.pyfunc.model import PythonModel
from rasterio.features import rasterize
from rasterio.transform import from_origin
from rasterio.windows import Window

from catalog_sync.mlm import ModelClass, parse_model_item
from geomlops.errors import (
    DatasetNotFoundError,
    GeomlopsError,
    InvalidDatasetError,
    ParameterError,
    PermanentError,
)
from steps._eval_classes import LABEL_ITEM_FILES, EvaluationParameters
from steps._eval_layout import CHIP_LABELS_DIR, CHIPS_DIR, TEST_LIST, dataset_scenes
from steps.evaluation import EvaluationReport, evaluate_segmentation, evaluation_classes, mlm_classes

_SESSION = Path(__file__).resolve().parents[1] / "examples" / "cloud_mask_session.py"


def _session() -> ModuleType:
    """The cloud-mask session helper, shared with tests/examples (trains once per session)."""
    name = "geomlops_tests_cloud_mask_session"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _SESSION)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module", autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    with _session().one_openmp_thread():
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _session().trained(tmp_path_factory.getbasetemp() / "cloud-mask")


@pytest.fixture(scope="module")
def report(trained: Any) -> EvaluationReport:
    return evaluate_segmentation(trained.run_id, str(trained.dataset), tracking_uri=trained.tracking_uri)


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


@pytest.mark.slow
def test_evaluation_scores_the_held_out_blocks(trained: Any, report: EvaluationReport) -> None:
    with rasterio.open(trained.dataset / "split.tif") as src:
        split = src.read(1)
    with rasterio.open(trained.dataset / "labels.tif") as src:
        labels = src.read(1)
    evaluated = (split == 2) & (labels != 255)
    assert report.n_test_pixels == np.count_nonzero(evaluated) == sum(map(sum, report.confusion_matrix))
    assert [sum(row) for row in report.confusion_matrix] == [
        np.count_nonzero(evaluated & (labels == 0)),
        np.count_nonzero(evaluated & (labels == 1)),
    ]
    assert report.class_names == ["clear", "cloud"] and report.positive_class == "cloud"
    m = report.metrics
    assert m["test_iou"] == m["test_iou_cloud"]
    # Measured 0.969 IoU / 0.984 F1 on clouds (labels come from the USGS cloud algorithm).
    assert m["test_iou"] > 0.9
    assert m["test_f1"] > 0.9 and m["test_precision"] > 0.9 and m["test_recall"] > 0.9
    assert m["test_accuracy"] > 0.99 and m["test_iou_clear"] > 0.99

    client = MlflowClient(trained.tracking_uri)
    run = client.get_run(trained.run_id)
    assert _same({k: v for k, v in run.data.metrics.items() if k.startswith("test_")}, m)
    assert run.data.tags["geomlops.evaluation.dataset"] == str(trained.dataset)
    assert {a.path for a in client.list_artifacts(trained.run_id, "evaluation")} == {
        "evaluation/quicklook.png",
        "evaluation/metrics.json",
    }
    local = Path(
        client.download_artifacts(trained.run_id, "evaluation", str(trained.base / "evaluation-check"))
    )
    assert (local / "quicklook.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert EvaluationReport.model_validate_json((local / "metrics.json").read_text()) == report
    # The model's code (logged with code_paths) was imported from a temporary folder; the
    # step forgets it again so the next model imports its own.
    assert not any("geomlops-eval-" in entry for entry in sys.path)
    assert not any("geomlops-eval-" in str(getattr(m, "__file__", "")) for m in list(sys.modules.values()))


@pytest.mark.slow
def test_evaluating_twice_logs_the_same_values(trained: Any, report: EvaluationReport) -> None:
    again = evaluate_segmentation(
        trained.run_id, str(trained.dataset), tracking_uri=trained.tracking_uri, chip_size=200
    )
    assert again == report  # chip size changes nothing either
    history = MlflowClient(trained.tracking_uri).get_metric_history(trained.run_id, "test_iou")
    assert [(h.value, h.step) for h in history] == [(report.metrics["test_iou"], 0)]


@pytest.mark.slow
def test_the_parameters_a_run_was_evaluated_with_are_recorded_for_later_comparisons(
    trained: Any, report: EvaluationReport
) -> None:
    from steps.evaluation import recorded_parameters

    client = MlflowClient(trained.tracking_uri)
    assert recorded_parameters(client.get_run(trained.run_id)).ignore_value is None  # none given
    evaluate_segmentation(
        trained.run_id,
        str(trained.dataset),
        tracking_uri=trained.tracking_uri,
        parameters={"ignore_value": 255},
    )
    assert recorded_parameters(client.get_run(trained.run_id)).ignore_value == 255


# --- failures, on a tiny synthetic dataset ----------------------------------------------


def _tiny_dataset(root: Path, *, with_split: bool = True) -> Path:
    root.mkdir(parents=True)
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": 6, "height": 5, "crs": "EPSG:32616",
        "transform": from_origin(452475, 3408645, 30, 30),
    }  # fmt: skip
    rng = np.random.default_rng(0)
    with rasterio.open(root / "image.tif", "w", count=10, dtype="float32", **profile) as dst:
        dst.write(rng.random((10, 5, 6), dtype=np.float32))
    with rasterio.open(root / "labels.tif", "w", count=1, dtype="uint8", nodata=255, **profile) as dst:
        dst.write(rng.integers(0, 2, (1, 5, 6), dtype=np.uint8))
    if with_split:
        with rasterio.open(root / "split.tif", "w", count=1, dtype="uint8", **profile) as dst:
            dst.write(np.full((1, 5, 6), 2, dtype=np.uint8))
    return root


class _WrongShape(PythonModel):
    def predict(self, context: Any, model_input: np.ndarray, params: Any = None) -> np.ndarray:
        batch, _, height, width = model_input.shape
        return np.zeros((batch, height + 1, width), dtype=np.uint8)


class _UnknownClass(PythonModel):
    def predict(self, context: Any, model_input: np.ndarray, params: Any = None) -> np.ndarray:
        batch, _, height, width = model_input.shape
        return np.full((batch, height, width), 7, dtype=np.uint8)


@pytest.fixture(scope="module")
def bad_model_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One MLflow store for the failure tests (creating a SQLite store runs every migration)."""
    root = tmp_path_factory.mktemp("bad-models")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    experiment = MlflowClient(uri).create_experiment(
        "bad-models", artifact_location=(root / "artifacts").as_uri()
    )
    return uri, experiment


def _run_with_model(tmp_path: Path, store: tuple[str, str], python_model: PythonModel) -> str:
    """A finished run holding ``model`` as a plain run artifact (the MLflow 2 layout)."""
    uri, experiment = store
    client = MlflowClient(uri)
    run = client.create_run(experiment)
    # the model is predicted in another process, where this test module is not importable
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        mlflow.pyfunc.save_model(
            str(tmp_path / "model"), python_model=python_model, pip_requirements=["numpy"]
        )
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    client.log_artifacts(run.info.run_id, str(tmp_path / "model"), "model")
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def test_missing_dataset_file_is_named(tmp_path: Path) -> None:
    data = _tiny_dataset(tmp_path / "data", with_split=False)
    with pytest.raises(DatasetNotFoundError, match=r"split\.tif"):
        evaluate_segmentation("0" * 32, str(data), tracking_uri=f"sqlite:///{tmp_path / 'x.db'}")
    (data / "image.tif").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"image\.tif"):
        evaluate_segmentation("0" * 32, data.as_uri(), tracking_uri=f"sqlite:///{tmp_path / 'x.db'}")


@pytest.mark.parametrize(
    ("python_model", "message"),
    [
        (_WrongShape(), r"predicting \(1, 10, 5, 6\) .*returned 6 x 6 px for an input of 5 x 6 px"),
        (_UnknownClass(), r"class values \[7\]"),
    ],
)
def test_a_model_with_the_wrong_output_is_refused(
    tmp_path: Path, bad_model_store: tuple[str, str], python_model: PythonModel, message: str
) -> None:
    data = _tiny_dataset(tmp_path / "data")
    uri = bad_model_store[0]
    run_id = _run_with_model(tmp_path, bad_model_store, python_model)
    with pytest.raises(GeomlopsError, match=message):
        evaluate_segmentation(run_id, str(data), tracking_uri=uri)
    assert not MlflowClient(uri).get_run(run_id).data.metrics


# --- chips/ + labels/ layout, label values from a label item or parameters --------------
# Small real chips: 48x48 windows of three Banepa aerial chips, with the OpenStreetMap building
# footprints burnt as 255 (as the Banepa package burns them) and 0 elsewhere.

_CHIPS = ("OAM-386690-220241-19.tif", "OAM-386690-220243-19.tif", "OAM-386690-220246-19.tif")
_TEST_CHIPS = _CHIPS[:2]
_SIDE, _IGNORE = 48, 254
_BRIGHT = 120.0


class _BrightRoofs(PythonModel):
    """1 (building) where the mean of the bands exceeds a threshold, else 0 (background)."""

    def predict(self, context: Any, model_input: np.ndarray, params: Any = None) -> np.ndarray:
        bright: np.ndarray = np.asarray(model_input).mean(axis=1) > _BRIGHT
        return bright.astype(np.uint8)


def _fair_unet_classes(shared_data: Path) -> list[ModelClass]:
    """The MLM classes of a real fAIr UNet item: background 0, building 1."""
    item = json.loads((shared_data / "fair-model-items" / "unet_segmentation.json").read_text())
    raw = item["properties"]["mlm:output"][0]["classification:classes"]
    return [ModelClass(name=c["name"], value=c["value"]) for c in raw]


def _chips_dataset(shared_data: Path, root: Path, *, test_list: bool = True) -> Path:
    """``chips/`` and ``labels/`` GeoTIFFs; the first label row is nodata (254)."""
    train = shared_data / "banepa" / "train"
    footprints = json.loads(next((train / "osm").glob("*.geojson")).read_text())["features"]
    (root / "chips").mkdir(parents=True)
    (root / "labels").mkdir()
    for name in _CHIPS:
        with rasterio.open(train / "oam" / name) as src:
            window = Window(224, 224, _SIDE, _SIDE)
            image, transform, crs = src.read(window=window), src.window_transform(window), src.crs
        labels = rasterize(
            [f["geometry"] for f in footprints],
            out_shape=(_SIDE, _SIDE),
            transform=transform,
            fill=0,
            default_value=255,
            dtype="uint8",
        )
        labels[0, :] = _IGNORE
        profile: dict[str, Any] = {"driver": "GTiff", "width": _SIDE, "height": _SIDE, "crs": crs}
        with rasterio.open(
            root / "chips" / name, "w", count=3, dtype="uint8", transform=transform, **profile
        ) as dst:
            dst.write(image)
        with rasterio.open(
            root / "labels" / name, "w", count=1, dtype="uint8", transform=transform, **profile
        ) as dst:
            dst.write(labels[None])
    if test_list:
        (root / "test.txt").write_text("# test chips\n" + "\n".join(Path(n).stem for n in _TEST_CHIPS) + "\n")
    return root


def _label_item(shared_data: Path, root: Path) -> None:
    """The real Banepa dataset item, with the rasterised labels described as a labels asset."""
    item = json.loads(
        (shared_data / "banepa" / "buildings-banepa-segmentation" / "stac-item.json").read_text()
    )
    item["assets"]["label-rasters"] = {
        "href": "./labels",
        "type": "image/tiff; application=geotiff",
        "roles": ["labels"],
        "classification:classes": [
            {"value": 0, "name": "background", "description": "no building"},
            {"value": 255, "name": "building", "description": "OSM building footprint"},
        ],
        "raster:bands": [{"nodata": _IGNORE, "data_type": "uint8"}],
    }
    (root / "label-item.json").write_text(json.dumps(item))


def _expected(root: Path) -> tuple[int, int, int, int]:
    """tp, fp, fn and labelled pixels of the building class over the test chips, by hand."""
    tp = fp = fn = n = 0
    for name in _TEST_CHIPS:
        with rasterio.open(root / "chips" / name) as src:
            predicted = src.read().astype("float32").mean(axis=0) > _BRIGHT
        with rasterio.open(root / "labels" / name) as src:
            labels = src.read(1)
        used = labels != _IGNORE
        truth = labels == 255
        tp += int(np.sum(used & truth & predicted))
        fp += int(np.sum(used & ~truth & predicted))
        fn += int(np.sum(used & truth & ~predicted))
        n += int(np.sum(used))
    return tp, fp, fn, n


@pytest.fixture(scope="module")
def bright_roofs_run(tmp_path_factory: pytest.TempPathFactory, bad_model_store: tuple[str, str]) -> str:
    return _run_with_model(tmp_path_factory.mktemp("bright-roofs"), bad_model_store, _BrightRoofs())


@pytest.mark.parametrize("described_by", ["label item", "parameters"])
def test_chips_are_scored_with_the_datasets_label_values_and_the_models_class_names(
    tmp_path: Path,
    shared_data: Path,
    bad_model_store: tuple[str, str],
    bright_roofs_run: str,
    described_by: str,
) -> None:
    data = _chips_dataset(shared_data, tmp_path / "data")
    parameters: dict[str, Any] = {}
    if described_by == "label item":
        _label_item(shared_data, data)
    else:
        parameters = {"label_value": 255, "background_value": 0, "ignore_value": _IGNORE}
    uri = bad_model_store[0]
    report = evaluate_segmentation(
        bright_roofs_run,
        str(data),
        tracking_uri=uri,
        model_classes=_fair_unet_classes(shared_data),
        parameters=parameters,
    )
    tp, fp, fn, n = _expected(data)
    assert tp and fp and fn  # the threshold is a poor model: every cell of the matrix counts
    assert report.layout == "chips" and report.n_test_scenes == 2
    assert report.class_names == ["background", "building"] and report.positive_class == "building"
    assert report.label_values == [0, 255] and report.class_values == [0, 1]
    assert report.ignore_value == _IGNORE
    assert ("label-item.json" in report.label_source) == (described_by == "label item")
    assert report.n_test_pixels == n == 2 * _SIDE * (_SIDE - 1)
    m = report.metrics
    assert m["test_iou"] == m["test_iou_building"] == pytest.approx(tp / (tp + fp + fn))
    assert m["test_precision_building"] == pytest.approx(tp / (tp + fp))
    assert report.per_class["building"]["recall"] == pytest.approx(tp / (tp + fn))
    assert {"test_iou_background", "test_f1_building"} <= set(m)
    logged = MlflowClient(uri).get_run(bright_roofs_run).data.metrics
    assert logged["test_iou_building"] == pytest.approx(m["test_iou"])


def test_without_a_test_list_every_chip_is_a_test_chip(shared_data: Path, tmp_path: Path) -> None:
    _, scenes = dataset_scenes(_chips_dataset(shared_data, tmp_path / "data", test_list=False))
    assert [s.image.name for s in scenes if s.test] == sorted(_CHIPS)


def _drop_a_label(root: Path) -> str:
    (root / "labels" / _CHIPS[1]).unlink()
    return rf"chip .*{_CHIPS[1]} has no label raster: expected .*labels/{_CHIPS[1]}"


def _shrink_a_label(root: Path) -> str:
    with rasterio.open(root / "labels" / _CHIPS[0]) as src:
        profile, data = src.profile, src.read()
    profile.update(width=_SIDE - 1)
    with rasterio.open(root / "labels" / _CHIPS[0], "w", **profile) as dst:
        dst.write(data[:, :, :-1])
    return rf"labels/{_CHIPS[0]} is 48x47 pixels but .*chips/{_CHIPS[0]} is 48x48"


def _reproject_a_label(root: Path) -> str:
    with rasterio.open(root / "labels" / _CHIPS[2], "r+") as dst:
        dst.crs = "EPSG:32645"
    return rf"labels/{_CHIPS[2]} has CRS EPSG:32645 but"


def _list_an_unknown_chip(root: Path) -> str:
    (root / "test.txt").write_text("OAM-1-2-19\n")
    return r"test\.txt names chips that are not in .*chips: \['OAM-1-2-19'\]"


def _no_labels_folder(root: Path) -> str:
    for path in (root / "labels").iterdir():
        path.unlink()
    (root / "labels").rmdir()
    return r"labels does not exist: each chip in .*chips needs its label raster there"


@pytest.mark.parametrize(
    "break_it", [_drop_a_label, _shrink_a_label, _reproject_a_label, _list_an_unknown_chip, _no_labels_folder]
)
def test_an_incomplete_chips_layout_is_a_permanent_error_naming_the_file(
    shared_data: Path, tmp_path: Path, break_it: Callable[[Path], str]
) -> None:
    data = _chips_dataset(shared_data, tmp_path / "data")
    message = break_it(data)
    with pytest.raises(InvalidDatasetError, match=message) as caught:
        evaluate_segmentation("0" * 32, str(data), tracking_uri=f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(caught.value, PermanentError)


# --- which label value is which class (no model needed) ---------------------------------


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_the_example_keeps_its_classes_and_metric_names(tmp_path: Path) -> None:
    meta = {
        "classes": [{"value": 0, "name": "clear"}, {"value": 1, "name": "cloud"}],
        "positive_class": 1,
        "ignore_value": 255,
    }
    _write_json(tmp_path / "dataset.json", meta)
    example = json.loads((Path(__file__).parents[2] / "examples/cloud-mask/stac-item.json").read_text())
    model = parse_model_item(example)
    scheme = evaluation_classes(tmp_path, mlm_classes(model))
    assert scheme == evaluation_classes(tmp_path)  # with or without the MLM classes
    assert (scheme.names, scheme.label_values, scheme.model_values) == (["clear", "cloud"], [0, 1], [0, 1])
    assert (scheme.positive_index, scheme.ignore_value, scheme.source) == (1, 255, "dataset.json")
    # no dataset.json at all: the old defaults
    bare = evaluation_classes(tmp_path / "none")
    assert (bare.names, bare.label_values, bare.ignore_value) == (["negative", "positive"], [0, 1], 255)


def test_dataset_json_names_its_positive_class_by_name_or_value(tmp_path: Path) -> None:
    classes = [{"value": 0, "name": "background"}, {"value": 1, "name": "building"}]
    for positive in ("building", 1):  # the building example writes the name
        _write_json(tmp_path / "dataset.json", {"classes": classes, "positive_class": positive})
        scheme = evaluation_classes(tmp_path)
        assert (scheme.names, scheme.positive_index) == (["background", "building"], 1)
    _write_json(tmp_path / "dataset.json", {"classes": classes, "positive_class": [1]})
    with pytest.raises(InvalidDatasetError, match=r"dataset.json: positive_class: expected a class name"):
        evaluation_classes(tmp_path)


def test_the_real_banepa_item_names_no_raster_values_so_parameters_give_them(
    tmp_path: Path, shared_data: Path
) -> None:
    # The published item labels vector footprints (building=yes): nothing to read for rasters.
    item = json.loads(
        (shared_data / "banepa" / "buildings-banepa-segmentation" / "stac-item.json").read_text()
    )
    _write_json(tmp_path / "stac-item.json", item)
    classes = _fair_unet_classes(shared_data)
    scheme = evaluation_classes(tmp_path, classes, {"label_value": 255})
    assert scheme.names == ["background", "building"] and scheme.label_values == [0, 255]
    assert scheme.model_values == [0, 1] and scheme.positive_index == 1
    assert scheme.ignore_value is None  # the default 255 yields to the class burnt as 255
    assert scheme.source == "parameters (label_value)"


def test_parameters_win_over_the_label_item(tmp_path: Path, shared_data: Path) -> None:
    _label_item(shared_data, tmp_path)
    classes = _fair_unet_classes(shared_data)
    from_item = evaluation_classes(tmp_path, classes)
    assert from_item.label_values == [0, 255] and from_item.ignore_value == _IGNORE
    overridden = evaluation_classes(tmp_path, classes, {"label_values": {"building": 1, "background": 0}})
    assert overridden.label_values == [0, 1] and overridden.ignore_value == _IGNORE
    assert overridden.source == f"{tmp_path / 'label-item.json'}, parameters (label_values)"


@pytest.mark.parametrize(
    ("parameters", "error", "message"),
    [
        (
            {"label_vaule": 255},
            ParameterError,
            r"^parameter 'eval_params': 'label_vaule' is not an evaluation parameter \(it takes: "
            r"background_value, ignore_value, label_value, label_values, positive_class\)$",
        ),
        (
            {"label_value": 255, "ignore": 0, "classes": {}},
            ParameterError,
            r"'classes', 'ignore' are not evaluation parameters \(it takes: background_value,",
        ),
        ({"label_value": "roof"}, ParameterError, r"label_value: Input should be a valid integer"),
        (
            {"label_values": {"roof": 255}},
            InvalidDatasetError,
            r"\['roof'\] are not among .*background, building",
        ),
        ({"label_value": 255, "ignore_value": 255}, InvalidDatasetError, r"ignore value 255 .* 'building'"),
        ({"positive_class": "road"}, ParameterError, r"positive class 'road' is not among"),
    ],
)
def test_wrong_evaluation_parameters_are_named(
    tmp_path: Path, shared_data: Path, parameters: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as caught:
        evaluation_classes(tmp_path, _fair_unet_classes(shared_data), parameters)
    assert isinstance(caught.value, PermanentError)


def test_two_class_values_do_not_fit_a_three_class_model(tmp_path: Path) -> None:
    classes = [ModelClass(name=n, value=v) for v, n in enumerate(["background", "building", "road"])]
    with pytest.raises(ParameterError, match=r"the model has 3 .* give label_values"):
        evaluation_classes(tmp_path, classes, {"label_value": 255})
    scheme = evaluation_classes(
        tmp_path, classes, {"label_values": {"building": 255, "road": 128, "background": 0}}
    )
    assert scheme.label_values == [0, 255, 128] and scheme.positive_index == 2


def test_the_contract_page_documents_the_layouts_and_parameters() -> None:
    page = (Path(__file__).parents[2] / "docs" / "model-package.md").read_text()
    section = page.partition("## Evaluation")[2].partition("\n## ")[0]
    for field in EvaluationParameters.model_fields:
        assert f"| `{field}` |" in section, field
    for name in (f"{CHIPS_DIR}/", f"{CHIP_LABELS_DIR}/", TEST_LIST, *LABEL_ITEM_FILES, "InvalidDatasetError"):
        assert f"`{name}" in section, name


def test_the_labels_panel_names_only_the_marks_it_draws() -> None:
    from steps._quicklook import _marks

    test, excluded = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    assert _marks(test, excluded) == ""  # chips: no outline across a scene, no buffer
    test[:2] = True
    assert _marks(test, excluded) == " (test outlined)"
    excluded[2] = True
    assert _marks(test, excluded) == " (test outlined, buffer dimmed)"
    assert _marks(np.ones((4, 4), bool), excluded) == " (buffer dimmed)"
