"""Mapbox Vector Tiles of polygons, encoded with numpy for every feature of a zoom level at once.

A tile is a protobuf message (https://github.com/mapbox/vector-tile-spec, version 2.1) whose
geometry is a stream of integer commands, and a protobuf message is a stream of varints with a
few fixed-width fields. So a zoom level's tiles are built as arrays, not feature by feature:

1. each polygon goes to every tile its bounding box meets, the tile widened by ``buffer`` tile
   units on every side (so an outline cut at the tile's edge is drawn outside what a map shows);
   one that reaches beyond that widened tile is clipped to it (GEOS, only for those);
2. coordinates are rounded to the tile's integer grid (``EXTENT`` units a side, y down), repeated
   points dropped, and rings left with fewer than three points or no area dropped (a hole with
   them; an exterior ring takes its holes along); exterior rings are turned to a positive area
   and holes to a negative one, as the specification defines them;
3. each ring becomes ``MoveTo``, ``LineTo`` (n - 1), ``ClosePath`` with zigzag-encoded deltas,
   and every command and parameter of the level is varint-encoded in one pass;
4. each tile's layer gets its features in the order they came (so the same features give the
   same bytes), a key table and a value table holding each value once.

Columns are typed by their numpy dtype: integers become ``sint_value``, floats
``double_value``, anything else ``string_value``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray

#: tile units per tile side
EXTENT = 4096
#: web mercator's equator length in metres (the side of the zoom-0 tile)
WORLD = 2 * np.pi * 6378137.0
#: tile units around a tile that its features still cover (their outlines are cut out of view)
BUFFER = 64

_I64 = NDArray[np.int64]
_U8 = NDArray[np.uint8]
_U64 = NDArray[np.uint64]

# protobuf keys: (field number << 3) | wire type (0: varint, 1: 64-bit, 2: length-delimited)
_TILE_LAYER = 0x1A  # Tile.layers = 3
_LAYER_VERSION = 0x78  # Layer.version = 15
_LAYER_NAME = 0x0A  # Layer.name = 1
_LAYER_FEATURE = 0x12  # Layer.features = 2
_LAYER_KEY = 0x1A  # Layer.keys = 3
_LAYER_VALUE = 0x22  # Layer.values = 4
_LAYER_EXTENT = 0x28  # Layer.extent = 5
_FEATURE_TAGS = 0x12  # Feature.tags = 2 (packed)
_FEATURE_TYPE = 0x18  # Feature.type = 3
_FEATURE_GEOMETRY = 0x22  # Feature.geometry = 4 (packed)
_POLYGON = 3
_VALUE_STRING = 0x0A  # Value.string_value = 1
_VALUE_DOUBLE = 0x19  # Value.double_value = 3
_VALUE_SINT = 0x30  # Value.sint_value = 6
_MOVE_TO, _LINE_TO, _CLOSE_PATH = 1, 2, 7


def zigzag(values: _I64) -> _U64:
    """Signed integers as protobuf's zigzag encoding writes them (0, -1, 1, -2 … → 0, 1, 2, 3 …)."""
    v = np.asarray(values, np.int64)
    return ((v << np.int64(1)) ^ (v >> np.int64(63))).astype(np.uint64)


def varint_sizes(values: NDArray[np.integer[Any]]) -> _I64:
    """How many bytes each value takes as a varint."""
    v = np.asarray(values, np.uint64)
    sizes = np.ones(len(v), np.int64)
    for k in range(1, 10):
        sizes += v >= np.uint64(1 << (7 * k))
    return sizes


def varints(values: _U64) -> tuple[_U8, _I64]:
    """``values`` written as consecutive varints, and the byte count of each."""
    v = np.array(values, np.uint64)
    sizes = varint_sizes(v)
    out = np.empty(int(sizes.sum()), np.uint8)
    starts = np.cumsum(sizes) - sizes
    idx = np.arange(len(v))
    for k in range(int(sizes.max()) if len(v) else 0):
        idx = idx[sizes[idx] > k]
        byte = (v[idx] & np.uint64(0x7F)).astype(np.uint8)
        byte[sizes[idx] > k + 1] |= 0x80
        out[starts[idx] + k] = byte
        v[idx] >>= np.uint64(7)
    return out, sizes


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tile_ids(zoom: int, x: _I64, y: _I64) -> _I64:
    """PMTiles tile ids (tiles of the levels above first, then Hilbert order) of tiles ``x``, ``y``."""
    x, y = np.array(x, np.int64), np.array(y, np.int64)
    acc = np.full(len(x), ((1 << (2 * zoom)) - 1) // 3, np.int64)
    for a in range(zoom - 1, -1, -1):
        s = np.int64(1 << a)
        rx, ry = (x & s) > 0, (y & s) > 0
        acc += ((3 * rx.astype(np.int64)) ^ ry.astype(np.int64)) << np.int64(2 * a)
        flip = ~ry & rx
        x = np.where(flip, s - 1 - x, x)
        y = np.where(flip, s - 1 - y, y)
        x, y = np.where(~ry, y, x), np.where(~ry, x, y)
    return acc


def _ranges(starts: _I64, lengths: _I64) -> _I64:
    """Indices ``starts[i] … starts[i] + lengths[i] - 1`` for every i, one after the other."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    out: _I64 = np.arange(total, dtype=np.int64) + shift
    return out


@dataclass
class _Pieces:
    """A level's features cut into tiles: each piece is one feature in one tile."""

    feature: list[_I64] = field(default_factory=list)  # the feature's row
    col: list[_I64] = field(default_factory=list)
    row: list[_I64] = field(default_factory=list)
    geometry: list[_U8] = field(default_factory=list)  # its command stream, varint-encoded
    length: list[_I64] = field(default_factory=list)  # bytes of each piece's geometry


class LevelEncoder:
    """The tiles of one zoom level, fed polygons batch by batch (:meth:`add`), built by
    :meth:`tiles` once every feature is in.

    Args:
        zoom: the zoom level (tile ``x``, ``y`` in ``0 … 2**zoom - 1``).
        layer: the layer's name in every tile.
        buffer: tile units around a tile that its features still cover.
    """

    def __init__(self, zoom: int, layer: str, buffer: int = BUFFER) -> None:
        self.zoom, self.layer, self.buffer = zoom, layer, buffer
        self._pieces = _Pieces()
        self._columns: dict[str, list[Any]] = {}
        self._rows = 0

    @property
    def features(self) -> int:
        """Features added (whether or not any of them is left in a tile)."""
        return self._rows

    def add(self, geometry: NDArray[np.object_], columns: Mapping[str, Any]) -> None:
        """Add polygons (shapely, in web mercator metres) with their properties (one array a
        column, one value a polygon)."""
        n = len(geometry)
        for name, values in columns.items():
            self._columns.setdefault(name, []).append(np.asarray(values))
        if n:
            geometry = np.asarray(geometry)
            self._cut(*apart_at_antimeridian(geometry, self._rows, shapely.bounds(geometry)))
        self._rows += n

    def _cut(self, geometry: NDArray[np.object_], rows: _I64, m: NDArray[np.float64]) -> None:
        # level units: x right and y down from the world's top left corner, EXTENT a tile
        scale = (1 << self.zoom) * EXTENT / WORLD
        shift = WORLD / 2 * scale
        b = np.stack(
            [
                m[:, 0] * scale + shift,
                shift - m[:, 3] * scale,
                m[:, 2] * scale + shift,
                shift - m[:, 1] * scale,
            ],
            axis=1,
        )
        pad = self.buffer
        c0, c1 = np.floor((b[:, 0] - pad) / EXTENT), np.floor((b[:, 2] + pad) / EXTENT)
        r0, r1 = np.floor((b[:, 1] - pad) / EXTENT), np.floor((b[:, 3] + pad) / EXTENT)
        last = (1 << self.zoom) - 1
        c0, c1 = np.clip(c0, 0, last).astype(np.int64), np.clip(c1, 0, last).astype(np.int64)
        r0, r1 = np.clip(r0, 0, last).astype(np.int64), np.clip(r1, 0, last).astype(np.int64)
        ncol = c1 - c0 + 1
        count = ncol * (r1 - r0 + 1)
        feature = np.repeat(np.arange(len(geometry)), count)
        k = np.arange(len(feature)) - np.repeat(np.cumsum(count) - count, count)
        col = c0[feature] + k % ncol[feature]
        row = r0[feature] + k // ncol[feature]
        lo_x, hi_x = col * EXTENT - pad, (col + 1) * EXTENT + pad
        lo_y, hi_y = row * EXTENT - pad, (row + 1) * EXTENT + pad
        fb = b[feature]
        beyond = (fb[:, 0] < lo_x) | (fb[:, 2] > hi_x) | (fb[:, 1] < lo_y) | (fb[:, 3] > hi_y)
        geoms = geometry[feature]
        if beyond.any():  # GEOS clips to one rectangle at a time (in metres): tile by tile
            cut = np.flatnonzero(beyond)
            tile = col[cut] * (last + 1) + row[cut]
            cut = cut[np.argsort(tile, kind="stable")]
            edges = np.flatnonzero(np.diff(np.sort(tile))) + 1
            for i in np.split(cut, edges):
                j = i[0]
                geoms[i] = shapely.clip_by_rect(
                    geoms[i],
                    (lo_x[j] - shift) / scale,
                    (shift - hi_y[j]) / scale,
                    (hi_x[j] - shift) / scale,
                    (shift - lo_y[j]) / scale,
                )
            geoms = _polygonal(geoms)
        keep = ~shapely.is_empty(geoms)
        geoms, feature, col, row = geoms[keep], feature[keep], col[keep], row[keep]
        if not len(geoms):
            return
        stream, lengths, kept = _commands(geoms, scale, shift - col * EXTENT, shift - row * EXTENT)
        if not kept.any():  # every piece rounded away
            return
        p = self._pieces
        p.feature.append(rows[feature[kept]])
        p.col.append(col[kept])
        p.row.append(row[kept])
        p.geometry.append(stream)
        p.length.append(lengths)

    def tiles(self) -> Iterator[tuple[int, bytes]]:
        """Each tile's id (PMTiles) and its uncompressed bytes, in tile-id order."""
        p = self._pieces
        if not p.feature:
            return
        feature = np.concatenate(p.feature)
        lengths = np.concatenate(p.length)
        geometry = np.concatenate(p.geometry)
        ids = tile_ids(self.zoom, np.concatenate(p.col), np.concatenate(p.row))
        order = np.argsort(ids, kind="stable")  # features in the order they came, within a tile
        ids, feature, geo_start, lengths = (
            ids[order],
            feature[order],
            (np.cumsum(lengths) - lengths)[order],
            lengths[order],
        )
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        tile_of = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(ids)]))
        names = list(self._columns)
        tables = [_ValueTable(np.concatenate(self._columns[name])[feature], tile_of) for name in names]
        # tags: key i, the value's index in the tile's table (after the tables of keys before i)
        tags = np.empty((len(ids), 2 * len(names)), np.uint64)
        before = np.zeros(len(starts), np.int64)
        for i, table in enumerate(tables):
            tags[:, 2 * i] = i
            tags[:, 2 * i + 1] = table.index + before[tile_of]
            before += table.per_tile
        tag_bytes, tag_sizes = varints(tags.ravel())
        tag_len = tag_sizes.reshape(len(ids), -1).sum(axis=1)
        body = 1 + varint_sizes(tag_len) + tag_len + 2 + 1 + varint_sizes(lengths) + lengths
        head = np.stack(
            [
                np.full(len(ids), _LAYER_FEATURE),
                body,
                np.full(len(ids), _FEATURE_TAGS),
                tag_len,
            ],
            axis=1,
        ).astype(np.uint64)
        mid = np.stack(
            [
                np.full(len(ids), _FEATURE_TYPE),
                np.full(len(ids), _POLYGON),
                np.full(len(ids), _FEATURE_GEOMETRY),
                lengths,
            ],
            axis=1,
        ).astype(np.uint64)
        head_bytes, head_sizes = varints(head.ravel())
        mid_bytes, mid_sizes = varints(mid.ravel())
        head_len = head_sizes.reshape(len(ids), -1).sum(axis=1)
        mid_len = mid_sizes.reshape(len(ids), -1).sum(axis=1)
        # every feature's bytes: head, tags, mid, geometry, one feature after the other
        parts = [
            (head_bytes, np.cumsum(head_len) - head_len, head_len),
            (tag_bytes, np.cumsum(tag_len) - tag_len, tag_len),
            (mid_bytes, np.cumsum(mid_len) - mid_len, mid_len),
            (geometry, geo_start, lengths),
        ]
        size = sum(part[2] for part in parts)
        out = np.empty(int(size.sum()), np.uint8)
        begins = np.cumsum(size) - size
        at = begins
        for source, start, length in parts:
            out[_ranges(at, length)] = source[_ranges(start, length)]
            at = at + length
        stops = np.r_[begins[starts[1:]], len(out)]
        keys = b"".join(bytes([_LAYER_KEY]) + _varint(len(n.encode())) + n.encode() for n in names)
        name = self.layer.encode()
        head_layer = bytes([_LAYER_VERSION, 2, _LAYER_NAME]) + _varint(len(name)) + name
        tail_layer = bytes([_LAYER_EXTENT]) + _varint(EXTENT)
        for t, start in enumerate(starts.tolist()):
            values = b"".join(table.values(t) for table in tables)
            features = out[int(begins[start]) : int(stops[t])].tobytes()
            layer = b"".join((head_layer, features, keys, values, tail_layer))
            yield int(ids[start]), bytes([_TILE_LAYER]) + _varint(len(layer)) + layer


class _ValueTable:
    """One column's values tile by tile: each distinct value of a tile once, as ``Value``
    messages, and each feature's index among its tile's values."""

    def __init__(self, values: NDArray[Any], tile_of: _I64) -> None:
        distinct, codes = np.unique(values, return_inverse=True)
        codes = codes.reshape(-1).astype(np.int64)
        self._blob, self._lengths = _value_messages(distinct)
        self._starts = np.cumsum(self._lengths) - self._lengths
        n = max(len(distinct), 1)
        pairs, index = np.unique(tile_of * n + codes, return_inverse=True)
        self.per_tile = np.bincount(pairs // n, minlength=int(tile_of.max()) + 1 if len(tile_of) else 0)
        first = np.cumsum(self.per_tile) - self.per_tile
        self.index = index.reshape(-1) - first[tile_of]
        self._codes = pairs % n
        self._first = first

    def values(self, tile: int) -> bytes:
        """The ``Value`` messages of a tile, in the order its features' indices count them."""
        start = int(self._first[tile])
        codes = self._codes[start : start + int(self.per_tile[tile])]
        return self._blob[_ranges(self._starts[codes], self._lengths[codes])].tobytes()


def _value_messages(distinct: NDArray[Any]) -> tuple[_U8, _I64]:
    """``Layer.values`` entries (key, length, ``Value``) for each value, one after the other,
    and the byte count of each."""
    n = len(distinct)
    if np.issubdtype(distinct.dtype, np.integer) or distinct.dtype == np.bool_:
        encoded = zigzag(distinct.astype(np.int64))
        sizes = varint_sizes(encoded)
        tokens = np.stack(
            [np.full(n, _LAYER_VALUE), 1 + sizes, np.full(n, _VALUE_SINT), encoded.astype(np.int64)], axis=1
        )
        blob, _ = varints(tokens.astype(np.uint64).ravel())
        return blob, 3 + sizes
    if np.issubdtype(distinct.dtype, np.floating):
        rows = np.empty((n, 11), np.uint8)
        rows[:, 0], rows[:, 1], rows[:, 2] = _LAYER_VALUE, 9, _VALUE_DOUBLE
        rows[:, 3:] = distinct.astype("<f8").view(np.uint8).reshape(n, 8)
        return rows.ravel(), np.full(n, 11, np.int64)
    messages = []
    for value in distinct.tolist():
        text = str(value).encode()
        inner = bytes([_VALUE_STRING]) + _varint(len(text)) + text
        messages.append(bytes([_LAYER_VALUE]) + _varint(len(inner)) + inner)
    blob = np.frombuffer(b"".join(messages), np.uint8)
    return blob, np.array([len(m) for m in messages], np.int64)


def apart_at_antimeridian(
    geometry: NDArray[np.object_], first_row: int, bounds: NDArray[np.float64]
) -> tuple[NDArray[np.object_], _I64, NDArray[np.float64]]:
    """The shapes, those cut at the antimeridian (wider than half the world: parts at both of
    its edges) in their parts, each with its feature's row: a part falls only in the tiles near
    its own edge, not in every tile of a row. (Where one tile holds both edges, zoom 0, it holds
    the feature's two parts as two features with the one ``feature_id``.) ``bounds``: the
    shapes' bounds, given back with the parts' where shapes were taken apart."""
    rows = np.arange(first_row, first_row + len(geometry), dtype=np.int64)
    wide = np.flatnonzero(bounds[:, 2] - bounds[:, 0] > WORLD / 2)
    if not len(wide):
        return geometry, rows, bounds
    counts = np.ones(len(geometry), np.int64)
    counts[wide] = shapely.get_num_geometries(geometry[wide])
    starts = np.cumsum(counts) - counts
    apart = np.empty(int(counts.sum()), object)
    narrow = np.ones(len(geometry), np.bool_)
    narrow[wide] = False
    apart[starts[narrow]] = geometry[narrow]
    apart[_ranges(starts[wide], counts[wide])] = shapely.get_parts(geometry[wide])
    return apart, np.repeat(rows, counts), shapely.bounds(apart)


def _polygonal(geoms: NDArray[np.object_]) -> NDArray[np.object_]:
    """The polygonal part of each geometry (a clip may leave lines or points along its edge)."""
    types = shapely.get_type_id(geoms)
    mixed = np.flatnonzero((types != 3) & (types != 6))
    for i in mixed.tolist():
        parts = shapely.get_parts(geoms[i])
        polygons = [g for g in parts if shapely.get_type_id(g) == 3 and not g.is_empty]
        geoms[i] = shapely.multipolygons(polygons) if polygons else shapely.Polygon()
    return geoms


@dataclass(frozen=True)
class _Rings:
    """Rings on a tile's integer grid: each ring's points (no closing point), the polygon it
    belongs to, whether it is an exterior ring, and twice its signed area."""

    x: _I64
    y: _I64
    ring: _I64  # of each point, 0 … rings - 1, rings one after the other
    geom: _I64  # of each ring, increasing
    exterior: NDArray[np.bool_]
    area2: NDArray[np.float64]

    @property
    def counts(self) -> _I64:
        return np.bincount(self.ring, minlength=len(self.geom))

    def take(self, rings: _I64) -> _Rings:
        """These rings, in this order."""
        counts = self.counts
        points = _ranges((np.cumsum(counts) - counts)[rings], counts[rings])
        ring = np.repeat(np.arange(len(rings)), counts[rings])
        return _Rings(
            self.x[points], self.y[points], ring, self.geom[rings], self.exterior[rings], self.area2[rings]
        )


def _grid_rings(geoms: NDArray[np.object_], scale: float, x0: Any, y0: Any) -> _Rings:
    """The rings of polygons rounded to the grid of their tile (``x * scale + x0``,
    ``y0 - y * scale``; ``x0``, ``y0`` one value or one a polygon): repeated points dropped,
    rings of fewer than three points or no area dropped, and a polygon part whose exterior ring
    is gone dropped with its holes."""
    coords, (ring_offsets, part_offsets, geom_offsets) = _ragged(geoms)
    n_rings = len(ring_offsets) - 1
    ring = np.repeat(np.arange(n_rings), np.diff(ring_offsets))
    part_of_ring = np.repeat(np.arange(len(part_offsets) - 1), np.diff(part_offsets))
    geom_of_part = np.repeat(np.arange(len(geom_offsets) - 1), np.diff(geom_offsets))
    geom_of_ring = geom_of_part[part_of_ring]
    exterior = np.zeros(n_rings, bool)
    exterior[part_offsets[:-1][np.diff(part_offsets) > 0]] = True
    owner = geom_of_ring[ring]
    x = np.rint(coords[:, 0] * scale + np.broadcast_to(x0, len(geoms))[owner]).astype(np.int64)
    y = np.rint(np.broadcast_to(y0, len(geoms))[owner] - coords[:, 1] * scale).astype(np.int64)
    keep = np.ones(len(x), bool)
    keep[ring_offsets[1:] - 1] = False  # the closing point: ClosePath stands for it
    x, y, ring = x[keep], y[keep], ring[keep]
    while len(x):  # repeated points, and a last point on the first, until none is left
        same_prev = np.r_[False, (x[1:] == x[:-1]) & (y[1:] == y[:-1]) & (ring[1:] == ring[:-1])]
        first_of_ring = np.r_[True, ring[1:] != ring[:-1]]
        last_of_ring = np.r_[ring[1:] != ring[:-1], True]
        start_index = np.maximum.accumulate(np.where(first_of_ring, np.arange(len(x)), 0))
        on_first = last_of_ring & ~first_of_ring & (x == x[start_index]) & (y == y[start_index])
        drop = same_prev | on_first
        if not drop.any():
            break
        x, y, ring = x[~drop], y[~drop], ring[~drop]
    counts = np.bincount(ring, minlength=n_rings)
    starts = np.cumsum(counts) - counts
    nxt = np.arange(len(x)) + 1
    last_of_ring = np.r_[ring[1:] != ring[:-1], True] if len(x) else np.zeros(0, bool)
    nxt[last_of_ring] = starts[ring[last_of_ring]]
    area2 = np.bincount(ring, weights=(x * y[nxt] - x[nxt] * y).astype(np.float64), minlength=n_rings)
    valid = (counts >= 3) & (area2 != 0)
    if n_rings:  # a part whose exterior ring is gone takes its holes along
        # (a part without rings, as an empty polygon snap-rounding left, owns none: its first
        # ring's index, past the last ring for the last part, is never read)
        first = np.minimum(part_offsets[:-1], n_rings - 1)
        valid &= valid[first][part_of_ring]
    every = _Rings(x, y, ring, geom_of_ring, exterior, area2.astype(np.float64))
    return every.take(np.flatnonzero(valid))


def _shapes(rings: _Rings, n: int) -> NDArray[np.object_]:
    """The ``n`` (multi)polygons the rings make (empty for a polygon without a ring), y up:
    :func:`_grid_rings` with scale 1 and origin 0 gives the rings back."""
    counts = rings.counts
    closing = np.cumsum(counts) - counts  # each ring's first point, repeated at its end
    at = np.cumsum(counts + 1) - 1
    coords = np.empty((len(rings.x) + len(counts), 2), np.float64)
    mask = np.ones(len(coords), bool)
    mask[at] = False
    coords[mask, 0], coords[mask, 1] = rings.x, -rings.y  # y up, as the metres were
    coords[at, 0], coords[at, 1] = rings.x[closing], -rings.y[closing]
    ring_offsets = np.r_[0, np.cumsum(counts + 1)]
    part_offsets = np.r_[np.flatnonzero(rings.exterior), len(counts)]
    geom_offsets = np.r_[0, np.cumsum(np.bincount(rings.geom[rings.exterior], minlength=n))]
    shapes: NDArray[np.object_] = shapely.from_ragged_array(
        shapely.GeometryType.MULTIPOLYGON, coords, (ring_offsets, part_offsets, geom_offsets)
    )
    return shapes


def _commands(
    geoms: NDArray[np.object_], scale: float, x0: Any, y0: Any
) -> tuple[_U8, _I64, NDArray[np.bool_]]:
    """Each polygon's command stream in its tile (web mercator ``x``, ``y`` at
    ``x * scale + x0``, ``y0 - y * scale`` on the tile's grid), varint-encoded one after the
    other.

    A polygon that rounding to the grid made invalid (an edge across another, a ring pinched)
    is rounded again by GEOS, keeping its topology (:func:`_valid_on_grid`, only those), so that
    readers which clip or measure it (GDAL, QGIS) can.

    Returns:
        The bytes, the byte count of each polygon's stream, and which of ``geoms`` kept a ring.
    """
    rings = _grid_rings(geoms, scale, x0, y0)
    shapes = _shapes(rings, len(geoms))
    bad = np.flatnonzero(~shapely.is_valid(shapes))
    if len(bad):
        fixed = _valid_on_grid(
            geoms[bad],
            shapes[bad],
            scale,
            np.broadcast_to(x0, len(geoms))[bad],
            np.broadcast_to(y0, len(geoms))[bad],
        )
        again = _grid_rings(fixed, 1.0, 0.0, 0.0)
        again = _Rings(again.x, again.y, again.ring, bad[again.geom], again.exterior, again.area2)
        good = np.flatnonzero(~np.isin(rings.geom, bad))
        both = _Rings(
            np.r_[rings.take(good).x, again.x],
            np.r_[rings.take(good).y, again.y],
            np.r_[rings.take(good).ring, again.ring + len(good)],
            np.r_[rings.geom[good], again.geom],
            np.r_[rings.exterior[good], again.exterior],
            np.r_[rings.area2[good], again.area2],
        )
        rings = both.take(np.argsort(both.geom, kind="stable"))
    return _encode(rings, len(geoms))


def _valid_on_grid(
    geoms: NDArray[np.object_], rounded: NDArray[np.object_], scale: float, x0: Any, y0: Any
) -> NDArray[np.object_]:
    """Valid polygons on the tile's grid (y up, as :func:`_shapes` gives them) for ``geoms``
    whose vertices, each rounded on its own, made the invalid ``rounded``.

    GEOS snap-rounds each shape to whole units (``set_precision``: edges are noded where they
    meet, so the shape keeps its topology and its area); that is about half the CPU time of
    making the rounded shape valid (``make_valid``, "structure"), which stays for a shape
    that was invalid before rounding and which snap-rounding cannot take.
    """
    counts = shapely.get_num_coordinates(geoms)
    dx, dy = np.repeat(x0, counts), np.repeat(y0, counts)

    def to_grid(xy: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.stack([xy[:, 0] * scale + dx, xy[:, 1] * scale - dy], axis=1)

    moved = shapely.transform(geoms, to_grid)
    fixed = np.empty(len(geoms), object)
    snap = shapely.is_valid(moved)
    try:
        fixed[snap] = shapely.set_precision(moved[snap], 1.0)
    except shapely.errors.GEOSException:  # not expected of valid shapes; then as below
        snap[:] = False
    fixed[~snap] = shapely.make_valid(rounded[~snap], method="structure", keep_collapsed=False)
    return _polygonal(fixed)


def _encode(rings: _Rings, n: int) -> tuple[_U8, _I64, NDArray[np.bool_]]:
    """The rings as command streams, exterior rings turned to a positive area and holes to a
    negative one (see :func:`_commands`)."""
    counts = rings.counts
    starts = np.cumsum(counts) - counts
    reverse = np.where(rings.exterior, rings.area2 < 0, rings.area2 > 0)
    ring = rings.ring
    pos = np.arange(len(ring)) - starts[ring]
    src = np.where(reverse[ring], starts[ring] + counts[ring] - 1 - pos, np.arange(len(ring)))
    x, y = rings.x[src], rings.y[src]
    owner = rings.geom[ring]
    point_geom_start = np.r_[True, owner[1:] != owner[:-1]] if len(x) else np.zeros(0, bool)
    dx = np.diff(x, prepend=0)
    dy = np.diff(y, prepend=0)
    dx[point_geom_start] = x[point_geom_start]
    dy[point_geom_start] = y[point_geom_start]
    # tokens of a ring of n points: MoveTo(1) dx dy, LineTo(n-1) dx dy …, ClosePath: 2n + 3
    per_ring = 2 * counts + 3
    ring_start = np.cumsum(per_ring) - per_ring
    tokens = np.empty(int(per_ring.sum()), np.uint64)
    tokens[ring_start] = (1 << 3) | _MOVE_TO
    tokens[ring_start + 3] = ((counts - 1) << 3) | _LINE_TO
    tokens[ring_start + per_ring - 1] = (1 << 3) | _CLOSE_PATH
    at = ring_start[ring] + 1 + 2 * pos + (pos > 0)
    tokens[at] = zigzag(dx)
    tokens[at + 1] = zigzag(dy)
    stream, sizes = varints(tokens)
    ring_bytes = np.add.reduceat(sizes, ring_start) if len(ring_start) else np.zeros(0, np.int64)
    geom_bytes = np.bincount(rings.geom, weights=ring_bytes, minlength=n).astype(np.int64)
    kept = geom_bytes > 0
    return stream, geom_bytes[kept], kept


def _ragged(geoms: NDArray[np.object_]) -> tuple[NDArray[np.float64], Sequence[_I64]]:
    """Coordinates and offsets (rings, parts, geometries) of polygons and multipolygons."""
    geom_type, coords, offsets = shapely.to_ragged_array(geoms)
    if geom_type == shapely.GeometryType.POLYGON:  # one part a polygon
        ring_offsets, part_offsets = offsets
        geom_offsets = np.arange(len(part_offsets), dtype=np.int64)
        return coords, (ring_offsets.astype(np.int64), part_offsets.astype(np.int64), geom_offsets)
    ring_offsets, part_offsets, geom_offsets = offsets
    return coords, (
        ring_offsets.astype(np.int64),
        part_offsets.astype(np.int64),
        geom_offsets.astype(np.int64),
    )
