"""PMTiles v3 archives: written from vector tiles (:func:`write_archive`) and read back.

:mod:`postprocessing.tiles` encodes the tiles of every zoom level (:mod:`postprocessing.mvt`)
and hands them here in tile-id order, so the tile data is clustered: a map's neighbouring
tiles lie close together in the file.

The format (https://github.com/protomaps/PMTiles/blob/main/spec/v3/spec.md): a 127-byte header,
a root directory, JSON metadata, leaf directories and tile data. A directory is a count and four
columns of varints (tile-id deltas, run lengths, lengths, offsets; an offset of 0 meaning "right
after the previous entry"), compressed as the header's ``internal_compression`` says.
"""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, BinaryIO

from geomlops.errors import GeomlopsError

#: the header's layout (little-endian)
_HEADER = struct.Struct("<7sB11Q6B4iB2i")
#: the first bytes a client reads: header and root directory together
_ROOT_BYTES = 16384
#: ``internal_compression`` values
_NONE, _GZIP = 1, 2
#: ``tile_type`` of Mapbox Vector Tiles
_MVT = 1


@dataclass(frozen=True)
class Entry:
    """One directory entry: ``run_length`` tiles from ``tile_id`` on share the bytes at
    ``offset`` (in the tile data, or in the leaf directories when ``run_length`` is 0)."""

    tile_id: int
    offset: int
    length: int
    run_length: int


@dataclass(frozen=True)
class Archive:
    """What :func:`read_archive` finds: the header's fields, the metadata and every tile entry."""

    path: Path
    header: dict[str, Any]
    metadata: dict[str, Any]
    entries: list[Entry]


_FIELDS = (
    "magic", "version", "root_offset", "root_length", "metadata_offset", "metadata_length",
    "leaf_offset", "leaf_length", "data_offset", "data_length", "addressed_tiles", "tile_entries",
    "tile_contents", "clustered", "internal_compression", "tile_compression", "tile_type", "min_zoom",
    "max_zoom", "min_lon_e7", "min_lat_e7", "max_lon_e7", "max_lat_e7", "center_zoom", "center_lon_e7",
    "center_lat_e7",
)  # fmt: skip


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _decompress(data: bytes, compression: int, path: Path) -> bytes:
    if compression == _GZIP:
        return gzip.decompress(data)
    if compression == _NONE:
        return data
    raise GeomlopsError(f"{path}: internal compression {compression} is not read here (gzip or none)")


def _compress(data: bytes, compression: int) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0) if compression == _GZIP else data


def _gzip(data: bytes) -> bytes:
    return _compress(data, _GZIP)


def _parse_directory(data: bytes) -> list[Entry]:
    n, pos = _varint(data, 0)
    columns: list[list[int]] = []
    for _ in range(4):
        column = []
        for _ in range(n):
            value, pos = _varint(data, pos)
            column.append(value)
        columns.append(column)
    deltas, runs, lengths, offsets = columns
    entries: list[Entry] = []
    tile_id = 0
    for i in range(n):
        tile_id += deltas[i]
        offset = entries[-1].offset + entries[-1].length if offsets[i] == 0 and i > 0 else offsets[i] - 1
        entries.append(Entry(tile_id, offset, lengths[i], runs[i]))
    return entries


def _serialize_directory(entries: Sequence[Entry], compression: int) -> bytes:
    out = bytearray()
    _put_varint(out, len(entries))
    last = 0
    for e in entries:
        _put_varint(out, e.tile_id - last)
        last = e.tile_id
    for e in entries:
        _put_varint(out, e.run_length)
    for e in entries:
        _put_varint(out, e.length)
    for i, e in enumerate(entries):
        follows = i > 0 and e.offset == entries[i - 1].offset + entries[i - 1].length
        _put_varint(out, 0 if follows else e.offset + 1)
    return _compress(bytes(out), compression)


def read_archive(path: Path) -> Archive:
    """The header, metadata and tile entries (leaf directories followed) of the archive at ``path``.

    Raises:
        GeomlopsError: not a PMTiles v3 archive, or compressed in a way not read here (named).
    """
    with path.open("rb") as f:
        head = f.read(_ROOT_BYTES)
        if len(head) < _HEADER.size or head[:7] != b"PMTiles" or head[7] != 3:
            raise GeomlopsError(f"{path}: not a PMTiles v3 archive")
        header = dict(zip(_FIELDS, _HEADER.unpack(head[: _HEADER.size]), strict=True))
        compression = header["internal_compression"]

        def section(offset: int, length: int) -> bytes:
            f.seek(offset)
            return f.read(length)

        metadata = json.loads(
            _decompress(section(header["metadata_offset"], header["metadata_length"]), compression, path)
            or b"{}"
        )
        entries: list[Entry] = []

        def walk(offset: int, length: int, leaf: bool) -> None:
            data = section(header["leaf_offset"] + offset if leaf else offset, length)
            for e in _parse_directory(_decompress(data, compression, path)):
                if e.run_length == 0:
                    walk(e.offset, e.length, True)
                else:
                    entries.append(e)

        walk(header["root_offset"], header["root_length"], False)
    return Archive(path, header, metadata, entries)


def _directories(entries: list[Entry], compression: int, room: int) -> tuple[bytes, bytes]:
    """The root directory and the leaf directories for ``entries``: the root alone while it fits
    in ``room`` bytes, else leaves of 4,096 entries (more a leaf until the root fits)."""
    root = _serialize_directory(entries, compression)
    if len(root) <= room:
        return root, b""
    size = 4096
    while True:
        leaves = bytearray()
        index: list[Entry] = []
        for start in range(0, len(entries), size):
            chunk = entries[start : start + size]
            data = _serialize_directory(chunk, compression)
            index.append(Entry(chunk[0].tile_id, len(leaves), len(data), 0))
            leaves += data
        root = _serialize_directory(index, compression)
        if len(root) <= room:
            return root, bytes(leaves)
        size *= 2


def write_archive(
    target: Path,
    tiles: Sequence[tuple[int, bytes]],
    *,
    metadata: dict[str, Any],
    zooms: tuple[int, int],
    bounds: tuple[float, float, float, float],
    center: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Write vector tiles (MVT) as the PMTiles archive ``target``: the tiles gzip-compressed,
    their data clustered (tiles given in increasing tile id), the directories and metadata
    gzip-compressed.

    Args:
        target: the archive to write (its tile data first goes to a file beside it).
        tiles: (tile id, uncompressed MVT bytes), tile ids increasing.
        metadata: the archive's JSON metadata.
        zooms: its lowest and highest zoom levels.
        bounds: west, south, east, north in degrees.
        center: longitude and latitude a map opens at (default: the middle of ``bounds``).

    Returns:
        The archive's header fields.

    Raises:
        GeomlopsError: the tile ids do not increase.
    """
    entries: list[Entry] = []
    data = target.with_name(target.name + ".data")
    ids, contents = zip(*tiles, strict=True) if tiles else ((), ())
    for before, after in pairwise(ids):
        if after <= before:
            raise GeomlopsError(f"{target}: tile {after} comes after tile {before}")
    try:
        # compressed in two threads (zlib works without Python's lock), written in order
        with data.open("wb") as out, ThreadPoolExecutor(max_workers=2) as pool:
            offset = 0
            for tile_id, packed in zip(ids, pool.map(_gzip, contents), strict=True):
                out.write(packed)
                entries.append(Entry(tile_id, offset, len(packed), 1))
                offset += len(packed)
        meta_bytes = _compress(json.dumps(metadata, separators=(",", ":")).encode(), _GZIP)
        root, leaves = _directories(entries, _GZIP, _ROOT_BYTES - _HEADER.size)
        west, south, east, north = bounds
        middle = center if center is not None else ((west + east) / 2, (south + north) / 2)
        header: dict[str, Any] = {
            "magic": b"PMTiles",
            "version": 3,
            "root_offset": _HEADER.size,
            "root_length": len(root),
            "metadata_offset": _HEADER.size + len(root),
            "metadata_length": len(meta_bytes),
            "leaf_offset": _HEADER.size + len(root) + len(meta_bytes),
            "leaf_length": len(leaves),
            "data_offset": _HEADER.size + len(root) + len(meta_bytes) + len(leaves),
            "data_length": offset,
            "addressed_tiles": len(entries),
            "tile_entries": len(entries),
            "tile_contents": len(entries),
            "clustered": 1,
            "internal_compression": _GZIP,
            "tile_compression": _GZIP,
            "tile_type": _MVT,
            "min_zoom": zooms[0],
            "max_zoom": zooms[1],
            "min_lon_e7": round(west * 1e7),
            "min_lat_e7": round(south * 1e7),
            "max_lon_e7": round(east * 1e7),
            "max_lat_e7": round(north * 1e7),
            "center_zoom": zooms[0],
            "center_lon_e7": round(middle[0] * 1e7),
            "center_lat_e7": round(middle[1] * 1e7),
        }
        with target.open("wb") as out, data.open("rb") as source:
            out.write(_HEADER.pack(*(header[k] for k in _FIELDS)))
            out.write(root)
            out.write(meta_bytes)
            out.write(leaves)
            _copy(source, out, offset)
    finally:
        data.unlink(missing_ok=True)
    return header


def _copy(source: BinaryIO, out: BinaryIO, length: int, chunk: int = 1 << 22) -> None:
    while length > 0:
        data = source.read(min(chunk, length))
        if not data:
            raise GeomlopsError("a PMTiles archive ends before its tile data does")
        out.write(data)
        length -= len(data)
