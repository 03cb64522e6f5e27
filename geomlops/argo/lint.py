"""Lint workflow manifests: Argo's JSON schema in strict mode, then what a schema cannot check.

Argo's published schema sets no ``additionalProperties: false``, so a misspelt field passes;
strict mode adds it to every object schema that lists its properties. Then: the entrypoint and
every referenced template exist, and every DAG's dependencies parse, name tasks of the DAG and
form no cycle (:func:`geomlops.argo.dag.check_dag`, the check the local runner makes too).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from pydantic import BaseModel

from geomlops.argo.dag import check_dag
from geomlops.argo.runner.node import request_errors
from geomlops.argo.template_library import missing_spec, workflow_spec, workflow_spec_path
from geomlops.schemas import json_path

ARGO_VERSION = "v4.1.2"
KINDS = ("Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow")

_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"


class LintResult(BaseModel):
    """What linting one manifest found."""

    source: str
    errors: list[str] = []
    schema_checked: bool = False
    schema_note: str | None = None

    @property
    def ok(self) -> bool:
        """No error found (the schema may still have been unavailable: see schema_note)."""
        return not self.errors


def argo_schema_path(schema_dir: Path | None) -> Path | None:
    """Where Argo's schema is in a by-URL schema folder, if it is there."""
    if schema_dir is None:
        return None
    path = schema_dir / "argo-workflows" / ARGO_VERSION / "schema.json"
    return path if path.is_file() else None


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@lru_cache(maxsize=4)
def strict_schema(path: Path) -> dict[str, Any]:
    """A Kubernetes-style JSON schema file (Argo Workflows', Argo Events') with unknown fields
    made errors, and IntOrString accepting integers (read once per path)."""
    schema = json.loads(path.read_text())
    strict: dict[str, Any] = _strict(copy.deepcopy(schema))
    # Kubernetes' IntOrString is published as a string type; integers are valid there too
    strict["definitions"][_INT_OR_STRING] = {"type": ["integer", "string"]}
    return strict


def schema_errors(manifest: Mapping[str, Any], schema_file: Path) -> list[str]:
    """Validate against Argo's schema for the manifest's kind, unknown fields being errors."""
    schema = strict_schema(schema_file)
    kind = manifest.get("kind")
    target = {
        "$ref": f"#/definitions/io.argoproj.workflow.v1alpha1.{kind}",
        "definitions": schema["definitions"],
    }
    errors = []
    for error in Draft202012Validator(target).iter_errors(manifest):
        path = list(error.absolute_path)
        if error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            errors.append(f"{json_path(path)}: unknown field(s) {', '.join(extra)}")
        else:
            errors.append(f"{json_path(path)}: {error.message}")
    return errors


def semantic_errors(manifest: Mapping[str, Any]) -> list[str]:
    """Checks the schema cannot do: references resolve and DAG dependencies are sound. Paths
    name the field in the manifest as written (a CronWorkflow's under ``$.spec.workflowSpec``)."""
    at = workflow_spec_path(manifest)
    spec = workflow_spec(manifest)
    if spec is None:
        return [missing_spec(manifest)]
    templates = {t.get("name"): t for t in spec.get("templates", []) or [] if isinstance(t, Mapping)}
    errors = []
    for field in ("entrypoint", "onExit"):
        name = spec.get(field)
        if name and name not in templates:
            errors.append(f"{at}.{field}: template '{name}' does not exist")
    if not spec.get("entrypoint") and not spec.get("workflowTemplateRef"):
        errors.append(f"{at}.entrypoint: missing")
    for t_index, template in enumerate(spec.get("templates", []) or []):
        tname = template.get("name")
        tasks = (template.get("dag") or {}).get("tasks") or []
        steps = [s for group in template.get("steps") or [] for s in group]
        for kind, nodes in (("dag.tasks", tasks), ("steps", steps)):
            for node in nodes:
                ref = node.get("template")
                if ref and ref not in templates:
                    errors.append(
                        f"{at}.templates[{t_index}].{kind}: '{node.get('name')}' of template "
                        f"'{tname}' uses template '{ref}', which does not exist"
                    )
        for problem in check_dag(template).problems:
            errors.append(f"{at}.templates[{t_index}].dag: {problem}")
    errors += request_errors(spec.get("templates", []) or [], f"{at}.templates")
    return errors


def lint_manifest(manifest: Any, source: str, schema_dir: Path | None) -> LintResult:
    """Lint one manifest (already parsed from YAML)."""
    result = LintResult(source=source)
    if not isinstance(manifest, Mapping):
        result.errors.append(f"{source}: expected a YAML mapping, got {type(manifest).__name__}")
        return result
    if manifest.get("kind") not in KINDS:
        result.errors.append(f"$.kind: expected one of {', '.join(KINDS)}, got {manifest.get('kind')!r}")
        return result
    schema_file = argo_schema_path(schema_dir)
    if schema_file is None:
        result.schema_note = (
            f"Argo {ARGO_VERSION} JSON schema not available offline "
            "(set GEOMLOPS_SCHEMA_DIR to a folder holding argo-workflows/<tag>/schema.json; "
            "`geomlops schemas fetch --into FOLDER` makes one while online)"
        )
    else:
        result.errors += schema_errors(manifest, schema_file)
        result.schema_checked = True
    result.errors += semantic_errors(manifest)
    return result
