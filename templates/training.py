"""Script templates of the training workflow. Each calls one step; no logic of its own.

No ``from __future__ import annotations`` here: Hera reads the real annotation objects.

Hera's runner constructor renders each function as a script template that runs
``python -m hera.workflows.runner -e templates.training:<function>``: the container (or the
local runner) calls exactly the function below with the task's input parameters.
"""

import json
from typing import Annotated

from hera.workflows import Parameter

from geomlops.settings import get_settings, use_tracking
from steps.dataset import DatasetRef
from templates.common import IMAGE, LARGE, SMALL, geomlops_script


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


# no retry: each attempt would start another MLflow run of the whole training
@geomlops_script(
    resources=LARGE,
    retry_strategy=None,
    image="{{inputs.parameters.training_image}}",
    pod_spec_patch=GPU_PATCH,
)
def train(
    model: str,
    package: str,
    dataset: DatasetRef,
    training_image: str,
    gpus: str = "0",
    train_params: str = "{}",
    workflow_uid: str = "",
) -> Annotated[str, Parameter(name="run_id")]:
    """Run the package's train entry point in the package's own environment."""
    from steps.dataset import materialize_dataset
    from steps.training import run_training

    use_tracking()
    settings = get_settings()
    data = materialize_dataset(dataset, settings.home_dir / "datasets")
    run = run_training(
        package,
        str(data),
        experiment=model,
        artifact_root=settings.artifact_root,
        parameters=json.loads(train_params or "{}"),
        tags={
            "geomlops.model": model,
            "geomlops.dataset.md5": dataset.md5,
            "geomlops.training_image": training_image,
        },
        workflow_uid=workflow_uid or None,
        work_dir=settings.home_dir / "work",
    )
    return run.run_id


@geomlops_script(resources=LARGE)
def evaluate(
    run_id: str, dataset: DatasetRef, package: str = ""
) -> Annotated[str, Parameter(name="metrics")]:
    """Evaluate the trained model: the package's ``evaluate`` entry point when it has one, else
    geomlops' evaluation on the dataset's spatially held-out split, predicting in the package's
    own environment."""
    from steps.dataset import materialize_dataset
    from steps.evaluation import evaluate_segmentation
    from steps.package_env import ensure_environment
    from steps.package_evaluation import evaluate_with_entry_point, has_evaluate_entry_point

    use_tracking()
    settings = get_settings()
    data = materialize_dataset(dataset, settings.home_dir / "datasets")
    if package and has_evaluate_entry_point(package):
        metrics = evaluate_with_entry_point(
            package,
            run_id,
            str(data),
            artifact_root=settings.artifact_root,
            work_dir=settings.home_dir / "work",
        )
        return json.dumps(metrics, sort_keys=True)
    python = str(ensure_environment(package).python) if package else None
    report = evaluate_segmentation(run_id, str(data), python=python)
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
    """Exit handler: delete versions this run registered but did not publish."""
    from steps.publish import retract_unpublished_versions

    use_tracking()
    return json.dumps(retract_unpublished_versions(model, workflow_uid, catalog=get_settings().catalog_href))
