"""WorkflowTemplates and ClusterWorkflowTemplates a user points at, for ``templateRef``.

``geomlops run WORKFLOW.yaml --templates DIR|FILE`` (and ``geomlops lint --templates``) read
every ``*.yaml``/``*.yml`` under a folder (recursively) or the one file given, each of several
YAML documents, as Argo's ``kubectl apply -f`` would install them. A ``templateRef`` then
resolves by name: to a ClusterWorkflowTemplate when it says ``clusterScope: true``, else to a
WorkflowTemplate, these files first and a fallback (geomlops' own pipelines) after. ConfigMaps
found in the same files are kept too: a semaphore reads its limit from one, as in Argo.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from geomlops.errors import ManifestError

TEMPLATE_KINDS = ("WorkflowTemplate", "ClusterWorkflowTemplate")
_SUFFIXES = (".yaml", ".yml")


def kind_for(cluster_scope: bool) -> str:
    """The kind a reference with this ``clusterScope`` points at."""
    return "ClusterWorkflowTemplate" if cluster_scope else "WorkflowTemplate"


def workflow_spec(manifest: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The spec a manifest runs: its ``spec``, a CronWorkflow's ``spec.workflowSpec``; None where
    that is not a mapping (each caller says what that means for it)."""
    spec = manifest.get("spec")
    if manifest.get("kind") == "CronWorkflow" and isinstance(spec, Mapping):
        spec = spec.get("workflowSpec")
    return spec if isinstance(spec, Mapping) else None


def missing_spec(manifest: Mapping[str, Any]) -> str:
    """Why :func:`workflow_spec` found no spec in ``manifest``, naming the field."""
    given = manifest.get("spec")
    if not isinstance(given, Mapping):
        return "$.spec: expected a mapping"
    at = workflow_spec_path(manifest)
    if "workflowSpec" not in given:
        return f"{at}: missing (a CronWorkflow runs the workflow its workflowSpec describes)"
    return f"{at}: expected a mapping"


def workflow_spec_path(manifest: Mapping[str, Any]) -> str:
    """Where :func:`workflow_spec` is in the manifest as written, for messages that name a field."""
    return "$.spec.workflowSpec" if manifest.get("kind") == "CronWorkflow" else "$.spec"


@dataclass
class TemplateLibrary:
    """Templates read from files, by kind and name, with the file each came from.

    Use :meth:`load` to build one. Calling it resolves a namespaced WorkflowTemplate by name
    (the plain resolver interface); :meth:`resolve` takes ``cluster_scope`` too.
    """

    templates: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    origins: dict[tuple[str, str], Path] = field(default_factory=dict)
    #: ConfigMap name -> its ``data`` (semaphore limits)
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)
    fallback: Callable[[str], dict[str, Any]] | None = None
    fallback_name: str = ""

    @classmethod
    def load(
        cls,
        paths: Iterable[Path | str],
        *,
        fallback: Callable[[str], dict[str, Any]] | None = None,
        fallback_name: str = "",
    ) -> TemplateLibrary:
        """Read every template under ``paths`` (files, or folders read recursively).

        Args:
            paths: files and folders given with ``--templates``.
            fallback: resolves a WorkflowTemplate these files do not hold (raises
                ManifestError or LookupError when it has none).
            fallback_name: how the fallback is named in errors ("geomlops' pipelines").

        Raises:
            ManifestError: a path that does not exist, a file that is not YAML, a document
                that is not a mapping, a template without a name, or one name defined twice.
        """
        library = cls(fallback=fallback, fallback_name=fallback_name)
        for given in paths:
            path = Path(given)
            if path.is_dir():
                files = sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
            elif path.is_file():
                files = [path]
            else:
                raise ManifestError(f"--templates {path}: no such file or folder")
            library.paths.append(path)
            for file in files:
                library._read(file)
        return library

    def _read(self, file: Path) -> None:
        try:
            documents = list(yaml.safe_load_all(file.read_text(encoding="utf-8")))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ManifestError(f"{file}: not a YAML file ({err})") from err
        for index, document in enumerate(documents):
            if document is None:
                continue
            if not isinstance(document, Mapping):
                raise ManifestError(f"{file}: document {index + 1} is not a mapping")
            kind = document.get("kind")
            name = (document.get("metadata") or {}).get("name")
            if kind == "ConfigMap" and name:
                data = document.get("data") or {}
                self.config_maps[str(name)] = {str(k): str(v) for k, v in data.items()}
                continue
            if kind not in TEMPLATE_KINDS:
                continue
            if not isinstance(name, str) or not name:
                raise ManifestError(f"{file}: the {kind} in document {index + 1} has no metadata.name")
            key = (str(kind), name)
            if key in self.templates:
                raise ManifestError(f"{kind} {name!r} is defined twice: in {self.origins[key]} and in {file}")
            self.templates[key] = dict(document)
            self.origins[key] = file

    def where(self) -> str:
        """Say where templates are looked for (for error messages)."""
        places = [str(p) for p in self.paths]
        if self.fallback is not None and self.fallback_name:
            places.append(self.fallback_name)
        return ", ".join(places) or "nowhere (no --templates given)"

    def resolve(self, name: str, cluster_scope: bool = False) -> dict[str, Any]:
        """Return the template manifest ``name`` of the kind ``clusterScope`` selects.

        Raises:
            ManifestError: naming the reference, where it was looked for and what is there.
        """
        kind = kind_for(cluster_scope)
        found = self.templates.get((kind, name))
        if found is not None:
            return found
        if not cluster_scope and self.fallback is not None:
            try:
                return self.fallback(name)
            except (ManifestError, LookupError):
                pass
        known = sorted(n for k, n in self.templates if k == kind)
        other = (kind_for(not cluster_scope), name) in self.templates
        hint = (
            f"; a {kind_for(not cluster_scope)} of that name exists: "
            f"{'drop' if cluster_scope else 'set'} clusterScope: true"
            if other
            else ""
        )
        raise ManifestError(
            f"no {kind} named {name!r}; looked in {self.where()}"
            f" ({kind}s there: {', '.join(known) or 'none'}){hint}"
        )

    def __call__(self, name: str) -> dict[str, Any]:
        """Resolve a namespaced WorkflowTemplate (the plain resolver interface)."""
        return self.resolve(name)

    def origin(self, kind: str, name: str) -> str:
        """The file a template came from, or the fallback's name."""
        path = self.origins.get((kind, name))
        return str(path) if path else self.fallback_name or "the resolver"

    def semaphore_limits(self) -> dict[str, int]:
        """Semaphore limits from the ConfigMaps read, as ``CONFIGMAP/KEY`` -> limit.

        Values that are not integers are left out (the run refuses a semaphore without one).
        """
        limits: dict[str, int] = {}
        for config_map, data in self.config_maps.items():
            for key, value in data.items():
                if value.strip().isdigit():
                    limits[f"{config_map}/{key}"] = int(value)
        return limits


def template_ref_errors(manifest: Mapping[str, Any], library: TemplateLibrary) -> list[str]:
    """Lint's check of every ``templateRef`` and ``workflowTemplateRef`` against ``library``.

    Without a library lint checks no reference: on a cluster they resolve to what is installed
    there, which only the cluster knows.
    """
    spec = workflow_spec(manifest)
    if spec is None:
        return []
    errors: list[str] = []

    def check(ref: Any, path: str, template: str | None) -> None:
        if not isinstance(ref, Mapping):
            return
        try:
            found = library.resolve(str(ref.get("name") or ""), ref.get("clusterScope") is True)
        except ManifestError as err:
            errors.append(f"{path}: {err}")
            return
        if template is None:
            return
        names = [t.get("name") for t in (found.get("spec") or {}).get("templates") or []]
        if template not in names:
            errors.append(
                f"{path}: {found.get('kind')} {ref.get('name')!r} has no template {template!r} "
                f"(its templates: {', '.join(str(n) for n in names) or 'none'})"
            )

    at = workflow_spec_path(manifest)
    check(spec.get("workflowTemplateRef"), f"{at}.workflowTemplateRef", None)
    for path, ref in _template_refs(spec, at):
        check(ref, path, str(ref.get("template") or ""))
    return errors


def _template_refs(spec: Mapping[str, Any], at: str = "$.spec") -> list[tuple[str, Mapping[str, Any]]]:
    """Every ``templateRef`` of a workflow spec's DAG tasks and steps, with its path (the spec
    being at ``at``)."""
    refs = []
    for t_index, template in enumerate(spec.get("templates") or []):
        if not isinstance(template, Mapping):
            continue
        calls = [("dag.tasks", i, c) for i, c in enumerate((template.get("dag") or {}).get("tasks") or [])]
        for g_index, group in enumerate(template.get("steps") or []):
            calls += [
                (f"steps[{g_index}]", i, c) for i, c in enumerate(group if isinstance(group, list) else [])
            ]
        for where, index, call in calls:
            ref = call.get("templateRef") if isinstance(call, Mapping) else None
            if isinstance(ref, Mapping):
                refs.append((f"{at}.templates[{t_index}].{where}[{index}].templateRef", ref))
    return refs


def referenced_templates(
    manifest: Mapping[str, Any], library: TemplateLibrary | None
) -> list[Mapping[str, Any]]:
    """The templates a manifest runs: its own (a CronWorkflow's under its ``workflowSpec``) and,
    followed through ``library`` where one is given, those its ``workflowTemplateRef`` and
    ``templateRef`` name, and theirs in turn (a reference ``library`` cannot resolve is left
    out: the run says so)."""
    seen: set[tuple[str, bool]] = set()

    def templates(found: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        spec = workflow_spec(found) or {}
        own = [t for t in spec.get("templates") or [] if isinstance(t, Mapping)]
        refs = [spec.get("workflowTemplateRef"), *(ref for _, ref in _template_refs(spec))]
        for ref in refs:
            if library is None or not isinstance(ref, Mapping):
                continue
            key = (str(ref.get("name") or ""), ref.get("clusterScope") is True)
            if key in seen:
                continue
            seen.add(key)
            try:
                own += templates(library.resolve(*key))
            except ManifestError:
                continue
        return own

    return templates(manifest)
