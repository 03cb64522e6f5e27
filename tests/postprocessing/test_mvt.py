"""Vector tiles encoded with numpy, read back by GDAL's MVT reader: every polygon in every tile
it meets, holes kept, properties typed, rounding to the tile grid never leaving a polygon GDAL
cannot read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely

from postprocessing.mvt import (
    EXTENT,
    LevelEncoder,
    _commands,
    _grid_rings,
    _shapes,
    _valid_on_grid,
    tile_ids,
    varints,
    zigzag,
)
from postprocessing.pmtiles import write_archive

ZOOM = 12
#: a tile's side at ZOOM, in web mercator metres; tile (2048, 2048) starts at (0, 0), going south
TILE = 2 * np.pi * 6378137.0 / 2**ZOOM
UNIT = TILE / EXTENT


def test_varints_and_zigzag_are_protobufs() -> None:
    data, sizes = varints(np.array([0, 1, 127, 128, 300, 2**35], np.uint64))
    assert data.tobytes() == bytes([0, 1, 0x7F, 0x80, 1, 0xAC, 2, 0x80, 0x80, 0x80, 0x80, 0x80, 1])
    assert sizes.tolist() == [1, 1, 1, 2, 2, 6]
    assert zigzag(np.array([0, -1, 1, -2, 2, -(2**40)])).tolist() == [0, 1, 2, 3, 4, 2**41 - 1]


def test_tile_ids_follow_the_pmtiles_hilbert_curve() -> None:
    assert tile_ids(0, np.array([0]), np.array([0])).tolist() == [0]
    assert tile_ids(1, np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0])).tolist() == [1, 2, 3, 4]
    every = tile_ids(3, *np.divmod(np.arange(64), 8))
    assert sorted(every.tolist()) == list(range(21, 85))  # after the 1 + 4 + 16 tiles above


def _read(encoder: LevelEncoder, tmp_path: Path) -> object:
    target = tmp_path / "t.pmtiles"
    meta = {
        "name": "t",
        "minzoom": str(ZOOM),
        "maxzoom": str(ZOOM),
        "vector_layers": [
            {
                "id": "predictions",
                "minzoom": ZOOM,
                "maxzoom": ZOOM,
                "fields": {
                    "class": "Number",
                    "class_name": "String",
                    "area": "Number",
                    "feature_id": "Number",
                },
            }
        ],
    }
    write_archive(target, list(encoder.tiles()), metadata=meta, zooms=(ZOOM, ZOOM), bounds=(-1, -1, 1, 1))
    return pyogrio.read_dataframe(target, ZOOM_LEVEL=str(ZOOM)).to_crs(3857)


def test_polygons_reach_every_tile_they_meet_with_holes_and_properties(tmp_path: Path) -> None:
    square = shapely.box(1000, -3000, 3000, -1000)
    holed = shapely.Polygon(
        [(4000, -8000), (8000, -8000), (8000, -4000), (4000, -4000)],
        [[(5000, -7000), (7000, -7000), (7000, -5000), (5000, -5000)]],
    )
    corner = shapely.box(TILE - 500, -TILE - 700, TILE + 900, -TILE + 600)  # on four tiles' corner
    pair = shapely.MultiPolygon([shapely.box(200, -600, 400, -400), shapely.box(600, -600, 800, -400)])
    geoms = np.array([square, holed, corner, pair], object)
    encoder = LevelEncoder(ZOOM, "predictions")
    encoder.add(
        geoms,
        {
            "class": np.array([1, 2, 1, -3]),
            "class_name": np.array(["roof", "tent", "roof", "x"], object),
            "area": np.array([4e6, 1.2e7, 0.1, 2.5]),
            "feature_id": np.arange(4),
        },
    )
    read = _read(encoder, tmp_path)
    # GDAL cuts each tile's features to the tile: the corner square comes back in four pieces
    assert sorted(read["feature_id"].tolist()) == [0, 1, 2, 2, 2, 2, 3]
    for fid, original in enumerate(geoms):
        back = shapely.union_all(read.loc[read["feature_id"] == fid].geometry.values)
        # vertices on the tile grid: each moves at most half a unit along each axis
        assert shapely.hausdorff_distance(back, original) <= UNIT
        assert back.area == pytest.approx(original.area, rel=0.01)
    holed_back = read.loc[read["feature_id"] == 1].geometry.iloc[0]
    assert len(holed_back.geoms) == 1 and len(holed_back.geoms[0].interiors) == 1  # wound as the spec says
    assert len(read.loc[read["feature_id"] == 3].geometry.iloc[0].geoms) == 2
    row = read.loc[read["feature_id"] == 1].iloc[0]
    assert (row["class"], row["class_name"], row["area"]) == (2, "tent", 1.2e7)
    assert read.loc[read["feature_id"] == 3, "class"].tolist() == [-3]
    assert read.loc[read["feature_id"] == 2, "area"].tolist() == [0.1] * 4  # one value, shared


def test_polygons_rounding_spoils_are_mended_or_dropped(tmp_path: Path) -> None:
    u = UNIT
    # two lobes joined by a neck a fifth of a unit wide: rounding folds its two edges onto one
    # line; a square a fifth of a unit a side rounds to nothing
    lobes = [(0, 0), (20, 0), (20, -10), (10.4, -10), (10.4, -20), (20, -20), (20, -30), (0, -30), (0, -20)]
    pinched = shapely.Polygon([(x * u, y * u) for x, y in [*lobes, (10.2, -20), (10.2, -10), (0, -10)]])
    shifted = shapely.affinity.translate(pinched, 100 * u, -100 * u)
    speck = shapely.box(300.4 * u, -300.4 * u, 300.6 * u, -300.2 * u)
    assert pinched.is_valid and speck.is_valid
    scale = EXTENT / TILE
    rounded = _shapes(_grid_rings(np.array([shifted]), scale, 0.0, 0.0), 1)  # tile (2048, 2048)
    assert not rounded[0].is_valid  # what the tile would hold unmended
    encoder = LevelEncoder(ZOOM, "predictions")
    encoder.add(
        np.array([shifted, speck], object),
        {
            "class": np.array([1, 1]),
            "class_name": np.array(["a", "a"], object),
            "area": np.zeros(2),
            "feature_id": np.arange(2),
        },
    )
    read = _read(encoder, tmp_path)
    assert read["feature_id"].tolist() == [0]  # the speck is gone
    back = read.geometry.iloc[0]
    assert back.is_valid and back.area == pytest.approx(shifted.area, rel=0.05)
    assert encoder.features == 2


def test_rounding_spoils_are_snap_rounded_and_a_shape_invalid_before_is_made_valid() -> None:
    u = UNIT
    # a valid polygon whose neck rounding folds (as above), and a bow tie, invalid before rounding
    lobes = [(0, 0), (20, 0), (20, -10), (10.4, -10), (10.4, -20), (20, -20), (20, -30), (0, -30), (0, -20)]
    pinched = shapely.Polygon([(x * u, y * u) for x, y in [*lobes, (10.2, -20), (10.2, -10), (0, -10)]])
    bow_tie = shapely.Polygon([(x * u, y * u) for x, y in [(40, 0), (70, -30), (70, 0), (40, -20)]])
    geoms = np.array([pinched, bow_tie], object)
    scale = EXTENT / TILE
    rounded = _shapes(_grid_rings(geoms, scale, 0.0, 0.0), 2)
    assert not shapely.is_valid(rounded).any()
    fixed = _valid_on_grid(geoms, rounded, scale, np.zeros(2), np.zeros(2))
    assert shapely.is_valid(fixed).all()
    # snap-rounded to whole units: the neck, a fifth of a unit wide, collapses and the two bars
    # (20 x 10 units each) stay, apart
    coords = shapely.get_coordinates(fixed[0])
    assert np.array_equal(coords, np.rint(coords))
    assert shapely.get_num_geometries(fixed[0]) == 2
    assert fixed[0].area == 400 and pinched.area / u**2 == pytest.approx(402)
    # the bow tie cannot be snap-rounded: made valid, both of its triangles kept (120 and 270
    # square units; they meet at (52, -12))
    assert shapely.get_num_geometries(fixed[1]) == 2
    assert fixed[1].area == pytest.approx(390)
    # as the tile takes them: every ring kept, each its whole area (twice it, signed)
    back = _grid_rings(fixed, 1.0, 0.0, 0.0)
    assert back.geom.tolist() == [0, 0, 1, 1] and np.abs(back.area2).tolist() == [400, 400, 540, 240]


def test_a_spoilt_polygon_that_snap_rounding_empties_is_dropped_after_one_it_mends() -> None:
    # on the tile's grid (scale 1): a bow tie, made valid, then a speck of cloud pixels whose
    # rounding pinches it and which snap-rounding empties; last of the batch, its part has no ring
    bow_tie = shapely.Polygon([(40, 0), (70, -30), (70, 0), (40, -20)])
    xs = [6.28, 6.28, 6.97, 6.97, 7.42, 7.42, 7.19, 7.19, 6.97, 6.97, 6.28, 6.28, 6.05, 6.05, 5.6, 5.6]
    xs += [5.37, 5.37]
    ys = [-8.58, -8.81, -8.81, -8.58, -8.58, -9.5, -9.5, -9.73, -9.73, -9.5, -9.5, -9.27, -9.27, -9.04]
    ys += [-9.04, -8.81, -8.81, -8.58]
    speck = shapely.Polygon(list(zip(xs, ys, strict=True)))
    assert speck.is_valid
    rounded = _shapes(_grid_rings(np.array([speck]), 1.0, 0.0, 0.0), 1)
    assert not rounded[0].is_valid
    assert _valid_on_grid(np.array([speck]), rounded, 1.0, np.zeros(1), np.zeros(1))[0].is_empty
    stream, lengths, kept = _commands(np.array([bow_tie, speck], object), 1.0, 0.0, 0.0)
    assert kept.tolist() == [True, False]
    assert len(lengths) == 1 and lengths[0] == len(stream) > 0


def test_a_level_whose_every_polygon_rounds_away_has_no_tile() -> None:
    u = UNIT
    sliver = shapely.box(1000 * u, -1000.3 * u, 3000 * u, -1000.1 * u)  # a fifth of a unit high
    encoder = LevelEncoder(ZOOM, "predictions")
    encoder.add(
        np.array([sliver], object),
        {
            "class": np.array([1]),
            "class_name": np.array(["a"], object),
            "area": np.ones(1),
            "feature_id": np.zeros(1, int),
        },
    )
    assert list(encoder.tiles()) == [] and encoder.features == 1
