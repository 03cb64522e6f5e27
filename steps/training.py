"""Run a model package's ``train`` entry point in the package's own environment.

The entry point's command (as ``MLproject`` declares it, parameters substituted as
``mlflow run`` would) runs as a subprocess of :mod:`steps.package_env`'s environment, in a
copy of the package, with MLflow's own variables: ``MLFLOW_TRACKING_URI`` (always a tracking
server, see :mod:`steps._tracking_server`), ``MLFLOW_EXPERIMENT_ID`` and ``MLFLOW_RUN_CONTEXT``
(tags set on the run the package starts). A direct subprocess rather than ``mlflow run``:
``mlflow run`` would have to come from the package's environment (which may hold a client
without the projects module, e.g. ``mlflow-skinny``) and insists on its own run id, which
fails when the package names its own experiment. geomlops never creates the run: it finds
the run the package made by a tag, in whichever experiment the package chose.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from geomlops.errors import InvalidPackageError, ItemNotFoundError, ModelNotFoundError, TrainingFailedError
from steps._tracking_server import tracking_server
from steps.evaluation import ENVIRONMENT_TAG
from steps.package import PackageInfo, describe_package, stage_package
from steps.package_env import PackageEnvironment, command_environment, ensure_environment

WORKFLOW_TAG = "geomlops.workflow_uid"
#: tag naming one training attempt, so geomlops finds the run the package made
ATTEMPT_TAG = "geomlops.training_attempt"
#: how many of the entry point's last stderr lines a failure shows
ERROR_TAIL_LINES = 20


class TrainingRun(BaseModel):
    """The MLflow run that trained a model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    run_id: str
    experiment_id: str
    reused: bool = False


def interpreter_path() -> str:
    """``PATH`` with this interpreter's folder first (geomlops' own tools, not a package's)."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


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


def _runs_tagged(client: Any, tag: str, value: str, status: str | None = None) -> list[Any]:
    """Top-level runs carrying ``tag = value`` in any experiment, newest first."""
    ids = [e.experiment_id for e in client.search_experiments()]
    found = f"tags.`{tag}` = '{value}'" + (f" and attributes.status = '{status}'" if status else "")
    runs = client.search_runs(ids, filter_string=found, order_by=["attributes.start_time DESC"])
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def entry_point_command(
    info: PackageInfo, entry_point: str, parameters: Mapping[str, str], where: Path
) -> str:
    """The shell command of ``entry_point`` with ``parameters`` substituted as ``mlflow run`` does.

    Raises:
        InvalidPackageError: a parameter is missing or has the wrong type.
    """
    from mlflow.exceptions import ExecutionException
    from mlflow.projects._project_spec import load_project

    try:
        project = load_project(str(where))  # type: ignore[no-untyped-call]
        return str(project.get_entry_point(entry_point).compute_command(dict(parameters), str(where)))
    except ExecutionException as err:
        raise InvalidPackageError(f"{info.path}: MLproject entry point '{entry_point}': {err}") from err


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


def run_entry_point(
    info: PackageInfo,
    environment: PackageEnvironment,
    entry_point: str,
    parameters: Mapping[str, str],
    mlflow_env: Mapping[str, str],
    *,
    artifact_root: str,
    work_dir: str | Path | None = None,
) -> tuple[int, list[str]]:
    """Run an entry point of the package in its environment, in a copy of the package.

    The command talks to a tracking server (a local one on the embedded store, for as long as
    it runs); ``mlflow_env`` adds MLflow's own variables (experiment, run, run context).

    Returns:
        The exit code and the last lines of the command's stderr.

    Raises:
        InvalidPackageError: a parameter is missing or has the wrong type.
    """
    import mlflow

    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"geomlops-{entry_point}-", dir=work_dir) as tmp:
        staged = stage_package(info.path, Path(tmp) / info.name)
        command = entry_point_command(info, entry_point, parameters, staged)
        with tracking_server(mlflow.get_tracking_uri(), artifact_root) as url:
            env = command_environment(environment)
            for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
                env.pop(name, None)
            env.update(
                {
                    "MLFLOW_TRACKING_URI": url,
                    # MLflow would turn a package's uv.lock into the model's requirements
                    "MLFLOW_UV_AUTO_DETECT": "false",
                    "MLFLOW_LOG_UV_FILES": "false",
                    **mlflow_env,
                }
            )
            print(f"{entry_point} of {info.name} in {environment.root}: {command}", file=sys.stderr)
            return run_package_command(command, staged, env)


def run_training(
    package: str,
    dataset_dir: str,
    *,
    experiment: str,
    artifact_root: str,
    parameters: Mapping[str, str | int | float] | None = None,
    tags: Mapping[str, str] | None = None,
    workflow_uid: str | None = None,
    work_dir: str | Path | None = None,
) -> TrainingRun:
    """Train: the package's ``train`` entry point in its own environment, tracked over HTTP.

    Args:
        package: folder of the model package (never written to: a copy runs).
        dataset_dir: folder of the materialised dataset, passed as the ``data`` parameter.
        experiment: MLflow experiment name (created if needed); a package that sets its own
            experiment is followed.
        artifact_root: where a new experiment keeps its artifacts.
        parameters: training parameters for the entry point.
        tags: tags set on the run (dataset hash, model id ...).
        workflow_uid: the workflow run; a finished run with the same uid is reused, so a
            retried or resumed task never trains twice.
        work_dir: where the package's copy runs (a temporary folder, removed after).

    Returns:
        The run the package made.

    Raises:
        InvalidPackageError: the package has no ``train`` entry point or a bad declaration.
        MissingInterpreterError: the Python version it declares is not on this machine.
        PackageEnvironmentError: its environment cannot be built.
        TrainingFailedError: the entry point exited non-zero (its last stderr lines in the
            message; the run, if it made one, is marked FAILED) or made no MLflow run.
    """
    from mlflow import MlflowClient

    info = describe_package(package)
    experiment_id = ensure_experiment(experiment, artifact_root)
    client = MlflowClient()
    if workflow_uid:
        done = _runs_tagged(client, WORKFLOW_TAG, workflow_uid, "FINISHED")
        if done:
            run = done[0]
            return TrainingRun(run_id=run.info.run_id, experiment_id=run.info.experiment_id, reused=True)
    environment = ensure_environment(info.path)
    if environment.note:
        print(environment.note, file=sys.stderr)
    attempt = uuid.uuid4().hex
    run_tags = dict(tags or {})
    run_tags.update(
        {
            ATTEMPT_TAG: attempt,
            "geomlops.code.sha256": info.content_sha256,
            ENVIRONMENT_TAG: environment.hash,
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
    mlflow_env = {"MLFLOW_EXPERIMENT_ID": experiment_id, "MLFLOW_RUN_CONTEXT": json.dumps(run_tags)}
    code, tail = run_entry_point(
        info, environment, "train", params, mlflow_env, artifact_root=artifact_root, work_dir=work_dir
    )
    runs = _runs_tagged(client, ATTEMPT_TAG, attempt)
    if code != 0:
        for run in runs:
            if run.info.status in ("RUNNING", "SCHEDULED"):
                client.set_terminated(run.info.run_id, status="FAILED")
        made = f" (MLflow run {runs[0].info.run_id})" if runs else ""
        last = "\n".join(f"  {line}" for line in tail) or "  (nothing on stderr)"
        raise TrainingFailedError(
            f"training entry point of {info.name} exited with code {code}{made}; "
            f"its last error lines:\n{last}"
        )
    if not runs:
        raise TrainingFailedError(
            f"training entry point of {info.name} finished but made no MLflow run "
            "(it must start one, e.g. with mlflow.start_run(), and log the model)"
        )
    run = runs[0]
    if run.info.status == "RUNNING":
        client.set_terminated(run.info.run_id, status="FINISHED")
    return TrainingRun(run_id=run.info.run_id, experiment_id=run.info.experiment_id)
