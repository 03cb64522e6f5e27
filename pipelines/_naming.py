"""Names of rendered templates carry the package version, so a cluster can hold releases side by side."""

from __future__ import annotations

from typing import Any

from geomlops import __version__


def template_name(pipeline: str) -> str:
    """``geomlops-<pipeline>-<version>``, a valid Kubernetes name (``0.1.0`` → ``0-1-0``)."""
    return f"geomlops-{pipeline}-{__version__.replace('.', '-').replace('+', '-')}"


#: the label naming the pipeline a WorkflowTemplate, CronWorkflow or Workflow was rendered from
PIPELINE_LABEL = "geomlops.io/pipeline"

#: the ServiceAccount every workflow runs as (created by `geomlops install`)
SERVICE_ACCOUNT = "geomlops-workflow"


def workflow_metadata(pipeline: str, description: str) -> dict[str, Any]:
    """Keyword arguments every geomlops WorkflowTemplate and CronWorkflow shares.

    Name with the package version, the ServiceAccount, labels, and the description Argo's UI
    shows.
    """
    return {
        "name": template_name(pipeline),
        "service_account_name": SERVICE_ACCOUNT,
        "labels": {"app.kubernetes.io/part-of": "geomlops", PIPELINE_LABEL: pipeline},
        "annotations": {"workflows.argoproj.io/description": description},
    }
