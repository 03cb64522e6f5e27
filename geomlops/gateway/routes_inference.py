"""``/api/v1/inference``: predict a model version now, over a small area of imagery or an uploaded chip.

Both routes answer a GeoJSON FeatureCollection, through the model's serving endpoint when one
serves the version, else in-process with the model's own environment (see
:mod:`geomlops.gateway.inference`). They need the operator role: a viewer reads what exists,
while a prediction costs compute and reads imagery on the gateway's machine. For the same
reasons each call is audited like a write (who, which model and version, which imagery, how
many pixels, which way), although nothing is written.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from geomlops.gateway.auth import Permission, Principal
from geomlops.gateway.context import Gateway, gateway, require
from geomlops.gateway.inference import (
    Prediction,
    UnsupportedMediaTypeError,
    check_chip,
    check_imagery_location,
    cut_chip,
    predict,
)
from geomlops.gateway.routes_imagery import readable_roots
from geomlops.gateway.schemas import InferenceRequest, OnDemandPrediction
from geomlops.serving.manifests import ServedModel

router = APIRouter(prefix="/api/v1/inference", tags=["inference"])
Parts = Annotated[Gateway, Depends(gateway)]
Operator = Annotated[Principal, require(Permission.RUN)]
NamePattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
#: the route taking a chip's bytes as its body (the body limit there is the chip's)
CHIP_PATH = "/api/v1/inference/chip"
#: media types a chip may be sent as
CHIP_TYPES = ("image/tiff", "image/geotiff", "application/octet-stream")


def _served(parts: Gateway, model: str, version: str | None, alias: str | None) -> ServedModel:
    from geomlops.serving.deploy import resolve_served_model

    parts.catalogue.base_item(model)
    number = parts.catalogue.resolve(model, version, alias)
    return resolve_served_model(model, number, parts.settings)


def _answer(request: Request, served: ServedModel, found: Prediction, what: str) -> OnDemandPrediction:
    collection = found.collection
    request.state.audit_detail = (
        f"predicted {served.name} v{served.version} on {what} ({found.pixels} pixels, {found.via}): "
        f"{len(collection.get('features') or [])} features"
    )
    return OnDemandPrediction(
        features=collection.get("features") or [],
        bbox=collection.get("bbox"),
        model=served.name,
        version=served.version,
        run_id=served.run_id,
        via=found.via,
        pixels=found.pixels,
    )


@router.post("", summary="Predict a small area of imagery now", response_model_exclude_none=True)
def predict_area(
    body: InferenceRequest, request: Request, parts: Parts, caller: Operator
) -> OnDemandPrediction:
    """Cut the AOI's window from the imagery and answer the model's polygons there (pixels outside
    the AOI are no data). Larger areas: start a batch inference run."""
    from catalog_sync.mlm import ModelInput

    served = _served(parts, body.model, body.version, body.alias)
    check_imagery_location(body.imagery, readable_roots(parts))
    model_input = ModelInput.model_validate(served.model_input)
    chip, pixels = cut_chip(body.imagery, body.aoi, model_input, parts.config.predictions_max_pixels)
    found = predict(parts.settings, parts.config.serving_url, served, chip, pixels)
    return _answer(request, served, found, body.imagery)


def _predict_chip(
    parts: Gateway, request: Request, data: bytes, model: str, version: str | None, alias: str | None
) -> OnDemandPrediction:
    pixels = check_chip(data, parts.settings.serving_max_image_bytes, parts.config.predictions_max_pixels)
    served = _served(parts, model, version, alias)
    found = predict(parts.settings, parts.config.serving_url, served, data, pixels)
    return _answer(request, served, found, f"an uploaded chip of {len(data)} bytes")


@router.post(
    "/chip",
    summary="Predict an uploaded GeoTIFF chip now",
    response_model_exclude_none=True,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The chip: a georeferenced GeoTIFF with the model's input bands.",
            "content": {"image/tiff": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def predict_uploaded_chip(
    request: Request,
    parts: Parts,
    caller: Operator,
    model: Annotated[
        str, Query(min_length=1, max_length=200, pattern=NamePattern, description="The model's id.")
    ],
    version: Annotated[
        str | None, Query(max_length=200, pattern=NamePattern, description="A version (or give alias).")
    ] = None,
    alias: Annotated[
        str | None, Query(max_length=200, pattern=NamePattern, description="An alias (or give version).")
    ] = None,
) -> OnDemandPrediction:
    """Answer the model's polygons over the chip sent as the body (``Content-Type: image/tiff``),
    at most ``GEOMLOPS_SERVING_MAX_IMAGE_BYTES`` bytes and ``GEOMLOPS_GATEWAY_PREDICTIONS_MAX_PIXELS``
    pixels."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in CHIP_TYPES:
        raise UnsupportedMediaTypeError(
            f"Content-Type {kind or 'none'!r}: expected image/tiff (the chip's GeoTIFF bytes as the body)"
        )
    data = await request.body()
    return await run_in_threadpool(_predict_chip, parts, request, data, model, version, alias)
