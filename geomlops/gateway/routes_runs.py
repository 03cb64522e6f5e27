"""``/api/v1/runs``: start training, batch inference and promotion; follow, stop and decide runs."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import FileResponse, PlainTextResponse, Response

from geomlops.errors import AoiError, ParameterError, PromotionError
from geomlops.gateway.auth import Permission, Principal
from geomlops.gateway.backends.base import RunInfo, RunNotFoundError, RunStateError
from geomlops.gateway.context import Gateway, gateway, require
from geomlops.gateway.db import RunRecord
from geomlops.gateway.inference import check_imagery_location
from geomlops.gateway.results import (
    PLAN_TASK,
    aoi_bbox,
    aoi_folder,
    block_progress,
    local_asset,
    mlflow_run_url,
    prediction_outputs,
    read_item,
    stac_item_url,
    version_trace,
)
from geomlops.gateway.routes_imagery import readable_roots
from geomlops.gateway.schemas import (
    BatchInferenceRequest,
    BatchPlanSummary,
    ClassMetrics,
    DecisionRequest,
    MetricRow,
    Predictions,
    PromotionReport,
    PromotionRequest,
    RefusalRequest,
    RunLineage,
    TrainingRequest,
)
from geomlops.settings import use_tracking

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])
Parts = Annotated[Gateway, Depends(gateway)]
Reader = Annotated[Principal, require(Permission.READ)]
Operator = Annotated[Principal, require(Permission.RUN)]
Approver = Annotated[Principal, require(Permission.DECIDE)]


@lru_cache(maxsize=8)
def _workflow(pipeline: str) -> Any:
    from geomlops.argo.runner.manifest import load_workflow
    from pipelines import render, template_resolver

    # read for its declared parameters only: a container template (run by Argo, or by the
    # backend in the model's image) is no reason to refuse them
    return load_workflow(render(pipeline), resolver=template_resolver, allow_host_containers=True)


def check_parameters(pipeline: str, given: Mapping[str, str], fixed: Mapping[str, str]) -> dict[str, str]:
    """The run's parameters: ``fixed`` (from the request's own fields) and ``given``.

    Raises:
        ParameterError: ``given`` repeats a field of the request, or names a parameter the
            pipeline does not declare, or a required one is missing.
    """
    from geomlops.argo.runner.manifest import resolve_parameters

    repeated = sorted(set(given) & set(fixed))
    if repeated:
        raise ParameterError(f"parameters: {', '.join(repeated)} are fields of the request; give them there")
    values = {**fixed, **given}
    try:
        resolve_parameters(_workflow(pipeline), values)
    except ParameterError as err:
        raise ParameterError(f"parameters: {err}") from err
    return values


def _start(
    parts: Gateway, request: Request, caller: Principal, pipeline: str, values: dict[str, str]
) -> RunInfo:
    run = parts.backend.submit(pipeline, values, submitted_by=caller.name)
    with parts.db.session() as session:
        session.add(
            RunRecord(
                run_id=run.run_id,
                pipeline=pipeline,
                backend=parts.backend.name,
                submitted_by=caller.name,
                parameters=json.dumps(values, sort_keys=True),
            )
        )
    request.state.audit_detail = f"started {pipeline} run {run.run_id}"
    return run


@router.post("/training", status_code=status.HTTP_202_ACCEPTED, summary="Start a training run")
def start_training(body: TrainingRequest, request: Request, parts: Parts, caller: Operator) -> RunInfo:
    """Train a new version of a catalogued model on a DVC dataset (the ``training`` pipeline)."""
    parts.catalogue.base_item(body.model)
    fixed = {"model": body.model, "dataset_path": body.dataset_path, "dataset_rev": body.dataset_rev}
    return _start(parts, request, caller, "training", check_parameters("training", body.parameters, fixed))


def _aoi_file(parts: Gateway, aoi: dict[str, Any]) -> str:
    """Check a GeoJSON AOI and give it to the run: on this machine a file the run reads (named
    by its content); on Argo the GeoJSON itself, since no file here is readable in a pod."""
    from geomlops.files import write_atomic
    from steps.aoi import INLINE_AOI_LIMIT, aoi_geometry

    try:
        aoi_geometry(aoi, where="aoi")
    except AoiError as err:
        message = str(err)
        raise AoiError(message if message.startswith("aoi") else f"aoi: {message}") from err
    text = json.dumps(aoi, sort_keys=True)
    if parts.backend.name == "argo":
        compact = json.dumps(aoi, separators=(",", ":"))
        if len(compact.encode()) > INLINE_AOI_LIMIT:
            raise AoiError(
                f"aoi: {len(compact.encode())} bytes of GeoJSON; a run on Argo takes at most "
                f"{INLINE_AOI_LIMIT} (simplify the area, or start the run with a file its pods can read)"
            )
        return compact
    path = aoi_folder(parts.settings) / f"{hashlib.sha256(text.encode()).hexdigest()}.geojson"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    return str(path)


def _batch_values(parts: Gateway, body: BatchInferenceRequest) -> dict[str, str]:
    """The checked parameters of a batch inference run (its AOI still to be given)."""
    parts.catalogue.base_item(body.model)
    version = parts.catalogue.resolve(body.model, body.version, body.alias)
    check_imagery_location(body.imagery, readable_roots(parts))
    fixed = {"model": body.model, "model_version": body.alias or version, "imagery": body.imagery}
    return check_parameters("batch-inference", body.parameters, {**fixed, "aoi": ""})


@router.post("/batch-inference", status_code=status.HTTP_202_ACCEPTED, summary="Start a batch inference run")
def start_batch_inference(
    body: BatchInferenceRequest, request: Request, parts: Parts, caller: Operator
) -> RunInfo:
    """Predict a model version (a number or an alias) over imagery within an AOI."""
    values = _batch_values(parts, body)
    if body.aoi is not None:
        values["aoi"] = _aoi_file(parts, body.aoi)
    return _start(parts, request, caller, "batch-inference", values)


def _size(values: Mapping[str, str], name: str) -> int:
    text = values.get(name, "")
    if not text.strip().isdigit() or int(text) <= 0:
        raise ParameterError(f"parameters.{name}: {text!r} is not a positive whole number")
    return int(text)


@router.post("/batch-inference/plan", summary="Plan a batch inference run without starting it")
def plan_batch_inference(body: BatchInferenceRequest, parts: Parts, caller: Operator) -> BatchPlanSummary:
    """The blocks and groups a batch inference run with this body would predict, the notes on
    its AOI, and the planned blocks' bounding box (WGS 84). Nothing is started or written."""
    from steps.aoi import aoi_geometry
    from steps.batch import plan_batch
    from steps.model_spec import fetch_model_spec

    values = _batch_values(parts, body)
    if body.aoi is not None:
        try:
            aoi_geometry(body.aoi, where="aoi")
        except AoiError as err:
            message = str(err)
            raise AoiError(message if message.startswith("aoi") else f"aoi: {message}") from err
    from geomlops.argo.runner.manifest import resolve_parameters

    values = resolve_parameters(_workflow("batch-inference"), values)  # with the defaults
    version = parts.catalogue.resolve(body.model, body.version, body.alias)
    spec = fetch_model_spec(body.model, parts.settings.catalog_href, version)  # what it was trained with
    try:
        plan = plan_batch(
            body.imagery,
            body.aoi,
            block_size=_size(values, "block_size"),
            group_size=_size(values, "group_size"),
            model_input=spec.inputs[0] if spec.inputs else None,
        )
    except AoiError as err:
        raise AoiError(f"aoi: {err}") from err
    return BatchPlanSummary(
        blocks=sum(len(g) for g in plan.groups),
        groups=len(plan.groups),
        block_size=plan.block_size,
        notes=list(plan.notes),
        bbox=_plan_bbox(plan),
    )


def _plan_bbox(plan: Any) -> list[float] | None:
    import shapely
    from affine import Affine
    from rasterio.warp import transform_bounds

    blocks = [b for g in plan.groups for b in g]
    if not blocks:
        return None
    transform = Affine(*plan.transform)
    corners = []
    for b in blocks:
        corners.append(transform @ (b.col_off, b.row_off))
        corners.append(transform @ (b.col_off + b.width, b.row_off + b.height))
    box = shapely.MultiPoint(corners).bounds
    return [round(v, 7) for v in transform_bounds(plan.crs, "EPSG:4326", *box, densify_pts=21)]


@router.post("/promotion", status_code=status.HTTP_202_ACCEPTED, summary="Start a promotion run")
def start_promotion(body: PromotionRequest, request: Request, parts: Parts, caller: Operator) -> RunInfo:
    """Compare a candidate version with production; the run waits at the approval gate."""
    parts.catalogue.base_item(body.model)
    candidate = parts.catalogue.resolve(body.model, body.candidate, None, field="candidate")
    fixed = {"model": body.model, "candidate": candidate}
    return _start(parts, request, caller, "promotion", check_parameters("promotion", body.parameters, fixed))


@router.get("", summary="List runs")
def list_runs(parts: Parts, caller: Reader) -> list[RunInfo]:
    """Every run the backend knows, newest first (without their tasks)."""
    return parts.backend.list()


@router.get("/{run_id}", summary="One run with every task")
def get_run(run_id: str, parts: Parts, caller: Reader) -> RunInfo:
    """A run's phase, each task with its progress, and the outputs so far; a batch inference
    run's blocks done and planned, elapsed time, estimated time left and area of interest."""
    run = parts.backend.get(run_id)
    return run.model_copy(update={"blocks": block_progress(run), "aoi_bbox": aoi_bbox(run, parts.settings)})


@router.get("/{run_id}/logs", response_class=PlainTextResponse, summary="A run's or a task's logs")
def run_logs(
    run_id: str,
    parts: Parts,
    caller: Reader,
    task: Annotated[str | None, Query(max_length=500, description="A task name; absent: the run's.")] = None,
    tail: Annotated[
        int | None, Query(ge=1, le=100_000, description="Only the last TAIL lines; absent: all of them.")
    ] = None,
) -> str:
    """The runner's log of a run, or every attempt's log of one task (its last lines with tail)."""
    text = parts.backend.logs(run_id, task)
    if tail is None:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(lines[-tail:])


@router.post("/{run_id}/stop", summary="Stop a run")
def stop_run(run_id: str, request: Request, parts: Parts, caller: Operator) -> RunInfo:
    """Stop a running run; its tasks are killed and it is recorded as stopped."""
    run = parts.backend.stop(run_id)
    request.state.audit_detail = f"stopped run {run_id}: {run.phase.value}"
    return run


def _approver(caller: Principal) -> str:
    from steps.promotion import validate_approver

    try:
        return validate_approver(caller.name)
    except PromotionError as err:
        raise ParameterError(f"approver (the caller's name): {err}") from err


def _policy_refused(run: RunInfo) -> str | None:
    """The policy's refusal of a promotion run waiting at its gate (its summary), else None."""
    report = run.outputs.get("report") or {}
    return report.get("summary") or "the policy refused" if report.get("worse") == "true" else None


@router.post("/{run_id}/approve", summary="Approve a run's waiting gate")
def approve_run(
    run_id: str, body: DecisionRequest, request: Request, parts: Parts, caller: Approver
) -> RunInfo:
    """Pass the gate as the authenticated caller, with a reason; where the promotion policy
    refused the candidate, only with ``override: true`` (else 409)."""
    who = _approver(caller)
    refusal = _policy_refused(parts.backend.get(run_id))
    if refusal is not None and not body.override:
        raise RunStateError(
            f"override: the promotion policy refused the candidate ({refusal}); "
            "approve with override: true to promote it anyway"
        )
    run = parts.backend.approve(
        run_id, approver=who, reason=body.reason, override=body.override, outputs=body.outputs
    )
    request.state.audit_detail = (
        f"approved run {run_id} (override {str(body.override).lower()}): {body.reason}"
    )
    return run


@router.post("/{run_id}/refuse", summary="Refuse a run's waiting gate")
def refuse_run(
    run_id: str, body: RefusalRequest, request: Request, parts: Parts, caller: Approver
) -> RunInfo:
    """Refuse the gate as the authenticated caller: the run ends without going on."""
    run = parts.backend.refuse(run_id, approver=_approver(caller), reason=body.reason)
    request.state.audit_detail = f"refused run {run_id}: {body.reason}"
    return run


#: media type of each downloadable prediction format
_FORMATS = {"geoparquet": "application/vnd.apache.parquet", "geojson": "application/geo+json"}


@router.get(
    "/{run_id}/predictions",
    summary="The outputs of a batch inference run, or one of its files",
    responses={
        200: {
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Predictions"}},
                **{kind: {} for kind in _FORMATS.values()},
            }
        }
    },
)
def predictions(
    run_id: str,
    parts: Parts,
    caller: Reader,
    format: Annotated[
        Literal["geoparquet", "geojson"] | None,
        Query(description="Download the predictions in this format; absent: links to every output."),
    ] = None,
) -> Any:
    """Links to the GeoParquet, GeoJSON, PMTiles and quicklook, and the run's STAC item; with
    ``format``, the GeoParquet or GeoJSON file itself."""
    run = parts.backend.get(run_id)
    outputs = prediction_outputs(run)
    href = outputs["item"]
    item = read_item(href)
    if format is not None:
        path = local_asset(item, format, run_id)
        suffix = "parquet" if format == "geoparquet" else "geojson"
        return FileResponse(path, media_type=_FORMATS[format], filename=f"{run_id}-predictions.{suffix}")
    assets = {name: str(a.get("href", "")) for name, a in (item.get("assets") or {}).items()}
    tiles = _pmtiles(run_id, item)
    if tiles is not None:
        assets.setdefault("pmtiles", str(tiles))
    features = int(outputs["features"]) if outputs["features"].isdigit() else None
    route = f"/api/v1/runs/{run_id}"
    links = {kind: f"{route}/predictions?format={kind}" for kind in _FORMATS if kind in assets}
    if tiles is not None:
        links["pmtiles"] = f"{route}/predictions.pmtiles"
    links["lineage"] = f"{route}/lineage"
    return Predictions(
        run_id=run_id, item_href=href, item=item, assets=assets, features=features, links=links
    )


def _pmtiles(run_id: str, item: dict[str, Any]) -> Path | None:
    from postprocessing.tiles import PMTILES_FILE

    try:
        parquet = local_asset(item, "geoparquet", run_id)
    except RunNotFoundError:
        return None
    tiles = parquet.parent / PMTILES_FILE
    return tiles if tiles.is_file() else None


@router.get(
    "/{run_id}/predictions.pmtiles",
    summary="The predictions as a PMTiles vector tile archive",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/vnd.pmtiles": {}}, "description": "The whole archive."},
        206: {
            "content": {"application/vnd.pmtiles": {}},
            "description": "The bytes a Range header asks for.",
        },
    },
)
def predictions_pmtiles(run_id: str, parts: Parts, caller: Reader) -> FileResponse:
    """The predicted polygons as vector tiles (layer ``predictions``; properties class, class_name,
    area, block_id, feature_id), read by ranges (``Range: bytes=…`` answers 206)."""
    run = parts.backend.get(run_id)
    item = read_item(prediction_outputs(run)["item"])
    tiles = _pmtiles(run_id, item)
    if tiles is None:
        raise RunNotFoundError(
            f"run {run_id}: its predictions have no PMTiles archive on the gateway's machine"
        )
    return FileResponse(
        tiles, media_type="application/vnd.pmtiles", headers={"Cache-Control": "private, max-age=60"}
    )


@router.get("/{run_id}/lineage", summary="Where a batch inference run's predictions come from")
def lineage(run_id: str, parts: Parts, caller: Reader) -> RunLineage:
    """Model, version, MLflow run (id and link), dataset hash, code commit and the STAC items of
    the model version and of the predictions. A feature's block id is in its own properties."""
    from catalog_sync.collections import PREDICTIONS, VERSIONS, version_item_id
    from steps.predictions import Lineage

    run = parts.backend.get(run_id)
    text = (run.outputs.get(PLAN_TASK) or {}).get("lineage")
    if run.pipeline != "batch-inference" or not text:
        raise RunNotFoundError(
            f"run {run_id}: no lineage (phase {run.phase.value}); a batch inference run has it once planned"
        )
    found = Lineage.model_validate_json(text)
    store = parts.catalogue.store()
    item_id = version_item_id(found.model, found.model_version)
    trace = version_trace(store, parts.settings, found.model, found.model_version, found.run_id)
    try:  # where a browser reads it (the run's output is a path on the machine that published it)
        published = read_item(prediction_outputs(run)["item"])
        predictions_item: str | None = stac_item_url(parts.settings, PREDICTIONS, str(published["id"]))
    except RunNotFoundError:
        predictions_item = None
    return RunLineage(
        run_id=run_id,
        model=found.model,
        model_version=found.model_version,
        mlflow_run_id=found.run_id,
        mlflow_run_url=mlflow_run_url(parts.settings.tracking_uri, parts.config.mlflow_ui_url, found.run_id),
        dataset_hash=trace["dataset_hash"],
        code_commit=trace["code_commit"],
        code_sha256=trace["code_sha256"],
        model_item_url=stac_item_url(parts.settings, VERSIONS, item_id),
        predictions_item_url=predictions_item,
    )


def _report(parts: Gateway, run_id: str) -> tuple[RunInfo, Any]:
    from steps.promotion_report import load_report

    run = parts.backend.get(run_id)
    uri = (run.outputs.get("report") or {}).get("report")
    if run.pipeline != "promotion" or not uri:
        raise RunNotFoundError(
            f"run {run_id}: no promotion report (phase {run.phase.value}); a promotion run has one "
            "once it compared the versions"
        )
    use_tracking(parts.settings)
    return run, load_report(uri)


@router.get("/{run_id}/report", summary="A promotion run's comparison report and the policy's verdict")
def promotion_report(run_id: str, parts: Parts, caller: Reader) -> PromotionReport:
    """Each metric of the candidate and of production side by side, and per class, the primary
    metric, tolerance and difference, and the policy's verdict."""
    run, report = _report(parts, run_id)
    ev = report.evaluation
    production = ev.production.metrics if ev.production else {}
    rows = [
        MetricRow(name=name, candidate=_finite(value), production=_finite(production.get(name)))
        for name, value in sorted(ev.candidate.metrics.items())
    ]
    from steps._metrics import metric_suffix

    per_class = []
    for name in ev.class_names:
        ending = f"_{metric_suffix(name)}"
        per_class.append(
            ClassMetrics(
                name=name,
                metrics=[
                    r.model_copy(update={"name": r.name[: -len(ending)]})
                    for r in rows
                    if r.name.endswith(ending)
                ],
            )
        )
    return PromotionReport(
        run_id=run_id,
        per_class=per_class,
        model=ev.model,
        candidate=ev.candidate.version,
        production=ev.production.version if ev.production else None,
        class_names=list(ev.class_names),
        primary_metric=report.primary_metric,
        tolerance=report.tolerance,
        delta=_finite(report.delta),
        verdict="refused" if report.worse else "passed",
        summary=report.summary,
        policy_source=report.policy_source,
        created=report.created,
        metrics=rows,
        waiting_gate=run.waiting_gate,
        picture=f"/api/v1/runs/{run_id}/report.png",
    )


def _finite(value: float | None) -> float | None:
    import math

    return value if value is not None and math.isfinite(value) else None


@router.get(
    "/{run_id}/report.png",
    summary="A promotion run's comparison picture",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "Both versions' predictions side by side."}
    },
)
def promotion_picture(run_id: str, parts: Parts, caller: Reader) -> Response:
    """Both versions' predictions over the same area, as the report shows them."""
    import mlflow.artifacts

    _run, report = _report(parts, run_id)
    uri = report.files.get("comparison.png")
    try:
        with tempfile.TemporaryDirectory(prefix="geomlops-report-") as tmp:
            data = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)).read_bytes()
    except Exception as err:  # missing artifact, unreachable store
        raise RunNotFoundError(f"run {run_id}: its comparison picture cannot be read ({err})") from err
    return Response(data, media_type="image/png")
