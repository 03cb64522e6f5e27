"""PMTiles v3 archives: their directories read, and archives of distinct zoom levels joined.

GDAL's PMTiles driver writes an archive in one pass over one layer, the same features at every
zoom level. :mod:`postprocessing.tiles` writes each zoom level as its own archive (the coarser
ones from fewer features) and :func:`join_levels` joins them into one: tile data copied whole,
in tile-id order (so the result stays clustered), the directory rewritten, the metadata of the
most detailed level kept with the zoom range widened. Nothing is re-encoded.

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
from dataclasses import dataclass, replace
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


def join_levels(parts: Sequence[Path], target: Path) -> dict[str, Any]:
    """Join archives of distinct zoom levels into one archive at ``target``, with the most
    detailed part's metadata, its ``minzoom``/``maxzoom`` (and its layers') widened.

    Args:
        parts: the archives, each of its own zoom levels (their tile ids never overlap).
        target: the archive to write.

    Returns:
        The joined archive's header fields.

    Raises:
        GeomlopsError: a part is not a PMTiles v3 archive, or the parts' tile types,
            compressions or zoom levels clash (named).
    """
    archives = sorted((read_archive(p) for p in parts), key=lambda a: a.header["min_zoom"])
    if not archives:
        raise GeomlopsError("no archive to join")
    for key in ("tile_type", "tile_compression", "internal_compression"):
        if len({a.header[key] for a in archives}) > 1:
            raise GeomlopsError(f"{', '.join(map(str, parts))}: the archives differ in {key}")
    for before, after in pairwise(archives):
        if before.header["max_zoom"] >= after.header["min_zoom"]:
            raise GeomlopsError(f"{', '.join(map(str, parts))}: the archives' zoom levels overlap")
    deepest = archives[-1]
    low, high = archives[0].header["min_zoom"], deepest.header["max_zoom"]
    entries: list[Entry] = []
    shift = 0
    for archive in archives:
        entries += [replace(e, offset=e.offset + shift) for e in archive.entries]
        shift += archive.header["data_length"]
    compression = deepest.header["internal_compression"]
    meta = dict(deepest.metadata) | {"minzoom": str(low), "maxzoom": str(high)}
    meta["vector_layers"] = [
        dict(layer) | {"minzoom": low, "maxzoom": high} for layer in meta.get("vector_layers") or []
    ]
    meta_bytes = _compress(json.dumps(meta, separators=(",", ":")).encode(), compression)
    root, leaves = _directories(entries, compression, _ROOT_BYTES - _HEADER.size)
    header = dict(deepest.header)
    header.update(
        root_offset=_HEADER.size,
        root_length=len(root),
        metadata_offset=_HEADER.size + len(root),
        metadata_length=len(meta_bytes),
    )
    header.update(leaf_offset=header["metadata_offset"] + len(meta_bytes), leaf_length=len(leaves))
    header.update(
        data_offset=header["leaf_offset"] + len(leaves),
        data_length=shift,
        addressed_tiles=sum(a.header["addressed_tiles"] for a in archives),
        tile_entries=len(entries),
        tile_contents=sum(a.header["tile_contents"] for a in archives),
        clustered=int(all(a.header["clustered"] for a in archives)),
        min_zoom=low,
        max_zoom=high,
        center_zoom=low,
        min_lon_e7=min(a.header["min_lon_e7"] for a in archives),
        min_lat_e7=min(a.header["min_lat_e7"] for a in archives),
        max_lon_e7=max(a.header["max_lon_e7"] for a in archives),
        max_lat_e7=max(a.header["max_lat_e7"] for a in archives),
    )
    with target.open("wb") as out:
        out.write(_HEADER.pack(*(header[k] for k in _FIELDS)))
        out.write(root)
        out.write(meta_bytes)
        out.write(leaves)
        for archive in archives:
            with archive.path.open("rb") as f:
                f.seek(archive.header["data_offset"])
                _copy(f, out, archive.header["data_length"])
    return header


def _copy(source: BinaryIO, out: BinaryIO, length: int, chunk: int = 1 << 22) -> None:
    while length > 0:
        data = source.read(min(chunk, length))
        if not data:
            raise GeomlopsError("a PMTiles archive ends before its tile data does")
        out.write(data)
        length -= len(data)
