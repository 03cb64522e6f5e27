"""Evaluate a trained segmentation model on the held-out split of its dataset.

The dataset is a folder with ``image.tif`` (model input bands), ``labels.tif`` (class values,
an ignore value for unlabelled pixels), ``split.tif`` (2 marks test pixels) and optionally
``dataset.json`` (class names, positive class, ignore value), as the cloud-mask example
package's ``preprocess`` entry point writes it. The model is read back from the MLflow run
as a pyfunc taking ``(batch, bands, height, width)`` float32 and returning
``(batch, height, width)`` class values.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import rasterio
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict
from rasterio.windows import Window

from geomlops.errors import DatasetNotFoundError, GeomlopsError
from steps._metrics import confusion_matrix, segmentation_metrics
from steps._package_predictor import package_predictor
from steps._quicklook import NOT_EVALUATED, write_quicklook
from steps.package_env import cached_interpreter

IMAGE_FILE, LABELS_FILE, SPLIT_FILE, METADATA_FILE = "image.tif", "labels.tif", "split.tif", "dataset.json"
EXCLUDED_SPLIT, TEST_SPLIT = 0, 2
QUICKLOOK_ARTIFACT = "evaluation/quicklook.png"
METRICS_ARTIFACT = "evaluation/metrics.json"
_QUICKLOOK_MAX_SIDE = 800
#: run tag naming the environment the model was trained in (set by training)
ENVIRONMENT_TAG = "geomlops.environment"


class EvaluationReport(BaseModel):
    """What evaluating one run on one dataset's test split found."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    dataset_dir: str
    class_names: list[str]
    positive_class: str
    metrics: dict[str, float]
    n_test_pixels: int
    confusion_matrix: list[list[int]]
    """Rows: true class, columns: predicted class, in ``class_names`` order."""
    artifacts: list[str] = [QUICKLOOK_ARTIFACT, METRICS_ARTIFACT]


class _DatasetInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    class_values: list[int]
    class_names: list[str]
    positive_index: int
    ignore_value: int


def _local_dir(dataset_dir: str) -> Path:
    parsed = urlparse(dataset_dir)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive
        raise GeomlopsError(f"evaluation reads a local dataset folder, got {dataset_dir!r}")
    return Path(dataset_dir)


def _dataset_info(root: Path) -> _DatasetInfo:
    """Classes, positive class and ignore value from ``dataset.json`` (binary defaults)."""
    meta: dict[str, Any] = {}
    if (root / METADATA_FILE).is_file():
        meta = json.loads((root / METADATA_FILE).read_text(encoding="utf-8"))
    classes = meta.get("classes") or [{"value": 0, "name": "negative"}, {"value": 1, "name": "positive"}]
    values = [int(c["value"]) for c in classes]
    names = [str(c.get("name", f"class_{c['value']}")) for c in classes]
    positive = int(meta.get("positive_class", values[-1]))
    if positive not in values:
        raise GeomlopsError(f"{root / METADATA_FILE}: positive_class {positive} is not among {values}")
    ignore = int(meta.get("ignore_value", 255))
    return _DatasetInfo(
        class_values=values, class_names=names, positive_index=values.index(positive), ignore_value=ignore
    )


def chip_windows(height: int, width: int, chip_size: int) -> list[Window]:
    """Non-overlapping chips covering the grid row by row (edge chips are smaller)."""
    if chip_size < 1:
        raise GeomlopsError(f"chip_size must be >= 1, got {chip_size}")
    return [
        Window(col, row, min(chip_size, width - col), min(chip_size, height - row))
        for row in range(0, height, chip_size)
        for col in range(0, width, chip_size)
    ]


def _decimate_into(target: NDArray[Any], chip: NDArray[Any], window: Window, step: int) -> None:
    """Copy the chip's pixels on rows/columns that are multiples of ``step`` into ``target``."""
    row0, col0 = int(window.row_off), int(window.col_off)
    dr, dc = (-row0) % step, (-col0) % step
    part = chip[dr::step, dc::step]
    r, c = (row0 + dr) // step, (col0 + dc) // step
    target[r : r + part.shape[0], c : c + part.shape[1]] = part


def _model_artifact_uri(client: Any, run: Any, name: str = "model") -> str:
    """Where the run's ``name`` model lives: its MLflow 3 logged model, else the run's artifacts.

    Resolved here rather than through ``runs:/`` because MLflow resolves a logged model with
    the global tracking URI, not the client's.
    """
    page_token = None
    while True:
        page = client.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"name = '{name}'", page_token=page_token
        )
        for logged in page:
            if logged.source_run_id == run.info.run_id:
                return str(logged.artifact_location)
        page_token = page.token
        if not page_token:
            return f"{run.info.artifact_uri}/{name}"


@contextmanager
def _loaded_model(
    artifact_uri: str, run: Any, python: str | None
) -> Iterator[Callable[[NDArray[Any]], NDArray[Any]]]:
    """The run's model as ``predict(array)``, run in the model's own environment.

    The interpreter is ``python``, else the one of the environment the run was trained in
    (its ``geomlops.environment`` tag), else this one's; in every case a separate process,
    so geomlops never imports the model's framework.
    """
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    run_id = run.info.run_id
    if python is None:
        built = cached_interpreter(run.data.tags.get(ENVIRONMENT_TAG, "") or "-")
        python = str(built) if built else sys.executable
    with tempfile.TemporaryDirectory(prefix="geomlops-eval-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=tmp)
        except MlflowException as err:
            raise GeomlopsError(f"cannot load the model of run {run_id}: {err.message}") from err
        with package_predictor(python, local) as predict:
            yield predict


def _value_lookup(values: list[int]) -> NDArray[np.int64]:
    lookup = np.full(256, -1, dtype=np.int64)
    lookup[values] = np.arange(len(values))
    return lookup


def _as_indices(values: NDArray[Any], lookup: NDArray[np.int64], what: str) -> NDArray[np.int64]:
    ints = values.astype(np.int64)
    if ints.size and (ints.min() < 0 or ints.max() > 255 or np.any(lookup[ints] < 0)):
        unknown = sorted(set(np.unique(ints).tolist()) - set(np.flatnonzero(lookup >= 0).tolist()))
        raise GeomlopsError(f"{what} holds class values {unknown[:10]} that the dataset does not define")
    return lookup[ints]


@dataclass(frozen=True)
class ScoredRun:
    """A run's scores on a dataset's test split, with its decimated prediction (no IO)."""

    report: EvaluationReport
    labels: NDArray[np.uint8]
    """Class values, :data:`NOT_EVALUATED` for ignored pixels (at most ~800 px a side)."""
    predicted: NDArray[np.uint8]
    """Predicted class values on test blocks, :data:`NOT_EVALUATED` elsewhere."""
    test: NDArray[np.bool_]
    excluded: NDArray[np.bool_]
    positive_index: int


def score_segmentation(
    run_id: str,
    dataset_dir: str,
    *,
    tracking_uri: str | None = None,
    chip_size: int = 256,
    python: str | None = None,
) -> ScoredRun:
    """Score a run's model on the test split without writing anything to MLflow.

    The image is predicted chip by chip (windowed reads; chips without a labelled test pixel
    are skipped), so memory is bounded by the chip size and the quicklook's size. Only
    pixels with ``split == 2`` and a label other than the ignore value count.

    Args:
        run_id: MLflow run whose ``model`` artifact is a pyfunc segmentation model.
        dataset_dir: Dataset folder (path or ``file://`` URI).
        tracking_uri: MLflow tracking URI; default: the environment's.
        chip_size: Side of the chips predicted at once.
        python: interpreter of the model's environment; default: the one the run was
            trained in, else this one (always in a separate process).

    Returns:
        The report (metrics as :func:`evaluate_segmentation` describes them) and the
        decimated labels and prediction the quicklooks draw.

    Raises:
        DatasetNotFoundError: If ``image.tif``, ``labels.tif`` or ``split.tif`` is missing.
        GeomlopsError: If the rasters disagree, the model cannot be loaded, returns a shape
            other than ``(1, height, width)`` or a class the dataset does not define.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    root = _local_dir(dataset_dir)
    for name in (IMAGE_FILE, LABELS_FILE, SPLIT_FILE):
        if not (root / name).is_file():
            raise DatasetNotFoundError(
                f"{root / name} does not exist: an evaluation dataset needs "
                f"{IMAGE_FILE}, {LABELS_FILE} and {SPLIT_FILE}"
            )
    info = _dataset_info(root)
    lookup = _value_lookup(info.class_values)
    client = MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise GeomlopsError(f"MLflow has no run {run_id}: {err.message}") from err

    n = len(info.class_values)
    matrix = np.zeros((n, n), dtype=np.int64)
    with (
        rasterio.open(root / IMAGE_FILE) as image,
        rasterio.open(root / LABELS_FILE) as labels,
        rasterio.open(root / SPLIT_FILE) as split,
    ):
        if not image.shape == labels.shape == split.shape:
            raise GeomlopsError(
                f"{root}: image {image.shape}, labels {labels.shape} and split {split.shape} differ in size"
            )
        height, width = image.shape
        step = max(1, math.ceil(max(height, width) / _QUICKLOOK_MAX_SIDE))
        small = (math.ceil(height / step), math.ceil(width / step))
        ql_labels = np.full(small, NOT_EVALUATED, dtype=np.uint8)
        ql_predicted = np.full(small, NOT_EVALUATED, dtype=np.uint8)
        ql_test = np.zeros(small, dtype=bool)
        ql_excluded = np.zeros(small, dtype=bool)
        with _loaded_model(_model_artifact_uri(client, run), run, python) as predict:
            for window in chip_windows(height, width, chip_size):
                truth = labels.read(1, window=window)
                split_chip = split.read(1, window=window)
                test = split_chip == TEST_SPLIT
                evaluated = test & (truth != info.ignore_value)
                shown = np.where(truth == info.ignore_value, NOT_EVALUATED, truth).astype(np.uint8)
                _decimate_into(ql_labels, shown, window, step)
                _decimate_into(ql_test, test, window, step)
                _decimate_into(ql_excluded, split_chip == EXCLUDED_SPLIT, window, step)
                if not evaluated.any():
                    continue
                chip = image.read(window=window, out_dtype="float32")
                predicted = np.asarray(predict(chip[None]))
                expected = (1, int(window.height), int(window.width))
                if predicted.shape != expected:
                    raise GeomlopsError(
                        f"model of run {run_id} returned shape {predicted.shape} for input "
                        f"{(1, *chip.shape)}; expected {expected}"
                    )
                predicted_chip = predicted[0]
                matrix += confusion_matrix(
                    _as_indices(truth[evaluated], lookup, f"{root / LABELS_FILE}"),
                    _as_indices(predicted_chip[evaluated], lookup, f"the model of run {run_id}"),
                    n,
                )
                shown_pred = np.where(test, predicted_chip, NOT_EVALUATED).astype(np.uint8)
                _decimate_into(ql_predicted, shown_pred, window, step)

    metrics = segmentation_metrics(matrix, info.class_names, info.positive_index, prefix="test_")
    report = EvaluationReport(
        run_id=run_id,
        dataset_dir=str(root),
        class_names=info.class_names,
        positive_class=info.class_names[info.positive_index],
        metrics=metrics,
        n_test_pixels=int(matrix.sum()),
        confusion_matrix=matrix.tolist(),
    )
    return ScoredRun(report, ql_labels, ql_predicted, ql_test, ql_excluded, info.positive_index)


def evaluate_segmentation(
    run_id: str,
    dataset_dir: str,
    *,
    tracking_uri: str | None = None,
    chip_size: int = 256,
    python: str | None = None,
) -> EvaluationReport:
    """Score a run's model on the test split and log the scores to the same run.

    Scoring is :func:`score_segmentation`'s. Metrics go to the run with step 0 and a
    timestamp taken from the run, so evaluating twice logs the same values and adds no new
    metric history; the artifacts are overwritten.

    Args:
        run_id: MLflow run whose ``model`` artifact is a pyfunc segmentation model.
        dataset_dir: Dataset folder (path or ``file://`` URI).
        tracking_uri: MLflow tracking URI; default: the environment's.
        chip_size: Side of the chips predicted at once.
        python: interpreter of the model's environment (see :func:`score_segmentation`).

    Returns:
        The report: ``test_iou``, ``test_f1``, ``test_precision``, ``test_recall`` (positive
        class), ``test_accuracy``, ``test_miou``, per class ``test_iou_<name>`` and the like,
        the number of test pixels and the confusion matrix.

    Raises:
        DatasetNotFoundError: If ``image.tif``, ``labels.tif`` or ``split.tif`` is missing.
        GeomlopsError: If the rasters disagree, the model cannot be loaded, returns a shape
            other than ``(1, height, width)`` or a class the dataset does not define.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    scored = score_segmentation(
        run_id, dataset_dir, tracking_uri=tracking_uri, chip_size=chip_size, python=python
    )
    report, metrics, root = scored.report, scored.report.metrics, Path(scored.report.dataset_dir)
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    # A timestamp from the run (not the clock): re-evaluating writes identical rows.
    timestamp = int(run.info.end_time or run.info.start_time)
    client.log_batch(run_id, metrics=[Metric(k, v, timestamp, 0) for k, v in sorted(metrics.items())])
    client.set_tag(run_id, "geomlops.evaluation.dataset", str(root))
    with tempfile.TemporaryDirectory(prefix="geomlops-eval-") as tmp:
        out = Path(tmp)
        (out / Path(METRICS_ARTIFACT).name).write_text(
            report.model_dump_json(indent=2) + "\n", encoding="utf-8"
        )
        iou, f1 = metrics["test_iou"], metrics["test_f1"]
        write_quicklook(
            out / Path(QUICKLOOK_ARTIFACT).name,
            labels=scored.labels,
            predicted=scored.predicted,
            test=scored.test,
            excluded=scored.excluded,
            class_names=report.class_names,
            positive=scored.positive_index,
            title=f"run {run_id[:8]}: {report.positive_class} IoU {iou:.3f}, F1 {f1:.3f}, "
            f"{report.n_test_pixels} test pixels",
        )
        client.log_artifacts(run_id, tmp, artifact_path=str(Path(QUICKLOOK_ARTIFACT).parent))
    return report
