"""Predictions as a PMTiles archive: zoom levels from the imagery's resolution, every feature
with its properties at the most detailed level, no archive without a feature."""

from __future__ import annotations

from pathlib import Path

import geopandas
import numpy as np
import pyogrio
import pytest
import shapely

from postprocessing.tiles import LAYER, densest_tile, item_class_names, write_prediction_tiles, zoom_range

CRS = "EPSG:32616"


def _parquet(path: Path, n: int) -> Path:
    x = 500000 + 90 * np.arange(n)
    frame = geopandas.GeoDataFrame(
        {
            "class": np.array([1, 2] * (n // 2) + [1] * (n % 2), "int64"),
            "area": np.full(n, 3600.0),
            "block_id": [f"r0c{i // 10}" for i in range(n)],
        },
        geometry=shapely.box(x, 3400000, x + 60, 3400060),
        crs=CRS,
    )
    frame.to_parquet(path)
    return path


def test_zoom_levels_follow_the_pixel_size() -> None:
    # 30 m pixels at 30.7° N are 34.9 m in web mercator: a tile unit of zoom 9 (19.1 m) is smaller
    landsat = zoom_range(CRS, (30, 0, 500000, 0, -30, 3400000), 100, 100)
    assert landsat == (6, 9)
    finer = zoom_range(CRS, (3, 0, 500000, 0, -3, 3400000), 100, 100, levels=2)
    assert finer == (11, 12)  # ten times finer: 3.3 levels deeper, rounded up from 8.1 + 3.3
    degrees = zoom_range("EPSG:4326", (0.00025, 0, 10, 0, -0.00025, 1), 10, 10)
    assert degrees[1] == 9  # 27.8 m at the equator, like the 30 m pixels above


def test_every_feature_reaches_the_most_detailed_tiles_with_its_properties(tmp_path: Path) -> None:
    target = tmp_path / "out" / "predictions.pmtiles"
    target.parent.mkdir()
    info = write_prediction_tiles(
        _parquet(tmp_path / "p.parquet", 25), target, crs=CRS, zooms=(10, 14), class_names={1: "cloud"}
    )
    assert info is not None and (info.min_zoom, info.max_zoom, info.features) == (10, 14, 25)
    assert target.read_bytes()[:8] == b"PMTiles\x03" and info.bytes == target.stat().st_size
    meta = pyogrio.read_info(target)
    assert (meta["layer_name"], meta["dataset_metadata"]["minzoom"], meta["dataset_metadata"]["maxzoom"]) == (
        LAYER,
        "10",
        "14",
    )
    read = pyogrio.read_dataframe(target)  # the most detailed level
    assert sorted(read["feature_id"]) == list(range(25))
    first = read.set_index("feature_id").loc[0]
    assert (first["class"], first["class_name"], first["block_id"]) == (1, "cloud", "r0c0")
    assert float(first["area"]) == 3600.0
    assert set(read.loc[read["class"] == 2, "class_name"]) == {"2"}  # no name given: the value
    assert not list(target.parent.glob(".*"))  # no temporary file left


def test_no_feature_leaves_no_archive_not_even_an_older_one(tmp_path: Path) -> None:
    target = tmp_path / "predictions.pmtiles"
    target.write_bytes(b"an older archive")
    assert write_prediction_tiles(_parquet(tmp_path / "e.parquet", 0), target, crs=CRS, zooms=(6, 9)) is None
    assert not target.exists()


def test_class_names_come_from_the_model_item() -> None:
    item = {
        "properties": {
            "mlm:output": [
                {"classification:classes": [{"value": 0, "name": "clear"}, {"value": 1, "name": "cloud"}]}
            ]
        }
    }
    assert item_class_names(item) == {0: "clear", 1: "cloud"}
    assert item_class_names(None) == {}


def test_dense_predictions_go_deeper_until_no_tile_is_too_full(tmp_path: Path) -> None:
    parquet = _parquet(tmp_path / "p.parquet", 25)  # a row of 25 squares, 90 m apart: 2.2 km
    assert [densest_tile(parquet, CRS, z) for z in (12, 13, 14, 15)] == [25, 25, 14, 12]
    target = tmp_path / "t.pmtiles"
    info = write_prediction_tiles(parquet, target, crs=CRS, zooms=(9, 12), max_tile_features=13)
    # z15 is the first level whose fullest tile holds at most 13: every level moves 3 deeper
    assert info is not None and (info.min_zoom, info.max_zoom) == (12, 15)
    assert set(pyogrio.read_dataframe(target)["feature_id"]) == set(range(25))  # some cut by tile edges


def test_overview_levels_draw_polygons_too_small_to_see_as_cells(tmp_path: Path) -> None:
    """The most detailed level holds every feature; a coarser one holds whole only those of at
    least 64 square tile units of its zoom (at 30.7° N: 67 m² at zoom 13, 270 m² at 12, 1,080 m²
    at 11, 4,320 m² at 10: none here); the smaller ones there are gathered by cell (the squares'
    areas are checked below, before the tiles round them to whole tile units)."""
    from postprocessing.tiles import overview_min_area

    n = 7
    x = 500000 + 90 * np.arange(n)
    x[6] = x[5] + 46
    sides = np.array([60.0, 5.0, 60.0, 5.0, 10.0, 40.0, 3.0])  # 3,600, 25, 100, 1,600 and 9 m²
    frame = geopandas.GeoDataFrame(
        {"class": [1, 1, 1, 2, 1, 1, 2], "area": sides**2, "block_id": [f"r0c{i}" for i in range(n)]},
        geometry=shapely.box(x, 3400000, x + sides, 3400000 + sides),
        crs=CRS,
    )
    parquet = tmp_path / "p.parquet"
    frame.to_parquet(parquet)
    target = tmp_path / "t.pmtiles"
    info = write_prediction_tiles(
        parquet, target, crs=CRS, zooms=(10, 14), class_names={1: "roof", 2: "tent"}
    )
    assert info is not None and (info.min_zoom, info.max_zoom, info.features) == (10, 14, n)
    deepest = pyogrio.read_dataframe(target, ZOOM_LEVEL="14")
    assert set(deepest["feature_id"]) == set(range(n)) and set(deepest["features"]) == {1}
    latitude = float(geopandas.GeoSeries(frame.geometry.centroid, crs=CRS).to_crs(4326).y.mean())
    whole_at: dict[int, set[int]] = {13: {0, 2, 4, 5}, 12: {0, 2, 5}, 11: {0, 2, 5}, 10: set()}
    for zoom, whole in whole_at.items():
        level = pyogrio.read_dataframe(target, ZOOM_LEVEL=str(zoom))
        big = frame["area"] >= overview_min_area(zoom, latitude)
        assert set(np.flatnonzero(big)) == whole  # the thresholds the docstring gives
        assert set(level.loc[level["feature_id"] >= 0, "feature_id"]) == whole
        cells = level.loc[level["feature_id"] < 0]
        # every small polygon is in one cell, its area counted once
        assert cells["features"].sum() == n - len(whole)
        assert np.isclose(cells["area"].sum(), frame.loc[~big, "area"].sum())
        assert set(cells["class_name"]) <= {"roof", "tent"}
    z13 = pyogrio.read_dataframe(target, ZOOM_LEVEL="13")
    cells = z13.loc[z13["feature_id"] < 0]
    [cell] = cells.loc[np.isclose(cells["area"], 9.0)].to_dict("records")
    assert len(cells) == 3  # the 25 m² squares and the 9 m² one, each alone in its cell
    assert (cell["features"], cell["area"], cell["class"], cell["class_name"]) == (1, 9.0, 2, "tent")
    assert not list(tmp_path.glob(".*"))  # no level's archive or database left


def test_a_cell_takes_the_class_most_of_its_polygons_have() -> None:
    from postprocessing.tiles import _cells

    cell_a, cell_b = 5 * (1 << 31) + 7, 6 * (1 << 31) + 7
    small = [
        (np.array([cell_a, cell_b, cell_a]), np.array([2, 3, 1]), np.array([1.0, 2.0, 4.0])),
        (np.array([cell_a, cell_b]), np.array([2, 1]), np.array([8.0, 16.0])),
    ]
    squares, batch = _cells(small, 11)
    assert batch["class"].tolist() == [2, 1]  # a: 2, 1, 2; b: a tie of 3 and 1, the lower value
    assert batch["features"].tolist() == [3, 2] and batch["area"].tolist() == [13.0, 18.0]
    assert batch["feature_id"].tolist() == [-1, -1]
    # squares of the summed area, stretched as web mercator stretches the ground at the cell
    side = 40075016.685578488 / 2**11 / 4096 * 16
    cy = 40075016.685578488 / 2 - 7.5 * side
    stretch = np.cosh(cy / (40075016.685578488 / (2 * np.pi)))
    assert np.allclose(shapely.area(squares), np.array([13.0, 18.0]) * stretch**2)
    centre = shapely.centroid(squares[0])  # at the centre of its cell (column 5, row 7)
    assert np.allclose([centre.x, centre.y], [5.5 * side - 40075016.685578488 / 2, cy])


def test_features_gathered_in_memory_give_the_archive_the_geoparquet_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gathered batch by batch as publishing writes them (batches other than the file's row
    groups), or past the memory limit read back from the file: the same bytes."""
    from postprocessing import tiles
    from postprocessing.tiles import TileFeatures

    parquet = tmp_path / "p.parquet"
    n = 30
    x = 500000 + 90 * np.arange(n)
    sides = 5.0 + 3 * (np.arange(n) % 7)
    geoms = shapely.box(x, 3400000, x + sides, 3400000 + 2 * sides)
    frame = geopandas.GeoDataFrame(
        {
            "class": np.arange(n) % 3,
            "area": sides * 2 * sides,
            "block_id": [f"r0c{i // 8}" for i in range(n)],
        },
        geometry=geoms,
        crs=CRS,
    )
    frame.to_parquet(parquet, row_group_size=11)
    archives = {}
    for name, limit in (("memory", 100), ("over the limit", 20)):
        gathered = TileFeatures(CRS, limit=limit)
        for start in (0, 4, 17):  # batches of 4, 13 and 13
            stop = {0: 4, 4: 17, 17: n}[start]
            part = frame.iloc[start:stop]
            gathered.add(
                part.geometry.values.to_numpy(),
                part["class"].to_numpy(),
                part["area"].to_numpy(),
                list(part["block_id"]),
            )
        assert gathered.kept == (limit >= n) and gathered.count == n
        target = tmp_path / f"{name}.pmtiles"
        with monkeypatch.context() as patch:
            if gathered.kept:  # the file's features are not read again
                patch.setattr(tiles, "_parquet_batches", None)
            write_prediction_tiles(parquet, target, crs=CRS, zooms=(10, 14), gathered=gathered)
        archives[name] = target.read_bytes()
    write_prediction_tiles(parquet, tmp_path / "file.pmtiles", crs=CRS, zooms=(10, 14))
    assert archives["memory"] == archives["over the limit"] == (tmp_path / "file.pmtiles").read_bytes()
    assert len(pyogrio.read_dataframe(tmp_path / "file.pmtiles", ZOOM_LEVEL="14")) == n
