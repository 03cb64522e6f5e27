"""Predictions that straddle 180° (Fiji's Taveuni, in UTM zone 60S) come out cut at the
antimeridian: in the GeoJSON (RFC 7946, 3.1.9), the vector tiles, and the item's bbox (5.2)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import Geod, Transformer

from postprocessing.antimeridian import bbox_across, cut_at_antimeridian
from postprocessing.mvt import WORLD
from postprocessing.pmtiles import read_archive
from steps.batch import plan_batch
from steps.predictions import Lineage, publish_predictions

CRS = "EPSG:32760"  # UTM zone 60 south: Fiji, both sides of 180°
LINEAGE = Lineage(model="buildings", model_version="1", run_id="0123456789abcdef")
#: 180°E, 16.8°S (Taveuni) in UTM 60S
X180, Y180 = Transformer.from_crs("EPSG:4326", CRS, always_xy=True).transform(180.0, -16.8)


def test_a_polygon_across_180_is_cut_into_two_parts_and_others_are_untouched() -> None:
    to_wgs84 = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    square = shapely.box(X180 - 500, Y180 - 500, X180 + 500, Y180 + 500)
    holed = square.difference(shapely.box(X180 - 100, Y180 - 100, X180 + 100, Y180 + 100))
    west_of_it = shapely.box(X180 - 5000, Y180, X180 - 4000, Y180 + 1000)

    def lonlat(g: shapely.Geometry) -> shapely.Geometry:
        return shapely.transform(g, lambda xy: np.column_stack(to_wgs84.transform(xy[:, 0], xy[:, 1])))

    wrapped = np.array([lonlat(g) for g in (square, holed, west_of_it)], object)
    assert shapely.bounds(wrapped[0])[2] - shapely.bounds(wrapped[0])[0] > 359  # a band round the world

    out = cut_at_antimeridian(wrapped)
    geod = Geod(ellps="WGS84")
    for cut, planar in zip(out[:2], (square, holed), strict=True):
        assert cut.geom_type == "MultiPolygon" and cut.is_valid
        east, west = sorted(cut.geoms, key=lambda p: -p.bounds[0])
        assert east.bounds[0] > 179.99 and east.bounds[2] == 180.0
        assert west.bounds[0] == -180.0 and west.bounds[2] < -179.99
        # the parts hold the whole polygon: their geodesic area is its area (UTM's scale aside)
        area = sum(abs(geod.geometry_area_perimeter(p)[0]) for p in cut.geoms)
        assert area == pytest.approx(planar.area, rel=2e-3)
    assert sum(len(p.interiors) for p in out[1].geoms) == 0  # the hole straddles 180° too: cut open
    assert out[2] is wrapped[2]  # not across: the same object

    # longitudes past 180° (geographic imagery east of it) are brought back the same way
    past = cut_at_antimeridian(np.array([shapely.box(179.5, -17, 180.5, -16)], object))[0]
    assert sorted(p.bounds for p in past.geoms) == [
        (-180.0, -17.0, -179.5, -16.0),
        (179.5, -17.0, 180.0, -16.0),
    ]
    assert bbox_across(past) == [179.5, -17.0, -179.5, -16.0]  # west > east, as RFC 7946 writes it
    assert bbox_across(shapely.box(10, 0, 11, 1)) == [10.0, 0.0, 11.0, 1.0]

    # in web mercator metres, the period is the world's width
    mercator = cut_at_antimeridian(
        np.array([shapely.box(WORLD / 2 - 10, 0, WORLD / 2 + 10, 5)], object), WORLD
    )[0]
    assert sorted(round(p.bounds[0]) for p in mercator.geoms) == [round(-WORLD / 2), round(WORLD / 2 - 10)]


def test_wide_shapes_that_do_not_cross_are_untouched_and_a_folded_one_is_cut() -> None:
    world = shapely.box(-180, -10, 180, 10)  # every longitude: its edges along ±180° are no jump
    ring = shapely.Polygon([(-100, 89.98), (0, 89.98), (100, 89.98), (100, 89.99), (0, 89.99), (-100, 89.99)])
    across_greenwich = shapely.box(-170, -10, 170, 10)
    shapes = np.array([world, ring, across_greenwich], object)
    assert all(a is b for a, b in zip(cut_at_antimeridian(shapes), shapes, strict=True))
    # a bow tie across 180° (invalid after reprojection): cut, not a GEOS error
    bow = shapely.Polygon([(179.9, 0), (-179.9, 1), (-179.9, 0), (179.9, 1)])
    cut = cut_at_antimeridian(np.array([bow], object))[0]
    assert cut.is_valid and not cut.is_empty
    assert all(-180 <= x <= -179.9 or 179.9 <= x <= 180 for x in shapely.get_coordinates(cut)[:, 0])


def test_predictions_over_taveuni_are_cut_in_geojson_tiles_and_item(tmp_path: Path) -> None:
    # 60 x 40 px of 30 m, 180° through the middle; one region across it, one beside it
    transform = Affine(30.0, 0.0, X180 - 900.0, 0.0, -30.0, Y180 + 600.0)
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:40] = 1  # across 180° (column 30)
    mask[5:8, 2:6] = 1  # west of it
    profile = {
        "driver": "GTiff",
        "height": 40,
        "width": 60,
        "dtype": "uint8",
        "crs": CRS,
        "transform": transform,
    }
    with rasterio.open(tmp_path / "image.tif", "w", count=3, **profile) as dst:
        dst.write(np.full((3, 40, 60), 100, np.uint8))
    with rasterio.open(tmp_path / "mask.tif", "w", count=1, nodata=255, **profile) as dst:
        dst.write(mask[None])
    plan = plan_batch(str(tmp_path / "image.tif"), None, block_size=32, group_size=4)
    out = tmp_path / "out"
    out.mkdir()
    catalog = tmp_path / "catalog" / "catalog.json"
    publish_predictions(
        tmp_path / "mask.tif",
        out,
        plan,
        LINEAGE,
        area="taveuni",
        catalog=str(catalog),
        scheduler="synchronous",
    )

    features = json.loads((out / "predictions.geojson").read_text())["features"]
    by_area = {f["properties"]["area"]: f["geometry"] for f in features}
    across, beside = by_area[20 * 20 * 900.0], by_area[3 * 4 * 900.0]
    assert across["type"] == "MultiPolygon" and len(across["coordinates"]) == 2
    lons = sorted({round(x, 6) for part in across["coordinates"] for ring in part for x, _ in ring})
    assert lons[0] == -180.0 and lons[-1] == 180.0  # cut at it, each part within 0.01° of it
    assert all(abs(abs(x) - 180) < 0.01 for x in lons)
    assert beside["type"] == "Polygon"
    assert all(179.9 < x < 180 for ring in beside["coordinates"] for x, _ in ring)

    # the tiles: near both edges of the world, not along a whole row of it
    archive = read_archive(out / "predictions.pmtiles")
    deepest = archive.header["max_zoom"]
    assert len(archive.entries) <= 4 * (deepest - archive.header["min_zoom"] + 1)
    assert abs(abs(archive.header["center_lon_e7"] / 1e7) - 180) < 0.01  # a map opens over Fiji
    assert abs(abs(float(archive.metadata["center"].split(",")[0])) - 180) < 0.01
    # the header's bounds span the world (a reader's tile requests stay within them); the
    # adjusted ones, as tippecanoe writes them, go east past 180° and hold the data only
    assert archive.header["min_lon_e7"] < -179.9e7 and archive.header["max_lon_e7"] > 179.9e7
    west, south, east, north = (float(v) for v in archive.metadata["antimeridian_adjusted_bounds"].split(","))
    assert 179.99 < west < 180 < east < 180.01 and south < -16.8 < north
    tiles = pyogrio.read_dataframe(out / "predictions.pmtiles", ZOOM_LEVEL=str(deepest))
    assert sorted(tiles["feature_id"].tolist()) == [0, 1, 1]  # the one across 180° in two tiles
    assert tiles.total_bounds[2] - tiles.total_bounds[0] > WORLD * 0.99  # at both edges ...
    widths = tiles.geometry.bounds["maxx"] - tiles.geometry.bounds["minx"]
    assert (widths < 2000).all()  # ... each piece narrow

    item = json.loads(
        (catalog.parent / "predictions" / "buildings-v1-taveuni" / "buildings-v1-taveuni.json").read_text()
    )
    west, south, east, north = item["bbox"]
    assert 179.99 < west < 180 and -180 < east < -179.99 and south < -16.8 < north
    assert item["geometry"]["type"] == "MultiPolygon"
    assert math.isclose(sum(1 for _ in item["geometry"]["coordinates"]), 2)


@pytest.mark.parametrize(
    ("lons", "adjusted"),
    [
        ((-1.0, 1.0), (-1.0, 1.1)),  # across Greenwich: the plain bounds
        ((170.0, -170.0), (170.0, 190.1)),  # Pacific islands 20° apart across 180°, not 340° apart
        ((-150.0, 0.0, 150.0), (0.0, 210.1)),  # the gap left out: 210° to 360°, wider than 150° to 210°
        ((-150.0, -30.0, 90.0), (-150.0, 90.1)),  # spread round the world: no narrower
    ],
)
def test_the_archive_bounds_go_east_past_180_only_where_that_is_narrower(
    tmp_path: Path, lons: tuple[float, ...], adjusted: tuple[float, float]
) -> None:
    import geopandas

    from postprocessing.tiles import write_prediction_tiles

    frame = geopandas.GeoDataFrame(
        {"class": [1] * len(lons), "area": [1e6] * len(lons), "block_id": ["r0c0"] * len(lons)},
        geometry=[shapely.box(x, -17.0, x + 0.1, -16.9) for x in lons],
        crs="EPSG:4326",
    )
    frame.to_parquet(tmp_path / "p.parquet")
    target = tmp_path / "p.pmtiles"
    write_prediction_tiles(tmp_path / "p.parquet", target, crs="EPSG:4326", zooms=(4, 6))
    metadata = read_archive(target).metadata
    west, south, east, north = (float(v) for v in metadata["antimeridian_adjusted_bounds"].split(","))
    assert (west, east) == pytest.approx(adjusted, abs=1e-6)
    assert (south, north) == pytest.approx((-17.0, -16.9), abs=1e-6)
    centre = float(metadata["center"].split(",")[0])
    middle = (west + east) / 2
    assert centre == pytest.approx(middle - 360 if middle > 180 else middle, abs=1e-6)
