"""Script templates of the training workflow. Each calls one step; no logic of its own.

No ``from __future__ import annotations`` here: Hera reads the real annotation objects.

Hera's runner constructor renders each function as a script template that runs
``python -m hera.workflows.runner -e templates.training:<function>``: the container (or the
local runner) calls exactly the function below with the task's input parameters.
"""

import json
from typing import Annotated

from hera.workflows import Artifact, Container, Env, NoneArchiveStrategy, Parameter, RetryStrategy, SecretEnv

from geomlops.settings import get_settings, use_tracking
from steps.dataset import DatasetRef
from steps.training import DATA_PATH, PACKAGE_PATH
from templates.common import IMAGE, LARGE, NETWORK_RETRY, SECRET_ENV, SMALL, WORKFLOW_UID_ENV, geomlops_script


@geomlops_script(resources=SMALL)
def fetch_model(
    model: str,
) -> tuple[
    Annotated[str, Parameter(name="package")],
    Annotated[str, Parameter(name="training_image")],
    Annotated[str, Parameter(name="model_spec")],
    Annotated[str, Parameter(name="gpus")],
]:
    """Read the model's MLM item from the catalogue (GPUs: 1 for ``mlm:accelerator: cuda``)."""
    from steps.model_spec import fetch_model_spec
    from steps.training import gpus_for

    catalog = get_settings().catalog_href
    spec = fetch_model_spec(model, catalog)
    gpus = gpus_for(model, catalog)
    return spec.package_uri or "", spec.training_image or IMAGE, spec.model_dump_json(), str(gpus)


@geomlops_script(resources=SMALL)
def resolve_dataset(
    dataset_path: str, dataset_rev: str = "HEAD", dataset_repo: str = ""
) -> Annotated[DatasetRef, Parameter(name="dataset")]:
    """Resolve the DVC dataset to its content hash and commit."""
    from steps.dataset import resolve_dataset as resolve

    return resolve(dataset_repo or get_settings().data_repo_url, dataset_path, dataset_rev or "HEAD")


#: a GPU limit for models whose MLM accelerator is cuda (``gpus`` is "1"; "0" asks for none)
GPU_PATCH = (
    "containers:\n- name: main\n  resources:\n    limits:\n"
    '      nvidia.com/gpu: "{{inputs.parameters.gpus}}"\n'
)

#: the package's copy and the dataset, as the planning step writes them and the model's image
#: reads them (no archive: a dataset is mostly compressed rasters already)
PACKAGE_ARTIFACT = Artifact(name="package", path=PACKAGE_PATH, archive=NoneArchiveStrategy())
DATA_ARTIFACT = Artifact(name="dataset", path=DATA_PATH, archive=NoneArchiveStrategy())


@geomlops_script(resources=LARGE, outputs=[PACKAGE_ARTIFACT, DATA_ARTIFACT], env=[WORKFLOW_UID_ENV])
def plan_training(
    model: str,
    package: str,
    dataset: DatasetRef,
    training_image: str,
    train_params: str = "{}",
    workflow_uid: str = "",
) -> tuple[
    Annotated[str, Parameter(name="command")],
    Annotated[str, Parameter(name="experiment_id")],
    Annotated[str, Parameter(name="run_context")],
    Annotated[str, Parameter(name="attempt")],
]:
    """Stage the package and the dataset for the model's image and compute its train command."""
    import shutil

    from steps.dataset import materialize_dataset
    from steps.local_images import record_image, this_workflow
    from steps.training import plan_training

    use_tracking()
    settings = get_settings()
    data = materialize_dataset(dataset, settings.home_dir / "datasets")
    shutil.copytree(data, DATA_PATH, dirs_exist_ok=True)
    plan = plan_training(
        package,
        DATA_PATH,
        PACKAGE_PATH,
        experiment=model,
        artifact_root=settings.artifact_root,
        parameters=json.loads(train_params or "{}"),
        tags={
            "geomlops.model": model,
            "geomlops.dataset.md5": dataset.md5,
            "geomlops.training_image": training_image,
        },
        workflow_uid=workflow_uid or None,
    )
    record_image(training_image, package, settings.home_dir, workflow=this_workflow())
    return plan.command, plan.experiment_id, plan.run_context, plan.attempt


#: MLflow's variables for a package's own client in the model's image (the tracking server's
#: address and credentials come from the same secrets as geomlops' own steps)
MLFLOW_ENV = [
    SecretEnv(name="MLFLOW_TRACKING_URI", secret_name="geomlops-config", secret_key="mlflow-tracking-uri"),
    *(e for e in SECRET_ENV if e.name.startswith(("MLFLOW_", "AWS_"))),
    # MLflow would turn a package's uv.lock into the model's requirements
    Env(name="MLFLOW_UV_AUTO_DETECT", value="false"),
    Env(name="MLFLOW_LOG_UV_FILES", value="false"),
]


def in_model_image(
    name: str, mlflow_env: dict[str, str], retry_strategy: RetryStrategy | None = None
) -> Container:
    """A template running only a package command (input ``command``) in the model's image.

    It gets the package's copy and the dataset as artifacts, works in the copy, and has
    MLflow's variables: :data:`MLFLOW_ENV` and ``mlflow_env`` (name -> an input parameter's
    name, also declared as an input).
    """
    return Container(
        name=name,
        image="{{inputs.parameters.training_image}}",
        command=["bash", "-c", "{{inputs.parameters.command}}"],
        working_dir=PACKAGE_PATH,
        inputs=[
            Parameter(name="training_image"),
            Parameter(name="command"),
            *(Parameter(name=source) for source in mlflow_env.values()),
            Parameter(name="gpus", default="0"),
            PACKAGE_ARTIFACT,
            DATA_ARTIFACT,
        ],
        env=[
            *MLFLOW_ENV,
            *(
                Env(name=var, value=f"{{{{inputs.parameters.{source}}}}}")
                for var, source in mlflow_env.items()
            ),
            WORKFLOW_UID_ENV,
        ],
        resources=LARGE,
        retry_strategy=retry_strategy,
        pod_spec_patch=GPU_PATCH,
    )


# no retry: each attempt would start another MLflow run of the whole training
train = in_model_image(
    "train", {"MLFLOW_EXPERIMENT_ID": "experiment_id", "MLFLOW_RUN_CONTEXT": "run_context"}
)


@geomlops_script(resources=SMALL, env=[WORKFLOW_UID_ENV])
def collect_run(
    attempt: str, package: str, training_image: str = ""
) -> tuple[
    Annotated[str, Parameter(name="run_id")],
    Annotated[str, Parameter(name="evaluate_command")],
    Annotated[str, Parameter(name="has_evaluate")],
]:
    """Find the run the package's train command made; its ``evaluate`` command, if it has one."""
    from steps.evaluation import ENVIRONMENT_TAG
    from steps.local_images import stand_in_hash, this_workflow
    from steps.training import collect_training_run, evaluation_command

    use_tracking()
    # on one machine: the environment that stood in for the image, for later predictions
    home = get_settings().home_dir
    environment = stand_in_hash(training_image, home, this_workflow()) if training_image else ""
    run = collect_training_run(attempt, package, {ENVIRONMENT_TAG: environment} if environment else None)
    command = evaluation_command(package, run.run_id, DATA_PATH)
    return run.run_id, command, str(bool(command)).lower()


# the package's own evaluation, logging to the training run
evaluate_in_image = in_model_image("evaluate-in-image", {"MLFLOW_RUN_ID": "run_id"}, NETWORK_RETRY)


@geomlops_script(resources=LARGE)
def evaluate(
    run_id: str, dataset: DatasetRef, package: str = "", model_spec: str = "", eval_params: str = "{}"
) -> Annotated[str, Parameter(name="metrics")]:
    """geomlops' evaluation on the dataset's test split, for a package without an ``evaluate``
    entry point, predicting in the package's own environment; classes named as the model's
    MLM item names them, label values from the dataset's label item or ``eval_params``."""
    from steps.dataset import materialize_dataset
    from steps.evaluation import evaluate_segmentation, mlm_classes
    from steps.package_env import ensure_environment

    use_tracking()
    settings = get_settings()
    data = materialize_dataset(dataset, settings.home_dir / "datasets")
    python = str(ensure_environment(package).python) if package else None
    report = evaluate_segmentation(
        run_id,
        str(data),
        python=python,
        model_classes=mlm_classes(model_spec) if model_spec else (),
        parameters=json.loads(eval_params or "{}"),
        model_spec=model_spec or None,
    )
    return json.dumps(report.metrics, sort_keys=True)


@geomlops_script(resources=SMALL)
def register(model: str, run_id: str, dataset: DatasetRef) -> Annotated[str, Parameter(name="version")]:
    """Register the run's model as a new version (idempotent on the run id)."""
    from steps.registry import register_model_version

    use_tracking()
    tags = {"geomlops.dataset": dataset.model_dump_json(), "geomlops.dataset.md5": dataset.md5}
    return register_model_version(model, run_id, tags=tags)


@geomlops_script(resources=SMALL)
def publish(
    model: str, version: str, run_id: str, dataset: DatasetRef
) -> Annotated[str, Parameter(name="item")]:
    """Publish the version's STAC item, linked to its run, data and code."""
    from steps.publish import publish_version_item

    use_tracking()
    return publish_version_item(model, version, run_id, dataset, catalog=get_settings().catalog_href)


@geomlops_script(resources=SMALL)
def retract_unpublished(model: str, workflow_uid: str) -> Annotated[str, Parameter(name="retracted")]:
    """Exit handler: mark the training runs it did not collect FAILED; delete versions it
    registered but did not publish."""
    from steps.publish import retract_unpublished_versions
    from steps.training import fail_uncollected_runs

    use_tracking()
    fail_uncollected_runs(workflow_uid)
    return json.dumps(retract_unpublished_versions(model, workflow_uid, catalog=get_settings().catalog_href))
