"""The training WorkflowTemplate.

fetch-model ─┐                                                  ┌─> evaluate-in-image ─┐
             ├─> plan-training ─> train ─> collect-run ─┤                      ├─> register ─> publish
resolve-data ┘                                                  └─> evaluate ──────────┘

The model's image runs only the package's own commands (``train``, and ``evaluate`` when the
package has one: evaluate-in-image); geomlops' image plans (a copy of the package and the
dataset as artifacts, the command), collects the run the package made, evaluates packages
without an ``evaluate`` entry point, registers and publishes. They meet through the tracking
server and artifacts.
exit handler: mark training runs that were never collected FAILED; retract a registered version whose STAC
item was never published.
"""

from __future__ import annotations

from hera.workflows import DAG, Parameter, WorkflowTemplate

from pipelines._naming import workflow_metadata
from templates.training import (
    collect_run,
    evaluate,
    evaluate_in_image,
    fetch_model,
    plan_training,
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
        Parameter(
            name="eval_params",
            value="{}",
            description=(
                "Evaluation parameters as a JSON object, over the dataset's label item: label_value, "
                'background_value, ignore_value, label_values, positive_class; e.g. {"label_value": 255}.'
            ),
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
        plan = plan_training(
            arguments={
                "model": "{{workflow.parameters.model}}",
                "package": model.get_parameter("package"),
                "training_image": model.get_parameter("training_image"),
                "dataset": data.get_parameter("dataset"),
                "train_params": "{{workflow.parameters.train_params}}",
                "workflow_uid": "{{workflow.uid}}",
            }
        )
        fit = train(
            arguments=[
                model.get_parameter("training_image"),
                model.get_parameter("gpus"),
                plan.get_parameter("command"),
                plan.get_parameter("experiment_id"),
                plan.get_parameter("run_context"),
                plan.get_artifact("package"),
                plan.get_artifact("dataset"),
            ]
        )
        run = collect_run(
            arguments={
                "attempt": plan.get_parameter("attempt"),
                "package": model.get_parameter("package"),
                "training_image": model.get_parameter("training_image"),
            }
        )
        own_evaluation = evaluate_in_image(
            when=f"{run.get_parameter('has_evaluate')} == true",
            arguments=[
                model.get_parameter("training_image"),
                model.get_parameter("gpus"),
                run.get_parameter("evaluate_command").with_name("command"),
                run.get_parameter("run_id"),
                plan.get_artifact("package"),
                plan.get_artifact("dataset"),
            ],
        )
        score = evaluate(
            when=f"{run.get_parameter('has_evaluate')} == false",
            arguments={
                "run_id": run.get_parameter("run_id"),
                "dataset": data.get_parameter("dataset"),
                "package": model.get_parameter("package"),
                "model_spec": model.get_parameter("model_spec"),
                "eval_params": "{{workflow.parameters.eval_params}}",
            },
        )
        version = register(
            arguments={
                "model": "{{workflow.parameters.model}}",
                "run_id": run.get_parameter("run_id"),
                "dataset": data.get_parameter("dataset"),
            }
        )
        item = publish(
            arguments={
                "model": "{{workflow.parameters.model}}",
                "version": version.get_parameter("version"),
                "run_id": run.get_parameter("run_id"),
                "dataset": data.get_parameter("dataset"),
            }
        )
        [model, data] >> plan >> fit >> run >> [own_evaluation, score] >> version >> item  # type: ignore[operator,list-item]

    with DAG(name="exit-handler"):
        retract_unpublished(
            arguments={"model": "{{workflow.parameters.model}}", "workflow_uid": "{{workflow.uid}}"},
            when="{{workflow.status}} != Succeeded",
        )
