"""Submit manifests to an Argo server through its REST API."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel

from geomlops.errors import ParameterError, SubmitError
from geomlops.settings import Settings


class ArgoRequest(BaseModel):
    """One HTTP request to the Argo server."""

    purpose: str
    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    update_url: str | None = None  # PUT here when the create answers 409 (already exists)

    def redacted(self) -> dict[str, Any]:
        """The request as JSON, with the bearer token hidden."""
        data = self.model_dump()
        if "Authorization" in data["headers"]:
            data["headers"]["Authorization"] = "Bearer ***"
        return data


def _declared(manifest: Mapping[str, Any]) -> set[str]:
    spec = manifest.get("spec", {})
    return {p["name"] for p in (spec.get("arguments", {}) or {}).get("parameters", []) or []}


def _missing(manifest: Mapping[str, Any], parameters: Mapping[str, str]) -> list[str]:
    """Declared parameters with neither a value in the manifest nor one given (Argo requires them)."""
    spec = manifest.get("spec", {})
    declared = (spec.get("arguments", {}) or {}).get("parameters", []) or []
    return sorted(
        p["name"]
        for p in declared
        if p.get("value") is None and p.get("valueFrom") is None and p["name"] not in parameters
    )


#: the server part of a dry run's URLs when no server is configured
UNSET_SERVER = "$GEOMLOPS_ARGO_SERVER"


def _connection(settings: Settings, *, dry_run: bool = False) -> tuple[str, dict[str, str]]:
    server = settings.argo_server
    if not server:
        if not dry_run:
            raise SubmitError("no Argo server: set GEOMLOPS_ARGO_SERVER (e.g. https://argo.example.org:2746)")
        server = UNSET_SERVER
    headers = {"Content-Type": "application/json"}
    if settings.argo_token:
        headers["Authorization"] = f"Bearer {settings.argo_token}"
    return server.rstrip("/") + "/api/v1", headers


#: REST collection and body field of each kind that can be installed
_INSTALLABLE = {
    "WorkflowTemplate": ("workflow-templates", "template"),
    "CronWorkflow": ("cron-workflows", "cronWorkflow"),
}


def install_request(
    manifest: Mapping[str, Any], settings: Settings, namespace: str, *, dry_run: bool = False
) -> ArgoRequest:
    """The request that creates (or, on 409, updates) a WorkflowTemplate or CronWorkflow.

    Raises:
        SubmitError: no Argo server configured (unless ``dry_run``), or a kind that cannot be
            installed.
    """
    base, headers = _connection(settings, dry_run=dry_run)
    kind = str(manifest.get("kind"))
    if kind not in _INSTALLABLE:
        raise SubmitError(f"kind '{kind}': only {', '.join(_INSTALLABLE)} can be installed")
    collection, field = _INSTALLABLE[kind]
    name = manifest.get("metadata", {}).get("name")
    return ArgoRequest(
        purpose=f"install {kind} {name}",
        method="POST",
        url=f"{base}/{collection}/{namespace}",
        headers=headers,
        body={"namespace": namespace, field: manifest},
        update_url=f"{base}/{collection}/{namespace}/{name}",
    )


def plan_submission(
    manifest: Mapping[str, Any],
    parameters: Mapping[str, str],
    settings: Settings,
    *,
    dry_run: bool = False,
) -> list[ArgoRequest]:
    """The requests that install a WorkflowTemplate and submit a run of it (or create a Workflow).

    Args:
        manifest: the WorkflowTemplate or Workflow.
        parameters: workflow parameters given by the user.
        settings: server, namespace and token.
        dry_run: the requests are only shown: no server needs to be configured (URLs then
            start with ``$GEOMLOPS_ARGO_SERVER``).

    Raises:
        SubmitError: no Argo server configured (GEOMLOPS_ARGO_SERVER) for a real submission.
        ParameterError: a parameter the manifest does not declare, or a required one (declared
            without a value) not given.
    """
    base, headers = _connection(settings, dry_run=dry_run)
    ns = settings.argo_namespace
    unknown = sorted(set(parameters) - _declared(manifest))
    if unknown:
        raise ParameterError(
            f"parameter(s) {', '.join(unknown)} not declared by the workflow "
            f"(declared: {', '.join(sorted(_declared(manifest))) or 'none'})"
        )
    missing = _missing(manifest, parameters)
    if missing:
        raise ParameterError(
            f"parameter(s) {', '.join(missing)} required by the workflow (declared without a value): "
            + " ".join(f"-p {name}=VALUE" for name in missing)
        )
    kind = manifest.get("kind")
    name = manifest.get("metadata", {}).get("name")
    if kind == "WorkflowTemplate":
        return [
            install_request(manifest, settings, ns, dry_run=dry_run),
            ArgoRequest(
                purpose=f"submit a workflow from {name}",
                method="POST",
                url=f"{base}/workflows/{ns}/submit",
                headers=headers,
                body={
                    "namespace": ns,
                    "resourceKind": "WorkflowTemplate",
                    "resourceName": name,
                    "submitOptions": {"parameters": [f"{k}={v}" for k, v in parameters.items()]},
                },
            ),
        ]
    if kind == "Workflow":
        workflow = dict(manifest)
        spec = dict(workflow.get("spec", {}))
        args = [
            {**p, "value": parameters.get(p["name"], p.get("value"))}
            for p in (spec.get("arguments", {}) or {}).get("parameters", []) or []
        ]
        if args:
            spec["arguments"] = {**spec.get("arguments", {}), "parameters": args}
        workflow["spec"] = spec
        return [
            ArgoRequest(
                purpose="create workflow",
                method="POST",
                url=f"{base}/workflows/{ns}",
                headers=headers,
                body={"namespace": ns, "workflow": workflow},
            )
        ]
    raise SubmitError(f"kind '{kind}': submit takes a Workflow or a WorkflowTemplate")


def send(plan: list[ArgoRequest], timeout: float = 30.0) -> Iterator[str]:
    """Send the requests in order; yield one line per request.

    Raises:
        SubmitError: the server is unreachable or answers with an error (its message kept).
    """
    # Imported here, not at the top: requests costs 150-250 ms to import (measured), which a dry
    # run (plan_submission only) need not pay. requests imports nothing of geomlops: no cycle.
    import requests

    for req in plan:
        try:
            response = requests.request(
                req.method, req.url, json=req.body, headers=req.headers, timeout=timeout
            )
            if response.status_code == 409 and req.update_url:
                current = requests.get(req.update_url, headers=req.headers, timeout=timeout)
                current.raise_for_status()
                field = next(k for k in req.body if k != "namespace")
                resource = dict(req.body[field])
                resource["metadata"] = {
                    **resource.get("metadata", {}),
                    "resourceVersion": current.json()["metadata"]["resourceVersion"],
                }
                response = requests.put(
                    req.update_url, json={field: resource}, headers=req.headers, timeout=timeout
                )
        except requests.RequestException as err:
            raise SubmitError(f"{req.purpose}: cannot reach the Argo server at {req.url} ({err})") from err
        if response.status_code >= 400:
            raise SubmitError(f"{req.purpose}: HTTP {response.status_code}: {response.text[:500]}")
        name = response.json().get("metadata", {}).get("name", "")
        yield f"{req.purpose}: {name}"
