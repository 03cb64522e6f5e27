"""The per-block kernel: a class mask becomes polygons, in integer pixel space.

For each class, the block's pixels of that class are traced by contourpy's marching squares
(C++), on a 0/1 field padded by one pixel so every region closes inside the block. The contour
runs through the middle of the pixel edges and cuts each corner; each cut is replaced by the
pixel corner it cuts, which gives exactly the outline of the pixels, with a vertex only where the
outline turns. Diagonal pixels of a class are kept apart (4-connectivity): contourpy's saddle
rule puts the middle of a 2x2 chessboard below the level. Rings that then touch themselves at
such a corner are split into simple rings (OGC-valid, as GDAL writes them).

Coordinates stay integers (pixel corners of the source raster); the geotransform is applied once,
when the polygons are written.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, cast

import contourpy
import numpy as np
from contourpy import _contourpy
from numpy.typing import NDArray

from geomlops.errors import VectorizeError
from postprocessing import _rings
from postprocessing._rings import BoolArray, CoordArray, IntArray, Polygons

#: marching-squares level between the 0 and 1 of a class field; any value in (0.5, 1) gives the
#: same corners, and keeps the saddle centre (0.5) outside the class: 4-connectivity
_LEVEL = 0.75

_LOCAL = threading.local()
_GRIDS: dict[tuple[int, int], tuple[NDArray[np.float64], NDArray[np.float64]]] = {}
_GRIDS_LOCK = threading.Lock()


@dataclass(frozen=True)
class BlockPieces:
    """What the kernel found in one block.

    Attributes:
        final: polygons that do not touch a side shared with another block: already complete.
        edge: polygons touching a shared side; the merge joins them with their neighbours.
    """

    final: Polygons
    edge: Polygons


def mask_to_polygons(
    mask: NDArray[np.generic],
    offset: tuple[int, int] = (0, 0),
    *,
    nodata: int | None = None,
    connectivity: int = 4,
    shared: tuple[bool, bool, bool, bool] = (False, False, False, False),
) -> BlockPieces:
    """Trace the regions of equal value of a 2-D class mask as polygons in pixel coordinates.

    This is a pure function of the array: no IO, no geotransform.

    Args:
        mask: 2-D array of integer (or boolean) class values.
        offset: the block's (row, column) offset in the raster; vertices are given in the
            raster's pixel-corner coordinates (``x`` = column, ``y`` = row).
        nodata: pixels of this value are not traced.
        connectivity: must be 4 (pixels join through edges, never through corners alone).
        shared: which sides (top, bottom, left, right) border another block: polygons touching
            one of them are returned in ``edge`` for the merge.

    Returns:
        The polygons, split into final ones and ones to merge across block edges.

    Raises:
        VectorizeError: when the mask is not 2-D, not integer, or connectivity is not 4.
    """
    if connectivity != 4:
        raise VectorizeError(
            f"connectivity={connectivity}: only 4 is supported (one connectivity everywhere; "
            "pixels meeting at a corner alone stay apart)"
        )
    array = np.asarray(mask)
    if array.ndim != 2:
        raise VectorizeError(f"mask: expected a 2-D array, got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.view(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise VectorizeError(f"mask: expected integer class values, got dtype {array.dtype}")
    height, width = array.shape
    parts = [_trace_class(array, value, count) for value, count in _classes(array, nodata)]
    polys = _rings.concat([p for p in parts if p is not None])
    if len(polys) == 0:
        return BlockPieces(final=polys, edge=polys)
    edge = _touches_shared_side(polys, height, width, shared)
    row_off, col_off = offset
    if row_off or col_off:
        polys = Polygons(
            xy=polys.xy + np.array([col_off, row_off], np.int32),
            ring_offsets=polys.ring_offsets,
            poly_offsets=polys.poly_offsets,
            classes=polys.classes,
            saddle=polys.saddle,
        )
    final = _rings.take(polys, ~edge)
    final = _rings.without_saddle(final)
    return BlockPieces(final=final, edge=_rings.take(polys, edge))


def _classes(array: NDArray[np.generic], nodata: int | None) -> list[tuple[int, int]]:
    """The values present in the block, ascending, without ``nodata``, with their pixel counts."""
    lo, hi = int(array.min()), int(array.max())
    if hi - lo < 64:  # few values: one fast comparison each beats a histogram
        found = [(v, int(np.count_nonzero(array == v))) for v in range(lo, hi + 1)]
    else:
        uniques, counts = np.unique(array, return_counts=True)
        found = list(zip(uniques.tolist(), counts.tolist(), strict=True))
    return [(int(v), n) for v, n in found if n and (nodata is None or v != nodata)]


def release_buffers() -> None:
    """Free the shared coordinate grids and the calling thread's tracer (after the last block;
    a pool's threads free theirs when they end)."""
    with _GRIDS_LOCK:
        _GRIDS.clear()
    if hasattr(_LOCAL, "tracer"):
        del _LOCAL.tracer


def _meshgrid(shape: tuple[int, int]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    rows, cols = shape
    x, y = np.meshgrid(np.arange(cols, dtype=np.float64), np.arange(rows, dtype=np.float64))
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _grids(shape: tuple[int, int]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Coordinate grids of this shape, shared by every thread (contourpy only reads them)."""
    with _GRIDS_LOCK:
        if shape not in _GRIDS:
            _GRIDS.clear()  # keep one shape: the block size in use
            _GRIDS[shape] = _meshgrid(shape)
        return _GRIDS[shape]


class _Tracer:
    """A contourpy generator over a padded block-sized field, kept per thread and reused.

    contourpy wants 2-D float64 coordinate grids and builds a per-point cache from them; both cost
    as much as tracing. The generator holds the field by reference (float64, C-contiguous), and
    ``filled`` reads the field afresh on each call, so one generator serves every class: write
    the class into the field, trace, repeat. A probe at creation checks that the field is indeed
    shared; if a future contourpy copied it, a generator is built per class instead.
    """

    def __init__(self, height: int, width: int, *, reuse: bool) -> None:
        self.shape = (height + 2, width + 2)
        self.x, self.y = _grids(self.shape) if reuse else _meshgrid(self.shape)
        self.field = np.zeros(self.shape, np.float64)
        self.extent = (height, width)
        self.generator: _contourpy.SerialContourGenerator | None = None
        if reuse:
            generator = self._new_generator()
            self.field[1, 1] = 1.0
            if generator.filled(_LEVEL, 2.0)[0][0] is not None:
                self.generator = generator
            self.field[1, 1] = 0.0

    def _new_generator(self) -> _contourpy.SerialContourGenerator:
        return _contourpy.SerialContourGenerator(
            self.x,
            self.y,
            self.field,
            cast(Any, None),  # no mask (contourpy's own wrapper passes None too)
            corner_mask=False,
            line_type=contourpy.LineType.ChunkCombinedOffset,
            fill_type=contourpy.FillType.ChunkCombinedOffsetOffset,
            quad_as_tri=False,
            z_interp=contourpy.ZInterp.Linear,
        )

    def trace(self, inside: BoolArray) -> tuple[Any, Any, Any]:
        """Contour rings of the true pixels of ``inside``, placed at the field's top-left.

        ``inside`` may be smaller than the field (a partial block): the rest stays 0.
        """
        height, width = inside.shape
        self.field[1 : height + 1, 1 : width + 1] = inside
        if self.extent != (height, width):  # clear what a larger block left behind
            self.field[height + 1 :, :] = 0.0
            self.field[:, width + 1 :] = 0.0
            self.extent = (height, width)
        generator = self.generator or self._new_generator()
        points, ring_offs, outer_offs = cast(Any, generator.filled(_LEVEL, 2.0))
        return points[0], ring_offs[0], outer_offs[0]


#: blocks smaller than this (pixels) get a throw-away tracer; larger ones reuse this thread's
_REUSE_FROM = 1 << 16


def _tracer(height: int, width: int, *, whole_block: bool) -> _Tracer:
    """A tracer whose field holds a ``height`` x ``width`` window.

    Large windows reuse this thread's tracer when it fits without more than doubling the work
    (partial edge blocks of a grid reuse the full-size one). A whole block that does not fit
    replaces it; a class's bounding box gets a throw-away tracer instead.
    """
    if height * width < _REUSE_FROM:
        return _Tracer(height, width, reuse=False)
    tracer: _Tracer | None = getattr(_LOCAL, "tracer", None)
    if tracer is not None:
        rows, cols = tracer.shape
        if rows >= height + 2 and cols >= width + 2 and (rows - 2) * (cols - 2) <= 2 * height * width:
            return tracer
    if not whole_block:
        return _Tracer(height, width, reuse=False)
    tracer = _Tracer(height, width, reuse=True)
    _LOCAL.tracer = tracer
    return tracer


def _trace_class(array: NDArray[np.generic], value: int, count: int) -> Polygons | None:
    """Polygons of the pixels of ``array`` equal to ``value``, in block pixel coordinates."""
    height, width = array.shape
    inside = array == value
    r0, r1, c0, c1 = 0, height, 0, width
    if count * 4 <= height * width:  # a sparse class: trace only its bounding box if small
        rows = np.flatnonzero(inside.any(axis=1))
        cols = np.flatnonzero(inside.any(axis=0))
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if (r1 - r0) * (c1 - c0) * 4 > height * width:
        r0, r1, c0, c1 = 0, height, 0, width
    tracer = _tracer(r1 - r0, c1 - c0, whole_block=(r1 - r0, c1 - c0) == (height, width))
    points, ring_offs, outer_offs = tracer.trace(inside[r0:r1, c0:c1])
    if points is None or ring_offs is None or outer_offs is None:
        return None
    xy, ring_offsets = _corners(points, ring_offs.astype(np.int64))
    saddle = _saddles(tracer.field, xy)
    xy = xy + np.array([c0, r0], np.int32)
    poly_of_ring = (
        np.searchsorted(outer_offs.astype(np.int64), np.arange(len(ring_offsets) - 1), side="right") - 1
    )
    xy, ring_offsets, source, kept = _rings.split_touching(xy, ring_offsets, saddle)
    saddle = saddle[kept]
    poly_of_ring = poly_of_ring[source]
    hole = _rings.area2(xy, ring_offsets) < 0
    # shells first within each polygon (a split shell leaves its bays as holes)
    order = np.lexsort((hole, poly_of_ring))
    if not np.array_equal(order, np.arange(len(order))):
        verts = _rings.ranges(ring_offsets, order)
        xy, saddle = xy[verts], saddle[verts]
        ring_offsets = _rings.offsets(np.diff(ring_offsets)[order])
        poly_of_ring, hole = poly_of_ring[order], hole[order]
    n_polys = int(len(outer_offs) - 1)
    poly_offsets = _rings.offsets(np.bincount(poly_of_ring, minlength=n_polys).astype(np.int64))
    if bool(hole[poly_offsets[:-1]].any()):  # pragma: no cover - would be a tracing bug
        raise VectorizeError(f"class {value}: a traced polygon has no shell")
    return Polygons(
        xy=xy,
        ring_offsets=ring_offsets,
        poly_offsets=poly_offsets,
        classes=np.full(n_polys, value, np.int64),
        saddle=saddle,
    )


def _corners(points: NDArray[np.float64], ring_offs: IntArray) -> tuple[CoordArray, IntArray]:
    """Pixel corners of contour rings that run through pixel-edge midpoints.

    Each contour vertex lies on a pixel edge: a point with an integer ``y`` crosses the vertical
    edge ``x = floor(x)`` (in unpadded pixel-corner coordinates), and vice versa. A step that
    changes both coordinates cuts a corner; the corner is the crossing line of its first point
    and that of its second. Straight steps add nothing.
    """
    x, y = points[:, 0], points[:, 1]
    diagonal = (x[1:] != x[:-1]) & (y[1:] != y[:-1])
    diagonal[ring_offs[1:-1] - 1] = False  # the step from one ring's end to the next ring
    k = np.flatnonzero(diagonal)
    crosses_x = y[k] == np.floor(y[k])  # first point lies on a vertical pixel edge
    cx = np.where(crosses_x, np.floor(x[k]), np.floor(x[k + 1])).astype(np.int32)
    cy = np.where(crosses_x, np.floor(y[k + 1]), np.floor(y[k])).astype(np.int32)
    ring_of_step = np.searchsorted(ring_offs, k, side="right") - 1
    sizes = np.bincount(ring_of_step, minlength=len(ring_offs) - 1).astype(np.int64)
    return np.column_stack([cx, cy]), _rings.offsets(sizes)


def _saddles(field: NDArray[np.float64], xy: CoordArray) -> BoolArray:
    """Corners where the four pixels form a 2x2 chessboard of the class (padded field)."""
    cx, cy = xy[:, 0], xy[:, 1]
    a, b = field[cy, cx], field[cy, cx + 1]
    c, d = field[cy + 1, cx], field[cy + 1, cx + 1]
    result: BoolArray = (a == d) & (b == c) & (a != b)
    return result


def _touches_shared_side(
    polys: Polygons, height: int, width: int, shared: tuple[bool, bool, bool, bool]
) -> BoolArray:
    """Polygons whose shell has a vertex on a side shared with another block."""
    top, bottom, left, right = shared
    if not any(shared):
        return np.zeros(len(polys), np.bool_)
    x, y = polys.xy[:, 0], polys.xy[:, 1]
    on_side = (top & (y == 0)) | (bottom & (y == height)) | (left & (x == 0)) | (right & (x == width))
    ring_has = np.logical_or.reduceat(on_side, polys.ring_offsets[:-1])
    result: BoolArray = ring_has[polys.shell_index]
    return result
