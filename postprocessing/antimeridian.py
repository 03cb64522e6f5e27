"""Polygons cut at the antimeridian once they are in longitude/latitude or web mercator.

Imagery of Fiji, Tonga, Samoa or Chukotka in its own projected CRS (UTM 60 or 1) holds
polygons that straddle 180°. Reprojected vertex by vertex, their longitudes jump from 179.9 to
-179.9, and the polygon becomes a band around the world: a GeoJSON reader draws it across every
longitude, and its vector tiles cover every tile of a row. RFC 7946 (section 3.1.9) asks for such
geometries to be cut at the antimeridian into a MultiPolygon, as GDAL does when it writes
GeoJSON (``WRAPDATELINE``), and the area-of-interest check (``steps.aoi``) asks the same of
input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray

#: longitude's period, in degrees
DEGREES = 360.0


def cut_at_antimeridian(geoms: NDArray[np.object_], period: float = DEGREES) -> NDArray[np.object_]:
    """``geoms`` (polygons in a CRS whose x wraps with ``period``: degrees of longitude, or web
    mercator metres) with each polygon that crosses the antimeridian cut there.

    A polygon crosses when one of its edges jumps from within ``period``/36 (10°, GDAL's
    ``DATELINEOFFSET``) of one side of the antimeridian to within as much of the other (it was
    wrapped by the reprojection), or when it reaches beyond ±``period``/2 (longitudes past 180°,
    as some geographic imagery has). A polygon merely wide (a whole-world box, a ring round a
    pole) does not cross. A crossing polygon's vertices are first made continuous (``period``
    added where x is negative), then it is cut at the antimeridian (made valid first if it is
    not) and the part beyond is brought back by one period: a MultiPolygon whose parts lie each
    on one side, meeting at ±180°. Other polygons come back as they were (the same objects).
    """
    geoms = np.asarray(geoms, dtype=object)
    if len(geoms) == 0:
        return geoms
    half = period / 2
    bounds = shapely.bounds(geoms)
    slack = period * 1e-9  # a vertex at 180° computed a few ulps past it is at 180°
    beyond = (bounds[:, 0] < -half - slack) | (bounds[:, 2] > half + slack)
    wide = np.flatnonzero((bounds[:, 2] - bounds[:, 0]) > half)  # the only ones that may be wrapped
    wrapped = np.zeros(len(geoms), np.bool_)
    if len(wide):
        wrapped[wide[_jumps(geoms[wide], period)]] = True
    which = np.flatnonzero(wrapped | beyond)
    if len(which) == 0:
        return geoms
    out = geoms.copy()
    for i in which.tolist():
        out[i] = _cut(geoms[i], period, bool(wrapped[i]))
    return out


def _jumps(geoms: NDArray[np.object_], period: float) -> NDArray[np.bool_]:
    """Which of ``geoms`` have an edge from near one side of the antimeridian to near the other."""
    half, near = period / 2, period / 36
    rings, owner = shapely.get_rings(geoms, return_index=True)
    xy, ring = shapely.get_coordinates(rings, return_index=True)
    x = xy[:, 0]
    same = ring[1:] == ring[:-1]
    a, b = x[:-1], x[1:]
    step = np.abs(b - a)
    jump = same & (step > half) & (step < period) & (np.abs(a) > half - near) & (np.abs(b) > half - near)
    found = np.zeros(len(geoms), np.bool_)
    found[owner[ring[:-1][jump]]] = True
    return found


def _cut(geom: Any, period: float, wrapped: bool) -> Any:
    half = period / 2
    if wrapped:  # continuous again: the negative side moved one period east
        geom = shapely.transform(
            geom, lambda xy: np.column_stack([np.where(xy[:, 0] < 0, xy[:, 0] + period, xy[:, 0]), xy[:, 1]])
        )
    if not geom.is_valid:  # a shape reprojection folded: GEOS cuts only valid ones
        geom = shapely.make_valid(geom)
    _, south, _, north = shapely.bounds(geom)
    parts: list[Any] = []
    for shift in (-1, 0, 1):  # the world one period west, the world, one period east
        window = shapely.box(half * (2 * shift - 1), south - 1, half * (2 * shift + 1), north + 1)
        piece = shapely.intersection(geom, window)
        if shift:
            piece = shapely.transform(piece, lambda xy, s=shift: xy - np.array([s * period, 0.0]))
        parts.extend(p for p in shapely.get_parts(piece) if isinstance(p, shapely.Polygon) and not p.is_empty)
    if len(parts) == 1:
        return parts[0]
    return shapely.MultiPolygon(parts)


def bbox_across(geometry: Any) -> list[float]:
    """The bounding box of ``geometry`` (longitude/latitude) as RFC 7946 (section 5.2) and STAC
    write it: for one cut at the antimeridian (parts touching 180° and parts touching -180°,
    none on both sides of the prime meridian), west is the western edge of the eastern parts,
    more than east, the eastern edge of the western ones."""
    west, south, east, north = (float(v) for v in shapely.bounds(geometry))
    b = shapely.bounds(shapely.get_parts(geometry))
    eastern, western = b[:, 0] >= 0, b[:, 2] <= 0
    crosses = (b[:, 2] >= 180.0).any() and (b[:, 0] <= -180.0).any()
    if not crosses or not (eastern | western).all():
        return [west, south, east, north]
    return [float(b[eastern, 0].min()), south, float(b[western, 2].max()), north]
