"""Polygons as flat integer arrays, and the ring operations the kernel and the merge share.

Coordinates are pixel corners of the source raster: ``x`` is the column, ``y`` the row, both
integers. Rings are stored open (the first vertex is not repeated). A polygon's first ring is its
shell, with positive orientation (``area2 > 0``); its holes follow, with negative orientation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]
CoordArray = NDArray[np.int32]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class Polygons:
    """Polygons in integer pixel-corner coordinates.

    Attributes:
        xy: ``(n, 2)`` vertices (column, row) of every ring, rings left open.
        ring_offsets: ``(r + 1,)`` where each ring starts in ``xy``.
        poly_offsets: ``(p + 1,)`` where each polygon starts among the rings (shell first).
        classes: ``(p,)`` the pixel value of each polygon.
        saddle: ``(n,)`` vertices where two diagonal pixels of the polygon's class meet; a merge
            may make a ring pass such a vertex twice. Empty when not tracked.
    """

    xy: CoordArray
    ring_offsets: IntArray
    poly_offsets: IntArray
    classes: IntArray
    saddle: BoolArray

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def ring_sizes(self) -> IntArray:
        """Number of vertices in each ring."""
        return np.diff(self.ring_offsets)

    @property
    def shell_index(self) -> IntArray:
        """Ring index of each polygon's shell."""
        return self.poly_offsets[:-1]


def empty() -> Polygons:
    """No polygons."""
    return Polygons(
        xy=np.zeros((0, 2), np.int32),
        ring_offsets=np.zeros(1, np.int64),
        poly_offsets=np.zeros(1, np.int64),
        classes=np.zeros(0, np.int64),
        saddle=np.zeros(0, np.bool_),
    )


def offsets(sizes: IntArray) -> IntArray:
    """``[0, cumsum(sizes)]``: start offsets from sizes."""
    out = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum(sizes, out=out[1:])
    return out


def concat(parts: Sequence[Polygons]) -> Polygons:
    """All polygons of ``parts``, in order."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty()
    if len(parts) == 1:
        return parts[0]
    ring_sizes = np.concatenate([p.ring_sizes for p in parts])
    poly_sizes = np.concatenate([np.diff(p.poly_offsets) for p in parts])
    return Polygons(
        xy=np.concatenate([p.xy for p in parts]),
        ring_offsets=offsets(ring_sizes),
        poly_offsets=offsets(poly_sizes),
        classes=np.concatenate([p.classes for p in parts]),
        saddle=(
            np.concatenate([saddle_flags(p) for p in parts])
            if any(len(p.saddle) == len(p.xy) for p in parts)
            else empty().saddle  # none tracked: none made up
        ),
    )


def saddle_flags(p: Polygons) -> BoolArray:
    """The saddle flag of every vertex (all false where they are not tracked)."""
    return p.saddle if len(p.saddle) == len(p.xy) else np.zeros(len(p.xy), np.bool_)


def without_saddle(polys: Polygons) -> Polygons:
    """The same polygons, their saddle flags not tracked (polygons that are never joined again)."""
    return Polygons(polys.xy, polys.ring_offsets, polys.poly_offsets, polys.classes, empty().saddle)


def take(polys: Polygons, index: IntArray | BoolArray) -> Polygons:
    """The polygons selected by ``index`` (integer positions or a boolean mask), in that order.

    Vertices are copied a million at a time, so the temporaries stay small beside the copy
    even when one polygon spans the raster.
    """
    idx = np.flatnonzero(index) if index.dtype == np.bool_ else np.asarray(index, np.int64)
    if len(idx) == len(polys) and np.array_equal(idx, np.arange(len(polys))):
        return polys
    rings = ranges(polys.poly_offsets, idx)
    ring_offsets = offsets(polys.ring_sizes[rings])
    tracked = len(polys.saddle) == len(polys.xy)  # untracked saddles stay untracked
    xy = np.empty((int(ring_offsets[-1]), 2), polys.xy.dtype)
    new_saddle = np.empty(len(xy) if tracked else 0, np.bool_)
    for r0, r1 in ring_chunks(ring_offsets):
        verts = ranges(polys.ring_offsets, rings[r0:r1])
        lo, hi = int(ring_offsets[r0]), int(ring_offsets[r1])
        xy[lo:hi] = polys.xy[verts]
        if tracked:
            new_saddle[lo:hi] = polys.saddle[verts]
    return Polygons(
        xy=xy,
        ring_offsets=ring_offsets,
        poly_offsets=offsets(np.diff(polys.poly_offsets)[idx]),
        classes=polys.classes[idx],
        saddle=new_saddle,
    )


def ranges(offs: IntArray, index: IntArray) -> IntArray:
    """Concatenated ``arange(offs[i], offs[i + 1])`` for each ``i`` in ``index``."""
    starts = offs[index]
    return spans(starts, offs[index + 1] - starts)


def spans(starts: IntArray, lengths: IntArray) -> IntArray:
    """Concatenated ``arange(starts[i], starts[i] + lengths[i])``."""
    index = np.repeat(starts - offsets(lengths)[:-1], lengths)
    index += np.arange(len(index), dtype=np.int64)
    return index


def next_index(ring_offsets: IntArray) -> IntArray:
    """For each vertex, the index of the next vertex of its ring (wrapping to the first)."""
    n = int(ring_offsets[-1])
    nxt = np.arange(1, n + 1, dtype=np.int64)
    ends = ring_offsets[1:] - 1
    nxt[ends] = ring_offsets[:-1]
    return nxt


def ring_chunks(ring_offsets: IntArray, max_vertices: int = 1 << 20) -> list[tuple[int, int]]:
    """Runs ``(r0, r1)`` of consecutive rings holding at most ``max_vertices`` (or one ring)."""
    runs = []
    n_rings, r0 = len(ring_offsets) - 1, 0
    while r0 < n_rings:
        limit = ring_offsets[r0] + max_vertices
        r1 = max(r0 + 1, int(np.searchsorted(ring_offsets, limit, side="right")) - 1)
        runs.append((r0, min(r1, n_rings)))
        r0 = min(r1, n_rings)
    return runs


def area2(xy: CoordArray, ring_offsets: IntArray) -> IntArray:
    """Twice the signed area of each ring (exact integers): positive for shells."""
    sums = np.zeros(len(ring_offsets) - 1, np.int64)
    for r0, r1 in ring_chunks(ring_offsets):  # bounded temporaries for huge rings sets
        lo, hi = int(ring_offsets[r0]), int(ring_offsets[r1])
        local = ring_offsets[r0 : r1 + 1] - lo
        x = xy[lo:hi, 0].astype(np.int64)
        y = xy[lo:hi, 1].astype(np.int64)
        nxt = next_index(local)
        cross = x * y[nxt]
        cross -= x[nxt] * y
        sums[r0:r1] = np.add.reduceat(cross, local[:-1])
    return sums


def polygon_area2(polys: Polygons) -> IntArray:
    """Twice the area of each polygon (shell minus holes), exact."""
    rings = area2(polys.xy, polys.ring_offsets)
    if len(polys) == 0:
        return np.zeros(0, np.int64)
    return np.add.reduceat(rings, polys.poly_offsets[:-1]).astype(np.int64)


def drop_collinear(xy: CoordArray, ring_offsets: IntArray) -> tuple[CoordArray, IntArray, IntArray]:
    """Remove the vertices where an axis-parallel ring goes straight on.

    Args:
        xy: ring vertices.
        ring_offsets: ring starts.

    Returns:
        The vertices that are corners, the new ring offsets, and the indices of the kept vertices.
    """
    nxt = next_index(ring_offsets)
    prv = np.empty_like(nxt)
    prv[nxt] = np.arange(len(nxt))
    # the direction changes unless the steps in and out move along the same axis
    corner = (xy[:, 0] != xy[prv, 0]) != (xy[nxt, 0] != xy[:, 0])
    sizes = (
        np.add.reduceat(corner.astype(np.int64), ring_offsets[:-1]) if len(corner) else np.zeros(0, np.int64)
    )
    kept = np.flatnonzero(corner)
    return xy[kept], offsets(np.asarray(sizes, np.int64)), kept


def split_touching(
    xy: CoordArray, ring_offsets: IntArray, candidate: BoolArray
) -> tuple[CoordArray, IntArray, IntArray, IntArray]:
    """Split rings that pass the same vertex twice into simple rings.

    A region traced with 4-connectivity can touch itself at a corner where two of its pixels
    meet diagonally. The simple-ring form (OGC-valid, and what GDAL writes) closes a loop at each
    such vertex: a bay of a shell becomes a hole that touches the shell at one point.

    Args:
        xy: ring vertices.
        ring_offsets: ring starts.
        candidate: the vertices that may repeat within a ring (others are not checked).

    Returns:
        New vertices, ring offsets, the source ring of each new ring, and for each new vertex its
        index in ``xy``.
    """
    n_rings = len(ring_offsets) - 1
    cand = np.flatnonzero(candidate)
    if len(cand) < 2:
        return xy, ring_offsets, np.arange(n_rings, dtype=np.int64), np.arange(len(xy), dtype=np.int64)
    rid = np.searchsorted(ring_offsets, cand, side="right") - 1
    span = np.int64(int(xy[:, 0].max()) + 2)
    key = (rid * (np.int64(int(xy[:, 1].max()) + 2)) + xy[cand, 1]) * span + xy[cand, 0]
    order = np.argsort(key, kind="stable")
    same = key[order][1:] == key[order][:-1]
    if not same.any():
        return xy, ring_offsets, np.arange(n_rings, dtype=np.int64), np.arange(len(xy), dtype=np.int64)
    first = cand[order][:-1][same]
    second = cand[order][1:][same]
    pair_ring = rid[order][:-1][same]
    affected = np.unique(pair_ring)
    index_parts: list[IntArray] = []
    size_parts: list[IntArray] = []
    source_parts: list[IntArray] = []

    def keep_rings(lo: int, hi: int) -> None:
        if lo < hi:
            index_parts.append(np.arange(ring_offsets[lo], ring_offsets[hi], dtype=np.int64))
            size_parts.append(np.diff(ring_offsets[lo : hi + 1]))
            source_parts.append(np.arange(lo, hi, dtype=np.int64))

    cursor = 0
    for ring in affected.tolist():
        keep_rings(cursor, ring)
        start, stop = int(ring_offsets[ring]), int(ring_offsets[ring + 1])
        sel = pair_ring == ring
        loops = _loops(first[sel] - start, second[sel] - start, stop - start)
        index_parts.append(np.concatenate(loops) + start)
        size_parts.append(np.array([len(loop) for loop in loops], np.int64))
        source_parts.append(np.full(len(loops), ring, np.int64))
        cursor = ring + 1
    keep_rings(cursor, n_rings)
    index = np.concatenate(index_parts)
    return (
        xy[index],
        offsets(np.concatenate(size_parts)),
        np.concatenate(source_parts),
        index,
    )


def _loops(first: IntArray, second: IntArray, n: int) -> list[IntArray]:
    """Vertex positions of the simple loops of one ring, given its repeated-vertex pairs."""
    loop_of = np.zeros(n, np.int64)
    # laminar intervals [first, second): paint outer ones first so inner ones overwrite them
    order = np.argsort(-(second - first), kind="stable")
    for t, k in enumerate(order.tolist(), start=1):
        loop_of[first[k] : second[k]] = t
    grouped = np.argsort(loop_of, kind="stable")
    counts = np.bincount(loop_of, minlength=len(first) + 1)
    bounds = offsets(counts)
    return [grouped[bounds[t] : bounds[t + 1]] for t in range(len(counts)) if counts[t]]
