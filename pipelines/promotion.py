"""The promotion WorkflowTemplate: a version reaches production only through a person.

evaluate ─> report ─> approval (suspend) ─> promote ─> update-catalogue ─> serve

``evaluate`` scores the candidate and the current production version on the same held-out
data; ``report`` applies the policy and logs the comparison to the candidate's run; the
``approval`` gate waits for a person (Argo's UI, or ``geomlops run … --approve``); ``promote``
records the decision and moves the ``production`` alias (keeping ``previous``), refusing a
worse candidate unless the approval overrides (a person's refusal at the gate, its
``decision: refused``, is recorded there too, and fails the run); ``update-catalogue`` refreshes the version
items; ``serve`` renders (and in a cluster applies) the serving manifests.
"""

from __future__ import annotations

from hera.workflows import DAG, Parameter, WorkflowTemplate

from pipelines._naming import workflow_metadata
from templates.promotion import approval, evaluate, promote, report, serve, update_catalogue

NAME = "promotion"

with WorkflowTemplate(
    **workflow_metadata(
        NAME,
        (
            "Compare a candidate model version with production on the same held-out data, wait for "
            "a person's approval, record it, move the MLflow alias 'production' and render serving."
        ),
    ),
    entrypoint="promotion",
    arguments=[
        Parameter(name="model", description="Registered model name (the base item's id in the catalogue)."),
        Parameter(name="candidate", description="The model version proposed for production."),
        Parameter(
            name="dataset_path",
            value="",
            description="Dataset path in the DVC repository to compare on; empty: the candidate's dataset.",
        ),
        Parameter(name="dataset_rev", value="", description="Git revision of dataset_path; empty: HEAD."),
        Parameter(
            name="primary_metric",
            value="",
            description="Metric the policy compares (higher is better); empty: MLM item's, else test_iou.",
        ),
        Parameter(
            name="tolerance",
            value="",
            description="How much worse than production a candidate may be; empty: MLM item's, else 0.01.",
        ),
    ],
) as workflow:
    with DAG(name="promotion"):
        scores = evaluate(
            arguments={
                "model": "{{workflow.parameters.model}}",
                "candidate": "{{workflow.parameters.candidate}}",
                "dataset_path": "{{workflow.parameters.dataset_path}}",
                "dataset_rev": "{{workflow.parameters.dataset_rev}}",
            }
        )
        compared = report(
            arguments={
                "model": "{{workflow.parameters.model}}",
                "evaluation": scores.get_parameter("evaluation"),
                "primary_metric": "{{workflow.parameters.primary_metric}}",
                "tolerance": "{{workflow.parameters.tolerance}}",
            }
        )
        gate = approval(
            arguments={
                "report": compared.get_parameter("report"),
                "summary": compared.get_parameter("summary"),
            }
        )
        assert gate is not None  # called inside a DAG, a template gives a Task
        decided = promote(
            arguments={
                "model": "{{workflow.parameters.model}}",
                "candidate": "{{workflow.parameters.candidate}}",
                "report": compared.get_parameter("report"),
                "approver": gate.get_parameter("approver"),
                "reason": gate.get_parameter("reason"),
                "override": gate.get_parameter("override"),
                "approved_at": gate.get_parameter("approved_at"),
                "decision": gate.get_parameter("decision"),
            }
        )
        catalogue = update_catalogue(arguments={"model": "{{workflow.parameters.model}}"})
        served = serve(arguments={"model": "{{workflow.parameters.model}}"})
        scores >> compared >> gate >> decided >> catalogue >> served  # type: ignore[operator]
