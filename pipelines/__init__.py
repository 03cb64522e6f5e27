"""Pipelines: WorkflowTemplates and CronWorkflows composed from templates, with golden YAML."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

from geomlops.errors import ManifestError

#: pipeline name -> module exposing ``workflow`` (a Hera WorkflowTemplate or CronWorkflow)
PIPELINES = {
    "training": "pipelines.training",
    "registration": "pipelines.registration",
    "batch-inference": "pipelines.batch_inference",
    "batch-inference-schedule": "pipelines.batch_inference_schedule",
    "promotion": "pipelines.promotion",
    "retrain": "pipelines.retrain",
}

GOLDEN_DIR = Path(__file__).parent


def render(name: str) -> dict[str, Any]:
    """Render pipeline ``name`` to the manifest Argo receives.

    Raises:
        ManifestError: no such pipeline (the message lists them).
    """
    if name not in PIPELINES:
        raise ManifestError(f"unknown pipeline '{name}' (pipelines: {', '.join(sorted(PIPELINES))})")
    module = importlib.import_module(PIPELINES[name])
    manifest: dict[str, Any] = module.workflow.to_dict()
    return manifest


def to_yaml(manifest: dict[str, Any]) -> str:
    """The YAML text of a manifest, as committed in the golden files."""
    return yaml.safe_dump(manifest, sort_keys=False, width=100)


def golden_path(name: str) -> Path:
    """The committed golden YAML of a pipeline."""
    return GOLDEN_DIR / f"{name}.yaml"


def template_resolver(name: str) -> dict[str, Any]:
    """Find a WorkflowTemplate by its ``metadata.name`` among the pipelines (for templateRef)."""
    for pipeline in PIPELINES:
        manifest = render(pipeline)
        if manifest["metadata"]["name"] == name:
            return manifest
    raise ManifestError(f"templateRef: no WorkflowTemplate named '{name}'")
