"""The training WorkflowTemplate.

fetch-model ─┐
             ├─> train ─> evaluate ─> register ─> publish
resolve-data ┘
exit handler: retract a registered version whose STAC item was never published.
"""

from __future__ import annotations

from hera.workflows import DAG, Parameter, WorkflowTemplate

from pipelines._naming import workflow_metadata
from templates.training import (
    evaluate,
    fetch_model,
    publish,
    register,
    resolve_dataset,
    retract_unpublished,
    train,
)

NAME = "training"

with WorkflowTemplate(
    **workflow_metadata(
        NAME,
        (
            "Train a model package on a DVC dataset version, evaluate it on a spatially held-out "
            "split, register an MLflow model version and publish its STAC item."
        ),
    ),
    entrypoint="training",
    on_exit="exit-handler",
    arguments=[
        Parameter(
            name="model", description="Model id: the base item's id in the catalogue's 'models' collection."
        ),
        Parameter(name="dataset_path", description="Dataset path inside the DVC repository."),
        Parameter(
            name="dataset_rev",
            value="HEAD",
            description="Git revision (branch, tag or commit) of the dataset.",
        ),
        Parameter(
            name="dataset_repo",
            value="",
            description="DVC repository URL; empty: the configured data repository.",
        ),
        Parameter(
            name="train_params",
            value="{}",
            description='Training parameters as a JSON object, e.g. {"max_iter": 200}.',
        ),
    ],
) as workflow:
    with DAG(name="training"):
        model = fetch_model(arguments={"model": "{{workflow.parameters.model}}"})
        data = resolve_dataset(
            arguments={
                "dataset_path": "{{workflow.parameters.dataset_path}}",
                "dataset_rev": "{{workflow.parameters.dataset_rev}}",
                "dataset_repo": "{{workflow.parameters.dataset_repo}}",
            }
        )
        fit = train(
            arguments={
                "model": "{{workflow.parameters.model}}",
                "package": model.get_parameter("package"),
                "training_image": model.get_parameter("training_image"),
                "gpus": model.get_parameter("gpus"),
                "dataset": data.get_parameter("dataset"),
                "train_params": "{{workflow.parameters.train_params}}",
                "workflow_uid": "{{workflow.uid}}",
            }
        )
        score = evaluate(
            arguments={
                "run_id": fit.get_parameter("run_id"),
                "dataset": data.get_parameter("dataset"),
                "package": model.get_parameter("package"),
            }
        )
        version = register(
            arguments={
                "model": "{{workflow.parameters.model}}",
                "run_id": fit.get_parameter("run_id"),
                "dataset": data.get_parameter("dataset"),
            }
        )
        item = publish(
            arguments={
                "model": "{{workflow.parameters.model}}",
                "version": version.get_parameter("version"),
                "run_id": fit.get_parameter("run_id"),
                "dataset": data.get_parameter("dataset"),
            }
        )
        [model, data] >> fit >> score >> version >> item  # type: ignore[operator]

    with DAG(name="exit-handler"):
        retract_unpublished(
            arguments={"model": "{{workflow.parameters.model}}", "workflow_uid": "{{workflow.uid}}"},
            when="{{workflow.status}} != Succeeded",
        )
