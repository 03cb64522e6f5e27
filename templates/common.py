"""What every geomlops script template shares: image, secrets, retry strategies."""

from __future__ import annotations

from hera.workflows import Resources, RetryStrategy, SecretEnv
from hera.workflows.models import Backoff

from geomlops import __version__

#: the image every geomlops step runs in on a cluster
IMAGE = f"ghcr.io/geomlops/geomlops:{__version__}"

#: Kubernetes secrets the steps read. Only references are rendered, never values; every key
#: is optional so one secret can serve both the local-like and the services profile.
SECRET_ENV = [
    SecretEnv(
        name="GEOMLOPS_MLFLOW_TRACKING_URI",
        secret_name="geomlops-config",
        secret_key="mlflow-tracking-uri",
        optional=True,
    ),
    SecretEnv(
        name="GEOMLOPS_MLFLOW_ARTIFACT_ROOT",
        secret_name="geomlops-config",
        secret_key="mlflow-artifact-root",
        optional=True,
    ),
    SecretEnv(
        name="GEOMLOPS_CATALOG_ROOT", secret_name="geomlops-config", secret_key="catalog-root", optional=True
    ),
    SecretEnv(
        name="GEOMLOPS_DATA_REPO", secret_name="geomlops-config", secret_key="data-repo", optional=True
    ),
    SecretEnv(
        name="GEOMLOPS_STAC_API_URL", secret_name="geomlops-config", secret_key="stac-api-url", optional=True
    ),
    SecretEnv(name="GEOMLOPS_PROFILE", secret_name="geomlops-config", secret_key="profile", optional=True),
    SecretEnv(
        name="GEOMLOPS_S3_ENDPOINT_URL",
        secret_name="geomlops-config",
        secret_key="s3-endpoint-url",
        optional=True,
    ),
    SecretEnv(
        name="GEOMLOPS_DASK_SCHEDULER_ADDRESS",
        secret_name="geomlops-config",
        secret_key="dask-scheduler-address",
        optional=True,
    ),
    SecretEnv(
        name="MLFLOW_TRACKING_USERNAME", secret_name="geomlops-mlflow", secret_key="username", optional=True
    ),
    SecretEnv(
        name="MLFLOW_TRACKING_PASSWORD", secret_name="geomlops-mlflow", secret_key="password", optional=True
    ),
    SecretEnv(name="AWS_ACCESS_KEY_ID", secret_name="geomlops-s3", secret_key="access-key-id", optional=True),
    SecretEnv(
        name="AWS_SECRET_ACCESS_KEY", secret_name="geomlops-s3", secret_key="secret-access-key", optional=True
    ),
    SecretEnv(
        name="MLFLOW_S3_ENDPOINT_URL", secret_name="geomlops-s3", secret_key="endpoint-url", optional=True
    ),
]

#: for steps that talk to MLflow, DVC remotes or the catalogue: transient faults pass
NETWORK_RETRY = RetryStrategy(
    limit=2, retry_policy="Always", backoff=Backoff(duration="2s", factor=2, max_duration="1m")
)

#: small steps: metadata reads and writes
SMALL = Resources(cpu_request="100m", memory_request="256Mi", memory_limit="1Gi")
#: training and evaluation on imagery
LARGE = Resources(cpu_request="1", memory_request="2Gi", memory_limit="8Gi")

#: the geomlops image with Kaniko's executor added (root Dockerfile, target ``builder``)
BUILDER_IMAGE = f"ghcr.io/geomlops/geomlops-builder:{__version__}"
