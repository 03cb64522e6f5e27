"""Templates of the promotion workflow. Each calls one step; no logic of its own.

No ``from __future__ import annotations`` here: Hera reads the real annotation objects.
"""

import json
from typing import Annotated

from hera.workflows import Parameter, Suspend

from geomlops.settings import get_settings, use_tracking
from templates.common import LARGE, SMALL, geomlops_script


@geomlops_script(resources=LARGE)
def evaluate(
    model: str, candidate: str, dataset_path: str = "", dataset_rev: str = ""
) -> Annotated[str, Parameter(name="evaluation")]:
    """Score the candidate and the production version on the same held-out data, each read as
    its own version's MLM item says."""
    from steps.dataset import DatasetRef, materialize_dataset, resolve_dataset
    from steps.promotion_report import describe_evaluation, evaluate_versions, version_dataset

    use_tracking()
    settings = get_settings()
    dataset: DatasetRef = (
        resolve_dataset(settings.data_repo_url, dataset_path, dataset_rev or "HEAD")
        if dataset_path
        else version_dataset(model, candidate)
    )
    data = materialize_dataset(dataset, settings.home_dir / "datasets")
    evaluation = evaluate_versions(model, candidate, str(data), settings.catalog_href)
    print(describe_evaluation(evaluation))  # the step's log: what was scored, as which item, how
    return evaluation.model_dump_json()


@geomlops_script(resources=SMALL)
def report(
    model: str, evaluation: str, primary_metric: str = "", tolerance: str = ""
) -> tuple[
    Annotated[str, Parameter(name="report")],
    Annotated[str, Parameter(name="worse")],
    Annotated[str, Parameter(name="summary")],
]:
    """Apply the policy and log the comparison report to the candidate's run."""
    from catalog_sync import open_store
    from catalog_sync.collections import MODELS
    from steps.promotion_report import Evaluation, promotion_policy, write_comparison_report

    use_tracking()
    base = open_store(get_settings().catalog_href).get_item(MODELS, model)
    metric, value, source = promotion_policy(base.get("properties") or {}, primary_metric, tolerance)
    done = write_comparison_report(
        Evaluation.model_validate_json(evaluation),
        primary_metric=metric,
        tolerance=value,
        policy_source=source,
    )
    return done.files["report.json"], json.dumps(done.worse), done.summary


#: the human gate: Argo's UI asks for these when a person resumes the run; the local runner
#: fills them from ``geomlops run … --approve NAME --reason … [--override]`` or its prompt
approval = Suspend(
    name="approval",
    # shown on the waiting node (Argo's UI, the local runner): what the person approves
    inputs=[
        Parameter(name="report", description="The comparison report (in the candidate's MLflow run)."),
        Parameter(name="summary", description="The policy's verdict on the candidate."),
    ],
    intermediate_parameters=[
        Parameter(name="approver", default="", description="Who approves: a name or an email address."),
        Parameter(name="reason", default="", description="Why (recorded for audit)."),
        Parameter(
            name="override",
            default="false",
            enum=["false", "true"],
            description="true: promote even if the candidate is worse than production beyond the tolerance.",
        ),
        Parameter(
            name="approved_at", default="", description="Time of approval; empty: when it is recorded."
        ),
        Parameter(
            name="decision",
            default="approved",
            enum=["approved", "refused"],
            description="refused: the approver refuses the candidate (recorded for audit; nothing moves).",
        ),
    ],
)


# no retry: a decision is not retried blindly (a refusal would be recorded once per attempt)
@geomlops_script(resources=SMALL, retry_strategy=None)
def promote(
    model: str,
    candidate: str,
    report: str,
    approver: str,
    reason: str,
    decision: str,
    override: str = "false",
    approved_at: str = "",
) -> Annotated[str, Parameter(name="decision")]:
    """Record the approval (MLflow tags, STAC item) and move the production alias; or record
    the approver's refusal, moving nothing, and fail."""
    from steps.promotion import decision_json
    from steps.promotion import promote as promote_version

    use_tracking()
    decided = promote_version(
        model,
        candidate,
        approver=approver,
        reason=reason,
        approved_at=approved_at,
        override=override.strip().lower() == "true",
        report_uri=report,
        catalog=get_settings().catalog_href,
        decision=decision,
    )
    return decision_json(decided)


@geomlops_script(resources=SMALL)
def update_catalogue(model: str) -> Annotated[str, Parameter(name="updated")]:
    """Bring every version item of the model in line with MLflow (aliases, decisions)."""
    from steps.registry_sync import refresh_version_items

    use_tracking()
    return json.dumps(refresh_version_items(model, get_settings().catalog_href))


@geomlops_script(resources=SMALL)
def serve(model: str) -> Annotated[str, Parameter(name="manifests")]:
    """Render the serving manifests of the production version; apply them where settings say so."""
    from geomlops.serving.deploy import apply_serving_manifests, write_serving_manifests

    use_tracking()
    paths = write_serving_manifests(model, "production")
    apply_serving_manifests(paths)
    return json.dumps([str(p) for p in paths])
