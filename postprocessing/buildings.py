"""Buildings: a building mask becomes clean polygons, simplified and squared where the item asks.

A model's MLM output selects this post-processor with ``post_processing_function``
``{"format": "python", "expression": "buildings"}``; its ``geomlops:buildings`` object sets the
options (:class:`BuildingOptions`, every field optional, in metres and square metres whatever
the CRS).

Per block, :func:`buildings` traces the pixels of every class but the background (value 0)
and the no-data value, like ``polygons``. Once pieces are merged across block edges,
:func:`finish_buildings` (the finisher :func:`postprocessing.registry.resolve_finisher` returns
for it) works on whole polygons: it repairs invalid ones, fills holes under ``min_hole_m2``,
simplifies by ``simplify_m`` (Douglas-Peucker), squares them with :func:`orthogonalize` when
``square`` is on, and drops those under ``min_area_m2``. In a geographic CRS each polygon is
worked on in a local metric frame around it (longitudes scaled by the cosine of its latitude),
so its corners are right angles on the ground, not in degrees.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import Polygon

from geomlops.errors import PostprocessorError
from postprocessing.features import BlockFeatures, BlockOutput
from postprocessing.kernel import mask_to_polygons

#: the MLM output field holding the options
OPTIONS_FIELD = "geomlops:buildings"
#: metres per degree of latitude (mean Earth radius), for the local frame of geographic CRSs
METRES_PER_DEGREE = 6_371_008.8 * math.pi / 180.0
BACKGROUND = 0


@dataclass(frozen=True)
class BuildingOptions:
    """How building polygons are cleaned (the item's ``geomlops:buildings``)."""

    simplify_m: float = 0.5
    """Douglas-Peucker tolerance in metres (0: none)."""
    square: bool = True
    """Make corners right angles (:func:`orthogonalize`)."""
    min_area_m2: float = 4.0
    """Smaller buildings are dropped."""
    min_hole_m2: float = 4.0
    """Smaller holes are filled."""
    max_area_change: float = 0.15
    """A squared outline whose area differs more than this fraction from the simplified one is
    not squared (it was no rectilinear building)."""

    @classmethod
    def from_item(cls, output: Mapping[str, Any] | None) -> BuildingOptions:
        """The options of one MLM output (its ``geomlops:buildings``; defaults without it).

        Raises:
            PostprocessorError: an unknown option or a value of the wrong type, named.
        """
        raw = (output or {}).get(OPTIONS_FIELD) or {}
        if not isinstance(raw, Mapping):
            raise PostprocessorError(f"{OPTIONS_FIELD}: expected an object of options, got {raw!r}")
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in known:
                raise PostprocessorError(f"{OPTIONS_FIELD}.{key}: unknown option (known: {', '.join(known)})")
            if key == "square":
                if not isinstance(value, bool):
                    raise PostprocessorError(f"{OPTIONS_FIELD}.square: expected true or false, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise PostprocessorError(f"{OPTIONS_FIELD}.{key}: expected a number >= 0, got {value!r}")
            values[key] = value
        return cls(**values)


def buildings(output: BlockOutput) -> BlockFeatures:
    """Building classes of a class map (H, W) or (1, H, W) -> pixel polygons to merge.

    The background (value 0) is not traced, nor the no-data value.
    """
    data = np.asarray(output.data)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2 or not np.issubdtype(data.dtype, np.integer):
        raise PostprocessorError(
            f"buildings: expected a class map (height, width) of integers, got {data.dtype} {data.shape}; "
            "an output of scores is thresholded first (geomlops:threshold)"
        )
    mask = data
    if output.nodata is not None and output.nodata != BACKGROUND:
        mask = np.where(data == output.nodata, BACKGROUND, data)
    block = output.block
    return BlockFeatures(pieces=mask_to_polygons(mask, block.offset, nodata=BACKGROUND, shared=block.shared))


def _dominant_angle(rings: list[NDArray[np.float64]]) -> float:
    """The orientation (radians, modulo 90 degrees) the edges agree on, weighted by length."""
    sin = cos = 0.0
    for ring in rings:
        d = np.diff(ring, axis=0)
        length = np.hypot(d[:, 0], d[:, 1])
        angle = 4.0 * np.arctan2(d[:, 1], d[:, 0])
        sin += float((length * np.sin(angle)).sum())
        cos += float((length * np.cos(angle)).sum())
    return math.atan2(sin, cos) / 4.0


def _mean_deviation(rings: list[NDArray[np.float64]], angle: float) -> float:
    """Length-weighted mean angle (degrees) between the edges and the nearest of the two axes."""
    total = weight = 0.0
    for ring in rings:
        d = np.diff(ring, axis=0)
        length = np.hypot(d[:, 0], d[:, 1])
        off = np.mod(np.arctan2(d[:, 1], d[:, 0]) - angle, math.pi / 2)
        off = np.minimum(off, math.pi / 2 - off)
        total += float((length * off).sum())
        weight += float(length.sum())
    return math.degrees(total / weight) if weight else 90.0


def _rotate(points: NDArray[np.float64], angle: float) -> NDArray[np.float64]:
    c, s = math.cos(angle), math.sin(angle)
    result: NDArray[np.float64] = points @ np.array([[c, s], [-s, c]])
    return result


def _square_ring(ring: NDArray[np.float64], angle: float, min_edge: float) -> NDArray[np.float64] | None:
    """A closed ring with every edge parallel or perpendicular to ``angle``; None if impossible.

    Edges are turned in the rotated frame into horizontal or vertical runs (consecutive edges of
    the same direction merge); a run shorter than ``min_edge`` is absorbed by its neighbours;
    each run becomes the line through its length-weighted mean, and the corners are where
    consecutive lines cross.
    """
    points = _rotate(ring[:-1], -angle)
    edges = np.roll(points, -1, axis=0) - points
    horizontal = np.abs(edges[:, 0]) >= np.abs(edges[:, 1])
    if horizontal.all() or not horizontal.any():
        return None
    start = int(np.flatnonzero(horizontal != np.roll(horizontal, 1))[0])
    order = np.roll(np.arange(len(points)), -start)
    runs: list[list[float]] = []  # [is horizontal, length, weighted coordinate sum]
    for i in order:
        a, b = points[i], points[(i + 1) % len(points)]
        length = float(np.hypot(*(b - a)))
        coordinate = float((a[1] + b[1]) / 2 if horizontal[i] else (a[0] + b[0]) / 2)
        if runs and runs[-1][0] == horizontal[i]:
            runs[-1][1] += length
            runs[-1][2] += length * coordinate
        else:
            runs.append([float(horizontal[i]), length, length * coordinate])
    while len(runs) > 4:
        shortest = min(range(len(runs)), key=lambda k: runs[k][1])
        if runs[shortest][1] >= min_edge:
            break
        # the neighbours of the short run (same direction) become one run
        runs = runs[shortest - 1 :] + runs[: shortest - 1] if shortest else runs[-1:] + runs[:-1]
        merged = [runs[0][0], runs[0][1] + runs[2][1], runs[0][2] + runs[2][2]]
        runs = [merged, *runs[3:]]
    if len(runs) < 4 or len(runs) % 2:
        return None
    lines = [(bool(kind), total / length if length > 0 else 0.0) for kind, length, total in runs]
    corners = []
    for k, (kind, value) in enumerate(lines):
        _, following = lines[(k + 1) % len(lines)]
        corners.append((following, value) if kind else (value, following))
    square = _rotate(np.array(corners, dtype=np.float64), angle)
    closed: NDArray[np.float64] = np.vstack([square, square[:1]])
    return closed


def orthogonalize(
    polygon: Polygon, *, min_edge: float = 1.0, max_area_change: float = 0.15, max_deviation: float = 10.0
) -> Polygon:
    """``polygon`` (planar, metres) with right-angled corners, or unchanged when it cannot be.

    The dominant orientation of its edges sets the axes; an outline whose edges deviate from
    them by more than ``max_deviation`` degrees on average (length-weighted: a round or
    irregular shape) is left as it is. Each ring is squared by :func:`_square_ring`; the result
    is kept only when it is a valid polygon whose area is within ``max_area_change`` of the
    input's.
    """
    rings = [np.asarray(polygon.exterior.coords, dtype=np.float64)]
    rings += [np.asarray(r.coords, dtype=np.float64) for r in polygon.interiors]
    angle = _dominant_angle(rings)
    if _mean_deviation(rings, angle) > max_deviation:
        return polygon
    shell = _square_ring(rings[0], angle, min_edge)
    if shell is None:
        return polygon
    holes = [h for h in (_square_ring(r, angle, min_edge) for r in rings[1:]) if h is not None]
    squared = Polygon(shell, holes)
    if not squared.is_valid or squared.is_empty:
        return polygon
    if abs(squared.area - polygon.area) > max_area_change * polygon.area:
        return polygon
    return squared


def _local_frame(geometry: Polygon) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Origin (lon, lat) and metres per degree (x, y) of a metric frame around a geographic polygon."""
    centre = geometry.centroid
    scale = (METRES_PER_DEGREE * math.cos(math.radians(centre.y)), METRES_PER_DEGREE)
    return np.array([centre.x, centre.y]), np.array(scale)


def _clean_one(polygon: Polygon, options: BuildingOptions) -> list[Polygon]:
    holes = [r for r in polygon.interiors if Polygon(r).area >= options.min_hole_m2]
    polygon = Polygon(polygon.exterior, holes)
    if options.simplify_m > 0:
        polygon = polygon.simplify(options.simplify_m, preserve_topology=True)
    if not polygon.is_valid:
        polygon = shapely.make_valid(polygon)
    parts = [p for p in getattr(polygon, "geoms", [polygon]) if isinstance(p, Polygon) and not p.is_empty]
    if options.square:
        parts = [
            orthogonalize(
                p, min_edge=max(2 * options.simplify_m, 0.5), max_area_change=options.max_area_change
            )
            for p in parts
        ]
    return [p for p in parts if p.area >= options.min_area_m2]


def finish_buildings(
    geometries: NDArray[np.object_],
    *,
    geographic: bool,
    options: Mapping[str, Any] | BuildingOptions | None = None,
) -> NDArray[np.object_]:
    """Whole building polygons in the raster's CRS -> cleaned ones (maybe fewer, never more
    pieces than the input's parts).

    Args:
        geometries: polygons (or multipolygons) in the raster's CRS.
        geographic: whether that CRS is in degrees (then a local metric frame is used).
        options: :class:`BuildingOptions`, or the MLM output holding ``geomlops:buildings``.
    """
    chosen = options if isinstance(options, BuildingOptions) else BuildingOptions.from_item(options)
    cleaned: list[Polygon] = []
    for geometry in geometries:
        if geometry is None or geometry.is_empty:
            continue
        if not geometry.is_valid:
            geometry = shapely.make_valid(geometry)
        for part in getattr(geometry, "geoms", [geometry]):
            if not isinstance(part, Polygon) or part.is_empty:
                continue
            if not geographic:
                cleaned.extend(_clean_one(part, chosen))
                continue
            origin, scale = _local_frame(part)
            local = shapely.transform(part, lambda xy, o=origin, k=scale: (xy - o) * k)
            for done in _clean_one(local, chosen):
                cleaned.append(shapely.transform(done, lambda xy, o=origin, k=scale: xy / k + o))
    result = np.empty(len(cleaned), dtype=object)
    result[:] = cleaned
    return result
