"""What a platform engineer applies to a Kubernetes cluster that already runs Argo Workflows.

``geomlops install --namespace NS`` renders, for that namespace: the ServiceAccount the workflows
run as with the least RBAC Argo's executor needs, Secret templates (keys, never values), the Argo
artifact repository pointing at the object store, and every WorkflowTemplate / CronWorkflow.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from geomlops.errors import ParameterError
from geomlops.settings import ARGO_ARTIFACTS_BUCKET
from pipelines import PIPELINES, render
from pipelines._naming import SERVICE_ACCOUNT

#: the secrets the templates reference, and the keys each holds (values are the operator's)
SECRETS: dict[str, dict[str, str]] = {
    "geomlops-config": {
        "mlflow-tracking-uri": "MLflow tracking server, e.g. http://mlflow.mlops.svc:5000",
        "mlflow-artifact-root": "s3://mlflow-artifacts",
        "catalog-root": "PgSTAC DSN or static catalogue root",
        "stac-api-url": "STAC API over PgSTAC (item hrefs point at it), e.g. http://stac.mlops.svc:8080",
        "data-repo": "git URL of the DVC data repository",
        "profile": "services (insists on s3:// artifact roots)",
        "s3-endpoint-url": "object store URL for DVC and MLflow, e.g. http://minio.storage.svc:9000",
        "dask-scheduler-address": "tcp://HOST:8786 of a Dask scheduler for vectorization (optional)",
    },
    "geomlops-mlflow": {"username": "MLflow basic-auth user", "password": "MLflow basic-auth password"},
    "geomlops-s3": {
        "access-key-id": "object store access key",
        "secret-access-key": "object store secret key",
        "endpoint-url": "object store URL, e.g. http://minio.storage.svc:9000",
    },
    # model servers read env-style keys (GEOMLOPS_SERVING_SECRET): rclone's for Seldon Core v1,
    # an rclone remote named s3 for Seldon Core v2, AWS_* for KServe's storage initializer
    "geomlops-serving-s3": {
        "RCLONE_CONFIG_S3_TYPE": "s3",
        "RCLONE_CONFIG_S3_PROVIDER": "Minio (or AWS)",
        "RCLONE_CONFIG_S3_ENV_AUTH": "false",
        "RCLONE_CONFIG_S3_ACCESS_KEY_ID": "object store access key",
        "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": "object store secret key",
        "RCLONE_CONFIG_S3_ENDPOINT": "object store URL, e.g. http://minio.storage.svc:9000",
        "s3": "Seldon Core v2 rclone remote: {type: s3, name: s3, parameters: {provider, access_key_id, …}}",
        "AWS_ACCESS_KEY_ID": "object store access key (KServe)",
        "AWS_SECRET_ACCESS_KEY": "object store secret key (KServe)",
    },
}

_LABELS = {"app.kubernetes.io/part-of": "geomlops", "app.kubernetes.io/managed-by": "geomlops-install"}


def _meta(name: str, namespace: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(_LABELS), **extra}


def rbac(namespace: str) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding: only what Argo's emissary executor needs.

    Since Argo v3.4 a workflow pod reports its outputs through ``workflowtaskresults``; the
    steps themselves call no Kubernetes API.
    """
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(SERVICE_ACCOUNT, namespace)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(SERVICE_ACCOUNT, namespace),
            "rules": [
                {
                    "apiGroups": ["argoproj.io"],
                    "resources": ["workflowtaskresults"],
                    "verbs": ["create", "patch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(SERVICE_ACCOUNT, namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SERVICE_ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}],
        },
    ]


def secret_templates(namespace: str) -> list[dict[str, Any]]:
    """One Secret per name the templates reference, every value empty: fill them in the cluster."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": _meta(
                name,
                namespace,
                annotations={f"geomlops.io/key.{key}": meaning for key, meaning in keys.items()},
            ),
            "stringData": dict.fromkeys(keys, ""),
        }
        for name, keys in SECRETS.items()
    ]


def artifact_repository(namespace: str, bucket: str, endpoint: str, insecure: bool) -> dict[str, Any]:
    """Argo's artifact repository ConfigMap, pointing at the object store (credentials by reference)."""
    import yaml

    repository = {
        "archiveLogs": True,
        "s3": {
            "bucket": bucket,
            "endpoint": endpoint,
            "insecure": insecure,
            "keyFormat": "workflows/{{workflow.name}}/{{pod.name}}",
            "accessKeySecret": {"name": "geomlops-s3", "key": "access-key-id"},
            "secretKeySecret": {"name": "geomlops-s3", "key": "secret-access-key"},
        },
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(
            "artifact-repositories",
            namespace,
            annotations={"workflows.argoproj.io/default-artifact-repository": "geomlops"},
        ),
        "data": {"geomlops": yaml.safe_dump(repository, sort_keys=False)},
    }


def workflow_manifests(namespace: str) -> list[dict[str, Any]]:
    """Every pipeline's manifest, placed in ``namespace``."""
    out = []
    for name in sorted(PIPELINES):
        manifest = copy.deepcopy(render(name))
        manifest["metadata"]["namespace"] = namespace
        out.append(manifest)
    return out


#: a Kubernetes namespace is an RFC 1123 DNS label
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def check_namespace(namespace: str) -> str:
    """Return ``namespace`` if Kubernetes accepts it as a namespace name.

    Raises:
        ParameterError: naming the value and the rule (RFC 1123 label).
    """
    if not _NAMESPACE.fullmatch(namespace):
        raise ParameterError(
            f"--namespace {namespace!r}: expected a Kubernetes namespace name (RFC 1123 label: at "
            "most 63 lower-case letters, digits or '-', starting and ending with a letter or digit)"
        )
    return namespace


def install_manifests(
    namespace: str,
    *,
    bucket: str = ARGO_ARTIFACTS_BUCKET,
    endpoint: str = "minio.storage.svc:9000",
    insecure: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Everything to apply, grouped by file: rbac, secrets, artifact repository, workflows.

    Raises:
        ParameterError: ``namespace`` is not a Kubernetes namespace name or ``bucket`` not an
            S3 bucket name.
    """
    check_namespace(namespace)
    if not _BUCKET.fullmatch(bucket):
        raise ParameterError(
            f"--artifact-bucket {bucket!r}: expected an S3 bucket name (3-63 characters: "
            "lower-case letters, digits, '.', '-'; starting and ending with a letter or digit)"
        )
    return {
        "10-rbac.yaml": rbac(namespace),
        "20-secrets.yaml": secret_templates(namespace),
        "30-artifact-repository.yaml": [artifact_repository(namespace, bucket, endpoint, insecure)],
        "40-workflows.yaml": workflow_manifests(namespace),
    }
