"""Manifests and parameters as the command line takes them: a pipeline's name or a YAML file,
``NAME=VALUE`` pairs, the parameters a manifest declares and the ``--templates`` library."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from geomlops.errors import ManifestError, ParameterError


def load_manifest(source: str) -> dict[str, Any]:
    """A pipeline name renders it; anything else is read as a YAML manifest file."""
    from pipelines import PIPELINES, render

    if source in PIPELINES:
        return render(source)
    path = Path(source)
    if not path.is_file():
        pipelines = ", ".join(sorted(PIPELINES))
        looks_like_a_file = (
            path.suffix.lower() in (".yaml", ".yml", ".json") or os.sep in source or "/" in source
        )
        if looks_like_a_file and not path.exists():
            raise ManifestError(
                f"{source}: no such file (PIPELINE is a pipeline name — {pipelines} — or a manifest file)"
            )
        close = difflib.get_close_matches(source, sorted(PIPELINES), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ManifestError(f"'{source}' is neither a pipeline ({pipelines}) nor a manifest file{hint}")
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as err:
        raise ManifestError(f"{path}: not valid YAML ({err})") from err
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ManifestError(f"{path}: expected exactly one YAML mapping (a Workflow or WorkflowTemplate)")
    manifest: dict[str, Any] = docs[0]
    return manifest


def manifest_arguments(manifest: Mapping[str, Any]) -> dict[str, str]:
    """The literal values a manifest gives its parameters (``spec.arguments.parameters``; an
    Argo expression such as ``{{workflow.name}}`` is resolved in the run, not checked here)."""
    spec = manifest.get("spec")
    arguments = spec.get("arguments") if isinstance(spec, Mapping) else None
    parameters = arguments.get("parameters") if isinstance(arguments, Mapping) else None
    return {
        str(p["name"]): str(p["value"])
        for p in parameters or []
        if isinstance(p, Mapping)
        and "name" in p
        and p.get("value") is not None
        and "{{" not in str(p["value"])
    }


def load_lintable(source: str) -> list[tuple[str, dict[str, Any]]]:
    """What ``lint`` checks in SOURCE, each with its label: a pipeline, a one-document file,
    or every Argo document (``apiVersion: argoproj.io/…``) of a multi-document file, as
    ``geomlops install`` writes them.

    Raises:
        ManifestError: SOURCE is neither, is not YAML, or holds no Argo document.
    """
    from pipelines import PIPELINES

    path = Path(source)
    if source in PIPELINES or not path.is_file():
        return [(source, load_manifest(source))]
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as err:
        raise ManifestError(f"not valid YAML ({err})") from err
    if len(docs) == 1 and isinstance(docs[0], dict):
        return [(source, docs[0])]
    argo = [
        d for d in docs if isinstance(d, dict) and str(d.get("apiVersion", "")).startswith("argoproj.io/")
    ]
    if not argo:
        raise ManifestError(
            f"no Argo document (apiVersion argoproj.io/…) among its {len(docs)} YAML document(s)"
        )
    return [(f"{source} [{d.get('kind')} {(d.get('metadata') or {}).get('name')}]", d) for d in argo]


def parse_params(pairs: tuple[str, ...], option: str = "-p") -> dict[str, str]:
    """``NAME=VALUE`` pairs (given with ``option``) to a dict."""
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ParameterError(f"{option} {pair!r}: expected NAME=VALUE")
        params[name] = value
    return params


def manifest_parameters(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The workflow parameters a manifest declares (a CronWorkflow's in its ``workflowSpec``)."""
    from geomlops.argo.template_library import workflow_spec

    spec = workflow_spec(manifest) or {}
    parameters = (spec.get("arguments") or {}).get("parameters") or []
    return [p for p in parameters if isinstance(p, dict) and p.get("name")]


def template_library(paths: tuple[Path, ...]) -> Any:
    """The templates of ``--templates`` paths, with geomlops' own pipelines after them."""
    from geomlops.argo.template_library import TemplateLibrary
    from pipelines import template_resolver

    return TemplateLibrary.load(paths, fallback=template_resolver, fallback_name="geomlops' pipelines")
