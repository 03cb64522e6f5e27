"""Train a model package: its ``train`` entry point runs in the model's own image.

Three tasks meet through the tracking server and artifacts, so that the model's image holds
nothing of geomlops: geomlops' step plans (:func:`plan_training`: a copy of the package and the
dataset as artifacts, the entry point's command with parameters substituted as ``mlflow run``
would, MLflow's variables); the model's image runs that command with ``MLFLOW_TRACKING_URI``
(always a tracking server), ``MLFLOW_EXPERIMENT_ID`` and ``MLFLOW_RUN_CONTEXT`` (the tags of
the run the package starts); geomlops' step finds that run by its attempt tag
(:func:`collect_training_run`). geomlops never creates the run, so a package that names its own
experiment is followed. On one machine the model's image is stood in for by the package's own
environment (:mod:`steps.local_images`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from geomlops.errors import InvalidPackageError, ItemNotFoundError, ModelNotFoundError, TrainingFailedError
from steps.package import PackageInfo, describe_package, read_mlproject, stage_package

WORKFLOW_TAG = "geomlops.workflow_uid"
#: tag naming one training attempt, so geomlops finds the run the package made
ATTEMPT_TAG = "geomlops.training_attempt"
#: tag set on the run geomlops accepted as the training's result
COLLECTED_TAG = "geomlops.training_collected"
#: how many of the entry point's last stderr lines a failure shows
ERROR_TAIL_LINES = 20


class TrainingRun(BaseModel):
    """The MLflow run that trained a model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    run_id: str
    experiment_id: str


def ensure_experiment(name: str, artifact_root: str) -> str:
    """Return the id of experiment ``name``, creating it with artifacts under ``artifact_root``."""
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    return str(client.create_experiment(name, artifact_location=f"{artifact_root}/{name}"))


def gpus_for(model_id: str, catalog: str) -> int:
    """GPUs the model's training asks for: 1 when its MLM ``mlm:accelerator`` is ``cuda``.

    Raises:
        ModelNotFoundError: no such model in the catalogue.
    """
    from catalog_sync import open_store
    from catalog_sync.collections import MODELS

    store = open_store(catalog)
    try:
        item = store.get_item(MODELS, model_id)
    except ItemNotFoundError as err:
        raise ModelNotFoundError(f"model '{model_id}' is not in the catalogue {catalog}") from err
    return 1 if (item.get("properties") or {}).get("mlm:accelerator") == "cuda" else 0


def _runs_tagged(client: Any, tag: str, value: str) -> list[Any]:
    """Top-level runs carrying ``tag = value`` in any experiment, newest first."""
    ids = [e.experiment_id for e in client.search_experiments()]
    found = f"tags.`{tag}` = '{value}'"
    runs = client.search_runs(ids, filter_string=found, order_by=["attributes.start_time DESC"])
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def entry_point_command(
    info: PackageInfo,
    entry_point: str,
    parameters: Mapping[str, str],
    where: str | Path,
    *,
    check_paths: bool = True,
) -> str:
    """The shell command of ``entry_point`` with ``parameters`` substituted as ``mlflow run`` does.

    ``check_paths=False`` passes ``path`` parameters as they are, for a command that runs where
    they exist (the model's image), not here.

    Raises:
        InvalidPackageError: a parameter is missing or has the wrong type.
    """
    from mlflow.exceptions import ExecutionException
    from mlflow.projects._project_spec import load_project

    try:
        project = load_project(str(where))  # type: ignore[no-untyped-call]
        spec = project.get_entry_point(entry_point)
        return str(spec.compute_command(dict(parameters), str(where) if check_paths else None))
    except ExecutionException as err:
        raise InvalidPackageError(f"{info.path}: MLproject entry point '{entry_point}': {err}") from err
    except KeyError as err:  # a {placeholder} of the command that is not a parameter
        declared = ", ".join(sorted(spec.parameters)) or "none"
        raise InvalidPackageError(
            f"{info.path}: MLproject entry point '{entry_point}': its command names {{{err.args[0]}}}, "
            f"which is not one of its parameters (declared: {declared})"
        ) from err
    except (ValueError, IndexError, AttributeError) as err:  # braces, {0}, a null mapping
        raise InvalidPackageError(
            f"{info.path}: MLproject entry point '{entry_point}': cannot be read or formatted ({err}); "
            "geomlops package check names the field"
        ) from err


def run_package_command(command: str, cwd: Path, env: Mapping[str, str]) -> tuple[int, list[str]]:
    """Run ``command`` with ``bash -c`` (as ``mlflow run`` does); stderr is passed through.

    Returns:
        The exit code and the last :data:`ERROR_TAIL_LINES` lines of stderr.
    """
    tail: deque[str] = deque(maxlen=ERROR_TAIL_LINES)
    proc = subprocess.Popen(
        ["bash", "-c", command], cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None

    def pump() -> None:
        assert proc.stderr is not None
        for raw in iter(proc.stderr.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            sys.stderr.write(line)
            sys.stderr.flush()
            if line.strip():
                tail.append(line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait()
    except BaseException:
        proc.kill()
        raise
    reader.join(timeout=10)
    return code, list(tail)


#: where the training tasks see the package's copy and the dataset, in both images: the
#: geomlops step writes them there as output artifacts, the model's image gets them there
PACKAGE_PATH = "/tmp/geomlops/package"
DATA_PATH = "/tmp/geomlops/data"


class TrainingPlan(BaseModel):
    """What the model's image runs to train, and how geomlops finds the run it makes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    command: str
    """The ``train`` entry point's command, parameters substituted as ``mlflow run`` does."""
    experiment_id: str
    """``MLFLOW_EXPERIMENT_ID``: where the run goes unless the package names its own."""
    run_context: str
    """``MLFLOW_RUN_CONTEXT``: JSON of the tags MLflow sets on the run the package starts."""
    attempt: str
    """The value of :data:`ATTEMPT_TAG` on that run."""


def plan_training(
    package: str,
    dataset_dir: str,
    staged_package: str | Path,
    *,
    experiment: str,
    artifact_root: str,
    parameters: Mapping[str, str | int | float] | None = None,
    tags: Mapping[str, str] | None = None,
    workflow_uid: str | None = None,
) -> TrainingPlan:
    """Prepare training: stage a copy of the package and compute its ``train`` command.

    geomlops creates no run: the package's own MLflow client starts one in its image, with
    MLflow's variables (``MLFLOW_EXPERIMENT_ID``, ``MLFLOW_RUN_CONTEXT``) from the plan, and
    :func:`collect_training_run` finds it by its attempt tag, in whichever experiment the
    package chose.

    Args:
        package: folder of the registered model package (never written to).
        dataset_dir: the dataset's folder as the training command sees it (``data``).
        staged_package: where the copy is made (the command runs there).
        experiment: MLflow experiment name (created if needed).
        artifact_root: where a new experiment keeps its artifacts.
        parameters: training parameters for the entry point.
        tags: tags set on the run (dataset hash, model id ...).
        workflow_uid: the workflow run, tagged on the MLflow run.

    Raises:
        InvalidPackageError: no ``train`` entry point, or a parameter is missing or mistyped.
    """
    info = describe_package(package, required=("train",))
    staged = stage_package(info.path, staged_package)
    attempt = uuid.uuid4().hex
    run_tags = dict(tags or {})
    run_tags.update(
        {
            ATTEMPT_TAG: attempt,
            "geomlops.code.sha256": info.content_sha256,
            "mlflow.project.entryPoint": "train",
            "mlflow.runName": f"{info.name}-train",
        }
    )
    if info.git_commit:
        run_tags["geomlops.code.git_commit"] = info.git_commit
        run_tags["mlflow.source.git.commit"] = info.git_commit
    if workflow_uid:
        run_tags[WORKFLOW_TAG] = workflow_uid
    params = {k: str(v) for k, v in (parameters or {}).items()}
    params["data"] = dataset_dir
    return TrainingPlan(
        command=entry_point_command(info, "train", params, staged, check_paths=False),
        experiment_id=ensure_experiment(experiment, artifact_root),
        run_context=json.dumps(run_tags, sort_keys=True),
        attempt=attempt,
    )


def collect_training_run(
    attempt: str, package_name: str = "the package", tags: Mapping[str, str] | None = None
) -> TrainingRun:
    """The run the ``train`` command made, marked finished, with ``tags`` added.

    Raises:
        TrainingFailedError: it made no MLflow run (it must start one and log the model).
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    runs = _runs_tagged(client, ATTEMPT_TAG, attempt)
    if not runs:
        raise TrainingFailedError(
            f"training entry point of {package_name} finished but made no MLflow run "
            "(it must start one, e.g. with mlflow.start_run(), and log the model)"
        )
    run = runs[0]
    for stale in runs[1:]:  # an attempt killed before a resume started this one again
        if stale.info.status in ("RUNNING", "SCHEDULED"):
            client.set_terminated(stale.info.run_id, status="KILLED")
    for key, value in {**(tags or {}), COLLECTED_TAG: "true"}.items():
        client.set_tag(run.info.run_id, key, value)
    if run.info.status in ("RUNNING", "SCHEDULED"):
        client.set_terminated(run.info.run_id, status="FINISHED")
    return TrainingRun(run_id=run.info.run_id, experiment_id=run.info.experiment_id)


def fail_uncollected_runs(workflow_uid: str) -> list[str]:
    """Mark the workflow's training runs that geomlops never collected as FAILED (exit handler).

    A package's command that crashed may still have ended its run as FINISHED (MLflow's client
    does so when the interpreter exits), so the run's own status does not say that training
    failed; whether :func:`collect_training_run` accepted it does.

    Returns:
        Their run ids.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    failed = []
    for run in _runs_tagged(client, WORKFLOW_TAG, workflow_uid):
        if run.data.tags.get(COLLECTED_TAG) != "true" and run.info.status != "FAILED":
            client.set_terminated(run.info.run_id, status="FAILED")
            failed.append(run.info.run_id)
    return failed


def evaluation_command(package: str | Path, run_id: str, dataset_dir: str) -> str:
    """The package's ``evaluate`` command for the run's model, or "" when it has none.

    The entry point receives ``model_uri`` (``runs:/<run id>/model``) and ``data``; it runs with
    ``MLFLOW_RUN_ID`` set to the training run, so what it logs lands there.
    """
    if "evaluate" not in (read_mlproject(Path(package)).get("entry_points") or {}):
        return ""  # known without hashing the package, as describe_package does
    info = describe_package(package, required=("evaluate",))
    parameters = {"model_uri": f"runs:/{run_id}/model", "data": dataset_dir}
    return entry_point_command(info, "evaluate", parameters, info.path, check_paths=False)
