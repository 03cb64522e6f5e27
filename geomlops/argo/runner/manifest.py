"""Loading a manifest for the local runner: shape checks, template lookup, parameters.

:func:`load_workflow` gathers the manifest's templates and those of every WorkflowTemplate
it reaches through ``templateRef`` (fetched once, up front, through the resolver) into a
:class:`~.workflow.Workflow` and checks it whole, so a run never discovers a missing or
unsupported template halfway through.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from geomlops.argo.template_library import kind_for, missing_spec, workflow_spec
from geomlops.errors import ManifestError, ParameterError

from .checks import check_workflow
from .features import check_supported
from .substitute import to_argo_string
from .workflow import Workflow, ref_key

API_VERSION = "argoproj.io/v1alpha1"
TEMPLATE_TYPES = ("dag", "steps", "script", "container", "suspend")
#: returns a WorkflowTemplate by name; one with a ``resolve(name, cluster_scope)`` method (such
#: as :class:`~geomlops.argo.template_library.TemplateLibrary`) resolves ClusterWorkflowTemplates too
Resolver = Callable[[str], dict[str, Any]]


def template_type(template: Mapping[str, Any]) -> str:
    """Return which of dag/steps/script/container/suspend a template is.

    Raises:
        ManifestError: it is none of them, or several.
    """
    found = [key for key in TEMPLATE_TYPES if key in template]
    if len(found) != 1:
        raise ManifestError(
            f"template {template.get('name')!r} must have exactly one of "
            f"{', '.join(TEMPLATE_TYPES)} (found {found or 'none'})"
        )
    return found[0]


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(copy.deepcopy(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _spec_of(manifest: Mapping[str, Any]) -> dict[str, Any]:
    spec = workflow_spec(manifest)
    if spec is None:  # check_supported refuses such a manifest first
        raise ManifestError(missing_spec(manifest))
    return copy.deepcopy(dict(spec))


def _index_templates(spec: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    templates = spec.get("templates") or []
    if not isinstance(templates, list):
        raise ManifestError(f"spec.templates of {where} must be a list")
    defaults = {k: v for k, v in (spec.get("templateDefaults") or {}).items() if k not in TEMPLATE_TYPES}
    retry = spec.get("retryStrategy")
    indexed: dict[str, dict[str, Any]] = {}
    for template in templates:
        name = template.get("name")
        if not isinstance(name, str) or not name:
            raise ManifestError(f"a template of {where} has no name")
        if name in indexed:
            raise ManifestError(f"template {name!r} is defined twice in {where}")
        merged = _deep_merge(defaults, template) if defaults else copy.deepcopy(template)
        kind = template_type(merged)
        if retry and kind in ("script", "container") and "retryStrategy" not in merged:
            merged["retryStrategy"] = copy.deepcopy(retry)
        indexed[name] = merged
    return indexed


def _check_shape(manifest: Any, what: str, allow_host_containers: bool) -> None:
    check_supported(manifest, allow_host_containers=allow_host_containers)
    if manifest.get("apiVersion") != API_VERSION:
        raise ManifestError(f"{what} has apiVersion {manifest.get('apiVersion')!r}, expected {API_VERSION!r}")
    if not isinstance(manifest.get("metadata") or {}, Mapping):
        raise ManifestError(f"{what} has a metadata field that is not a mapping")


def _calls(templates: Mapping[str, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    calls: list[Mapping[str, Any]] = []
    for template in templates.values():
        calls.extend((template.get("dag") or {}).get("tasks") or [])
        for group in template.get("steps") or []:
            calls.extend(group if isinstance(group, list) else [group])
    return calls


def load_workflow(
    manifest: Any,
    *,
    resolver: Resolver | None = None,
    refs: Mapping[str, dict[str, Any]] | None = None,
    allow_host_containers: bool = False,
) -> Workflow:
    """Validate a manifest and gather every template it can reach.

    Args:
        manifest: the rendered manifest (a mapping loaded from YAML).
        resolver: returns a WorkflowTemplate manifest by name, for ``templateRef`` and
            ``workflowTemplateRef``.
        refs: WorkflowTemplates already resolved (a resumed run reuses what it ran with).
        allow_host_containers: accept ``container`` templates.

    Returns:
        The workflow, ready to run.

    Raises:
        ManifestError: malformed manifest, missing entrypoint or template.
        UnsupportedFeatureError: a feature the runner does not execute.
    """
    _check_shape(manifest, "the manifest", allow_host_containers)
    kind = str(manifest["kind"])
    metadata = dict(manifest.get("metadata") or {})
    name = str(metadata.get("name") or str(metadata.get("generateName") or "").rstrip("-"))
    if not name:
        raise ManifestError("the manifest has neither metadata.name nor metadata.generateName")
    known: dict[str, dict[str, Any]] = dict(refs or {})

    def fetch(ref: Mapping[str, Any], where: str) -> tuple[str, dict[str, Any]]:
        ref_name = str(ref.get("name") or "")
        cluster = ref.get("clusterScope") is True
        kind = kind_for(cluster)
        key = ref_key(ref)
        if not ref_name:
            raise ManifestError(f"{where}: the reference names no {kind} (name is missing)")
        if key not in known:
            if resolver is None:
                raise ManifestError(
                    f"{where}: {kind} {ref_name!r} is referenced but no template_resolver was given"
                )
            try:
                found = _resolve(resolver, ref_name, cluster)
            except (ManifestError, LookupError, FileNotFoundError) as err:
                raise ManifestError(f"{where}: {kind} {ref_name!r} not found: {err}") from err
            if not isinstance(found, Mapping) or found.get("kind") != kind:
                got = found.get("kind") if isinstance(found, Mapping) else type(found).__name__
                raise ManifestError(f"{where}: the resolver gave a {got} for {kind} {ref_name!r}")
            _check_shape(found, f"{kind} {ref_name!r}", allow_host_containers)
            known[key] = copy.deepcopy(dict(found))
        return key, known[key]

    spec = _spec_of(manifest)
    wf_ref = spec.pop("workflowTemplateRef", None)
    if wf_ref is not None:
        if not isinstance(wf_ref, Mapping):
            raise ManifestError("spec.workflowTemplateRef must be a mapping with a name")
        _, base_manifest = fetch(wf_ref, "spec.workflowTemplateRef")
        spec = _merge_specs(_spec_of(base_manifest), spec)
    workflow = Workflow(kind, name, metadata, spec, {None: _index_templates(spec, "the workflow")})
    pending = [workflow.templates[None]]
    while pending:
        for call in _calls(pending.pop()):
            ref = call.get("templateRef")
            if isinstance(ref, Mapping) and ref_key(ref) not in workflow.templates:
                key, found = fetch(ref, f"templateRef of {call.get('name')!r}")
                workflow.templates[key] = _index_templates(
                    _spec_of(found), f"{found['kind']} {ref.get('name')!r}"
                )
                pending.append(workflow.templates[key])
    wf_key = ref_key(wf_ref) if isinstance(wf_ref, Mapping) else None
    workflow.refs = {k: v for k, v in known.items() if k in workflow.templates or k == wf_key}
    if not spec.get("entrypoint"):
        raise ManifestError("spec.entrypoint is missing")
    workflow.template(None, workflow.entrypoint)
    check_workflow(workflow)
    return workflow


def _resolve(resolver: Resolver, name: str, cluster_scope: bool) -> dict[str, Any]:
    """Ask a resolver for a template: one with ``resolve`` knows both kinds, a plain callable
    only namespaced WorkflowTemplates."""
    resolve = getattr(resolver, "resolve", None)
    if callable(resolve):
        found: dict[str, Any] = resolve(name, cluster_scope)
        return found
    if cluster_scope:
        raise ManifestError("the resolver knows no ClusterWorkflowTemplates (pass --templates)")
    return resolver(name)


def _merge_specs(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge a Workflow's spec over the WorkflowTemplate it references (arguments by name)."""
    base_params = (base.get("arguments") or {}).get("parameters") or []
    over_params = (override.get("arguments") or {}).get("parameters") or []
    merged = {**base, **{k: v for k, v in override.items() if k != "arguments"}}
    params = {p["name"]: dict(p) for p in base_params}
    for param in over_params:
        params[param["name"]] = {**params.get(param["name"], {}), **param}
    merged["arguments"] = {"parameters": list(params.values())}
    return merged


def resolve_parameters(workflow: Workflow, given: Mapping[str, Any]) -> dict[str, str]:
    """Return every workflow parameter's value: given, else the declared default.

    Raises:
        ParameterError: an undeclared parameter is given, a required one is missing, or a
            value is not in the parameter's ``enum``.
    """
    declared = {str(p.get("name")): p for p in workflow.declared_parameters}
    listing = ", ".join(sorted(declared)) or "none"
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ParameterError(
            f"workflow {workflow.name!r} does not declare parameter(s) {', '.join(unknown)}; "
            f"declared: {listing}"
        )
    values: dict[str, str] = {}
    for name, param in declared.items():
        if name in given:
            value = to_argo_string(given[name])
        elif "value" in param:
            value = to_argo_string(param["value"])
        elif "default" in param:
            value = to_argo_string(param["default"])
        else:
            raise ParameterError(
                f"parameter {name!r} of workflow {workflow.name!r} is required (it has no "
                f"default); declared: {listing}"
            )
        enum = [to_argo_string(v) for v in param.get("enum") or []]
        if enum and value not in enum:
            raise ParameterError(
                f"parameter {name!r} is {value!r}, not one of its allowed values: {', '.join(enum)}"
            )
        values[name] = value
    return values


def bind_inputs(template: Mapping[str, Any], arguments: Mapping[str, str]) -> dict[str, str]:
    """Give a template's input parameters their values, as Argo does.

    An argument wins over the input's ``value``, which wins over its ``default``.

    Raises:
        ValueError: an input has no value, or a value outside its ``enum``.
    """
    values: dict[str, str] = {}
    for param in (template.get("inputs") or {}).get("parameters") or []:
        name = str(param["name"])
        if name in arguments:
            value = arguments[name]
        elif "value" in param:
            value = to_argo_string(param["value"])
        elif "default" in param:
            value = to_argo_string(param["default"])
        else:
            raise ValueError(f"inputs.parameters.{name} was not supplied")
        enum = [to_argo_string(v) for v in param.get("enum") or []]
        if enum and value not in enum:
            raise ValueError(f"inputs.parameters.{name} is {value!r}, not one of {enum}")
        values[name] = value
    return values
