"""Areas of interest: read a GeoJSON boundary, check it, and put it on the imagery's grid."""

from __future__ import annotations

import itertools
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


#: the most bytes of GeoJSON an ``aoi`` parameter may hold inline (a larger area: a file)
INLINE_AOI_LIMIT = 256 * 1024


def read_aoi(uri: str) -> dict[str, Any]:
    """Read an area of interest: a GeoJSON file (path or ``file://``), an object of the S3
    store (``s3://bucket/key``, at the configured endpoint) or a web address (``https://``),
    or GeoJSON text itself (a value starting with ``{``, as a cluster's run gets it: no file of
    the caller's machine is readable there). A geometry, Feature or FeatureCollection.

    Raises:
        AoiError: the file or object is absent, or the text is not GeoJSON.
        GeomlopsError: the S3 store or the web server cannot be reached (retried by the step).
    """
    if uri.lstrip().startswith("{"):
        if len(uri.encode()) > INLINE_AOI_LIMIT:
            raise AoiError(f"area of interest: inline GeoJSON over {INLINE_AOI_LIMIT} bytes; pass a file")
        try:
            inline = json.loads(uri)
        except json.JSONDecodeError as err:
            raise AoiError(f"area of interest (inline GeoJSON): not valid JSON ({err})") from err
        if not isinstance(inline, dict) or "type" not in inline:
            raise AoiError("area of interest (inline GeoJSON): expected a GeoJSON object with a 'type'")
        return inline
    try:
        data = json.loads(_read_text(uri))
    except json.JSONDecodeError as err:
        raise AoiError(f"area of interest {uri}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or "type" not in data:
        raise AoiError(f"area of interest {uri}: expected a GeoJSON object with a 'type'")
    return data


def _read_text(uri: str) -> str:
    """The text at ``uri``: a local file, an S3 object or a web address."""
    scheme, found, rest = uri.partition("://")
    if not found or scheme == "file":
        path = Path(rest if found else uri)
        if not path.is_file():
            raise AoiError(f"area of interest {uri}: file not found")
        return path.read_text()
    if scheme == "s3":
        return _read_s3(uri, rest)
    if scheme in ("http", "https"):
        return _read_web(uri)
    raise AoiError(f"area of interest {uri}: expected a file, an s3:// object or an http(s):// address")


def _read_s3(uri: str, rest: str) -> str:
    import boto3  # type: ignore[import-untyped, unused-ignore]
    from botocore.exceptions import ClientError  # type: ignore[import-untyped, unused-ignore]

    from geomlops.objectstore import object_store_errors
    from geomlops.settings import get_settings

    bucket, _, key = rest.partition("/")
    with object_store_errors(f"read the area of interest {uri}"):
        try:
            s3 = boto3.client("s3", endpoint_url=get_settings().s3_endpoint)
            body = s3.get_object(Bucket=bucket, Key=key)
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "NoSuchBucket", "404", "InvalidBucketName"):
                raise AoiError(f"area of interest {uri}: no such object ({code})") from None
            raise
        return bytes(body["Body"].read()).decode("utf-8")


def _read_web(uri: str) -> str:
    import urllib.error
    import urllib.request

    from geomlops.errors import GeomlopsError

    try:
        with urllib.request.urlopen(uri, timeout=60) as answer:
            return bytes(answer.read()).decode("utf-8")
    except urllib.error.HTTPError as err:
        if err.code in (404, 410):
            raise AoiError(f"area of interest {uri}: not found (HTTP {err.code})") from None
        raise GeomlopsError(f"area of interest {uri}: HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise GeomlopsError(f"area of interest {uri}: cannot be reached ({err.reason})") from err


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


def _rings(geometry: dict[str, Any]) -> list[list[Any]]:
    coordinates = geometry.get("coordinates")
    if not isinstance(coordinates, list):
        return []
    polygons = coordinates if geometry.get("type") == "MultiPolygon" else [coordinates]
    return [
        ring
        for polygon in polygons
        if isinstance(polygon, list)
        for ring in polygon
        if isinstance(ring, list)
    ]


def _check_positions(geometry: dict[str, Any], where: str) -> None:
    """RFC 7946's rules that shapely does not check: closed rings, lon/lat ranges, ±180° jumps."""
    for ring in _rings(geometry):
        points = [p for p in ring if isinstance(p, list | tuple) and len(p) >= 2]
        if len(points) != len(ring):
            continue  # not positions: shapely's parse names the problem
        if len(points) >= 2 and list(points[0][:2]) != list(points[-1][:2]):
            raise AoiError(
                f"{where}: ring not closed: it starts at {list(points[0][:2])} and ends at "
                f"{list(points[-1][:2])} (RFC 7946: the last position repeats the first)"
            )
        for lon, lat, *_ in points:
            if not -90 <= lat <= 90:
                raise AoiError(
                    f"{where}: latitude {lat} outside [-90, 90] at position {[lon, lat]}; GeoJSON "
                    "positions are [longitude, latitude] (RFC 7946): are they swapped?"
                )
            if not -180 <= lon <= 180:
                raise AoiError(f"{where}: longitude {lon} outside [-180, 180] at position {[lon, lat]}")
        for (lon0, *_), (lon1, *_) in itertools.pairwise(points):
            step = abs(lon1 - lon0)
            if 180 < step < 360:  # 360: an edge along a parallel from -180 to 180 (a world box)
                raise AoiError(
                    f"{where}: crosses the antimeridian (an edge from longitude {lon0} to {lon1}); "
                    "cut it at ±180° into a MultiPolygon, as RFC 7946 asks"
                )


def aoi_geometry(data: dict[str, Any], where: str = "area of interest") -> Any:
    """The union of an AOI's polygons as one shapely geometry (WGS84, as RFC 7946 says).

    Raises:
        AoiError: no polygon, an invalid polygon (the reason and place named), a ring that is not
            closed, a position outside longitude/latitude ranges (swapped coordinates), or a
            polygon that crosses the antimeridian instead of being cut at it.
    """
    import shapely
    from shapely.geometry import shape
    from shapely.validation import explain_validity

    shapes = []
    for geometry in _geometries(data, where):
        _check_positions(geometry, where)
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
    from rasterio.warp import transform_bounds, transform_geom
    from shapely.geometry import mapping, shape

    geom = given = aoi_geometry(data)
    notes = []
    height, width = raster_shape
    footprint = None  # the imagery's bounds in the AOI's CRS, where the two differ
    if CRS.from_user_input(aoi_crs) != CRS.from_user_input(raster_crs):
        # clip to the imagery's footprint first: a continent-sized AOI need not be valid in the
        # imagery's projection (UTM has no meaning far from its zone)
        corners = [raster_transform @ (0, 0), raster_transform @ (width, height)]
        footprint = transform_bounds(
            raster_crs,
            aoi_crs,
            min(c[0] for c in corners),
            min(c[1] for c in corners),
            max(c[0] for c in corners),
            max(c[1] for c in corners),
            densify_pts=21,
        )
        clipped = geom.intersection(shapely.box(*footprint))
        if not clipped.is_empty:
            geom = clipped
        try:
            geom = shape(transform_geom(aoi_crs, raster_crs, mapping(geom)))
        except Exception as err:  # rasterio's CPLE errors are not RasterioError subclasses
            raise AoiError(f"area of interest cannot be reprojected to {raster_crs}: {err}") from err
        notes.append(f"area of interest reprojected from {aoi_crs} to {raster_crs}")
    inverse = ~raster_transform
    pixel = shapely.transform(geom, lambda xy: _apply(inverse, xy))
    frame = shapely.box(0, 0, width, height)
    inside = pixel.intersection(frame)
    if inside.is_empty or inside.area == 0:
        corners = [raster_transform @ (0, 0), raster_transform @ (width, height)]
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        imagery = (min(xs), min(ys), max(xs), max(ys))
        hint = ""
        if _swapped_would_overlap(data, aoi_crs, raster_crs, inverse, frame):
            hint = (
                "; with longitude and latitude swapped it would: GeoJSON positions are "
                "[longitude, latitude] (RFC 7946)"
            )
        if footprint is None:
            where = (
                f"{_rounded(geom.bounds)} does not overlap the imagery {_rounded(imagery)} in {raster_crs}"
            )
        else:  # the bounds as the user gave them (degrees, for GeoJSON), then the imagery's own
            where = (
                f"{_rounded(given.bounds, 5)} does not overlap the imagery {_rounded(footprint, 5)} in "
                f"{aoi_crs} ({_rounded(imagery)} in {raster_crs})"
            )
        raise AoiError(f"area of interest {where}{hint}")
    c0, r0, c1, r1 = inside.bounds
    bounds = (int(c0), int(r0), min(width, int(-(-c1 // 1))), min(height, int(-(-r1 // 1))))
    return GriddedAoi(geometry=mapping(geom), crs=str(raster_crs), pixel_bounds=bounds, notes=tuple(notes))


def _rounded(bounds: Any, digits: int = 3) -> tuple[float, ...]:
    """Bounds rounded for a message (minx, miny, maxx, maxy)."""
    return tuple(round(float(v), digits) for v in bounds)


def _swapped_would_overlap(
    data: dict[str, Any], aoi_crs: str, raster_crs: str, inverse: Any, frame: Any
) -> bool:
    import shapely
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping

    try:
        swapped = shapely.transform(aoi_geometry(data), lambda xy: xy[:, ::-1])
        moved = shapely.geometry.shape(transform_geom(aoi_crs, raster_crs, mapping(swapped)))
        return bool(shapely.transform(moved, lambda xy: _apply(inverse, xy)).intersects(frame))
    except Exception:  # noqa: BLE001 - any failure means "no": this only chooses a hint
        return False


def _apply(affine: Any, xy: Any) -> Any:
    import numpy as np

    cols, rows = affine @ (xy[:, 0], xy[:, 1])
    return np.column_stack([cols, rows])
