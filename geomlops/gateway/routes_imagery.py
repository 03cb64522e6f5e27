"""``/api/v1/imagery``: the registered imagery, and XYZ map tiles rendered from imagery.

A viewer may read them: tiles show what the gateway was given to predict on. By path, only a
GeoTIFF under the gateway's readable roots (``GEOMLOPS_GATEWAY_IMAGERY_ROOTS``, default the
work folder) is rendered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi import Path as PathParam

from catalog_sync.collections import DATASETS, MODELS
from geomlops.gateway import imagery
from geomlops.gateway.auth import Permission, Principal
from geomlops.gateway.context import Gateway, gateway, require
from geomlops.gateway.schemas import ImageryInfo

router = APIRouter(prefix="/api/v1/imagery", tags=["imagery"])
Parts = Annotated[Gateway, Depends(gateway)]
Reader = Annotated[Principal, require(Permission.READ)]
Zoom = Annotated[int, PathParam(ge=0, le=imagery.MAX_ZOOM, description="Zoom level.")]
Column = Annotated[int, PathParam(ge=0, description="Tile column (x).")]
Row = Annotated[int, PathParam(ge=0, description="Tile row (y).")]
ImageryId = Annotated[str, PathParam(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
_PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "A 256 x 256 PNG tile."}
}
#: tiles are cached by the browser for a while: the imagery under an id does not change
_CACHE = {"Cache-Control": "private, max-age=3600"}


def _common(parts: Gateway) -> dict[str, str]:
    return imagery.band_common_names(parts.catalogue.store().list_items(MODELS))


def _registered(parts: Gateway) -> list[imagery.Imagery]:
    store = parts.catalogue.store()
    return imagery.registered(Path(parts.settings.data_repo_url), store.list_items(DATASETS), _common(parts))


def readable_roots(parts: Gateway) -> list[Path]:
    """The folders whose rasters the gateway reads by path."""
    return imagery.readable_roots(
        parts.config.imagery_roots, parts.settings.home_dir, parts.settings.data_repo_url
    )


@router.get("", summary="Registered imagery")
def list_imagery(parts: Parts, caller: Reader) -> list[ImageryInfo]:
    """GeoTIFFs of the catalogue's datasets and of the data repository's dataset folders."""
    return [
        ImageryInfo(
            id=i.id, title=i.title, href=i.href, bbox=i.bbox, bands=i.bands, common_names=i.common_names
        )
        for i in _registered(parts)
    ]


@router.get(
    "/tiles/{z}/{x}/{y}.png",
    summary="A map tile of imagery given by path",
    responses=_PNG,
    response_class=Response,
)
def path_tile(
    z: Zoom,
    x: Column,
    y: Row,
    parts: Parts,
    caller: Reader,
    path: Annotated[
        str,
        Query(min_length=1, max_length=2000, description="Absolute path of a GeoTIFF under a readable root."),
    ],
) -> Response:
    """Tile z/x/y (web mercator) of the GeoTIFF at ``path`` (under GEOMLOPS_GATEWAY_IMAGERY_ROOTS)."""
    found = imagery.check_readable(path, readable_roots(parts))
    _bbox, _bands, names = imagery.describe(found, _common(parts))
    return Response(imagery.render_tile(found, names, z, x, y), media_type="image/png", headers=_CACHE)


@router.get(
    "/{imagery_id}/tiles/{z}/{x}/{y}.png",
    summary="A map tile of registered imagery",
    responses=_PNG,
    response_class=Response,
)
def imagery_tile(imagery_id: ImageryId, z: Zoom, x: Column, y: Row, parts: Parts, caller: Reader) -> Response:
    """Tile z/x/y (web mercator) of registered imagery: RGB when its bands say which are red,
    green and blue, else grey; transparent where there is no data."""
    found = imagery.find(_registered(parts), imagery_id)
    return Response(
        imagery.render_tile(found.href, found.common_names, z, x, y), media_type="image/png", headers=_CACHE
    )
