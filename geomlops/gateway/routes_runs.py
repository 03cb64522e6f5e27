"""``/api/v1/runs``: start training, batch inference and promotion; follow, stop and decide runs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import PlainTextResponse

from geomlops.errors import AoiError, ParameterError, PromotionError
from geomlops.gateway.auth import Permission, Principal
from geomlops.gateway.backends.base import RunInfo, RunNotFoundError
from geomlops.gateway.context import Gateway, gateway, require
from geomlops.gateway.db import RunRecord
from geomlops.gateway.inference import check_imagery_location
from geomlops.gateway.schemas import (
    BatchInferenceRequest,
    DecisionRequest,
    Predictions,
    PromotionRequest,
    RefusalRequest,
    TrainingRequest,
)

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
    path = (
        parts.settings.home_dir / "gateway" / "aoi" / f"{hashlib.sha256(text.encode()).hexdigest()}.geojson"
    )
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    return str(path)


@router.post("/batch-inference", status_code=status.HTTP_202_ACCEPTED, summary="Start a batch inference run")
def start_batch_inference(
    body: BatchInferenceRequest, request: Request, parts: Parts, caller: Operator
) -> RunInfo:
    """Predict a model version (a number or an alias) over imagery within an AOI."""
    parts.catalogue.base_item(body.model)
    version = parts.catalogue.resolve(body.model, body.version, body.alias)
    check_imagery_location(body.imagery)
    fixed = {"model": body.model, "model_version": body.alias or version, "imagery": body.imagery}
    values = check_parameters("batch-inference", body.parameters, {**fixed, "aoi": ""})
    if body.aoi is not None:
        values["aoi"] = _aoi_file(parts, body.aoi)
    return _start(parts, request, caller, "batch-inference", values)


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
    """A run's phase, each task with its progress, and the outputs so far."""
    return parts.backend.get(run_id)


@router.get("/{run_id}/logs", response_class=PlainTextResponse, summary="A run's or a task's logs")
def run_logs(
    run_id: str,
    parts: Parts,
    caller: Reader,
    task: Annotated[str | None, Query(max_length=500, description="A task name; absent: the run's.")] = None,
) -> str:
    """The runner's log of a run, or every attempt's log of one task."""
    return parts.backend.logs(run_id, task)


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


@router.post("/{run_id}/approve", summary="Approve a run's waiting gate")
def approve_run(
    run_id: str, body: DecisionRequest, request: Request, parts: Parts, caller: Approver
) -> RunInfo:
    """Pass the gate as the authenticated caller, with a reason (and an explicit override)."""
    who = _approver(caller)
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


@router.get("/{run_id}/predictions", summary="The outputs of a batch inference run")
def predictions(run_id: str, parts: Parts, caller: Reader) -> Predictions:
    """Links to the GeoParquet, GeoJSON and quicklook, and the run's STAC item."""
    run = parts.backend.get(run_id)
    for outputs in run.outputs.values():
        href = outputs.get("item")
        if href and "features" in outputs:
            item = _read_item(href)
            assets = {name: str(a.get("href", "")) for name, a in (item.get("assets") or {}).items()}
            features = int(outputs["features"]) if outputs["features"].isdigit() else None
            return Predictions(run_id=run_id, item_href=href, item=item, assets=assets, features=features)
    raise RunNotFoundError(
        f"run {run_id}: no predictions (phase {run.phase.value}); a succeeded batch inference run has them"
    )


def _read_item(href: str) -> dict[str, Any]:
    if href.startswith(("http://", "https://")):
        import requests

        answer = requests.get(href, timeout=30)
        answer.raise_for_status()
        data: dict[str, Any] = answer.json()
        return data
    found: dict[str, Any] = json.loads(Path(href.removeprefix("file://")).read_text(encoding="utf-8"))
    return found
