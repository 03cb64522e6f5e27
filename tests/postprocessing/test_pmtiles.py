"""PMTiles archives written and read back: directories by the v3 layout (root alone, or root and
leaves), every tile's bytes where the directory says, tiles out of order refused."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

from geomlops.errors import GeomlopsError
from postprocessing.pmtiles import Entry, _parse_directory, _serialize_directory, read_archive, write_archive


def _tile_id(z: int, i: int) -> int:
    """The id of the ``i``-th tile (Hilbert order) of zoom ``z``: the tiles of the levels above
    come first."""
    return sum(4**k for k in range(z)) + i


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


def test_tiles_are_written_with_every_directory_a_reader_needs(tmp_path: Path) -> None:
    rng = random.Random(1)
    coarse = [(_tile_id(3, i), t) for i, t in enumerate([b"a" * 10, b"bb", b"bb", b"c" * 7])]
    spread = sorted(rng.sample(range(4**9), 20000))  # ids too scattered for the root alone
    many = [(_tile_id(9, i), rng.randbytes(rng.randint(1, 3000))) for i in spread]
    target = tmp_path / "t.pmtiles"
    meta = {"name": "t", "minzoom": "3", "maxzoom": "9", "vector_layers": [{"id": "predictions"}]}
    header = write_archive(target, coarse + many, metadata=meta, zooms=(3, 9), bounds=(-1.5, -0.5, 2.5, 0.5))
    assert (header["min_zoom"], header["max_zoom"], header["center_zoom"]) == (3, 9, 3)
    assert header["leaf_length"] > 0  # 20,004 entries: leaf directories under the root
    assert header["root_offset"] + header["root_length"] <= 16384
    assert header["addressed_tiles"] == 20004 and header["clustered"] == 1
    assert (header["min_lon_e7"], header["max_lon_e7"], header["center_lon_e7"]) == (
        -15000000,
        25000000,
        5000000,
    )
    assert (header["tile_type"], header["tile_compression"], header["internal_compression"]) == (1, 2, 2)
    archive = read_archive(target)
    assert archive.header == header and archive.metadata == meta
    assert {k: gzip.decompress(v) for k, v in _tiles(target).items()} == dict(coarse + many)
    assert [p.name for p in tmp_path.iterdir()] == ["t.pmtiles"]  # the tile data's file is gone


def test_tiles_out_of_order_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    target = tmp_path / "t.pmtiles"
    with pytest.raises(GeomlopsError, match="tile 5 comes after tile 21"):
        write_archive(target, [(21, b"x"), (5, b"y")], metadata={}, zooms=(2, 2), bounds=(0, 0, 1, 1))
    assert not list(tmp_path.iterdir())


def test_what_is_not_an_archive_is_named(tmp_path: Path) -> None:
    not_one = tmp_path / "x.pmtiles"
    not_one.write_bytes(b"MBTiles" + bytes(200))
    with pytest.raises(GeomlopsError, match=r"x\.pmtiles: not a PMTiles v3 archive"):
        read_archive(not_one)
