"""A loaded workflow: the manifest's spec and every template it can reach, by source and name.

Built and checked by :func:`.manifest.load_workflow`; read by the static checks and the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from geomlops.errors import ManifestError

#: how a ClusterWorkflowTemplate's source is keyed (a WorkflowTemplate's key is its name)
CLUSTER_PREFIX = "ClusterWorkflowTemplate/"


def ref_key(ref: Mapping[str, Any]) -> str:
    """The source key of a ``templateRef``/``workflowTemplateRef``: its name, prefixed with
    ``ClusterWorkflowTemplate/`` when ``clusterScope: true`` (the two kinds may share names)."""
    name = str(ref.get("name") or "")
    return f"{CLUSTER_PREFIX}{name}" if ref.get("clusterScope") is True else name


def describe_source(source: str | None) -> str:
    """How a template source is named in messages."""
    if source is None:
        return "the workflow"
    if source.startswith(CLUSTER_PREFIX):
        return f"ClusterWorkflowTemplate {source.removeprefix(CLUSTER_PREFIX)!r}"
    return f"WorkflowTemplate {source!r}"


@dataclass
class Workflow:
    """A validated manifest, with the templates it can reach.

    ``templates`` maps a source (``None`` for the manifest itself, else a WorkflowTemplate
    name or ``ClusterWorkflowTemplate/<name>``, see :func:`ref_key`) to that source's templates
    by name.
    """

    kind: str
    name: str
    metadata: dict[str, Any]
    spec: dict[str, Any]
    templates: dict[str | None, dict[str, dict[str, Any]]]
    refs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def template(self, source: str | None, name: str) -> dict[str, Any]:
        """Return a template by source and name.

        Raises:
            ManifestError: no such template.
        """
        found = self.templates.get(source, {}).get(name)
        if found is None:
            there = ", ".join(sorted(self.templates.get(source, {}))) or "none"
            raise ManifestError(
                f"template {name!r} not found in {describe_source(source)} (its templates: {there})"
            )
        return found

    def resolve_call(self, source: str | None, call: Mapping[str, Any]) -> tuple[str | None, str]:
        """Return (source, template name) that a task or step calls.

        Raises:
            ManifestError: the call names no template.
        """
        ref = call.get("templateRef")
        if isinstance(ref, Mapping):
            if not ref.get("name") or not ref.get("template"):
                raise ManifestError(f"{call.get('name')!r}: templateRef needs name and template")
            return ref_key(ref), str(ref["template"])
        if not call.get("template"):
            raise ManifestError(f"task or step {call.get('name')!r} names no template")
        return source, str(call["template"])

    @property
    def entrypoint(self) -> str:
        """The name of the template the workflow starts with."""
        return str(self.spec["entrypoint"])

    @property
    def declared_parameters(self) -> list[dict[str, Any]]:
        """The workflow's ``spec.arguments.parameters``."""
        return list((self.spec.get("arguments") or {}).get("parameters") or [])
