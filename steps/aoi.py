"""Areas of interest: read a GeoJSON boundary, check it, and put it on the imagery's grid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from geomlops.errors import AoiError


class GriddedAoi(BaseModel):
    """An area of interest in the imagery's CRS and pixel grid."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    geometry: dict[str, Any]
    crs: str
    pixel_bounds: tuple[int, int, int, int]  # col_min, row_min, col_max, row_max (exclusive)
    notes: tuple[str, ...] = ()


def read_aoi(uri: str) -> dict[str, Any]:
    """Read a GeoJSON file (path or ``file://``): a geometry, Feature or FeatureCollection.

    Raises:
        AoiError: the file is absent or not GeoJSON.
    """
    path = Path(uri.removeprefix("file://"))
    if not path.is_file():
        raise AoiError(f"area of interest {uri}: file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AoiError(f"area of interest {uri}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or "type" not in data:
        raise AoiError(f"area of interest {uri}: expected a GeoJSON object with a 'type'")
    return data


def _geometries(data: dict[str, Any], where: str) -> list[dict[str, Any]]:
    kind = data.get("type")
    if kind == "FeatureCollection":
        return [g for f in data.get("features") or [] for g in _geometries(f, where)]
    if kind == "Feature":
        geometry = data.get("geometry")
        return [geometry] if geometry else []
    if kind in ("Polygon", "MultiPolygon"):
        return [data]
    raise AoiError(f"{where}: expected Polygon or MultiPolygon geometries, got {kind!r}")


def aoi_geometry(data: dict[str, Any], where: str = "area of interest") -> Any:
    """The union of an AOI's polygons as one shapely geometry (WGS84, as RFC 7946 says).

    Raises:
        AoiError: no polygon, an invalid polygon (the reason and place named), or a polygon that
            crosses the antimeridian instead of being cut at it.
    """
    import shapely
    from shapely.geometry import shape
    from shapely.validation import explain_validity

    shapes = []
    for geometry in _geometries(data, where):
        try:
            geom = shape(geometry)
        except (KeyError, ValueError, TypeError, AttributeError, shapely.errors.GEOSException) as err:
            raise AoiError(f"{where}: not a valid GeoJSON geometry ({err})") from err
        if not geom.is_valid:
            raise AoiError(f"{where}: invalid polygon: {explain_validity(geom)}")
        shapes.append(geom)
    union = shapely.union_all(shapes) if shapes else None
    if union is None or union.is_empty:
        raise AoiError(f"{where}: empty (no polygon with an area)")
    min_x, _, max_x, _ = union.bounds
    if min_x < -180 or max_x > 180 or (max_x - min_x) > 180:
        raise AoiError(
            f"{where}: crosses the antimeridian (longitudes {min_x:.3f} to {max_x:.3f}); "
            "cut it at ±180° into a MultiPolygon, as RFC 7946 asks"
        )
    return union


def grid_aoi(
    data: dict[str, Any],
    *,
    raster_crs: str,
    raster_transform: Any,
    raster_shape: tuple[int, int],
    aoi_crs: str = "EPSG:4326",
) -> GriddedAoi:
    """Put an AOI on the imagery's grid: reprojected to its CRS and clipped to its pixel extent.

    Raises:
        AoiError: the AOI is invalid (see :func:`aoi_geometry`) or does not overlap the imagery.
    """
    import shapely
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape

    geom = aoi_geometry(data)
    notes = []
    if CRS.from_user_input(aoi_crs) != CRS.from_user_input(raster_crs):
        geom = shape(transform_geom(aoi_crs, raster_crs, mapping(geom)))
        notes.append(f"area of interest reprojected from {aoi_crs} to {raster_crs}")
    height, width = raster_shape
    inverse = ~raster_transform
    pixel = shapely.transform(geom, lambda xy: _apply(inverse, xy))
    frame = shapely.box(0, 0, width, height)
    inside = pixel.intersection(frame)
    if inside.is_empty or inside.area == 0:
        corners = [raster_transform @ (0, 0), raster_transform @ (width, height)]
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        imagery = (min(xs), min(ys), max(xs), max(ys))
        raise AoiError(
            f"area of interest {tuple(round(v, 3) for v in geom.bounds)} does not overlap the imagery "
            f"{tuple(round(v, 3) for v in imagery)} in {raster_crs}"
        )
    c0, r0, c1, r1 = inside.bounds
    bounds = (int(c0), int(r0), min(width, int(-(-c1 // 1))), min(height, int(-(-r1 // 1))))
    return GriddedAoi(geometry=mapping(geom), crs=str(raster_crs), pixel_bounds=bounds, notes=tuple(notes))


def _apply(affine: Any, xy: Any) -> Any:
    import numpy as np

    cols, rows = affine @ (xy[:, 0], xy[:, 1])
    return np.column_stack([cols, rows])
