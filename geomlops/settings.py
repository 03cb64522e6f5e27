"""One settings object for every component.

The ``local`` profile keeps everything under one work folder (``./.geomlops`` unless
``GEOMLOPS_HOME`` is set): MLflow on SQLite, a static STAC catalogue, a DVC repository with a
local remote. Service settings for clusters come from the environment (``GEOMLOPS_*``).
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from geomlops.errors import ConfigurationError

#: the bucket of Argo's artifacts (and logs), as ``geomlops install`` renders its artifact
#: repository; the local runner uses it on the services profile and the dev stack creates it
ARGO_ARTIFACTS_BUCKET = "argo-artifacts"

#: variables that name the S3 endpoint, most specific first (boto3 and DVC read the first two)
S3_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")


class Settings(BaseSettings):
    """Where state lives. Every field can be set with ``GEOMLOPS_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="GEOMLOPS_", extra="forbid")

    home: Path = Field(default=Path(".geomlops"), description="Work folder of the local profile.")
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default: SQLite in the work folder."
    )
    mlflow_artifact_root: str | None = Field(
        default=None, description="Artifact root for new experiments; default: work folder."
    )
    catalog_root: str | None = Field(
        default=None, description="Static STAC catalogue root (catalog.json); default: work folder."
    )
    data_repo: str | None = Field(
        default=None, description="DVC repository (path or git URL) holding the datasets."
    )
    dvc_remote: str | None = Field(default=None, description="DVC remote URL for the local data repository.")
    schema_dir: Path | None = Field(
        default=None, description="Folder of JSON schemas stored by URL, for offline validation."
    )
    pgstac_dsn: str | None = Field(
        default=None,
        description="PostgreSQL DSN of the PgSTAC catalogue (postgresql://user:pass@host:port/db).",
    )
    stac_api_url: str | None = Field(
        default=None, description="STAC API serving the catalogue (stac-fastapi-pgstac), for search."
    )
    argo_server: str | None = Field(default=None, description="Argo server URL for `submit`.")
    argo_namespace: str = Field(default="argo", description="Namespace to submit workflows to.")
    argo_token: str | None = Field(default=None, description="Bearer token for the Argo server.")
    profile: Literal["local", "services"] = Field(
        default="local",
        description=(
            "'local': everything in the work folder. 'services': an MLflow server (tracking URI "
            "required) and one S3 store holding the MLflow artifacts and the DVC remote."
        ),
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description=(
            "S3 API endpoint of the object store (MinIO; moto in tests); default: AWS_ENDPOINT_URL_S3, "
            "AWS_ENDPOINT_URL or MLFLOW_S3_ENDPOINT_URL, else AWS. Credentials: AWS_* variables only."
        ),
    )
    mlflow_artifacts_bucket: str = Field(
        default="mlflow-artifacts",
        description="Bucket of the MLflow artifacts; the services profile's artifact root is s3://BUCKET.",
    )
    dvc_data_bucket: str = Field(
        default="dvc-data",
        description="Bucket of the DVC remote; the services profile's remote is s3://BUCKET/geomlops.",
    )
    dask_scheduler_address: str | None = Field(
        default=None,
        description="Dask distributed scheduler (tcp://host:8786); default: Dask's local scheduler.",
    )
    serving_kind: Literal["seldon-v1", "seldon-v2", "kserve"] = Field(
        default="kserve",
        description=(
            "Serving manifests to render: 'seldon-v1' (SeldonDeployment), 'seldon-v2' (Model + "
            "Pipeline) or 'kserve' (InferenceService). Seldon Core 1.18+ and 2 are under the "
            "Business Source License; KServe and MLServer are Apache-2.0."
        ),
    )
    serving_namespace: str = Field(default="geomlops", description="Namespace the serving manifests go to.")
    serving_apply: bool = Field(
        default=False, description="Apply the serving manifests with `kubectl apply -f` after rendering."
    )
    serving_secret: str = Field(
        default="geomlops-serving-s3",
        description=(
            "Secret with the object store credentials for model servers, referenced by name only "
            "(keys: see `geomlops install`)."
        ),
    )
    transformer_image: str | None = Field(
        default=None,
        description=(
            "Image of the post-processing transformer; default: "
            "ghcr.io/geomlops/geomlops-transformer:VERSION."
        ),
    )
    serving_max_image_bytes: int = Field(
        default=16 * 1024 * 1024,
        gt=0,
        description="Largest image chip `geomlops serve` accepts in one request, in bytes.",
    )

    @model_validator(mode="after")
    def _check_services_profile(self) -> Settings:
        """The services profile needs a tracking server and keeps artifacts and data in S3."""
        if self.profile != "services":
            return self
        if not self.mlflow_tracking_uri or self.mlflow_tracking_uri.startswith(("sqlite:", "file:")):
            raise ConfigurationError(
                "GEOMLOPS_PROFILE=services needs GEOMLOPS_MLFLOW_TRACKING_URI: the MLflow server's URL, "
                f"not {self.mlflow_tracking_uri or 'nothing'}"
            )
        # real s3:// roots (not mlflow-artifacts:/ through the server), so a registry URI
        # can go straight into a serving manifest
        for variable, value in (
            ("GEOMLOPS_MLFLOW_ARTIFACT_ROOT", self.artifact_root),
            ("GEOMLOPS_DVC_REMOTE", self.dvc_remote_url),
        ):
            if not value.startswith("s3://"):
                raise ConfigurationError(
                    f"{variable}={value!r}: the services profile keeps it in the S3 store (s3://BUCKET/...)"
                )
        return self

    @cached_property
    def home_dir(self) -> Path:
        """The work folder as an absolute path."""
        return self.home.expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI in force."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home_dir / 'mlflow.db'}"

    @property
    def sqlite_store(self) -> Path | None:
        """The file of the tracking store where it is SQLite (the embedded default), else None."""
        uri = self.tracking_uri
        return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None

    @property
    def artifact_root(self) -> str:
        """Artifact root for experiments created by geomlops."""
        if self.mlflow_artifact_root:
            return self.mlflow_artifact_root
        if self.profile == "services":
            return f"s3://{self.mlflow_artifacts_bucket}"
        return (self.home_dir / "mlartifacts").as_uri()

    @property
    def catalog_href(self) -> str:
        """The catalogue in force: ``catalog_root``, else PgSTAC when a DSN is set, else the
        static catalogue in the work folder."""
        return self.catalog_root or self.pgstac_dsn or str(self.home_dir / "catalog" / "catalog.json")

    @property
    def data_repo_url(self) -> str:
        """The DVC repository holding datasets."""
        return self.data_repo or str(self.home_dir / "data")

    @property
    def dvc_remote_url(self) -> str:
        """The DVC remote of the local data repository."""
        if self.dvc_remote:
            return self.dvc_remote
        if self.profile == "services":
            return f"s3://{self.dvc_data_bucket}/geomlops"
        return str(self.home_dir / "dvc-remote")

    @property
    def s3_endpoint(self) -> str | None:
        """The S3 endpoint in force: the setting, else the AWS/MLflow variables; None: AWS itself."""
        if self.s3_endpoint_url:
            return self.s3_endpoint_url
        return next((os.environ[v] for v in S3_ENDPOINT_VARIABLES if os.environ.get(v)), None)

    def s3_environment(self) -> dict[str, str]:
        """The variables that point boto3, DVC and MLflow's S3 client at :attr:`s3_endpoint`."""
        endpoint = self.s3_endpoint
        return {"AWS_ENDPOINT_URL_S3": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint} if endpoint else {}

    @property
    def runs_dir(self) -> Path:
        """Where the local runner keeps each run's state and logs."""
        return self.home_dir / "runs"


def get_settings() -> Settings:
    """Read the settings from the environment (a new object each call: the env may change)."""
    return Settings()


def use_tracking(settings: Settings | None = None) -> Settings:
    """Point MLflow (and boto3, s3fs, DVC) at the configured tracking server and S3 endpoint.

    Called at the start of every step body that talks to MLflow or S3 (in a pod or the local
    runner) and by CLI commands that do. A variable already set in the environment wins.

    Returns:
        The settings used.
    """
    import mlflow

    from geomlops.tracking import bounded_retries

    settings = settings or get_settings()
    bounded_retries()
    # the manifests pass the S3 endpoint as MLFLOW_S3_ENDPOINT_URL, which DVC does not read:
    # hand it to boto3/s3fs as well (a variable set explicitly wins)
    for name, value in settings.s3_environment().items():
        os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(settings.tracking_uri)
    return settings
