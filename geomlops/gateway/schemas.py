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


class ModelClass(BaseModel):
    """A class the model predicts, with the colour it is drawn in."""

    value: int
    name: str
    description: str = ""
    color: str | None = Field(
        default=None, description="CSS colour (#RRGGBB) from MLM color_hint; null: none."
    )


class ModelBand(BaseModel):
    """An input band of the model."""

    name: str
    common_name: str | None = Field(default=None, description="eo:common_name (red, nir08…).")
    description: str = ""


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
    production: str | None = Field(default=None, description="The version at alias 'production'.")
    previous: str | None = Field(default=None, description="The version at alias 'previous'.")
    classes: list[ModelClass] = []
    bands: list[ModelBand] = Field(default=[], description="The input bands, in order.")
    reads: list[str] = Field(
        default=[],
        description="The imagery's bands the model reads: its input bands but those derived by an "
        "expression, then the bands the expressions read (the order of imagery without band names).",
    )
    geometry: dict[str, Any] | None = Field(default=None, description="The spatial extent (GeoJSON).")
    item_url: str | None = Field(default=None, description="The base STAC item.")


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
    links: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "The gateway's routes to the outputs: geoparquet, geojson (downloads), pmtiles (vector "
            "tiles; absent without a feature), lineage."
        ),
    )


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


class ImageryInfo(BaseModel):
    """Registered imagery: a GeoTIFF the web app can show and predict on."""

    id: str
    title: str
    href: str = Field(description="Where the gateway reads it (give it as a run's imagery).")
    bbox: list[float] = Field(description="W, S, E, N in WGS 84.")
    bands: list[str] = Field(description="Band names (descriptions), in order.")
    common_names: list[str | None] = Field(description="Each band's common name (red, nir08…) when known.")


class WebConfig(BaseModel):
    """What the web app needs before signing in."""

    basemap_url: str | None = Field(description="XYZ basemap URL template; null: no basemap (offline).")
    version: str


class WhoAmI(BaseModel):
    """The caller, as its credentials say."""

    key_id: str = Field(description="The API key's id; empty for an OIDC token.")
    name: str
    role: Role


class BatchPlanSummary(BaseModel):
    """What a batch inference run would predict: nothing is started."""

    blocks: int = Field(description="Blocks of the imagery that meet the AOI.")
    groups: int = Field(description="Prediction tasks (groups of blocks).")
    block_size: int = Field(description="Block side in pixels.")
    notes: list[str] = Field(description="What was done to the AOI (clipped, reprojected…).")
    bbox: list[float] | None = Field(description="W, S, E, N (WGS 84) of the planned blocks; null: none.")


class RunLineage(BaseModel):
    """Where a batch inference run's predictions come from."""

    run_id: str = Field(description="The gateway's run id.")
    model: str
    model_version: str
    mlflow_run_id: str = Field(description="The MLflow run that trained the version.")
    mlflow_run_url: str | None = Field(description="Link to that run in an MLflow UI; null: no UI known.")
    dataset_hash: str | None = Field(description="DVC md5 of the training dataset.")
    code_commit: str | None = Field(description="Git commit of the model package's code.")
    code_sha256: str | None = Field(description="SHA-256 of the model package's content.")
    model_item_url: str = Field(description="The model version's STAC item.")
    predictions_item_url: str | None = Field(description="The predictions' STAC item; null until published.")


class MetricRow(BaseModel):
    """One metric of both versions."""

    name: str = Field(description="The metric (per class: NAME_CLASS, e.g. iou_cloud).")
    candidate: float | None
    production: float | None = Field(description="null: no production version, or not logged.")


class ClassMetrics(BaseModel):
    """One class's metrics of both versions (iou, f1, precision, recall, support)."""

    name: str
    metrics: list[MetricRow]


class PromotionReport(BaseModel):
    """A promotion run's comparison: both versions' metrics and the policy's verdict."""

    run_id: str
    model: str
    candidate: str = Field(description="The candidate version.")
    production: str | None = Field(description="The production version compared with; null: none.")
    class_names: list[str]
    primary_metric: str
    tolerance: float
    delta: float | None = Field(description="Candidate minus production on the primary metric.")
    verdict: Literal["passed", "refused"] = Field(
        description="'refused': worse than production beyond the tolerance; approving needs override: true."
    )
    summary: str
    policy_source: str
    created: str
    metrics: list[MetricRow] = Field(description="Every metric, per class ones included (NAME_CLASS).")
    per_class: list[ClassMetrics] = Field(description="Per class, in the model's class order.")
    waiting_gate: str | None = Field(description="The gate waiting for a decision; null: decided or not yet.")
    picture: str = Field(description="The comparison picture's route.")


class RollbackRequest(_Closed):
    """Put production back on the previous version."""

    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r"\S")] = Field(
        description="Why (recorded with the rollback)."
    )


class RollbackAnswer(BaseModel):
    """A rollback done."""

    model: str
    production: str = Field(description="The version now in production.")
    demoted: str = Field(description="The version taken out of production.")
    approver: str
    reason: str
    summary: str
