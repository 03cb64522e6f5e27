"""Request and response bodies of the gateway's API (closed: unknown fields are refused)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from geomlops.gateway.auth import Role

#: a model id, version or alias as the registry and catalogue spell them
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
Text = Annotated[str, StringConstraints(max_length=2000)]
Parameters = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=200)], Text],
    Field(
        description="Further parameters the pipeline declares (NAME: VALUE); an undeclared one is refused."
    ),
]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainingRequest(_Closed):
    """Train a new version of a catalogued model on a dataset versioned by DVC."""

    model: Name = Field(description="The model's id in the catalogue (its base item).")
    dataset_path: Annotated[str, StringConstraints(min_length=1, max_length=1000)] = Field(
        description="Dataset path in the DVC repository."
    )
    dataset_rev: Annotated[str, StringConstraints(max_length=200)] = Field(
        default="", description="Git revision of the dataset; empty: HEAD."
    )
    parameters: Parameters = {}


class _ModelImagery(_Closed):
    """A model version (a number or an alias) and imagery to predict it on."""

    model: Name = Field(description="The model's id in the catalogue.")
    version: Name | None = Field(default=None, description="A version number (or give alias).")
    alias: Name | None = Field(default=None, description="An alias such as 'production' (or give version).")
    imagery: Annotated[str, StringConstraints(min_length=1, max_length=2000)] = Field(
        description="GeoTIFF (path on the gateway's machine, or URI) with the model's input bands."
    )


class BatchInferenceRequest(_ModelImagery):
    """Predict a model version over imagery within an area of interest."""

    aoi: dict[str, Any] | None = Field(
        default=None, description="Area of interest as GeoJSON (WGS 84); absent: all the imagery."
    )
    parameters: Parameters = {}


class InferenceRequest(_ModelImagery):
    """Predict a model version now over a small area of imagery (larger areas: a batch run)."""

    aoi: dict[str, Any] = Field(
        description=(
            "Area of interest as GeoJSON (WGS 84): a Polygon, MultiPolygon, Feature or "
            "FeatureCollection. Its window over the imagery may hold at most "
            "GEOMLOPS_GATEWAY_PREDICTIONS_MAX_PIXELS pixels (else 413)."
        )
    )


class PromotionRequest(_Closed):
    """Propose a version for production: it is compared with production and waits for a person."""

    model: Name = Field(description="The model's id in the catalogue.")
    candidate: Name = Field(description="The version proposed for production.")
    parameters: Parameters = {}


class DecisionRequest(_Closed):
    """An approver's decision on a waiting gate; the approver is the authenticated caller."""

    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r"\S")] = Field(
        description="Why (recorded with the decision)."
    )
    override: bool = Field(
        default=False, description="Approve although the gate's policy says no (recorded as an override)."
    )
    outputs: dict[Annotated[str, StringConstraints(min_length=1, max_length=200)], Text] = Field(
        default_factory=dict, description="Other supplied outputs of the gate, by name."
    )


class RefusalRequest(_Closed):
    """An approver's refusal of a waiting gate."""

    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r"\S")] = Field(
        description="Why (recorded with the refusal)."
    )


class KeyRequest(_Closed):
    """A new API key."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][\w .@-]*$")]
    role: Role


class KeyInfo(BaseModel):
    """An API key as listed: never its token nor its hash."""

    key_id: str
    name: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


class NewKey(KeyInfo):
    """A key just created: ``token`` is shown this once and stored nowhere."""

    token: str


class AuditRecord(BaseModel):
    """One audited write."""

    at: datetime
    actor: str
    role: str
    method: str
    action: str
    target: str
    client: str
    status: int
    detail: str


class ModelSummary(BaseModel):
    """A model in a list: what it is, its versions and aliases."""

    id: str
    title: str = ""
    description: str = ""
    tasks: list[str] = []
    framework: str = ""
    bbox: list[float] | None = None
    versions: list[str] = []
    aliases: dict[str, str] = {}


class ModelDetail(ModelSummary):
    """One model in full: its base item, and per version its item, run, metrics and lineage."""

    item: dict[str, Any]
    version_details: list[dict[str, Any]] = []


class Predictions(BaseModel):
    """The outputs of a batch inference run."""

    run_id: str
    item_href: str
    item: dict[str, Any]
    assets: dict[str, str] = Field(description="Asset name (geoparquet, geojson, quicklook…) to its href.")
    features: int | None = None


class OnDemandPrediction(BaseModel):
    """A GeoJSON FeatureCollection (RFC 7946, WGS 84) of a model's polygons, with how it was made
    as foreign members. Each feature carries its class, area, model, version and MLflow run id."""

    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[dict[str, Any]]
    bbox: list[float] | None = Field(default=None, description="Absent when there is no feature.")
    model: str
    version: str
    run_id: str
    via: Literal["serving", "in-process"] = Field(
        description="'serving': the model's serving endpoint answered; 'in-process': the gateway predicted "
        "with the model's own environment."
    )
    pixels: int = Field(description="Pixels predicted (the AOI's window, or the chip).")


class Health(BaseModel):
    """Whether the gateway answers, and its database."""

    status: str
    database: str
    backend: str


class Version(BaseModel):
    """The gateway's release."""

    version: str
    api: str
