"""Feature areas in square metres: geodesic on a geographic CRS's ellipsoid, planar in a projected
one (converted from the CRS's unit), and the files say which (``area_method``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas
import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Geod

from postprocessing.finalize import area_method, geometry_areas, polygon_areas, to_geometries
from postprocessing.io import FeatureWriter
from postprocessing.kernel import mask_to_polygons

BANEPA_CHIP = "banepa/predict/oam/OAM-386697-220243-19.tif"
WGS84 = Geod(ellps="WGS84")


def _mask(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Speckle, a large block with a hole (a courtyard) and a class touching the border."""
    rng = np.random.default_rng(seed)
    mask = (rng.random((height, width)) > 0.99).astype(np.uint8)
    mask[40:140, 30:200] = 2
    mask[70:90, 60:100] = 0
    mask[-20:, -30:] = 3
    return mask


def _geod_areas(geoms: np.ndarray) -> np.ndarray:
    return np.array([abs(WGS84.geometry_area_perimeter(g)[0]) for g in geoms])


def _zone(lat0: float, lat1: float) -> float:
    """Area (m²) of the WGS84 ellipsoid between two parallels, per radian of longitude (closed form)."""
    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)
    e, b = math.sqrt(e2), a * (1 - f)

    def s(lat: float) -> float:
        x = math.sin(math.radians(lat))
        return b**2 / 2 * (x / (1 - e2 * x * x) + math.log((1 + e * x) / (1 - e * x)) / (2 * e))

    return s(lat1) - s(lat0)


def test_drone_chip_areas_are_geodesic_square_metres(shared_data: Path) -> None:
    with rasterio.open(shared_data / BANEPA_CHIP) as src:  # EPSG:4326, ~13 cm pixels, Nepal
        crs, transform, shape = src.crs.to_wkt(), src.transform, src.shape
    assert area_method(crs) == "geodesic"
    polys = mask_to_polygons(_mask(*shape), nodata=0).final
    areas = polygon_areas(polys, transform, crs)
    expected = _geod_areas(to_geometries(polys, transform))
    assert len(areas) > 1000  # speckle: single pixels and small clumps
    np.testing.assert_allclose(areas, expected, rtol=1e-7)
    # one pixel: 1.34e-6° of longitude x 1.19e-6° of latitude at 27.6° N, about 0.132 m x 0.132 m
    single = polygon_areas(mask_to_polygons(np.ones((1, 1), np.uint8)).final, transform, crs)
    assert single[0] == pytest.approx(0.01742, rel=1e-3)
    # what the areas were before: square degrees, eleven orders of magnitude off
    assert polygon_areas(polys, transform).max() < 1e-7 < areas.max()


def test_a_one_degree_quadrangle_equals_the_closed_form() -> None:
    polys = mask_to_polygons(np.ones((100, 100), np.uint8)).final
    [area] = polygon_areas(polys, Affine(0.01, 0, 10, 0, -0.01, 28), "EPSG:4326")
    assert area == pytest.approx(math.radians(1) * _zone(27, 28), rel=1e-11)
    # south-up rows, the southern hemisphere: the same measure
    [south] = polygon_areas(polys, Affine(0.01, 0, 10, 0, 0.01, -28), "EPSG:4326")
    assert south == pytest.approx(area, rel=1e-11)


def test_a_rotated_geographic_grid_is_measured_by_geod() -> None:
    polys = mask_to_polygons(_mask(200, 240), nodata=0).final
    transform = Affine(1e-5, 2e-6, 85.5, 2e-6, -1e-5, 27.6)
    areas = polygon_areas(polys, transform, "EPSG:4326")
    np.testing.assert_allclose(areas, _geod_areas(to_geometries(polys, transform)), rtol=1e-12)


def test_projected_areas_are_planar_and_converted_to_metres() -> None:
    polys = mask_to_polygons(_mask(200, 240), nodata=0).final
    transform = Affine(3.0, 0, 6_000_000, 0, -3.0, 2_000_000)  # 3 US survey feet
    pixels = polygon_areas(polys, Affine.identity())
    assert area_method("EPSG:2229") == "planar"
    foot = 1200 / 3937
    np.testing.assert_allclose(polygon_areas(polys, transform, "EPSG:2229"), pixels * (3 * foot) ** 2)
    np.testing.assert_array_equal(polygon_areas(polys, transform, "EPSG:32645"), pixels * 9.0)
    geoms = to_geometries(polys, transform)
    np.testing.assert_allclose(geometry_areas(geoms, "EPSG:2229"), pixels * (3 * foot) ** 2)


def test_holes_are_taken_out() -> None:
    transform = Affine(1e-4, 0, 85.5, 0, -1e-4, 27.6)

    def area(mask: np.ndarray) -> np.ndarray:
        return polygon_areas(mask_to_polygons(mask, nodata=0).final, transform, "EPSG:4326")

    solid, hole = np.zeros((50, 50), np.uint8), np.zeros((50, 50), np.uint8)
    solid[10:40, 10:40] = 1
    hole[20:30, 20:30] = 1
    [holed] = area(solid - hole)
    assert holed == pytest.approx(area(solid)[0] - area(hole)[0], rel=1e-12)


def test_files_say_how_areas_were_measured(tmp_path: Path, shared_data: Path) -> None:
    with rasterio.open(shared_data / BANEPA_CHIP) as src:
        crs, transform, shape = src.crs.to_wkt(), src.transform, src.shape
    polys = mask_to_polygons(_mask(*shape), nodata=0).final
    parquet, geojson = tmp_path / "b.parquet", tmp_path / "b.geojson"
    with FeatureWriter((parquet, geojson), crs, shared={"model": "buildings"}) as writer:
        writer.write_polygons(polys, transform)
    frame = geopandas.read_parquet(parquet)
    assert set(frame["area_method"]) == {"geodesic"}
    np.testing.assert_allclose(frame["area"], polygon_areas(polys, transform, crs))
    features = json.loads(geojson.read_text())["features"]
    assert features[0]["properties"]["area_method"] == "geodesic"
    assert [f["properties"]["area"] for f in features] == frame["area"].tolist()
