"""Evaluation by the package itself: its ``evaluate`` entry point, in its own environment.

A package whose ``MLproject`` declares ``evaluate`` is evaluated by it; geomlops' own
evaluation (:mod:`steps.evaluation`) serves the others. The entry point receives
``model_uri`` (``runs:/<run id>/model``) and ``data`` (the dataset folder), runs with
``MLFLOW_RUN_ID`` set to the training run, so what it logs lands there, and talks to a tracking
server as training does. Its metrics are the run's metrics afterwards.
"""

from __future__ import annotations

import sys
from pathlib import Path

from geomlops.errors import EvaluationFailedError
from steps.package import describe_package, read_mlproject
from steps.package_env import ensure_environment
from steps.training import ERROR_TAIL_LINES, run_entry_point

ENTRY_POINT = "evaluate"


def has_evaluate_entry_point(package: str | Path) -> bool:
    """Whether the package's ``MLproject`` declares an ``evaluate`` entry point."""
    entry_points = read_mlproject(Path(package)).get("entry_points") or {}
    return isinstance(entry_points, dict) and ENTRY_POINT in entry_points


def evaluate_with_entry_point(
    package: str | Path,
    run_id: str,
    dataset_dir: str,
    *,
    artifact_root: str,
    work_dir: str | Path | None = None,
) -> dict[str, float]:
    """Run the package's ``evaluate`` entry point on the training run's model.

    Args:
        package: folder of the model package.
        run_id: the training run (its ``model`` is evaluated; metrics are logged to it).
        dataset_dir: folder of the materialised dataset, passed as ``data``.
        artifact_root: default artifact root of the local tracking server.
        work_dir: where the package's copy runs.

    Returns:
        The run's metrics once the entry point finished.

    Raises:
        InvalidPackageError: the package has no ``evaluate`` entry point.
        EvaluationFailedError: the entry point exited non-zero (its last stderr lines in the
            message).
    """
    from mlflow import MlflowClient

    info = describe_package(package, required=(ENTRY_POINT,))
    client = MlflowClient()
    run = client.get_run(run_id)
    environment = ensure_environment(info.path)
    if environment.note:
        print(environment.note, file=sys.stderr)
    parameters = {"model_uri": f"runs:/{run_id}/model", "data": dataset_dir}
    mlflow_env = {"MLFLOW_RUN_ID": run_id, "MLFLOW_EXPERIMENT_ID": str(run.info.experiment_id)}
    code, tail = run_entry_point(
        info, environment, ENTRY_POINT, parameters, mlflow_env, artifact_root=artifact_root, work_dir=work_dir
    )
    if code != 0:
        last = "\n".join(f"  {line}" for line in tail[-ERROR_TAIL_LINES:]) or "  (nothing on stderr)"
        raise EvaluationFailedError(
            f"evaluate entry point of {info.name} exited with code {code} (MLflow run {run_id}); "
            f"its last error lines:\n{last}"
        )
    return {k: float(v) for k, v in client.get_run(run_id).data.metrics.items()}
