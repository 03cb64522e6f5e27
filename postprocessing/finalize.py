"""What happens to complete polygons: area filter, geotransform, simplification, stable order.

All of it runs after the merge, on whole polygons. The geotransform is applied once, here, to
integer pixel corners, so the same pixel corner always gets the same world coordinate whatever
block it was traced in.

Areas of features are in square metres, and :func:`area_method` says how they were measured:

- ``planar`` for a projected CRS: the pixel count times the pixel area, exact, converted from
  the CRS's unit (a US survey foot, say) to metres: the area on the map's plane;
- ``geodesic`` for a geographic CRS (longitude/latitude, as drone imagery from OpenAerialMap
  comes): the area on the CRS's ellipsoid. On a north-up grid every pixel is a quadrangle
  between two meridians and two parallels, so a polygon's area is the line integral, along its
  vertical edges, of the ellipsoid's area element (Gauss-Legendre quadrature, vectorized over
  every vertex, never the difference of two large numbers); a rotated grid is measured by
  :class:`pyproj.Geod` polygon by polygon. The two agree to better than a part in 10⁷ on
  pixel-sized polygons.

Without a CRS, :func:`polygon_areas` gives areas in the transform's units, squared.

Simplification preserves the coverage: neighbours keep one shared edge. GEOS's coverage
simplifier wants shared edges to carry the same vertices on both sides, so every vertex of the
set is first inserted into the edges of its neighbours that pass straight through it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import shapely
from affine import Affine
from numpy.typing import NDArray

from geomlops.errors import VectorizeError
from postprocessing import _rings
from postprocessing._rings import BoolArray, CoordArray, IntArray, Polygons

GeometryArray = NDArray[np.object_]


#: how feature areas were measured, the value of the ``area_method`` property
AreaMethod = Literal["geodesic", "planar"]
#: Gauss-Legendre nodes and weights on [0, 1] (exact for polynomials of degree 9)
_GL_NODES, _GL_WEIGHTS = (v / 2 for v in np.polynomial.legendre.leggauss(5))
_GL_NODES = _GL_NODES + 0.5


@dataclass(frozen=True)
class _AreaCRS:
    method: AreaMethod
    unit: float  # metres (planar) or radians (geodesic) per unit of the CRS's axes
    semi_major: float = 0.0
    flattening: float = 0.0


@functools.lru_cache(maxsize=64)
def _area_crs(crs: str) -> _AreaCRS:
    from pyproj import CRS

    parsed = CRS.from_user_input(crs)
    if parsed.is_compound:  # the horizontal part says how to measure
        parsed = parsed.sub_crs_list[0]
    unit = parsed.axis_info[0].unit_conversion_factor if parsed.axis_info else 1.0
    if parsed.is_geographic:
        ellipsoid = parsed.ellipsoid
        if ellipsoid is None:
            raise VectorizeError(
                f"crs {crs[:80]!r}: geographic, but without an ellipsoid to measure areas on"
            )
        inverse = ellipsoid.inverse_flattening
        flattening = 1.0 / inverse if inverse and math.isfinite(inverse) else 0.0
        return _AreaCRS("geodesic", unit, ellipsoid.semi_major_metre, flattening)
    return _AreaCRS("planar", unit)


def area_method(crs: str) -> AreaMethod:
    """How :func:`polygon_areas` and :func:`geometry_areas` measure in ``crs``: ``geodesic``
    for a geographic CRS, ``planar`` otherwise.

    Raises:
        pyproj.exceptions.CRSError: ``crs`` is not a coordinate reference system pyproj knows.
    """
    return _area_crs(crs).method


def polygon_areas(polys: Polygons, transform: Affine, crs: str | None = None) -> NDArray[np.float64]:
    """Area of each polygon: in square metres when ``crs`` is given (see :func:`area_method`),
    else in the transform's units, squared (exact up to one rounding).

    Args:
        polys: polygons in pixel-corner coordinates.
        transform: the raster's geotransform.
        crs: the raster's CRS (WKT or an authority code), or None.

    Returns:
        One area per polygon.

    Raises:
        pyproj.exceptions.CRSError: ``crs`` is not a coordinate reference system pyproj knows.
    """
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    if crs is None:
        return _rings.polygon_area2(polys).astype(np.float64) * (pixel_area / 2.0)
    measure = _area_crs(crs)
    if measure.method == "planar":
        return _rings.polygon_area2(polys).astype(np.float64) * (pixel_area * measure.unit**2 / 2.0)
    if transform.b == 0 and transform.d == 0:
        return _geodesic_north_up(polys, transform, measure)
    return geometry_areas(to_geometries(polys, transform), crs)


def geometry_areas(geoms: GeometryArray, crs: str) -> NDArray[np.float64]:
    """Area in square metres of each shapely polygon in ``crs`` (see :func:`area_method`).

    Raises:
        pyproj.exceptions.CRSError: ``crs`` is not a coordinate reference system pyproj knows.
    """
    measure = _area_crs(crs)
    if measure.method == "planar":
        return np.asarray(shapely.area(geoms), np.float64) * measure.unit**2
    from pyproj import Geod

    geod = Geod(a=measure.semi_major, f=measure.flattening)
    to_degrees = measure.unit / math.radians(1.0)
    areas = np.zeros(len(geoms), np.float64)
    for i, geom in enumerate(geoms):
        if to_degrees != 1.0:
            geom = shapely.transform(geom, lambda xy: xy * to_degrees)
        areas[i] = abs(geod.geometry_area_perimeter(geom)[0])
    return areas


def _geodesic_north_up(polys: Polygons, transform: Affine, measure: _AreaCRS) -> NDArray[np.float64]:
    """Ellipsoidal areas of pixel polygons on a grid whose rows follow parallels.

    With longitude ``a·col + c`` and latitude ``e·row + f``, a polygon's area is
    ``|a|·∮ col·w(row) d row`` (Green's theorem), ``w`` being the ellipsoid's area element
    ``A²(1-e²)·cos φ / (1 - e² sin² φ)²`` times ``e`` (radians). Horizontal edges add nothing;
    a vertical edge adds its column times the area of the one-pixel strips it spans (each
    row's strip by 5-point Gauss-Legendre quadrature, then cumulated). Columns are taken
    relative to the ring's first vertex, so no large terms cancel.
    """
    if len(polys) == 0:
        return np.zeros(0, np.float64)
    e2 = measure.flattening * (2.0 - measure.flattening)
    factor = measure.semi_major**2 * (1.0 - e2)
    lat_step = transform.e * measure.unit
    lat = (transform.f * measure.unit, lat_step)
    rings = np.zeros(len(polys.ring_offsets) - 1, np.float64)
    for r0, r1 in _rings.ring_chunks(polys.ring_offsets):  # bounded temporaries
        lo, hi = int(polys.ring_offsets[r0]), int(polys.ring_offsets[r1])
        local = polys.ring_offsets[r0 : r1 + 1] - lo
        nxt = _rings.next_index(local)
        first = np.repeat(polys.xy[local[:-1] + lo, 0].astype(np.int64), np.diff(local))
        x0 = polys.xy[lo:hi, 0].astype(np.int64) - first
        y0 = polys.xy[lo:hi, 1].astype(np.int64)
        moving = np.flatnonzero(y0[nxt] != y0)
        if np.any(x0[nxt[moving]] != x0[moving]):  # not a pixel polygon: every edge by quadrature
            total = _edge_integrals(x0[moving], y0[moving], x0[nxt[moving]], y0[nxt[moving]], e2, lat)
        else:  # vertical edges: x times the difference of the cumulated area of each row's strip
            top = int(y0.min())
            strips = _edge_integrals(
                np.ones(int(y0.max()) - top), np.arange(top, int(y0.max())), None, None, e2, lat
            )
            cumulated = np.concatenate([[0.0], np.cumsum(strips)])
            y_from, y_to = y0[moving] - top, y0[nxt[moving]] - top
            total = x0[moving] * (cumulated[y_to] - cumulated[y_from])
        edges = np.zeros(hi - lo, np.float64)
        edges[moving] = total
        rings[r0:r1] = np.add.reduceat(edges, local[:-1])
    per_poly = np.add.reduceat(rings, polys.poly_offsets[:-1])
    return np.abs(per_poly) * (factor * abs(transform.a) * measure.unit * abs(lat_step))


def _edge_integrals(
    x0: NDArray[Any],
    y0: NDArray[Any],
    x1: NDArray[Any] | None,
    y1: NDArray[Any] | None,
    e2: float,
    lat: tuple[float, float],
) -> NDArray[np.float64]:
    """``∫ x · cos φ / (1 - e² sin² φ)² dy`` along straight edges from ``(x0, y0)`` to
    ``(x1, y1)`` (default: one row down, ``x`` constant), with ``φ = lat[0] + lat[1]·y``."""
    x0, y0 = x0.astype(np.float64), y0.astype(np.float64)
    dx = np.zeros_like(x0) if x1 is None else x1 - x0
    dy = np.ones_like(y0) if y1 is None else y1 - y0
    total = np.zeros(len(x0), np.float64)
    for t, w in zip(_GL_NODES, _GL_WEIGHTS, strict=True):
        sin = np.sin(lat[0] + lat[1] * (y0 + t * dy))
        total += w * (x0 + t * dx) * (np.sqrt(1.0 - sin**2) / (1.0 - e2 * sin**2) ** 2)
    result: NDArray[np.float64] = total * dy
    return result


def large_enough(
    polys: Polygons, min_area: float, transform: Affine, crs: str | None = None
) -> BoolArray | None:
    """Which polygons have an area of at least ``min_area``, in the units of :func:`polygon_areas`
    (square metres with a ``crs``, as the features' ``area``; else the transform's, squared);
    None when every polygon does (``min_area`` is 0, or there are none).

    Raises:
        VectorizeError: when ``min_area`` is negative.
    """
    if min_area < 0:
        raise VectorizeError(f"min_area: expected a non-negative area, got {min_area}")
    if min_area == 0 or len(polys) == 0:
        return None
    kept: BoolArray = polygon_areas(polys, transform, crs) >= min_area
    return kept


def drop_small(polys: Polygons, min_area: float, transform: Affine, crs: str | None = None) -> Polygons:
    """The polygons whose area is at least ``min_area`` (see :func:`large_enough`)."""
    kept = large_enough(polys, min_area, transform, crs)
    return polys if kept is None else _rings.take(polys, kept)


def first_pixels(polys: Polygons) -> tuple[IntArray, IntArray]:
    """The (row, column) of each polygon's first pixel in raster scan order.

    It is the top-left corner of the shell's topmost-leftmost vertex, unique to each polygon
    whatever the blocks were, which makes it a stable sort key and a way to name the block a
    polygon starts in.
    """
    if len(polys) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty
    shells = polys.shell_index
    verts = _rings.ranges(polys.ring_offsets, shells)
    xy = polys.xy[verts].astype(np.int64)
    stride = np.int64(int(xy[:, 0].max()) + 1)
    key = xy[:, 1] * stride + xy[:, 0]
    starts = _rings.offsets(np.diff(polys.ring_offsets)[shells])[:-1]
    first = np.minimum.reduceat(key, starts)
    return first // stride, first % stride


def scan_order(polys: Polygons) -> IntArray:
    """The permutation that sorts the polygons by their first pixel (row, then column)."""
    rows, cols = first_pixels(polys)
    order: IntArray = np.lexsort((cols, rows))
    return order


def in_scan_order(polys: Polygons) -> Polygons:
    """The polygons sorted by their first pixel (row, then column): the same order for any blocks."""
    return _rings.take(polys, scan_order(polys))


def canonical(polys: Polygons, index: IntArray | None = None) -> Polygons:
    """Each ring starting at its first vertex in scan order, holes sorted the same way.

    With shells positive and holes negative (as traced), this makes the vertex arrays a function
    of the pixels alone, whatever the blocks: byte-stable output without a GEOS normalize.

    Args:
        polys: polygons as traced or merged.
        index: the polygons to return, in this order (default: all, in their order); the same
            as ``canonical(take(polys, index))`` without the intermediate copy of the vertices.
    """
    if index is None:
        index = np.arange(len(polys), dtype=np.int64)
    if len(index) == 0:
        return _rings.take(polys, index)
    per_poly = np.diff(polys.poly_offsets)[index]
    rings = _rings.ranges(polys.poly_offsets, index)  # the rings of each chosen polygon, in order
    starts = polys.ring_offsets[rings]
    sizes = polys.ring_offsets[rings + 1] - starts
    stride = np.int64(int(polys.xy[:, 0].max()) + 1)
    low = np.empty(len(rings), np.int64)
    first = np.empty(len(rings), np.int64)
    for r0, r1 in _rings.ring_chunks(_rings.offsets(sizes)):  # bounded temporaries
        verts = _rings.spans(starts[r0:r1], sizes[r0:r1])
        key = polys.xy[verts, 1].astype(np.int64) * stride
        key += polys.xy[verts, 0]
        local = _rings.offsets(sizes[r0:r1])[:-1]
        low[r0:r1] = np.minimum.reduceat(key, local)
        first[r0:r1] = verts[np.flatnonzero(key == np.repeat(low[r0:r1], sizes[r0:r1]))]  # distinct
        del verts, key
    ring_poly = np.repeat(np.arange(len(index), dtype=np.int64), per_poly)
    is_hole = np.ones(len(rings), np.bool_)
    is_hole[_rings.offsets(per_poly)[:-1]] = False
    order = np.lexsort((low, is_hole, ring_poly))
    new_offsets = _rings.offsets(sizes[order])
    xy = np.empty((int(new_offsets[-1]), 2), polys.xy.dtype)
    tail, head = starts + sizes - first, first - starts
    for o0, o1 in _rings.ring_chunks(new_offsets):
        chosen = order[o0:o1]  # each read from its first vertex to its end, then from its start
        spans = np.empty((len(chosen), 2, 2), np.int64)
        spans[:, 0, 0], spans[:, 0, 1] = first[chosen], tail[chosen]
        spans[:, 1, 0], spans[:, 1, 1] = starts[chosen], head[chosen]
        xy[new_offsets[o0] : new_offsets[o1]] = polys.xy[
            _rings.spans(spans[:, :, 0].ravel(), spans[:, :, 1].ravel())
        ]
    return Polygons(
        xy=xy,
        ring_offsets=new_offsets,
        poly_offsets=_rings.offsets(per_poly),
        classes=polys.classes[index],
        saddle=_rings.empty().saddle,
    )


def _closed_coords(
    xy: CoordArray, ring_sizes: IntArray, transform: Affine
) -> tuple[NDArray[np.float64], IntArray]:
    """World coordinates of consecutive rings, closed (first vertex repeated), and ring offsets."""
    closed = _rings.offsets(ring_sizes + 1)
    index = _rings.spans(closed[:-1] - np.arange(len(ring_sizes)), ring_sizes + 1)
    index[closed[1:] - 1] = closed[:-1] - np.arange(len(ring_sizes))  # close on the first vertex
    t = transform
    coords = np.empty((len(index), 2), np.float64)
    cols, rows = xy[index, 0], xy[index, 1]
    coords[:, 0] = t.a * cols + t.b * rows + t.c
    coords[:, 1] = t.d * cols + t.e * rows + t.f
    return coords, closed


def to_geometries(polys: Polygons, transform: Affine) -> GeometryArray:
    """Shapely polygons in the raster's CRS, built in one vectorized call.

    Args:
        polys: polygons in pixel-corner coordinates (use :func:`canonical` for stable vertices).
        transform: the raster's geotransform, applied to every vertex once.

    Returns:
        One shapely ``Polygon`` per polygon.
    """
    if len(polys) == 0:
        return np.empty(0, dtype=object)
    coords, closed = _closed_coords(polys.xy, polys.ring_sizes, transform)
    geoms: GeometryArray = shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, coords, (closed, polys.poly_offsets)
    )
    return geoms


def to_wkb(polys: Polygons, transform: Affine, chunk: int = 1 << 18) -> tuple[IntArray, NDArray[np.uint8]]:
    """ISO WKB (little-endian) of every polygon, encoded with numpy alone (no GEOS objects).

    Rings are encoded ``chunk`` vertices at a time, so a polygon of millions of vertices needs
    little more memory than its WKB.

    Args:
        polys: polygons in pixel-corner coordinates.
        transform: the raster's geotransform.
        chunk: vertices encoded at once (at least one ring).

    Returns:
        ``(offsets, data)``: polygon ``i`` is ``data[offsets[i]:offsets[i + 1]]``.
    """
    if len(polys) == 0:
        return np.zeros(1, np.int64), np.zeros(0, np.uint8)
    sizes = polys.ring_sizes
    n_rings = len(sizes)
    shell = np.zeros(n_rings, np.bool_)
    shell[polys.shell_index] = True
    # before each ring: its point count; before a polygon's first ring: byte order, type, rings
    header = np.zeros((n_rings, 13), np.uint8)
    header[:, 0], header[:, 1] = 1, 3  # little-endian, wkbPolygon
    header[shell, 5:9] = np.diff(polys.poly_offsets).astype("<u4").view(np.uint8).reshape(-1, 4)
    header[:, 9:13] = (sizes + 1).astype("<u4").view(np.uint8).reshape(-1, 4)
    keep = np.ones((n_rings, 13), np.bool_)
    keep[~shell, :9] = False
    ring_bytes = np.where(shell, 13, 4) + 16 * (sizes + 1)
    ring_at = _rings.offsets(ring_bytes)
    data = np.empty(int(ring_at[-1]), np.uint8)
    for r0, r1 in _rings.ring_chunks(polys.ring_offsets, chunk):  # their bytes are consecutive too
        xy = polys.xy[polys.ring_offsets[r0] : polys.ring_offsets[r1]]
        coords, closed = _closed_coords(xy, sizes[r0:r1], transform)
        body = coords.astype("<f8", copy=False).view(np.uint8).ravel()
        at = np.repeat(closed[:-1] * 16, keep[r0:r1].sum(axis=1))
        data[ring_at[r0] : ring_at[r1]] = np.insert(body, at, header[r0:r1][keep[r0:r1]])
    return ring_at[polys.poly_offsets], data


def simplify_coverage(polys: Polygons, tolerance: float, transform: Affine) -> GeometryArray:
    """Simplify the polygons together, keeping shared edges shared (no gaps, no overlaps).

    Args:
        polys: complete polygons in pixel-corner coordinates.
        tolerance: Visvalingam-Whyatt tolerance in units of the transform (0 keeps everything).
        transform: the raster's geotransform.

    Returns:
        The simplified polygons in the raster's CRS, normalized.

    Raises:
        VectorizeError: when ``tolerance`` is negative.
    """
    if tolerance < 0:
        raise VectorizeError(f"simplify: expected a non-negative tolerance, got {tolerance}")
    if tolerance == 0 or len(polys) == 0:
        return to_geometries(polys, transform)
    geoms = to_geometries(node_coverage(polys), transform)
    result: GeometryArray = shapely.normalize(shapely.coverage_simplify(geoms, tolerance))
    return result


def node_coverage(polys: Polygons) -> Polygons:
    """Insert, in every edge, the vertices of the set that lie inside it (T-junctions)."""
    if len(polys) == 0:
        return polys
    xy = polys.xy.astype(np.int64)
    w = np.int64(int(xy[:, 0].max()) + 2)
    h = np.int64(int(xy[:, 1].max()) + 2)
    by_row = np.unique(xy[:, 1] * w + xy[:, 0])  # vertices sorted along horizontal lines
    by_col = np.unique(xy[:, 0] * h + xy[:, 1])  # and along vertical ones
    nxt = _rings.next_index(polys.ring_offsets)
    x0, y0, x1, y1 = xy[:, 0], xy[:, 1], xy[nxt, 0], xy[nxt, 1]
    horizontal = y0 == y1
    lo = np.where(horizontal, y0 * w + np.minimum(x0, x1), x0 * h + np.minimum(y0, y1))
    hi = np.where(horizontal, y0 * w + np.maximum(x0, x1), x0 * h + np.maximum(y0, y1))
    first = np.where(
        horizontal, np.searchsorted(by_row, lo, side="right"), np.searchsorted(by_col, lo, side="right")
    )
    stop = np.where(horizontal, np.searchsorted(by_row, hi), np.searchsorted(by_col, hi))
    count = 1 + (stop - first)
    src = np.repeat(np.arange(len(xy)), count)
    k = np.arange(int(count.sum()), dtype=np.int64) - np.repeat(_rings.offsets(count)[:-1], count) - 1
    out = xy[src]
    inserted = k >= 0
    s, k = src[inserted], k[inserted]
    forward = np.where(horizontal, x1 > x0, y1 > y0)[s]
    index = np.where(forward, first[s] + k, stop[s] - 1 - k)
    along_row = horizontal[s]
    row_key = by_row[np.minimum(index, len(by_row) - 1)]
    col_key = by_col[np.minimum(index, len(by_col) - 1)]
    out[inserted, 0] = np.where(along_row, row_key % w, col_key // h)
    out[inserted, 1] = np.where(along_row, row_key // w, col_key % h)
    ring_sizes = np.add.reduceat(count, polys.ring_offsets[:-1])
    return Polygons(
        xy=out.astype(np.int32),
        ring_offsets=_rings.offsets(ring_sizes.astype(np.int64)),
        poly_offsets=polys.poly_offsets,
        classes=polys.classes,
        saddle=_rings.empty().saddle,
    )


def finish_each(
    finish: Callable[[NDArray[np.object_], bool], NDArray[np.object_]],
    geoms: NDArray[np.object_],
    crs: str,
) -> tuple[NDArray[np.object_], NDArray[np.intp], NDArray[np.float64]]:
    """Each geometry through a post-processor's finisher on its own.

    Args:
        finish: what :func:`postprocessing.registry.resolve_finisher` returns.
        geoms: whole polygons in ``crs``.
        crs: their CRS (a geographic one is finished in local metric frames).

    Returns:
        The parts that came out, the index in ``geoms`` of the geometry each came from (its
        class, block and lineage carry over) and their areas in square metres.
    """
    from pyproj import CRS

    geographic = CRS.from_user_input(crs).is_geographic
    parts: list[Any] = []
    index: list[int] = []
    for i, geom in enumerate(geoms):
        for part in finish(np.array([geom], dtype=object), geographic):
            parts.append(part)
            index.append(i)
    finished = np.empty(len(parts), dtype=object)
    finished[:] = parts
    return finished, np.asarray(index, dtype=np.intp), geometry_areas(finished, crs)
