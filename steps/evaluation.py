"""Evaluate a trained segmentation model on the held-out part of its dataset.

The dataset is either one raster (``image.tif``, ``labels.tif``, ``split.tif`` where 2 marks
test pixels, as the cloud-mask example's ``preprocess`` writes it) or ``chips/`` + ``labels/``
folders (``test.txt`` picks the test chips); see :mod:`steps._eval_layout`. Which label value
is which class, and which is ignored, comes from the dataset's STAC label item,
``dataset.json`` or the evaluation parameters, matched with the model's MLM classes, whose names
name the per-class metrics (:mod:`steps._eval_classes`). The model is read back from the MLflow
run as a pyfunc and predicts in its own environment; what goes into it and what its answer
means (class values, per-class scores, one score) come from its MLM item (:mod:`steps.model_io`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from catalog_sync.mlm import ModelClass, ModelSpec
from geomlops.errors import GeomlopsError
from steps._eval_classes import (
    ClassScheme,
    EvaluationParameters,
    class_scheme,
    label_spec,
    parse_parameters,
    read_label_sources,
)
from steps._eval_layout import dataset_scenes
from steps._eval_scoring import Quicklook, score_scene
from steps._metrics import per_class_table, segmentation_metrics
from steps._package_predictor import package_predictor
from steps._quicklook import write_quicklook
from steps.model_io import ModelIO
from steps.package_env import logged_model_python

QUICKLOOK_ARTIFACT = "evaluation/quicklook.png"
METRICS_ARTIFACT = "evaluation/metrics.json"
#: run tag naming the environment the model was trained in (set by training)
ENVIRONMENT_TAG = "geomlops.environment"


class EvaluationReport(BaseModel):
    """What evaluating one run on one dataset's test split found."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")

    run_id: str
    dataset_dir: str
    class_names: list[str]
    positive_class: str
    metrics: dict[str, float]
    n_test_pixels: int
    confusion_matrix: list[list[int]]
    """Rows: true class, columns: predicted class, in ``class_names`` order."""
    per_class: dict[str, dict[str, float]] = {}
    """Class name -> its ``iou``, ``f1``, ``precision``, ``recall`` and ``support``."""
    class_values: list[int] = []
    """Each class's value in the model's prediction."""
    label_values: list[int | None] = []
    """Each class's value in the label rasters (None: never labelled)."""
    ignore_value: int | None = None
    layout: str = "raster"
    """``raster`` (image + split) or ``chips`` (``chips/`` + ``labels/``)."""
    n_test_scenes: int = 1
    label_source: str = ""
    """Where the label values came from (defaults, ``dataset.json``, the label item, parameters)."""
    artifacts: list[str] = [QUICKLOOK_ARTIFACT, METRICS_ARTIFACT]


def _local_dir(dataset_dir: str) -> Path:
    parsed = urlparse(dataset_dir)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive
        raise GeomlopsError(f"evaluation reads a local dataset folder, got {dataset_dir!r}")
    return Path(dataset_dir)


def mlm_classes(model_spec: str | ModelSpec) -> tuple[ModelClass, ...]:
    """The classes of the model's first MLM output that has any (none: an empty tuple).

    Args:
        model_spec: the model's spec, or its JSON (the training workflow's ``model_spec``).
    """
    spec = model_spec if isinstance(model_spec, ModelSpec) else ModelSpec.model_validate_json(model_spec)
    return next((output.classes for output in spec.outputs if output.classes), ())


#: the tag holding the evaluation parameters a training run was evaluated with (JSON)
PARAMETERS_TAG = "geomlops.evaluation.parameters"


def recorded_parameters(run: Any) -> EvaluationParameters:
    """The evaluation parameters ``run`` (an MLflow run) was evaluated with (none: defaults)."""
    return EvaluationParameters.model_validate_json(run.data.tags.get(PARAMETERS_TAG) or "{}")


def evaluation_classes(
    dataset_dir: str | Path,
    model_classes: Sequence[ModelClass] = (),
    parameters: Mapping[str, Any] | EvaluationParameters | None = None,
) -> ClassScheme:
    """The classes evaluation scores on a dataset: its label values matched with the model's.

    Args:
        dataset_dir: the dataset folder.
        model_classes: the model's MLM classes (see :func:`mlm_classes`).
        parameters: evaluation parameters (see :class:`EvaluationParameters`).

    Raises:
        ParameterError: a parameter that is not one, or does not fit the classes.
        InvalidDatasetError: an unreadable label item or ``dataset.json``, or label values that
            do not match the model's classes.
    """
    meta, item = read_label_sources(_local_dir(str(dataset_dir)))
    labelled = (str(item[0]), item[1]) if item else None
    return class_scheme(label_spec(meta, labelled, parse_parameters(parameters)), model_classes)


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

    The interpreter is ``python``, else the one :func:`steps.package_env.logged_model_python`
    chooses (the environment the run was trained in, or one built from the model's logged
    declaration); in every case a separate process, so geomlops never imports the model's
    framework.
    """
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    run_id = run.info.run_id
    with tempfile.TemporaryDirectory(prefix="geomlops-eval-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=tmp)
        except MlflowException as err:
            raise GeomlopsError(f"cannot load the model of run {run_id}: {err.message}") from err
        if python is None:
            python = logged_model_python(run.data.tags.get(ENVIRONMENT_TAG, ""), local)
        with package_predictor(python, local) as predict:
            yield predict


@dataclass(frozen=True)
class ScoredRun:
    """A run's scores on a dataset's test split, with its decimated prediction (no IO)."""

    report: EvaluationReport
    labels: NDArray[np.uint8]
    """Class indices, :data:`NOT_EVALUATED` for ignored pixels (at most ~800 px a side)."""
    predicted: NDArray[np.uint8]
    """Predicted class indices on test blocks, :data:`NOT_EVALUATED` elsewhere."""
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
    model_classes: Sequence[ModelClass] = (),
    parameters: Mapping[str, Any] | EvaluationParameters | None = None,
    model_spec: str | ModelSpec | None = None,
) -> ScoredRun:
    """Score a run's model on the test split without writing anything to MLflow.

    Each image is predicted chip by chip (windowed reads; chips without a labelled test pixel
    are skipped), so memory is bounded by the chip size and the quicklook's size. Only test
    pixels (``split == 2``, or every pixel of a test chip) whose label is not the ignore value
    count.

    Args:
        run_id: MLflow run whose ``model`` artifact is a pyfunc segmentation model.
        dataset_dir: Dataset folder (path or ``file://`` URI) in either layout.
        tracking_uri: MLflow tracking URI; default: the environment's.
        chip_size: Side of the chips predicted at once.
        python: interpreter of the model's environment; default: the one the run was
            trained in, else one built from the model's logged declaration, else this one
            where it has what the model needs (always in a separate process).
        model_classes: the model's MLM classes: they name the classes and give the values
            the model predicts (see :func:`mlm_classes`); default: the dataset's.
        parameters: evaluation parameters: label, background and ignore values
            (:class:`EvaluationParameters`).
        model_spec: the model's MLM spec (or its JSON): input scaling and resizing, how its
            answer becomes class values (:mod:`steps.model_io`), and its classes when
            ``model_classes`` is empty. None: values as read, class values back.

    Returns:
        The report (metrics as :func:`evaluate_segmentation` describes them) and the
        decimated labels and prediction the quicklooks draw.

    Raises:
        DatasetNotFoundError: If neither layout's files are there (the missing one named).
        InvalidDatasetError: If a chip lacks its label, rasters disagree in size or grid, or a
            label value matches no class.
        ParameterError: If an evaluation parameter is wrong.
        GeomlopsError: If the model cannot be loaded, returns a shape other than
            ``(1, height, width)`` or a class value it does not declare.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    spec = ModelSpec.model_validate_json(model_spec) if isinstance(model_spec, str) else model_spec
    io = ModelIO.from_spec(spec, halo=0) if spec is not None else ModelIO(halo=0)
    model_classes = model_classes or (mlm_classes(spec) if spec is not None else ())
    root = _local_dir(dataset_dir)
    layout, scenes = dataset_scenes(root)
    scheme = evaluation_classes(root, model_classes, parameters)
    client = MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise GeomlopsError(f"MLflow has no run {run_id}: {err.message}") from err

    n = len(scheme.names)
    matrix = np.zeros((n, n), dtype=np.int64)
    quicklook = Quicklook(scenes)
    with _loaded_model(_model_artifact_uri(client, run), run, python) as predict:
        for number, scene in enumerate(scenes):
            matrix += score_scene(
                number, scene, scheme, predict, chip_size, quicklook, f"the model of run {run_id}", io
            )

    names = scheme.names
    report = EvaluationReport(
        run_id=run_id,
        dataset_dir=str(root),
        class_names=names,
        positive_class=names[scheme.positive_index],
        metrics=segmentation_metrics(matrix, names, scheme.positive_index, prefix="test_"),
        n_test_pixels=int(matrix.sum()),
        confusion_matrix=matrix.tolist(),
        per_class=per_class_table(matrix, names),
        class_values=scheme.model_values,
        label_values=scheme.label_values,
        ignore_value=scheme.ignore_value,
        layout=layout,
        n_test_scenes=sum(1 for sc in scenes if sc.test),
        label_source=scheme.source,
    )
    return ScoredRun(
        report,
        quicklook.labels,
        quicklook.predicted,
        quicklook.test,
        quicklook.excluded,
        scheme.positive_index,
    )


def evaluate_segmentation(
    run_id: str,
    dataset_dir: str,
    *,
    tracking_uri: str | None = None,
    chip_size: int = 256,
    python: str | None = None,
    model_classes: Sequence[ModelClass] = (),
    parameters: Mapping[str, Any] | EvaluationParameters | None = None,
    model_spec: str | ModelSpec | None = None,
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
        model_classes: the model's MLM classes (see :func:`score_segmentation`).
        parameters: evaluation parameters (see :func:`score_segmentation`).
        model_spec: the model's MLM spec (see :func:`score_segmentation`).

    Returns:
        The report: ``test_iou``, ``test_f1``, ``test_precision``, ``test_recall`` (positive
        class), ``test_accuracy``, ``test_miou``, per class ``test_iou_<name>`` and the like
        (``<name>`` the MLM class name), the number of test pixels and the confusion matrix.

    Raises:
        As :func:`score_segmentation`.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    scored = score_segmentation(
        run_id,
        dataset_dir,
        tracking_uri=tracking_uri,
        chip_size=chip_size,
        python=python,
        model_classes=model_classes,
        parameters=parameters,
        model_spec=model_spec,
    )
    report, metrics, root = scored.report, scored.report.metrics, Path(scored.report.dataset_dir)
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    # A timestamp from the run (not the clock): re-evaluating writes identical rows.
    timestamp = int(run.info.end_time or run.info.start_time)
    client.log_batch(run_id, metrics=[Metric(k, v, timestamp, 0) for k, v in sorted(metrics.items())])
    client.set_tag(run_id, "geomlops.evaluation.dataset", str(root))
    # what later evaluations of this model (promotion) score with, so they read labels alike
    client.set_tag(run_id, PARAMETERS_TAG, parse_parameters(parameters).model_dump_json(exclude_none=True))
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
