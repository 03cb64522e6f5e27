"""Join the polygons cut by block edges, row of blocks by row of blocks.

Two pieces join only where they share an edge segment of positive length across an internal
block line and have the same class: that is exactly where whole-raster 4-connectivity joins their
pixels. A corner alone never joins them.

The join works on the rings, in integer pixel space, without any polygon overlay:

1. the shell segments lying on the lines being closed are cut into unit steps;
2. a unit step that appears in two shells of one class (it runs both ways) is interior: it goes;
3. what is left of the shells are chains from one line vertex to another; each chain's end is the
   start of exactly one other chain (a 2x2 chessboard, the only place where two could meet, has
   no interior step), so following the links closes the rings of the union;
4. collinear vertices go, and a ring that passes a corner twice is split (as the kernel does).

Holes never reach a block side, so a piece's holes are holes of its group; the union of a group
is one polygon, since its pixels are 4-connected. Groups still touching the bottom line of the
current row stay pending: memory holds one row of blocks' edge pieces plus the groups that grow.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from geomlops.errors import VectorizeError
from postprocessing import _rings
from postprocessing._rings import BoolArray, IntArray, Polygons
from postprocessing._stitch import connected, stitch
from postprocessing.grid import BlockGrid


class EdgeMerger:
    """Streaming merge of edge pieces, fed one row of blocks at a time, top to bottom.

    Args:
        grid: the block grid the pieces were traced on.
    """

    def __init__(self, grid: BlockGrid) -> None:
        self.grid = grid
        self._next_row = 0
        self._col_lines = np.array(grid.col_lines, np.int64)
        self._row_lines = np.array(grid.row_lines, np.int64)
        # pending groups: their shells only, each with a token naming the group
        self._pending = _rings.empty()
        self._pending_token = np.zeros(0, np.int64)
        # holes wait aside, never copied row after row: a hole never reaches a block side
        self._holes: list[_HoleChunk] = []
        self._parent = np.zeros(0, np.int64)  # token -> the token of the group it joined

    @property
    def rows_seen(self) -> int:
        """Number of block rows merged so far."""
        return self._next_row

    @property
    def pending(self) -> int:
        """Number of groups waiting for the next row."""
        return len(self._pending)

    def add_row(self, edge_pieces: Polygons) -> Polygons:
        """Merge the next row's edge pieces with the pending groups above them.

        Args:
            edge_pieces: the ``edge`` polygons of every block of the row, in global pixel
                coordinates.

        Returns:
            The groups that are now complete (they touch neither the row's bottom line nor a
            later row).

        Raises:
            VectorizeError: when rows come out of order or too many.
        """
        row = self._next_row
        if row >= self.grid.n_rows:
            raise VectorizeError(f"merge: row {row} is past the grid's {self.grid.n_rows} block rows")
        self._next_row += 1
        size = self.grid.block_size
        top = row * size if row > 0 else None
        bottom = (row + 1) * size if row + 1 < self.grid.n_rows else None
        first_token = len(self._parent)
        new_tokens = np.arange(first_token, first_token + len(edge_pieces), dtype=np.int64)
        self._parent = np.concatenate([self._parent, new_tokens])
        shells, holes, owner = _split_shells(edge_pieces)
        self._store_holes(holes, new_tokens[owner])
        tokens = np.concatenate([self._pending_token, new_tokens])
        candidates = _rings.concat([self._pending, shells])
        merged, rep, joined_to = self._join(
            candidates, n_old=len(self._pending), top=top, row_start=row * size
        )
        self._parent[tokens] = tokens[joined_to]  # the holes of every member follow its group
        merged_tokens = tokens[rep]
        shells, holes, owner = _split_shells(merged)
        self._store_holes(holes, merged_tokens[owner])
        if bottom is None:
            waiting = np.zeros(len(shells), np.bool_)
        else:
            on_bottom = shells.xy[:, 1] == bottom
            waiting = (
                np.logical_or.reduceat(on_bottom, shells.ring_offsets[:-1]) if len(shells) else on_bottom
            )
        self._pending = _rings.take(shells, waiting)
        self._pending_token = merged_tokens[waiting]
        return self._with_holes(_rings.take(shells, ~waiting), merged_tokens[~waiting])

    def _store_holes(self, holes: Polygons, tokens: IntArray) -> None:
        if len(holes):  # without saddle flags: a hole is never joined again
            self._holes.append(_HoleChunk(_rings.without_saddle(holes), tokens))

    def _root(self, tokens: IntArray) -> IntArray:
        """The token of the group each token now belongs to (halving the paths it walks)."""
        parent = self._parent
        current = tokens
        while True:
            up = parent[current]
            if np.array_equal(up, current):
                return current
            parent[current] = parent[up]
            current = up

    def _with_holes(self, shells: Polygons, tokens: IntArray) -> Polygons:
        """Complete polygons: each shell followed by the stored holes of its group."""
        if len(shells) == 0:
            return shells
        done = self._root(tokens)
        found: list[Polygons] = []
        owners: list[IntArray] = []
        kept: list[_HoleChunk] = []
        for chunk in self._holes:
            roots = self._root(chunk.tokens)
            mine = np.isin(roots, done)
            if mine.any():
                found.append(_rings.take(chunk.rings, mine))
                owners.append(roots[mine])
                chunk = _HoleChunk(_rings.take(chunk.rings, ~mine), chunk.tokens[~mine])
            if len(chunk.tokens):
                kept.append(chunk)
        self._holes = kept
        if not found:
            return shells
        by_root = np.argsort(done)
        hole_owner = by_root[np.searchsorted(done, np.concatenate(owners), sorter=by_root)]
        shells = _rings.without_saddle(shells)
        rings = _rings.concat([shells, *found])  # one ring per polygon: shells, then holes
        del found
        ring_owner = np.concatenate([np.arange(len(shells), dtype=np.int64), hole_owner])
        is_hole = np.arange(len(ring_owner)) >= len(shells)
        rings = _rings.take(rings, np.lexsort((is_hole, ring_owner)))  # no copy when in order
        return Polygons(
            xy=rings.xy,
            ring_offsets=rings.ring_offsets,
            poly_offsets=_rings.offsets(np.bincount(ring_owner, minlength=len(shells)).astype(np.int64)),
            classes=shells.classes,
            saddle=shells.saddle,
        )

    def _online(
        self,
        polys: Polygons,
        verts: IntArray,
        ring_starts: IntArray,
        *,
        n_old: int,
        top: int | None,
        row_start: int,
    ) -> IntArray:
        """Positions in ``verts`` whose segment lies on a line this row closes: the line ``top``,
        or, for the row's new pieces, a column line below ``row_start``. Read a million vertices
        at a time, so a long pending shell costs no per-vertex temporaries of its own size."""
        found: list[IntArray] = [np.zeros(0, np.int64)]
        for s0, s1 in _rings.ring_chunks(ring_starts):
            lo, hi = int(ring_starts[s0]), int(ring_starts[s1])
            local = ring_starts[s0 : s1 + 1] - lo
            here = verts[lo:hi]
            there = here[_rings.next_index(local)]
            x0, y0 = polys.xy[here, 0], polys.xy[here, 1]
            x1, y1 = polys.xy[there, 0], polys.xy[there, 1]
            new = np.repeat(np.arange(s0, s1, dtype=np.int64), np.diff(local)) >= n_old
            on = (x0 == x1) & new & (np.minimum(y0, y1) >= row_start) & np.isin(x0, self._col_lines)
            if top is not None:
                on |= (y0 == y1) & (y0 == top)
            found.append(lo + np.flatnonzero(on))
        return np.concatenate(found)

    def _join(
        self, polys: Polygons, *, n_old: int, top: int | None, row_start: int
    ) -> tuple[Polygons, IntArray, IntArray]:
        """Join the pieces of ``polys`` across line ``top`` and the column lines of this row.

        Returns:
            The polygons after the join; for each, the index of a piece it came from; and for
            each piece, the index of the piece that stands for its group.
        """
        identity = np.arange(len(polys), dtype=np.int64)
        unchanged = (polys, identity, identity)
        if len(polys) == 0:
            return unchanged
        width = np.int64(self.grid.width + 1)
        classes, cls_idx = np.unique(polys.classes, return_inverse=True)
        n_cls = np.int64(len(classes))
        shells = polys.shell_index
        verts = _rings.ranges(polys.ring_offsets, shells)
        ring_starts = _rings.offsets(np.diff(polys.ring_offsets)[shells])
        online = self._online(polys, verts, ring_starts, n_old=n_old, top=top, row_start=row_start)
        if len(online) == 0:
            return unchanged
        piece_of = np.searchsorted(ring_starts, online, side="right") - 1
        last = online + 1 == ring_starts[piece_of + 1]
        nxt = verts[np.where(last, ring_starts[piece_of], online + 1)]
        x0, y0 = polys.xy[verts[online], 0].astype(np.int64), polys.xy[verts[online], 1].astype(np.int64)
        x1, y1 = polys.xy[nxt, 0].astype(np.int64), polys.xy[nxt, 1].astype(np.int64)
        # 1. unit steps of the on-line segments
        length = np.abs(x1 - x0) + np.abs(y1 - y0)
        unit_offs = _rings.offsets(length)
        seg = np.repeat(np.arange(len(online)), length)
        t = np.arange(int(unit_offs[-1]), dtype=np.int64) - unit_offs[seg]
        sx = np.sign(x1 - x0)[seg]
        sy = np.sign(y1 - y0)[seg]
        ux = x0[seg] + t * sx
        uy = y0[seg] + t * sy
        lo_x = np.minimum(ux, ux + sx)
        lo_y = np.minimum(uy, uy + sy)
        key = ((lo_y * width + lo_x) * 2 + (sy != 0)) * n_cls + cls_idx[piece_of[seg]]
        # 2. a step present twice (both ways, same class) is interior to the union
        order = np.argsort(key, kind="stable")
        twin = np.flatnonzero(key[order][1:] == key[order][:-1])
        if len(twin) == 0:
            return unchanged
        a, b = order[twin], order[twin + 1]
        cancelled = np.zeros(len(key), np.bool_)
        cancelled[a] = cancelled[b] = True
        pa, pb = piece_of[seg][a], piece_of[seg][b]
        n = len(polys)
        group = connected(n, pa, pb)
        # 3. chains of the shells that lost steps, linked into the rings of the union
        hit_piece = np.zeros(n, np.bool_)
        hit_piece[pa] = hit_piece[pb] = True
        new_xy, new_offsets, new_saddle, new_piece = stitch(
            polys,
            verts,
            ring_starts,
            online,
            nxt,
            unit_offs,
            cancelled,
            hit_piece,
            cls_idx,
            int(n_cls),
            width,
        )
        # 4. tidy the rings: straight runs through the old lines, and corners passed twice
        new_xy, new_offsets, kept = _rings.drop_collinear(new_xy, new_offsets)
        new_saddle = new_saddle[kept]
        on_line = np.isin(new_xy[:, 0], self._col_lines) | np.isin(new_xy[:, 1], self._row_lines)
        new_xy, new_offsets, source, kept = _rings.split_touching(new_xy, new_offsets, new_saddle | on_line)
        new_rings = Polygons(
            xy=new_xy,
            ring_offsets=new_offsets,
            poly_offsets=np.arange(len(new_offsets), dtype=np.int64),
            classes=polys.classes[new_piece[source]],
            saddle=new_saddle[kept],
        )
        joined, reps = _assemble(polys, hit_piece, group, new_rings, group[new_piece[source]])
        return joined, reps, group


def _assemble(
    polys: Polygons, hit_piece: BoolArray, group: IntArray, new_rings: Polygons, new_group: IntArray
) -> tuple[Polygons, IntArray]:
    """Untouched pieces as they were, then one polygon per joined group (shell, then holes).

    Returns:
        The polygons, and for each the index of a piece it came from (a group: its smallest).
    """
    hit = np.flatnonzero(hit_piece)
    hole_rings = _rings.ranges(polys.poly_offsets, hit)
    hole_rings = hole_rings[~np.isin(hole_rings, polys.shell_index[hit])]
    old_hole_group = group[np.searchsorted(polys.poly_offsets, hole_rings, side="right") - 1]
    old_holes = Polygons(
        xy=polys.xy[_rings.ranges(polys.ring_offsets, hole_rings)],
        ring_offsets=_rings.offsets(np.diff(polys.ring_offsets)[hole_rings]),
        poly_offsets=np.arange(len(hole_rings) + 1, dtype=np.int64),
        classes=polys.classes[np.searchsorted(polys.poly_offsets, hole_rings, side="right") - 1],
        saddle=polys.saddle[_rings.ranges(polys.ring_offsets, hole_rings)],
    )
    rings = _rings.concat([new_rings, old_holes])
    ring_group = np.concatenate([new_group, old_hole_group])
    is_hole = np.concatenate(
        [_rings.area2(new_rings.xy, new_rings.ring_offsets) < 0, np.ones(len(hole_rings), bool)]
    )
    order = np.lexsort((is_hole, ring_group))
    rings = _rings.take(rings, order)
    ring_group, is_hole = ring_group[order], is_hole[order]
    groups, first = np.unique(ring_group, return_index=True)
    shells_per_group = np.bincount(np.searchsorted(groups, ring_group[~is_hole]), minlength=len(groups))
    if not (shells_per_group == 1).all():  # pragma: no cover - would be a merge bug
        raise VectorizeError("merge: a joined group does not have exactly one shell")
    joined = Polygons(
        xy=rings.xy,
        ring_offsets=rings.ring_offsets,
        poly_offsets=np.append(first, len(ring_group)).astype(np.int64),
        classes=rings.classes[first],
        saddle=rings.saddle,
    )
    reps = np.concatenate([np.flatnonzero(~hit_piece), groups]).astype(np.int64)
    return _rings.concat([_rings.take(polys, ~hit_piece), joined]), reps


class _HoleChunk:
    """Holes set aside by one row, with the token of the group each belongs to."""

    def __init__(self, rings: Polygons, tokens: IntArray) -> None:
        self.rings = rings
        self.tokens = tokens


def _split_shells(polys: Polygons) -> tuple[Polygons, Polygons, IntArray]:
    """Shells (as one-ring polygons), the other rings (as one-ring polygons), and their owners."""
    if len(polys) == 0:
        return polys, polys, np.zeros(0, np.int64)
    n_rings = len(polys.ring_offsets) - 1
    shell = np.zeros(n_rings, np.bool_)
    shell[polys.shell_index] = True
    owner = np.repeat(np.arange(len(polys), dtype=np.int64), np.diff(polys.poly_offsets))
    as_rings = Polygons(
        xy=polys.xy,
        ring_offsets=polys.ring_offsets,
        poly_offsets=np.arange(n_rings + 1, dtype=np.int64),
        classes=polys.classes[owner],
        saddle=polys.saddle,
    )
    if shell.all():
        return as_rings, _rings.empty(), np.zeros(0, np.int64)
    return _rings.take(as_rings, shell), _rings.take(as_rings, ~shell), owner[~shell]


def merge_across_block_edges(rows: Iterable[Polygons], grid: BlockGrid) -> Iterator[Polygons]:
    """Stream the complete polygons out of the edge pieces of each row of blocks.

    Args:
        rows: for each block row, top to bottom, the ``edge`` pieces of all its blocks.
        grid: the grid the blocks come from.

    Yields:
        After each row, the groups that are complete.

    Raises:
        VectorizeError: when the number of rows does not match the grid.
    """
    merger = EdgeMerger(grid)
    for pieces in rows:
        yield merger.add_row(pieces)
    if merger.pending or merger.rows_seen != grid.n_rows:
        raise VectorizeError(f"merge: got {merger.rows_seen} block rows, the grid has {grid.n_rows}")
