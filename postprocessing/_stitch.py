"""Rings of the union of shells that share edge steps: chains linked end to start.

Pure array code used by :mod:`postprocessing.merge`; see its docstring for the method.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from geomlops.errors import VectorizeError
from postprocessing import _rings
from postprocessing._rings import BoolArray, CoordArray, IntArray, Polygons


def stitch(
    polys: Polygons,
    verts: IntArray,
    ring_starts: IntArray,
    online: IntArray,
    online_end: IntArray,
    unit_offs: IntArray,
    cancelled: BoolArray,
    hit_piece: BoolArray,
    cls_idx: IntArray,
    n_cls: int,
    width: np.int64,
) -> tuple[CoordArray, IntArray, BoolArray, IntArray]:
    """Rings of the union of the shells that lost interior steps.

    A shell's vertices whose segment lies on no line being closed (most of a long shell: all but
    the part along the new row) cannot gain or lose anything; each run of them is carried as its
    first vertex and a length, and copied whole into the new rings at the end. Memory then goes
    with the vertices near the lines, not with the length of the shells being joined.

    Args:
        polys: the candidate pieces.
        verts: vertex indices (into ``polys.xy``) of every shell, shell after shell.
        ring_starts: where each shell starts in ``verts``.
        online: positions in ``verts`` whose segment lies on a line being closed (ascending).
        online_end: for each of those segments, its end vertex (an index into ``polys.xy``).
        unit_offs: where each of those segments' unit steps start in ``cancelled``.
        cancelled: for each unit step, whether it is interior to the union.
        hit_piece: pieces that lost at least one step.
        cls_idx: dense class index of each piece.
        n_cls: number of classes.
        width: raster width + 1 (vertex key stride).

    Returns:
        Vertices, ring offsets and saddle flags of the new rings, and the piece each ring began at.
    """
    saddle = _rings.saddle_flags(polys)
    affected = np.flatnonzero(hit_piece)
    pos = _rings.ranges(ring_starts, affected)  # positions in verts, shell by shell
    shell_offs = _rings.offsets(np.diff(ring_starts)[affected])
    oi = np.searchsorted(online, pos)  # the on-line segment at each position, or -1
    oi[oi == len(online)] = 0
    oi[online[oi] != pos] = -1
    # runs of positions off the lines: keep the first of each (and each shell's first)
    head = oi >= 0
    head[1:] |= oi[:-1] >= 0
    head[shell_offs[:-1]] = True
    kept = np.flatnonzero(head)
    run = np.diff(np.append(kept, len(pos)))  # vertices each kept position stands for
    del head
    pos, oi = pos[kept], oi[kept]
    shell_len = np.diff(np.searchsorted(kept, shell_offs))
    del kept
    on = oi >= 0
    v0 = polys.xy[verts[pos]].astype(np.int64)
    v1 = v0.copy()  # a segment's end: only on-line segments are walked step by step
    v1[on] = polys.xy[online_end[oi[on]]]
    count = np.where(on, np.abs(v1 - v0).sum(axis=1), 1)
    src = np.repeat(np.arange(len(pos)), count)
    exp_offs = _rings.offsets(count)
    t = np.arange(int(exp_offs[-1]), dtype=np.int64) - exp_offs[src]
    exp_xy = v0[src] + t[:, None] * np.sign(v1 - v0)[src]
    exp_cancel = np.zeros(len(src), np.bool_)
    unit = oi[src] >= 0
    exp_cancel[unit] = cancelled[unit_offs[oi[src][unit]] + t[unit]]
    exp_saddle = (t == 0) & saddle[verts[pos]][src]
    exp_run = np.where(t == 0, run[src], 1)
    exp_first = verts[pos][src]  # a run's first vertex in polys.xy (runs are whole there too)
    # rotate each shell to begin right after its first lost step: its last step is then lost
    shell_of = np.repeat(np.arange(len(affected)), shell_len)[src]
    exp_shell_offs = _rings.offsets(np.bincount(shell_of, minlength=len(affected)).astype(np.int64))
    local = np.arange(len(src), dtype=np.int64) - exp_shell_offs[shell_of]
    n_exp = np.diff(exp_shell_offs)
    first_lost = np.full(len(affected), np.iinfo(np.int64).max)
    np.minimum.at(first_lost, shell_of[exp_cancel], local[exp_cancel])
    rotated = exp_shell_offs[shell_of] + (local - first_lost[shell_of] - 1) % n_exp[shell_of]
    order = np.empty_like(rotated)
    order[rotated] = np.arange(len(rotated))
    r_xy, r_cancel, r_saddle = exp_xy[order], exp_cancel[order], exp_saddle[order]
    r_run, r_first = exp_run[order], exp_first[order]
    r_shell = shell_of[order]
    prev_cancel = np.empty_like(r_cancel)
    prev_cancel[1:] = r_cancel[:-1]
    prev_cancel[exp_shell_offs[:-1]] = True
    starts = np.flatnonzero(~r_cancel & prev_cancel)
    ends = np.flatnonzero(r_cancel & ~prev_cancel)
    if len(starts) != len(ends):  # pragma: no cover - would be a bug in the rotation
        raise VectorizeError("merge: chains do not pair up")
    chain_cls = cls_idx[affected[r_shell[starts]]]
    start_key = (r_xy[starts, 1] * width + r_xy[starts, 0]) * n_cls + chain_cls
    end_key = (r_xy[ends, 1] * width + r_xy[ends, 0]) * n_cls + chain_cls
    by_start = np.argsort(start_key, kind="stable")
    found = np.searchsorted(start_key[by_start], end_key)
    found = np.minimum(found, len(starts) - 1)
    link = by_start[found]
    if not np.array_equal(start_key[link], end_key):  # pragma: no cover - would be a merge bug
        raise VectorizeError("merge: a chain end meets no chain start")
    cycle_order, cycle_sizes = cycles(link)
    lengths = ends - starts
    chain_offs = _rings.offsets(lengths)
    take = _rings.ranges(chain_offs, np.asarray(cycle_order, np.int64))
    flat = np.repeat(starts - chain_offs[:-1], lengths)[take] + take
    ring_entries = np.add.reduceat(
        lengths[cycle_order], _rings.offsets(np.asarray(cycle_sizes, np.int64))[:-1]
    )
    first_chain = np.asarray(cycle_order, np.int64)[_rings.offsets(np.asarray(cycle_sizes, np.int64))[:-1]]
    xy, ring_offsets, new_saddle = _expand_runs(
        polys.xy, saddle, r_xy[flat], r_saddle[flat], r_run[flat], r_first[flat], ring_entries
    )
    return xy, ring_offsets, new_saddle, affected[r_shell[starts[first_chain]]]


def _expand_runs(
    all_xy: CoordArray,
    all_saddle: BoolArray,
    xy: NDArray[np.int64],
    saddle: BoolArray,
    run: IntArray,
    first: IntArray,
    ring_entries: IntArray,
) -> tuple[CoordArray, IntArray, BoolArray]:
    """The rings' vertices with each run put back: an entry standing for ``run`` vertices is
    replaced by ``all_xy[first : first + run]`` (and their saddle flags)."""
    ring_sizes = np.add.reduceat(run, _rings.offsets(ring_entries)[:-1])
    at = _rings.offsets(run)[:-1]
    out_xy = np.empty((int(run.sum()), 2), np.int32)
    out_saddle = np.empty(len(out_xy), np.bool_)
    out_xy[at] = xy
    out_saddle[at] = saddle
    long = np.flatnonzero(run > 1)
    for c0 in range(0, len(long), 1 << 16):  # bounded index temporaries
        part = long[c0 : c0 + (1 << 16)]
        to = _rings.spans(at[part] + 1, run[part] - 1)
        fro = _rings.spans(first[part] + 1, run[part] - 1)
        out_xy[to] = all_xy[fro]
        out_saddle[to] = all_saddle[fro]
    return out_xy, _rings.offsets(ring_sizes.astype(np.int64)), out_saddle


def connected(n: int, a: IntArray, b: IntArray) -> IntArray:
    """Connected components of ``n`` nodes joined by the edges ``a[i] - b[i]``.

    Returns:
        For each node, the smallest node of its component.
    """
    label = np.arange(n, dtype=np.int64)
    while True:
        la, lb = label[a], label[b]
        if np.array_equal(la, lb):
            return label
        low = np.minimum(la, lb)
        np.minimum.at(label, la, low)  # hook each root under the smaller root it meets
        np.minimum.at(label, lb, low)
        while True:  # then point every node straight at its root
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped


def cycles(link: IntArray) -> tuple[list[int], list[int]]:
    """The cycles of the permutation ``link``: the chain order, and each cycle's length."""
    nxt = link.tolist()
    seen = [False] * len(nxt)
    order: list[int] = []
    sizes: list[int] = []
    for first in range(len(nxt)):
        if seen[first]:
            continue
        c, size = first, 0
        while not seen[c]:
            seen[c] = True
            order.append(c)
            size += 1
            c = nxt[c]
        sizes.append(size)
    return order, sizes
