"""Held-out evaluation of a segmentation run (steps.evaluation) on the cloud-mask example."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Iterator
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
from rasterio.transform import from_origin

from geomlops.errors import DatasetNotFoundError, GeomlopsError
from steps.evaluation import EvaluationReport, evaluate_segmentation

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
        (_WrongShape(), r"returned shape \(1, 6, 6\).*expected \(1, 5, 6\)"),
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
