"""One settings object for every component.

The ``local`` profile keeps everything under one work folder (``./.geomlops`` unless
``GEOMLOPS_HOME`` is set): MLflow on SQLite, a static STAC catalogue, a DVC repository with a
local remote. Service settings for clusters come from the environment (``GEOMLOPS_*``).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    @cached_property
    def home_dir(self) -> Path:
        """The work folder as an absolute path."""
        return self.home.expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI in force."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        """Artifact root for experiments created by geomlops."""
        return self.mlflow_artifact_root or (self.home_dir / "mlartifacts").as_uri()

    @property
    def catalog_href(self) -> str:
        """Root of the static catalogue (a ``catalog.json`` path)."""
        return self.catalog_root or str(self.home_dir / "catalog" / "catalog.json")

    @property
    def data_repo_url(self) -> str:
        """The DVC repository holding datasets."""
        return self.data_repo or str(self.home_dir / "data")

    @property
    def dvc_remote_url(self) -> str:
        """The DVC remote of the local data repository."""
        return self.dvc_remote or str(self.home_dir / "dvc-remote")

    @property
    def runs_dir(self) -> Path:
        """Where the local runner keeps each run's state and logs."""
        return self.home_dir / "runs"


def get_settings() -> Settings:
    """Read the settings from the environment (a new object each call: the env may change)."""
    return Settings()
