"""PMTiles archives of distinct zoom levels joined into one: directories read and written by the
v3 layout (root alone, or root and leaves), tile bytes copied whole, clashes refused."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from geomlops.errors import GeomlopsError
from postprocessing.pmtiles import (
    _FIELDS,
    _HEADER,
    Entry,
    _parse_directory,
    _serialize_directory,
    join_levels,
    read_archive,
)


def _tile_id(z: int, i: int) -> int:
    """The id of the ``i``-th tile (Hilbert order) of zoom ``z``: the tiles of the levels above
    come first."""
    return sum(4**k for k in range(z)) + i


def _archive(path: Path, zoom: int, tiles: list[bytes], compression: int = 2) -> Path:
    """A PMTiles v3 archive of one zoom level holding ``tiles`` (the same bytes twice in a row
    share one entry with a run length of 2; a tile seen before points at its first bytes)."""
    entries: list[Entry] = []
    data = bytearray()
    seen: dict[bytes, int] = {}
    for i, tile in enumerate(tiles):
        if (
            entries
            and tiles[i - 1] == tile
            and entries[-1].tile_id + entries[-1].run_length == _tile_id(zoom, i)
        ):
            last = entries[-1]
            entries[-1] = Entry(last.tile_id, last.offset, last.length, last.run_length + 1)
            continue
        if tile not in seen:
            seen[tile] = len(data)
            data += tile
        entries.append(Entry(_tile_id(zoom, i), seen[tile], len(tile), 1))
    root = _serialize_directory(entries, compression)
    layers = [{"id": "predictions", "minzoom": zoom, "maxzoom": zoom}]
    meta = json.dumps(
        {"name": f"z{zoom}", "minzoom": str(zoom), "maxzoom": str(zoom), "vector_layers": layers}
    ).encode()
    meta = gzip.compress(meta) if compression == 2 else meta
    header = dict.fromkeys(_FIELDS, 0) | {
        "magic": b"PMTiles", "version": 3, "root_offset": _HEADER.size, "root_length": len(root),
        "metadata_offset": _HEADER.size + len(root), "metadata_length": len(meta),
        "leaf_offset": _HEADER.size + len(root) + len(meta), "leaf_length": 0,
        "data_offset": _HEADER.size + len(root) + len(meta), "data_length": len(data),
        "addressed_tiles": len(tiles), "tile_entries": len(entries), "tile_contents": len(seen),
        "clustered": 1, "internal_compression": compression, "tile_compression": 2, "tile_type": 1,
        "min_zoom": zoom, "max_zoom": zoom, "min_lon_e7": -10 * zoom, "max_lon_e7": 10 * zoom,
        "min_lat_e7": -5, "max_lat_e7": 5, "center_zoom": zoom,
    }  # fmt: skip
    path.write_bytes(_HEADER.pack(*(header[k] for k in _FIELDS)) + root + meta + bytes(data))
    return path


def _tiles(path: Path) -> dict[int, bytes]:
    """Every addressed tile's bytes, by tile id, as a reader finds them."""
    archive = read_archive(path)
    blob = path.read_bytes()
    start = archive.header["data_offset"]
    out: dict[int, bytes] = {}
    for e in archive.entries:
        for k in range(e.run_length):
            out[e.tile_id + k] = blob[start + e.offset : start + e.offset + e.length]
    return out


@pytest.mark.parametrize("compression", [1, 2])
def test_a_directory_reads_back_as_written(compression: int) -> None:
    rng = random.Random(7)
    entries, tile_id, offset = [], 5, 0
    for _ in range(300):
        tile_id += rng.randint(1, 40)
        length = rng.randint(1, 5000)
        reuse = entries and rng.random() < 0.2  # a tile whose bytes came before: an explicit offset
        where, size = (entries[0].offset, entries[0].length) if reuse else (offset, length)
        entries.append(Entry(tile_id, where, size, rng.choice([1, 1, 1, 3])))
        offset += 0 if reuse else length
    data = _serialize_directory(entries, compression)
    raw = gzip.decompress(data) if compression == 2 else data
    assert _parse_directory(raw) == entries


def test_levels_join_into_one_archive_with_every_tile(tmp_path: Path) -> None:
    coarse = _archive(tmp_path / "z3.pmtiles", 3, [b"a" * 10, b"bb", b"bb", b"c" * 7])
    rng = random.Random(1)
    many = [rng.randbytes(rng.randint(1, 30)) for _ in range(20000)]  # too many for the root alone
    many[5] = many[2]  # the same bytes again, not next to each other
    deep = _archive(tmp_path / "z9.pmtiles", 9, many)
    target = tmp_path / "joined.pmtiles"
    header = join_levels([deep, coarse], target)  # in any order
    assert (header["min_zoom"], header["max_zoom"], header["center_zoom"]) == (3, 9, 3)
    assert header["leaf_length"] > 0  # 20,000 entries: leaf directories under the root
    assert header["root_offset"] + header["root_length"] <= 16384
    assert header["addressed_tiles"] == 20004 and header["clustered"] == 1
    assert (header["min_lon_e7"], header["max_lon_e7"]) == (-90, 90)
    expected = {_tile_id(3, i): t for i, t in enumerate([b"a" * 10, b"bb", b"bb", b"c" * 7])}
    expected |= {_tile_id(9, i): t for i, t in enumerate(many)}
    assert _tiles(target) == expected
    meta = read_archive(target).metadata
    assert meta["name"] == "z9" and (meta["minzoom"], meta["maxzoom"]) == ("3", "9")
    assert meta["vector_layers"] == [{"id": "predictions", "minzoom": 3, "maxzoom": 9}]


def test_archives_that_clash_are_refused_naming_them(tmp_path: Path) -> None:
    a = _archive(tmp_path / "a.pmtiles", 5, [b"x"])
    b = _archive(tmp_path / "b.pmtiles", 5, [b"y"])
    with pytest.raises(GeomlopsError, match="zoom levels overlap"):
        join_levels([a, b], tmp_path / "out.pmtiles")
    c = _archive(tmp_path / "c.pmtiles", 6, [b"y"], compression=1)
    with pytest.raises(GeomlopsError, match="differ in internal_compression"):
        join_levels([a, c], tmp_path / "out.pmtiles")
    not_one = tmp_path / "x.pmtiles"
    not_one.write_bytes(b"MBTiles" + bytes(200))
    with pytest.raises(GeomlopsError, match=r"x\.pmtiles: not a PMTiles v3 archive"):
        read_archive(not_one)
