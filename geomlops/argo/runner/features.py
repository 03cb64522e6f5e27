"""Which Argo features the local runner executes, and the refusal of everything else.

Every field of a manifest falls in one of three sets: executed, accepted and ignored
(scheduling hints that mean nothing on one machine: images, resources, node selectors...;
:func:`ignored_fields` lists them, and the runner reports them once per run), or refused
with an :class:`UnsupportedFeatureError` that names the feature and where it is.
Unknown fields are refused too, so that nothing is silently run differently from Argo.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import Any

import yaml

from geomlops.argo.template_library import missing_spec, workflow_spec
from geomlops.errors import ManifestError, UnsupportedFeatureError

from .artifacts import refused_feature as refused_artifact_feature
from .expr import ExpressionError
from .expr import check as check_expression
from .node import request_errors
from .substitute import variables_in

KINDS = frozenset({"Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow"})

_SPEC_RUN = {"entrypoint", "arguments", "templates", "onExit", "parallelism", "templateDefaults"}
_SPEC_RUN |= {"workflowTemplateRef", "retryStrategy", "activeDeadlineSeconds", "synchronization"}
_SPEC_IGNORED = {
    "serviceAccountName", "podGC", "ttlStrategy", "workflowMetadata", "archiveLogs",
    "podMetadata", "nodeSelector", "tolerations", "affinity", "imagePullSecrets",
    "securityContext", "priority", "podPriorityClassName", "schedulerName", "podResources",
    "hostAliases", "dnsConfig", "dnsPolicy", "hostNetwork", "automountServiceAccountToken",
    "executor", "podSpecPatch", "podDisruptionBudget", "volumeClaimGC", "resourceClaims",
}  # fmt: skip
_SPEC_REFUSED = {
    "volumes": "volumes",
    "volumeClaimTemplates": "volume claim templates",
    "artifactRepositoryRef": "artifact repositories",
    "artifactGC": "artifact garbage collection",
    "hooks": "lifecycle hooks",
    "metrics": "Prometheus metrics",
    "suspend": "starting a workflow suspended (spec.suspend)",
    "shutdown": "a workflow marked to stop or terminate (spec.shutdown)",
}

_TEMPLATE_TYPES = ("dag", "steps", "script", "container", "suspend")
_TEMPLATE_REFUSED_TYPES = {
    "resource": "resource templates",
    "http": "http templates",
    "data": "data templates",
    "plugin": "plugin templates",
    "containerSet": "containerSet templates",
}
_TEMPLATE_RUN = {"name", "inputs", "outputs", "retryStrategy", "activeDeadlineSeconds"}
_TEMPLATE_RUN |= {"timeout", "parallelism", "failFast", "synchronization", *_TEMPLATE_TYPES}
_TEMPLATE_RUN |= {"sidecars", "volumes"}
_TEMPLATE_IGNORED = {
    "metadata", "nodeSelector", "affinity", "tolerations", "securityContext",
    "serviceAccountName", "automountServiceAccountToken", "podSpecPatch", "priorityClassName",
    "annotations", "schedulerName", "hostAliases", "executor", "archiveLocation",
    "podResources", "resourceClaims", "pendingTimeout",
}  # fmt: skip
_TEMPLATE_REFUSED = {
    "initContainers": "init containers",
    "memoize": "memoization",
    "metrics": "Prometheus metrics",
    "daemon": "daemon templates",
    "hooks": "lifecycle hooks",
}

_CONTAINER_RUN = {"name", "image", "command", "args", "source", "env", "workingDir", "volumeMounts"}
_CONTAINER_IGNORED = {
    "resources", "imagePullPolicy", "securityContext", "ports", "livenessProbe",
    "readinessProbe", "startupProbe", "stdin", "stdinOnce", "tty", "terminationMessagePath",
    "terminationMessagePolicy", "resizePolicy", "restartPolicy",
}  # fmt: skip
#: container fields that would change what runs: refused by name
_CONTAINER_REFUSED = {
    "volumeDevices": "volume devices",
    "envFrom": "envFrom (environment variables from ConfigMaps or Secrets)",
    "lifecycle": "container lifecycle hooks (postStart/preStop commands)",
}
#: what a podSpecPatch may change and still mean nothing on one machine
_PATCH_IGNORED = {"nodeSelector", "tolerations", "affinity", "priorityClassName", "priority"}
_PATCH_IGNORED |= {"schedulerName", "securityContext", "serviceAccountName", "hostAliases"}
_PATCH_CONTAINER_IGNORED = {"name", "resources", "imagePullPolicy", "securityContext"}
_ENV_SOURCES = {"secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef"}

_TASK_FIELDS = {"name", "template", "templateRef", "arguments", "dependencies", "depends"}
_TASK_FIELDS |= {"when", "withItems", "withParam", "withSequence", "continueOn"}
_TASK_REFUSED = {"onExit": "task-level onExit handlers", "hooks": "lifecycle hooks"}
_TASK_REFUSED |= {"inline": "inline templates"}


def _refuse(feature: str, where: str, hint: str = "") -> UnsupportedFeatureError:
    message = f"the local runner does not support {feature} ({where})"
    return UnsupportedFeatureError(f"{message}; {hint}" if hint else message)


def _check_keys(
    data: Mapping[str, Any],
    where: str,
    allowed: set[str],
    refused: Mapping[str, str],
    section: str,
) -> None:
    for key in data:
        if key in refused:
            raise _refuse(refused[key], where)
        if key not in allowed:
            raise _refuse(f"field '{section}{key}'", where)


def check_supported(manifest: Any, *, allow_host_containers: bool = False) -> None:
    """Refuse, before anything runs, any Argo feature the local runner does not execute.

    Args:
        manifest: a rendered Argo manifest (``Workflow``, ``WorkflowTemplate``,
            ``ClusterWorkflowTemplate`` or ``CronWorkflow``) loaded from YAML.
        allow_host_containers: accept ``container`` templates (run on the host).

    Raises:
        UnsupportedFeatureError: naming the feature and the template or task using it.
        ManifestError: the manifest is not a mapping or not an Argo workflow kind.
    """
    if not isinstance(manifest, Mapping):
        raise ManifestError(f"a manifest must be a mapping, not {type(manifest).__name__}")
    kind = manifest.get("kind")
    if kind not in KINDS:
        raise ManifestError(f"kind {kind!r} is not one of {', '.join(sorted(KINDS))}")
    spec = workflow_spec(manifest)
    if spec is None:
        raise ManifestError(missing_spec(manifest))
    for template in spec.get("templates") or []:
        _check_expressions(template, f"template {template.get('name')!r}")
    _check_expressions(manifest, "spec")
    _check_keys(spec, "spec", _SPEC_RUN | _SPEC_IGNORED, _SPEC_REFUSED, "spec.")
    _check_pod_spec_patch(spec.get("podSpecPatch"), "spec")
    arguments = spec.get("arguments") or {}
    if isinstance(arguments, Mapping) and arguments.get("artifacts"):
        raise _refuse("workflow input artifacts (spec.arguments.artifacts)", "spec.arguments.artifacts")
    for param in _params(arguments, "spec.arguments"):
        if "valueFrom" in param:
            raise _refuse("parameter valueFrom", f"spec.arguments parameter {param.get('name')!r}")
    retry = spec.get("retryStrategy")
    if retry is not None:
        _check_retry(retry, "spec.retryStrategy")
    defaults = spec.get("templateDefaults")
    if isinstance(defaults, Mapping):
        _check_template_defaults(defaults)
    for template in spec.get("templates") or []:
        if not isinstance(template, Mapping):
            raise ManifestError("spec.templates holds an entry that is not a mapping")
        where = f"template {template.get('name')!r}"
        _check_template(template, where, allow_host_containers)
    bad_requests = request_errors(spec.get("templates") or [])
    if bad_requests:  # they would place nothing: said before anything runs
        raise ManifestError("; ".join(bad_requests))


def _check_expressions(data: Any, where: str) -> None:
    for tag in variables_in(data):
        if tag.startswith("="):
            _check_expression(tag[1:], where)


def _check_expression(text: str, where: str) -> None:
    """Refuse an expression :mod:`.expr` cannot evaluate, naming the construct."""
    try:
        check_expression(text)
    except ExpressionError as err:
        raise UnsupportedFeatureError(f"{err} ({where})") from err


def _params(holder: Any, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(holder, Mapping):
        return []
    params = holder.get("parameters") or []
    if not isinstance(params, list) or not all(isinstance(p, Mapping) for p in params):
        raise ManifestError(f"{where}.parameters must be a list of mappings")
    return params


def _check_template(template: Mapping[str, Any], where: str, allow_host: bool) -> None:
    for key, feature in _TEMPLATE_REFUSED_TYPES.items():
        if key in template:
            raise _refuse(feature, where)
    _check_keys(template, where, _TEMPLATE_RUN | _TEMPLATE_IGNORED, _TEMPLATE_REFUSED, "")
    _check_pod_spec_patch(template.get("podSpecPatch"), where)
    if (artifact_feature := refused_artifact_feature(template)) is not None:
        raise _refuse(artifact_feature, where)
    inputs = template.get("inputs") or {}
    if isinstance(inputs, Mapping):
        for param in _params(inputs, f"{where} inputs"):
            if "valueFrom" in param:
                raise _refuse("input parameter valueFrom", f"{where}, input {param.get('name')!r}")
    outputs = template.get("outputs") or {}
    if isinstance(outputs, Mapping):
        for param in _params(outputs, f"{where} outputs"):
            value_from = param.get("valueFrom") or {}
            for key in value_from:
                if key not in ("path", "default", "parameter", "supplied", "expression"):
                    feature = f"output parameter valueFrom.{key}"
                    raise _refuse(feature, f"{where}, output {param.get('name')!r}")
            if isinstance(value_from, Mapping) and "expression" in value_from:
                _check_expression(str(value_from["expression"]), f"{where}, output {param.get('name')!r}")
    if "retryStrategy" in template:
        _check_retry(template["retryStrategy"], where)
    if "container" in template and not allow_host:
        raise _refuse(
            "container templates (pass allow_host_containers=True to run their command on this machine)",
            where,
        )
    volumes = _check_volumes(template.get("volumes"), where)
    for key in ("script", "container"):
        if isinstance(template.get(key), Mapping):
            _check_container(template[key], f"{where}, {key}", volumes)
    sidecars = template.get("sidecars")
    if sidecars:
        if not allow_host:
            raise _refuse("sidecars (pass allow_host_containers=True, or an image stand-in)", where)
        if not isinstance(sidecars, list) or not all(
            isinstance(c, Mapping) and c.get("name") for c in sidecars
        ):
            raise ManifestError(f"sidecars must be a list of containers with names ({where})")
        for sidecar in sidecars:
            sidecar_where = f"{where}, sidecar {sidecar['name']!r}"
            _check_keys(sidecar, sidecar_where, _CONTAINER_RUN | _CONTAINER_IGNORED, _CONTAINER_REFUSED, "")
            _check_container(sidecar, sidecar_where, volumes)
    if isinstance(template.get("dag"), Mapping):
        dag = template["dag"]
        _check_keys(dag, where, {"tasks", "target", "failFast"}, {}, "dag.")
        for task in dag.get("tasks") or []:
            _check_task(task, f"{where}, task {task.get('name')!r}")
    if isinstance(template.get("steps"), list):
        for group in template["steps"]:
            for step in group if isinstance(group, list) else [group]:
                _check_task(step, f"{where}, step {step.get('name')!r}")
    if isinstance(template.get("suspend"), Mapping):
        _check_keys(template["suspend"], where, {"duration"}, {}, "suspend.")


def _check_template_defaults(defaults: Mapping[str, Any]) -> None:
    where = "spec.templateDefaults"
    rest = {k: v for k, v in defaults.items() if k not in ("container", "script")}
    _check_template(rest, where, allow_host=False)
    for key in ("container", "script"):
        section = defaults.get(key)
        if isinstance(section, Mapping):
            allowed = _CONTAINER_IGNORED | {"image", "name"}
            _check_keys(section, where, allowed, {}, f"templateDefaults.{key}.")


def _check_volumes(volumes: Any, where: str) -> set[str]:
    """The names of a template's volumes: ``emptyDir`` only (a folder of the attempt)."""
    if not volumes:
        return set()
    if not isinstance(volumes, list) or not all(isinstance(v, Mapping) for v in volumes):
        raise ManifestError(f"volumes must be a list of mappings ({where})")
    names = set()
    for volume in volumes:
        kinds = sorted(set(volume) - {"name"})
        if kinds != ["emptyDir"]:
            raise _refuse(f"volumes other than emptyDir ({', '.join(kinds) or 'no source'})", where)
        names.add(str(volume.get("name")))
    return names


def _check_mounts(container: Mapping[str, Any], where: str, volumes: AbstractSet[str]) -> None:
    for mount in container.get("volumeMounts") or []:
        if not isinstance(mount, Mapping):
            raise ManifestError(f"volumeMounts holds an entry that is not a mapping ({where})")
        _check_keys(
            mount, where, {"name", "mountPath", "readOnly"}, {"subPath": "volume subPath"}, "volumeMounts."
        )
        if mount.get("name") not in volumes:
            raise _refuse(
                f"a volume mount of {mount.get('name')!r}, which is not an emptyDir volume of the template",
                where,
            )
        path = str(mount.get("mountPath") or "")
        if not any(path.startswith(f"{tmp}/") for tmp in ("/tmp", "/var/tmp")):
            # the host's root is read-only to a task: a mount point can only be made in its private folders
            raise _refuse(f"a volume mounted at {path!r} (mount volumes under /tmp)", where)


def _check_container(
    container: Mapping[str, Any], where: str, volumes: AbstractSet[str] = frozenset()
) -> None:
    _check_keys(container, where, _CONTAINER_RUN | _CONTAINER_IGNORED, _CONTAINER_REFUSED, "")
    _check_mounts(container, where, volumes)
    for entry in container.get("env") or []:
        value_from = entry.get("valueFrom") if isinstance(entry, Mapping) else None
        if isinstance(value_from, Mapping):
            for key in value_from:
                if key not in _ENV_SOURCES:
                    raise _refuse(f"env valueFrom.{key}", f"{where}, env {entry.get('name')!r}")


def _check_retry(retry: Any, where: str) -> None:
    if not isinstance(retry, Mapping):
        raise ManifestError(f"retryStrategy must be a mapping ({where})")
    allowed = {"limit", "retryPolicy", "backoff", "affinity", "expression"}
    _check_keys(retry, where, allowed, {}, "retryStrategy.")
    if "expression" in retry and "{{" not in str(retry["expression"]):
        _check_expression(str(retry["expression"]), f"{where}, retryStrategy.expression")
    backoff = retry.get("backoff") or {}
    if "limit" not in retry and not (isinstance(backoff, Mapping) and "maxDuration" in backoff):
        raise _refuse("retryStrategy without a limit (unbounded retries)", where)
    if isinstance(backoff, Mapping):
        allowed = {"duration", "factor", "maxDuration", "cap"}
        _check_keys(backoff, where, allowed, {}, "retryStrategy.backoff.")
    policy = retry.get("retryPolicy", "OnFailure")
    if policy not in ("Always", "OnFailure", "OnError", "OnTransientError"):
        raise ManifestError(f"unknown retryPolicy {policy!r} ({where})")


def _check_task(task: Any, where: str) -> None:
    if not isinstance(task, Mapping):
        raise ManifestError(f"a DAG task or step must be a mapping ({where})")
    _check_keys(task, where, _TASK_FIELDS, _TASK_REFUSED, "")
    arguments = task.get("arguments") or {}
    if isinstance(arguments, Mapping):
        for param in _params(arguments, f"{where} arguments"):
            if "valueFrom" in param:
                raise _refuse("argument valueFrom", f"{where}, argument {param.get('name')!r}")
    if ".Daemoned" in str(task.get("depends", "")):
        raise _refuse("the depends result '.Daemoned'", where)
    continue_on = task.get("continueOn")
    if isinstance(continue_on, Mapping):
        _check_keys(continue_on, where, {"failed", "error"}, {}, "continueOn.")


def _check_pod_spec_patch(patch: Any, where: str) -> None:
    """Accept a ``podSpecPatch`` that only schedules (resources, tolerations...); refuse the rest.

    A patch can also change a container's command or environment, which would run
    differently here than on Argo, so such a patch is refused, naming the patched field.
    """
    if patch in (None, ""):
        return
    try:
        body = yaml.safe_load(patch) if isinstance(patch, str) else patch
    except yaml.YAMLError as err:
        raise ManifestError(f"podSpecPatch is neither JSON nor YAML ({where}): {err}") from err
    if not isinstance(body, Mapping):
        raise ManifestError(f"podSpecPatch must be a mapping ({where})")
    for key, value in body.items():
        if key == "containers" and isinstance(value, list):
            for container in value:
                changed = sorted(set(container or {}) - _PATCH_CONTAINER_IGNORED)
                if changed:
                    raise _refuse(f"a podSpecPatch changing containers' {', '.join(changed)}", where)
        elif key not in _PATCH_IGNORED:
            raise _refuse(f"a podSpecPatch changing {key}", where)


def ignored_fields(*manifests: Mapping[str, Any]) -> list[str]:
    """Return the fields of (supported) manifests that change nothing on one machine.

    The runner reports them once per run (scheduling and pod settings: ``spec.podGC``,
    ``template nodeSelector``, ``container resources.limits``...), so that nothing is dropped
    silently.
    """
    found: set[str] = set()
    templates: list[Any] = []
    for manifest in manifests:
        spec = workflow_spec(manifest) or {}
        found.update(f"spec.{key}" for key in spec if key in _SPEC_IGNORED)
        templates.extend(spec.get("templates") or [])
        templates.append(spec.get("templateDefaults"))
    for template in templates:
        if not isinstance(template, Mapping):
            continue
        found.update(f"template {key}" for key in template if key in _TEMPLATE_IGNORED)
        for kind in ("script", "container"):
            container = template.get(kind)
            if isinstance(container, Mapping):
                # requests place the task's process (:mod:`.node`); limits are not enforced
                found.update(
                    f"container {key}" for key in container if key in _CONTAINER_IGNORED - {"resources"}
                )
                if isinstance(container.get("resources"), Mapping) and container["resources"].get("limits"):
                    found.add("container resources.limits")
    return sorted(found)
