"""The retrain WorkflowTemplate: a change to a model's code, retrained up to the human gate.

checkout ─> validate-package ─> build-image ─> dataset ─> plan-training ─> train ─> collect-run
  ─> evaluate-in-image (the package's own evaluate) / evaluate (geomlops') ─> register ─> publish
  ─> compare ─> report ─> approval (suspend) ─> promote ─> update-catalogue ─> serve
exit handler: retract a registered version whose STAC item was never published.

CI starts it (the gateway's signed webhook, or an Argo Events sensor in a cluster) with the
model id, its git repository and the pushed commit. The package is checked out at that commit,
validated and its image built with the registration workflow's templates; it trains on the
dataset of the model's registered version and is evaluated with the training workflow's; the
promotion workflow's templates compare it with production and stop at the approval gate.
Nothing is promoted without a person: the run waits there until someone approves or refuses.

Every reused step is a ``templateRef`` to the installed WorkflowTemplate that owns it, so this
template and those it reuses cannot drift apart (``geomlops install`` installs them together).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from typing import Any

from hera.workflows import DAG, Artifact, Parameter, Task, WorkflowTemplate
from hera.workflows.models import TemplateRef

from pipelines._naming import template_name, workflow_metadata
from templates.retrain import checkout_source, registered_dataset

NAME = "retrain"


def _reuse(
    task: str,
    pipeline: str,
    template: str,
    *,
    artifacts: Mapping[str, str] | None = None,
    when: str | None = None,
    **arguments: str,
) -> Task:
    """A task running ``template`` of the installed ``pipeline`` WorkflowTemplate.

    ``artifacts`` maps the template's input artifacts to where they come from (``{{tasks…}}``).
    """
    passed: list[Parameter | Artifact] = [Parameter(name=k, value=v) for k, v in arguments.items()]
    passed += [Artifact(name=name, from_=source) for name, source in (artifacts or {}).items()]
    return Task(
        name=task,
        template_ref=TemplateRef(name=template_name(pipeline), template=template),
        arguments=passed,
        when=when,
    )


def _out(task: str, parameter: str) -> str:
    return f"{{{{tasks.{task}.outputs.parameters.{parameter}}}}}"


def _artifact(task: str, name: str) -> str:
    return f"{{{{tasks.{task}.outputs.artifacts.{name}}}}}"


MODEL = "{{workflow.parameters.model}}"

with WorkflowTemplate(
    **workflow_metadata(
        NAME,
        (
            "Retrain a model from a commit of its repository: validate the package, build its image, "
            "train on the model's registered dataset, evaluate, and compare with production up to "
            "the approval gate, where a person decides."
        ),
    ),
    entrypoint="retrain",
    on_exit="exit-handler",
    arguments=[
        Parameter(
            name="model", description="Model id: the base item's id in the catalogue's 'models' collection."
        ),
        Parameter(name="repository", description="Git URL (or folder) of the model's repository."),
        Parameter(name="commit", description="The commit to retrain from (7 to 40 hexadecimal digits)."),
        Parameter(
            name="package_dir",
            value="",
            description="The model package's folder in the repository; empty: root.",
        ),
        Parameter(
            name="dataset_rev",
            value="",
            description="Revision to read the registered dataset at; empty: exactly the registered version.",
        ),
        Parameter(
            name="train_params",
            value="{}",
            description='Training parameters as a JSON object, e.g. {"max_iter": 200}.',
        ),
        Parameter(name="push", value="true", enum=["true", "false"], description="Push the built image."),
    ],
) as workflow:
    with DAG(name="retrain"):
        source: Any = checkout_source(
            name="checkout",
            arguments={
                "repository": "{{workflow.parameters.repository}}",
                "commit": "{{workflow.parameters.commit}}",
                "package_dir": "{{workflow.parameters.package_dir}}",
            },
        )
        package = _out("checkout", "package")
        steps: list[Any] = [source]
        steps.append(_reuse("validate-package", "registration", "validate-package", package=package))
        steps.append(
            _reuse(
                "build-image",
                "registration",
                "build-image",
                package=package,
                image=_out("validate-package", "image"),
                push="{{workflow.parameters.push}}",
                cache_repo="",
            )
        )
        steps.append(
            registered_dataset(
                name="dataset",
                arguments={
                    "model": MODEL,
                    "package_model": _out("validate-package", "model_id"),
                    "dataset_rev": "{{workflow.parameters.dataset_rev}}",
                },
            )
        )
        dataset = _out("dataset", "dataset")
        image = _out("validate-package", "image")
        steps.append(
            _reuse(
                "plan-training",
                "training",
                "plan-training",
                model=MODEL,
                package=package,
                dataset=dataset,
                training_image=image,
                train_params="{{workflow.parameters.train_params}}",
                workflow_uid="{{workflow.uid}}",
            )
        )
        staged = {name: _artifact("plan-training", name) for name in ("package", "dataset")}
        steps.append(
            _reuse(
                "train",
                "training",
                "train",
                artifacts=staged,
                training_image=image,
                command=_out("plan-training", "command"),
                experiment_id=_out("plan-training", "experiment_id"),
                run_context=_out("plan-training", "run_context"),
            )
        )
        steps.append(
            _reuse(
                "collect-run",
                "training",
                "collect-run",
                attempt=_out("plan-training", "attempt"),
                package=package,
                training_image=image,
            )
        )
        run_id = _out("collect-run", "run_id")
        steps.append(
            _reuse(
                "evaluate-in-image",
                "training",
                "evaluate-in-image",
                artifacts=staged,
                when=f"{_out('collect-run', 'has_evaluate')} == true",
                training_image=image,
                command=_out("collect-run", "evaluate_command"),
                run_id=run_id,
            )
        )
        steps.append(
            _reuse(
                "evaluate",
                "training",
                "evaluate",
                when=f"{_out('collect-run', 'has_evaluate')} == false",
                run_id=run_id,
                dataset=dataset,
                package=package,
            )
        )
        steps.append(_reuse("register", "training", "register", model=MODEL, run_id=run_id, dataset=dataset))
        version = _out("register", "version")
        steps.append(
            _reuse(
                "publish", "training", "publish", model=MODEL, version=version, run_id=run_id, dataset=dataset
            )
        )
        # the candidate is compared with production on the dataset it was trained on
        steps.append(
            _reuse(
                "compare",
                "promotion",
                "evaluate",
                model=MODEL,
                candidate=version,
                dataset_path="",
                dataset_rev="",
            )
        )
        steps.append(
            _reuse(
                "report",
                "promotion",
                "report",
                model=MODEL,
                evaluation=_out("compare", "evaluation"),
                primary_metric="",
                tolerance="",
            )
        )
        steps.append(
            _reuse(
                "approval",
                "promotion",
                "approval",
                report=_out("report", "report"),
                summary=_out("report", "summary"),
            )
        )
        steps.append(
            _reuse(
                "promote",
                "promotion",
                "promote",
                model=MODEL,
                candidate=version,
                report=_out("report", "report"),
                approver=_out("approval", "approver"),
                reason=_out("approval", "reason"),
                override=_out("approval", "override"),
                approved_at=_out("approval", "approved_at"),
                decision=_out("approval", "decision"),
            )
        )
        steps.append(_reuse("update-catalogue", "promotion", "update-catalogue", model=MODEL))
        steps.append(_reuse("serve", "promotion", "serve", model=MODEL))
        for before, after in pairwise(steps):
            before >> after

    with DAG(name="exit-handler"):
        _reuse(
            "retract-unpublished",
            "training",
            "retract-unpublished",
            model=MODEL,
            workflow_uid="{{workflow.uid}}",
        )
