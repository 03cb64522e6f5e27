"""Argo Events manifests: in a cluster, a push to a model repository starts its retrain run.

The cluster's counterpart of :mod:`geomlops.gateway.webhooks`, rendered from the same
repository mapping. A ``github`` ``EventSource`` receives GitHub's deliveries (it creates the
hooks with an API token and checks each delivery's ``X-Hub-Signature-256`` with the shared
secret; both are read from the Kubernetes secret ``geomlops-github``). A ``Sensor`` filters
pushes to each repository's branch and submits a ``Workflow`` from the installed retrain
WorkflowTemplate with the model, the clone URL and the pushed commit. The Workflow is named
after the delivery id, so a redelivered event cannot start a second run: Kubernetes refuses a
second object of that name. The run stops at the approval gate, as the gateway's does.

Every manifest is checked against Argo Events' JSON schema in strict mode (unknown fields are
errors), and the Workflow the Sensor submits against Argo Workflows' (:func:`events_errors`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from geomlops.argo.lint import lint_manifest, strict_schema
from geomlops.gateway.webhooks import WebhookRepository
from geomlops.schemas import json_path
from pipelines import render
from pipelines._naming import PIPELINE_LABEL

ARGO_EVENTS_VERSION = "v1.9.11"
EVENT_SOURCE = "geomlops-github"
SENSOR = "geomlops-retrain"
#: the ServiceAccount the Sensor submits Workflows as (rendered with its Role)
SENSOR_ACCOUNT = "geomlops-events"
#: the Kubernetes secret holding GitHub's webhook secret and an API token that may manage hooks
GITHUB_SECRET = "geomlops-github"
PORT = 12000
_LABELS = {"app.kubernetes.io/part-of": "geomlops"}
_API = "argoproj.io/v1alpha1"


def event_name(repository: str) -> str:
    """The event's name for ``owner/name``: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", repository.lower()).strip("-")


def render_event_manifests(
    repositories: Mapping[str, WebhookRepository], *, namespace: str, url: str
) -> list[dict[str, Any]]:
    """The ServiceAccount, Role and RoleBinding of the Sensor, the EventSource and the Sensor.

    Args:
        repositories: ``owner/name`` → what a push to it retrains (the webhook's mapping).
        namespace: where Argo Workflows and Argo Events run geomlops.
        url: the public base URL GitHub reaches the EventSource's service at (an ingress).

    Returns:
        The manifests, in the order ``kubectl apply`` takes them.

    Raises:
        ValueError: no repository, or a name that is not ``owner/name``.
    """
    if not repositories:
        raise ValueError("repositories: at least one 'owner/name' mapped to a model is needed")
    for name in repositories:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", name):
            raise ValueError(f"repositories: {name!r} is not 'owner/name'")
    template = render("retrain")["metadata"]["name"]
    meta = {"namespace": namespace, "labels": _LABELS}
    secret = {"name": GITHUB_SECRET}
    github = {
        event_name(full): {
            "repositories": [{"owner": full.split("/")[0], "names": [full.split("/")[1]]}],
            "webhook": {
                "endpoint": f"/push/{event_name(full)}",
                "port": str(PORT),
                "method": "POST",
                "url": url.rstrip("/"),
            },
            "events": ["push"],
            "apiToken": secret | {"key": "api-token"},
            "webhookSecret": secret | {"key": "webhook-secret"},
            "insecure": False,
            "active": True,
            "contentType": "json",
        }
        for full in sorted(repositories)
    }
    source = {
        "apiVersion": _API,
        "kind": "EventSource",
        "metadata": {"name": EVENT_SOURCE, **meta},
        "spec": {"service": {"ports": [{"port": PORT, "targetPort": PORT}]}, "github": github},
    }
    sensor = {
        "apiVersion": _API,
        "kind": "Sensor",
        "metadata": {"name": SENSOR, **meta},
        "spec": {
            "template": {"serviceAccountName": SENSOR_ACCOUNT},
            "dependencies": [_dependency(full, repositories[full]) for full in sorted(repositories)],
            "triggers": [_trigger(full, repositories[full], template) for full in sorted(repositories)],
        },
    }
    return [*_rbac(namespace), source, sensor]


def _dependency(full: str, target: WebhookRepository) -> dict[str, Any]:
    name = event_name(full)
    return {
        "name": name,
        "eventSourceName": EVENT_SOURCE,
        "eventName": name,
        "filters": {
            "data": [
                {"path": "headers.X-Github-Event", "type": "string", "value": ["push"]},
                {"path": "body.ref", "type": "string", "value": [f"refs/heads/{target.branch}"]},
                {"path": "body.deleted", "type": "bool", "value": ["false"]},
            ]
        },
    }


def submitted_workflow(template: str, target: WebhookRepository) -> dict[str, Any]:
    """The Workflow the Sensor submits (before the event's values are filled in)."""
    parameters = [
        {"name": "model", "value": target.model},
        {"name": "repository", "value": target.clone_url or ""},
        {"name": "commit", "value": ""},
        {"name": "package_dir", "value": target.package_dir},
    ]
    return {
        "apiVersion": _API,
        "kind": "Workflow",
        "metadata": {"name": "geomlops-retrain-", "labels": _LABELS | {PIPELINE_LABEL: "retrain"}},
        "spec": {"workflowTemplateRef": {"name": template}, "arguments": {"parameters": parameters}},
    }


def _trigger(full: str, target: WebhookRepository, template: str) -> dict[str, Any]:
    name = event_name(full)
    parameters = [
        # named after GitHub's delivery id: a redelivery cannot create a second Workflow
        {"src": {"dependencyName": name, "dataKey": "headers.X-Github-Delivery.0"}, "dest": "metadata.name"}
        | {"operation": "append"},
        {
            "src": {"dependencyName": name, "dataKey": "body.after"},
            "dest": "spec.arguments.parameters.2.value",
        },
    ]
    if not target.clone_url:
        parameters.append(
            {
                "src": {"dependencyName": name, "dataKey": "body.repository.clone_url"},
                "dest": "spec.arguments.parameters.1.value",
            }
        )
    return {
        "template": {
            "name": f"retrain-{name}",
            "conditions": name,
            "argoWorkflow": {
                "operation": "submit",
                "source": {"resource": submitted_workflow(template, target)},
                "parameters": parameters,
            },
        }
    }


def _rbac(namespace: str) -> list[dict[str, Any]]:
    meta = {"name": SENSOR_ACCOUNT, "namespace": namespace, "labels": _LABELS}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["create", "get"]},
                {"apiGroups": ["argoproj.io"], "resources": ["workflowtemplates"], "verbs": ["get"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SENSOR_ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": SENSOR_ACCOUNT, "namespace": namespace}],
        },
    ]


def events_schema_path(schema_dir: Path) -> Path:
    """Argo Events' JSON schema in a by-URL schema folder."""
    return schema_dir / "argo-events" / ARGO_EVENTS_VERSION / "schema.json"


def events_errors(manifest: Mapping[str, Any], schema_dir: Path) -> list[str]:
    """Problems of an EventSource or Sensor against Argo Events' schema, strictly; a Sensor's
    submitted Workflows are linted against Argo Workflows' schema too.

    Raises:
        FileNotFoundError: the schema is not in ``schema_dir``.
    """
    from jsonschema import Draft7Validator

    path = events_schema_path(schema_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Argo Events' schema {ARGO_EVENTS_VERSION} not found")
    kind = manifest.get("kind")
    if kind not in ("EventSource", "Sensor"):
        return [f"$.kind: expected EventSource or Sensor, not {kind!r}"]
    definitions = strict_schema(path)["definitions"]
    target = {"$ref": f"#/definitions/io.argoproj.events.v1alpha1.{kind}", "definitions": definitions}
    errors = [
        f"{json_path(e.absolute_path)}: {e.message}"
        for e in sorted(Draft7Validator(target).iter_errors(manifest), key=lambda e: list(e.absolute_path))
    ]
    for i, trigger in enumerate((manifest.get("spec") or {}).get("triggers") or []):
        resource = (((trigger.get("template") or {}).get("argoWorkflow") or {}).get("source") or {}).get(
            "resource"
        )
        if resource is not None:
            where = f"$.spec.triggers[{i}].template.argoWorkflow.source.resource"
            linted = lint_manifest(resource, where, schema_dir)
            errors += [f"{where}: {e}" for e in linted.errors]
    return errors
