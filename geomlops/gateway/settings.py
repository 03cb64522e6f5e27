"""The gateway's own settings (``GEOMLOPS_GATEWAY_*``), beside the core settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    """How the gateway runs. Every field can be set with ``GEOMLOPS_GATEWAY_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="GEOMLOPS_GATEWAY_", extra="forbid")

    backend: Literal["local", "argo"] = Field(
        default="local",
        description="Where runs go: 'local' (the local runner, detached processes) or 'argo' (Argo Server).",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the gateway's database; default: SQLite $GEOMLOPS_HOME/gateway.db.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (JSON list); default: none."
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest JSON request body accepted, in bytes (else 413)."
    )
    oidc_issuer: str | None = Field(default=None, description="OIDC issuer ('iss') of bearer tokens.")
    oidc_audience: str | None = Field(default=None, description="Audience ('aud') bearer tokens must name.")
    oidc_jwks_url: str | None = Field(
        default=None, description="JWKS URL of the issuer; default: ISSUER/.well-known/jwks.json."
    )
    oidc_role_claim: str = Field(
        default="geomlops_role", description="Claim holding the caller's role (a string or a list)."
    )
    oidc_subject_claim: str = Field(
        default="email", description="Claim naming the caller (falls back to 'sub')."
    )
    predictions_max_pixels: int = Field(
        default=1024 * 1024,
        gt=0,
        description=(
            "Largest window (width x height pixels) on-demand inference predicts, an AOI's over the "
            "imagery or a chip's (else 413); larger areas go to a batch inference run."
        ),
    )
    serving_url: str | None = Field(
        default=None,
        description=(
            "Root URL of a V2 inference server (MLServer with geomlops' runtime) that on-demand "
            "inference uses when it serves the requested version; default: only the server "
            "`geomlops serve` prepared in the work folder, when it runs."
        ),
    )

    basemap_url: str | None = Field(
        default=None,
        description=(
            "XYZ tile URL template ({z}/{x}/{y}) of a basemap the web app shows under the imagery; "
            "default: none (the app needs nothing outside the gateway)."
        ),
    )
    mlflow_ui_url: str | None = Field(
        default=None,
        description=(
            "Root URL of an MLflow UI showing the tracking store (links to runs); default: the "
            "tracking URI when it is a server's URL, else no link."
        ),
    )
    imagery_roots: list[Path] = Field(
        default_factory=list,
        description=(
            "Folders whose rasters the gateway reads by path: map tiles, plans, batch and "
            "on-demand inference (JSON list); default: the work folder ($GEOMLOPS_HOME). The "
            "local data repository is readable too."
        ),
    )

    def database(self, home: Path) -> str:
        """The database URL in force, the SQLite default under ``home``."""
        return self.database_url or f"sqlite:///{home / 'gateway.db'}"
