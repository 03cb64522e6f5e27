"""Rings of the union of shells that share edge steps: chains linked end to start.

Pure array code used by :mod:`postprocessing.merge`; see its docstring for the method.
"""

from __future__ import annotations

import numpy as np

from geomlops.errors import VectorizeError
from postprocessing import _rings
from postprocessing._rings import BoolArray, CoordArray, IntArray, Polygons


def stitch(
    polys: Polygons,
    verts: IntArray,
    ring_starts: IntArray,
    online: IntArray,
    unit_offs: IntArray,
    cancelled: BoolArray,
    hit_piece: BoolArray,
    cls_idx: IntArray,
    n_cls: int,
    width: np.int64,
) -> tuple[CoordArray, IntArray, BoolArray, IntArray]:
    """Rings of the union of the shells that lost interior steps.

    Args:
        polys: the candidate pieces.
        verts: vertex indices (into ``polys.xy``) of every shell, shell after shell.
        ring_starts: where each shell starts in ``verts``.
        online: positions in ``verts`` whose segment lies on a line being closed.
        unit_offs: where each of those segments' unit steps start in ``cancelled``.
        cancelled: for each unit step, whether it is interior to the union.
        hit_piece: pieces that lost at least one step.
        cls_idx: dense class index of each piece.
        n_cls: number of classes.
        width: raster width + 1 (vertex key stride).

    Returns:
        Vertices, ring offsets and saddle flags of the new rings, and the piece each ring began at.
    """
    affected = np.flatnonzero(hit_piece)
    pos = _rings.ranges(ring_starts, affected)  # positions in verts, shell by shell
    shell_len = np.diff(ring_starts)[affected]
    online_idx = np.full(len(verts), -1, np.int64)
    online_idx[online] = np.arange(len(online))
    oi = online_idx[pos]
    nxt_pos = _rings.next_index(ring_starts)[pos]
    v0, v1 = polys.xy[verts[pos]].astype(np.int64), polys.xy[verts[nxt_pos]].astype(np.int64)
    count = np.where(oi >= 0, np.abs(v1 - v0).sum(axis=1), 1)
    src = np.repeat(np.arange(len(pos)), count)
    exp_offs = _rings.offsets(count)
    t = np.arange(int(exp_offs[-1]), dtype=np.int64) - exp_offs[src]
    exp_xy = v0[src] + t[:, None] * np.sign(v1 - v0)[src]
    exp_cancel = np.zeros(len(src), np.bool_)
    unit = oi[src] >= 0
    exp_cancel[unit] = cancelled[unit_offs[oi[src][unit]] + t[unit]]
    exp_saddle = (t == 0) & polys.saddle[verts[pos]][src]
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
    ring_len = np.add.reduceat(lengths[cycle_order], _rings.offsets(np.asarray(cycle_sizes, np.int64))[:-1])
    first_chain = np.asarray(cycle_order, np.int64)[_rings.offsets(np.asarray(cycle_sizes, np.int64))[:-1]]
    return (
        r_xy[flat].astype(np.int32),
        _rings.offsets(ring_len.astype(np.int64)),
        r_saddle[flat],
        affected[r_shell[starts[first_chain]]],
    )


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
