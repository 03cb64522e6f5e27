"""A loaded workflow: the manifest's spec and every template it can reach, by source and name.

Built and checked by :func:`.manifest.load_workflow`; read by the static checks and the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from geomlops.errors import ManifestError


@dataclass
class Workflow:
    """A validated manifest, with the templates it can reach.

    ``templates`` maps a source (``None`` for the manifest itself, else a WorkflowTemplate
    name) to that source's templates by name.
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
            where = f"WorkflowTemplate {source!r}" if source else "the workflow"
            raise ManifestError(f"template {name!r} not found in {where}")
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
            return str(ref["name"]), str(ref["template"])
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
