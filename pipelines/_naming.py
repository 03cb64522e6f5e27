"""Names of rendered templates carry the package version, so a cluster can hold releases side by side."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from geomlops import __version__


def template_name(pipeline: str) -> str:
    """``geomlops-<pipeline>-<version>``, a valid Kubernetes name (``0.1.0`` → ``0-1-0``)."""
    return f"geomlops-{pipeline}-{__version__.replace('.', '-').replace('+', '-')}"


#: the label naming the pipeline a WorkflowTemplate, CronWorkflow or Workflow was rendered from
PIPELINE_LABEL = "geomlops.io/pipeline"


def pipeline_named(name: str) -> str | None:
    """The pipeline whose WorkflowTemplate is named ``name`` (``geomlops-<pipeline>-<version>``,
    of any version), else None."""
    from pipelines import PIPELINES

    for pipeline in PIPELINES:
        if re.fullmatch(rf"geomlops-{re.escape(pipeline)}-[0-9][0-9a-z-]*", name):
            return pipeline
    return None


def manifest_pipeline(manifest: Mapping[str, Any]) -> str | None:
    """The geomlops pipeline a manifest was rendered from: its label, or for a Workflow the
    WorkflowTemplate it refers to (:func:`pipeline_named`); None for any other manifest."""
    from pipelines import PIPELINES

    metadata = manifest.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    label = labels.get(PIPELINE_LABEL) if isinstance(labels, Mapping) else None
    if isinstance(label, str) and label in PIPELINES:
        return label
    spec = manifest.get("spec")
    ref = spec.get("workflowTemplateRef") if isinstance(spec, Mapping) else None
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return pipeline_named(name) if isinstance(name, str) else None


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
