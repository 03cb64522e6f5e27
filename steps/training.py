"""Run a model package's ``train`` entry point with ``mlflow run``."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from geomlops.errors import TrainingFailedError
from steps.package import describe_package

WORKFLOW_TAG = "geomlops.workflow_uid"


class TrainingRun(BaseModel):
    """The MLflow run that trained a model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    run_id: str
    experiment_id: str
    reused: bool = False


def interpreter_path() -> str:
    """``PATH`` with this interpreter's folder first.

    ``mlflow run --env-manager local`` starts the entry point's ``python`` from ``PATH``: it
    must be the interpreter geomlops runs in (a container's, or the local ``.venv``'s), even
    when that environment was not activated.
    """
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def ensure_experiment(name: str, artifact_root: str) -> str:
    """Return the id of experiment ``name``, creating it with artifacts under ``artifact_root``."""
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    return str(client.create_experiment(name, artifact_location=f"{artifact_root}/{name}"))


def run_training(
    package: str,
    dataset_dir: str,
    *,
    experiment: str,
    artifact_root: str,
    parameters: Mapping[str, str | int | float] | None = None,
    tags: Mapping[str, str] | None = None,
    workflow_uid: str | None = None,
) -> TrainingRun:
    """Train with ``mlflow run PACKAGE -e train --env-manager local -P data=DATASET_DIR ...``.

    In a cluster this runs inside the model's own training image; on one machine, with the
    local interpreter. The MLflow tracking URI comes from the environment.

    Args:
        package: folder of the model package.
        dataset_dir: folder of the materialised dataset, passed as the ``data`` parameter.
        experiment: MLflow experiment name (created if needed).
        artifact_root: where a new experiment keeps its artifacts.
        parameters: training parameters for the entry point.
        tags: tags set on the run (dataset hash, model id ...).
        workflow_uid: the workflow run; a finished run with the same uid is reused, so a
            retried or resumed task never trains twice.

    Returns:
        The run id.

    Raises:
        InvalidPackageError: the package has no ``train`` entry point.
        TrainingFailedError: the entry point exited non-zero (the run is marked FAILED).
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import ExecutionException

    info = describe_package(package)
    experiment_id = ensure_experiment(experiment, artifact_root)
    client = MlflowClient()
    if workflow_uid:
        done = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{WORKFLOW_TAG}` = '{workflow_uid}' and attributes.status = 'FINISHED'",
            max_results=1,
        )
        if done:
            return TrainingRun(run_id=done[0].info.run_id, experiment_id=experiment_id, reused=True)
    run_tags = dict(tags or {})
    run_tags["geomlops.code.sha256"] = info.content_sha256
    if info.git_commit:
        run_tags["geomlops.code.git_commit"] = info.git_commit
    if workflow_uid:
        run_tags[WORKFLOW_TAG] = workflow_uid
    run = client.create_run(experiment_id, tags=run_tags, run_name=f"{info.name}-train")
    params = {k: str(v) for k, v in (parameters or {}).items()}
    params["data"] = dataset_dir
    os.environ["PATH"] = interpreter_path()
    try:
        mlflow.projects.run(  # type: ignore[no-untyped-call]
            info.path,
            entry_point="train",
            parameters=params,
            experiment_id=experiment_id,
            env_manager="local",
            synchronous=True,
            run_id=run.info.run_id,
        )
    except ExecutionException as err:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise TrainingFailedError(
            f"training entry point of {info.path} failed (MLflow run {run.info.run_id}): {err}"
        ) from err
    return TrainingRun(run_id=run.info.run_id, experiment_id=experiment_id)
