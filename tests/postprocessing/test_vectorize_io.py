"""Outputs: GeoParquet keeps the raster CRS, GeoJSON is RFC 7946 WGS84, no half-written files."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from affine import Affine
from pyproj import Transformer
from vector_checks import CRS, TRANSFORM, reference, write_tif

from geomlops.errors import VectorizeError
from postprocessing.finalize import to_geometries
from postprocessing.io import FeatureWriter
from postprocessing.vectorize import vectorize_raster, vectorize_to_file


@pytest.fixture
def mask() -> np.ndarray:
    m = np.zeros((40, 60), np.uint8)
    m[2:30, 3:50] = 1
    m[10:20, 10:40] = 2  # a lake with an island of class 1 inside it
    m[12:15, 12:15] = 1
    m[35:40, 55:60] = 3  # in the corner
    return m


def test_geoparquet_keeps_the_raster_crs_and_equals_whole_raster(tmp_path: Path, mask: np.ndarray) -> None:
    tif = write_tif(tmp_path / "mask.tif", mask, nodata=0)
    out = tmp_path / "polys.parquet"
    count = vectorize_to_file(tif, out, block_size=7, scheduler="synchronous")
    frame = geopandas.read_parquet(out)
    assert count == len(frame) == 4
    assert frame.crs is not None and frame.crs.equals(CRS)
    assert list(frame.columns) == ["class", "area", "geometry", "area_method"]
    assert set(frame["area_method"]) == {"planar"}  # a projected CRS in metres
    assert set(frame.geom_type) == {"Polygon"}  # one polygon per feature
    ours = sorted(
        zip(
            frame["class"].tolist(),
            shapely.to_wkb(shapely.normalize(frame.geometry.values)).tolist(),
            strict=True,
        )
    )
    assert ours == reference(mask, 0, TRANSFORM)
    assert np.allclose(frame["area"], frame.geometry.area)
    parquet = pq.ParquetFile(out)
    geo = json.loads(parquet.schema_arrow.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["columns"]["geometry"]["geometry_types"] == ["Polygon"]
    assert geo["columns"]["geometry"]["bbox"] == list(frame.total_bounds)  # exactly the WKB's
    assert {parquet.metadata.row_group(0).column(c).compression for c in range(3)} == {"ZSTD"}


def test_geojson_is_wgs84_lon_lat(tmp_path: Path, mask: np.ndarray) -> None:
    tif = write_tif(tmp_path / "mask.tif", mask, nodata=0)
    out = tmp_path / "polys.geojson"
    vectorize_to_file(tif, out, block_size=16, scheduler="synchronous")
    doc = json.loads(out.read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    corner = next(f for f in doc["features"] if f["properties"]["class"] == 3)
    lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(*(TRANSFORM @ (55, 35)))
    ring = corner["geometry"]["coordinates"][0]
    assert min(abs(x - lon) + abs(y - lat) for x, y in ring) < 1e-9  # x is longitude, y latitude
    assert 14 < lon < 16 and 35 < lat < 37  # UTM 33N around (500 km, 4000 km)
    for feature in doc["features"]:
        assert feature["geometry"]["type"] == "Polygon"
        shell, *holes = (shapely.LinearRing(r) for r in feature["geometry"]["coordinates"])
        assert shell.is_ccw  # RFC 7946: exteriors counter-clockwise
        assert not any(hole.is_ccw for hole in holes)  # and holes clockwise
    assert sum(len(f["geometry"]["coordinates"]) - 1 for f in doc["features"]) == 2  # holes were checked
    frame = geopandas.read_file(out)
    assert frame.crs.equals("EPSG:4326") and len(frame) == 4


def test_vectorize_raster_returns_a_geodataframe(tmp_path: Path, mask: np.ndarray) -> None:
    tif = write_tif(tmp_path / "mask.tif", mask, nodata=0)
    frame = vectorize_raster(tif, block_size=9, scheduler="synchronous")
    assert frame.crs.equals(CRS) and len(frame) == 4
    assert sorted(frame["class"].tolist()) == [1, 1, 2, 3]
    with_background = vectorize_raster(tif, block_size=9, scheduler="synchronous", nodata=None)
    assert len(with_background) == 5 and frame.area.sum() < with_background.area.sum()


def test_min_area_applies_after_the_merge(tmp_path: Path) -> None:
    m = np.zeros((8, 8), np.uint8)
    m[2:6, 2:6] = 1  # 16 pixels, 4 in each of four blocks
    m[0, 7] = 2  # 1 pixel
    tif = write_tif(tmp_path / "mask.tif", m, nodata=0)
    pixel = abs(TRANSFORM.a * TRANSFORM.e)
    frame = vectorize_raster(tif, block_size=4, scheduler="synchronous", min_area=10 * pixel)
    assert frame["class"].tolist() == [1] and frame.area.iloc[0] == 16 * pixel
    out = tmp_path / "small.parquet"  # streamed to a file: the same filter
    assert vectorize_to_file(tif, out, block_size=4, scheduler="synchronous", min_area=10 * pixel) == 1
    assert geopandas.read_parquet(out)["class"].tolist() == [1]
    refused = tmp_path / "refused.parquet"
    with pytest.raises(VectorizeError, match="min_area: expected a non-negative area, got -1"):
        vectorize_to_file(tif, refused, block_size=4, scheduler="synchronous", min_area=-1.0)
    assert not refused.exists()


def test_simplify_keeps_the_coverage(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    m = np.kron(rng.integers(0, 3, (12, 12)), np.ones((4, 4), np.int64)).astype(np.uint8)
    m[rng.random(m.shape) < 0.05] = 1
    tif = write_tif(tmp_path / "mask.tif", m)
    plain = vectorize_raster(tif, block_size=10, scheduler="synchronous")
    simple = vectorize_raster(tif, block_size=10, scheduler="synchronous", simplify=1.5)
    assert len(simple) == len(plain)
    assert (
        shapely.get_num_coordinates(simple.geometry.values).sum()
        < shapely.get_num_coordinates(plain.geometry.values).sum()
    )
    assert shapely.is_valid(simple.geometry.values).all()
    assert shapely.coverage_is_valid(simple.geometry.values)  # no gaps opened, no overlaps
    assert np.array_equal(simple["area"], plain["area"])  # the pixel area, before simplification


def test_a_failing_write_leaves_no_file(
    tmp_path: Path, mask: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    tif = write_tif(tmp_path / "mask.tif", mask, nodata=0)
    out = tmp_path / "polys.parquet"
    calls = []
    original = FeatureWriter.write_encoded

    def fail_on_second(self: FeatureWriter, *args: object) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(FeatureWriter, "write_encoded", fail_on_second)
    with pytest.raises(OSError, match="disk full"):
        vectorize_to_file(tif, out, block_size=8, scheduler="synchronous")
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == [tif]  # neither the output nor a temporary file


def test_a_failing_block_leaves_no_file(tmp_path: Path, mask: np.ndarray) -> None:
    tif = write_tif(tmp_path / "mask.tif", mask, nodata=0)
    out = tmp_path / "polys.geojson"
    with pytest.raises(VectorizeError, match="scheduler 'fast'"):
        vectorize_to_file(tif, out, scheduler="fast")
    assert list(tmp_path.iterdir()) == [tif]


@pytest.mark.parametrize(
    ("name", "crs", "message"),
    [
        ("out.shp", CRS, "unknown output format"),
        ("out.geojson", None, "no CRS"),
        ("no/dir/out.parquet", CRS, "folder"),
    ],
)
def test_bad_outputs_are_refused(
    tmp_path: Path, mask: np.ndarray, name: str, crs: str | None, message: str
) -> None:
    tif = write_tif(tmp_path / "mask.tif", mask, crs=crs)
    with pytest.raises(VectorizeError, match=message):
        vectorize_to_file(tif, tmp_path / name)


def test_non_integer_rasters_are_refused(tmp_path: Path) -> None:
    tif = write_tif(tmp_path / "float.tif", np.zeros((4, 4), np.float32))
    with pytest.raises(VectorizeError, match="float32"):
        vectorize_raster(tif)


def test_a_raster_without_crs_is_refused_unless_pixel_coordinates_are_asked(
    tmp_path: Path, mask: np.ndarray
) -> None:
    tif = write_tif(tmp_path / "mask.tif", mask, nodata=0, crs=None)
    out = tmp_path / "polys.parquet"
    with pytest.raises(VectorizeError, match="no CRS, so its polygons would be in pixel coordinates"):
        vectorize_to_file(tif, out, scheduler="synchronous")
    assert list(tmp_path.iterdir()) == [tif]
    vectorize_to_file(tif, out, scheduler="synchronous", pixel_coordinates=True)
    assert geopandas.read_parquet(out).crs is None


def test_an_empty_output_is_valid_and_has_no_bbox(tmp_path: Path) -> None:
    tif = write_tif(tmp_path / "mask.tif", np.zeros((8, 8), np.uint8), nodata=0)
    assert vectorize_to_file(tif, tmp_path / "none.parquet", scheduler="synchronous") == 0
    assert vectorize_to_file(tif, tmp_path / "none.geojson", scheduler="synchronous") == 0
    geo = json.loads(pq.ParquetFile(tmp_path / "none.parquet").schema_arrow.metadata[b"geo"])
    assert (
        "bbox" not in geo["columns"]["geometry"]
        and len(geopandas.read_parquet(tmp_path / "none.parquet")) == 0
    )
    assert (tmp_path / "none.geojson").read_text() == '{"type":"FeatureCollection","features":[]}\n'


def test_rows_written_run_by_run_give_every_polygon_once_in_scan_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from postprocessing.finalize import canonical, in_scan_order, polygon_areas
    from postprocessing.vectorize import _write_rows, vectorize_array

    comb = np.zeros((30, 60), np.uint8)
    comb[:3, :] = 1
    comb[3:20, ::2] = 1  # most of the vertices are in this one polygon's teeth
    comb[25:27, 3:5] = comb[25:27, 30:33] = comb[22:24, 50:52] = 2  # and a few small ones
    polys = vectorize_array(comb, block_size=7)
    rows = [polys, in_scan_order(polys)]  # two "rows"
    sizes = np.diff(polys.ring_offsets[polys.poly_offsets])
    runs: list[int] = []
    original = FeatureWriter.write_encoded

    def count(self: FeatureWriter, features: object) -> None:
        runs.append(len(features.classes))  # type: ignore[attr-defined]
        original(self, features)  # type: ignore[arg-type]

    monkeypatch.setattr(FeatureWriter, "write_encoded", count)
    transform = Affine.identity()
    out = tmp_path / "runs.parquet"
    with FeatureWriter(out, None) as writer:
        # runs of at most one polygon larger than the rest: the largest stands alone, and the
        # rest of its row is copied out before it is written
        _write_rows(iter(rows), writer, 0.0, transform, run_vertices=int(sizes.max()) - 1)
    assert len(runs) > 2 and sum(runs) == 2 * len(polys)
    expected = canonical(in_scan_order(polys))
    table = geopandas.read_parquet(out)
    want = shapely.to_wkb(to_geometries(expected, transform)).tolist()
    assert table.geometry.to_wkb().tolist() == want + want  # same polygons, same order, both rows
    assert table["class"].tolist() == expected.classes.tolist() * 2
    assert table["area"].tolist() == polygon_areas(expected, transform).tolist() * 2


def test_wkb_runs_are_cut_below_the_binary_limit_and_a_too_large_polygon_is_refused(
    tmp_path: Path, mask: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import postprocessing.io as io
    from postprocessing.finalize import canonical, in_scan_order
    from postprocessing.vectorize import vectorize_array

    polys = canonical(in_scan_order(vectorize_array(mask, block_size=7)))
    transform = Affine.identity()
    sizes = np.diff(io.to_wkb(polys, transform)[0])
    tables: list[int] = []
    original = FeatureWriter._write_table

    def record(self: FeatureWriter, wkb: object, classes: np.ndarray, areas: np.ndarray) -> None:
        tables.append(len(classes))
        original(self, wkb, classes, areas)

    monkeypatch.setattr(FeatureWriter, "_write_table", record)
    monkeypatch.setattr(io, "_MAX_BINARY", int(sizes.max()))  # one polygon per run at most
    out = tmp_path / "cut.parquet"
    with FeatureWriter(out, None) as writer:
        writer.write_polygons(polys, transform)
    assert len(tables) > 1 and sum(tables) == len(polys)
    table = geopandas.read_parquet(out)
    assert table.geometry.to_wkb().tolist() == shapely.to_wkb(to_geometries(polys, transform)).tolist()

    monkeypatch.setattr(io, "_MAX_BINARY", int(sizes.max()) - 1)  # the largest cannot be a value
    refused = tmp_path / "refused.parquet"
    with (
        pytest.raises(VectorizeError, match="larger than one GeoParquet value"),
        FeatureWriter(refused, None) as w,
    ):
        w.write_polygons(polys, transform)
    assert not refused.exists() and list(tmp_path.glob(".refused*")) == []


def test_one_writer_for_both_formats_with_extra_properties(tmp_path: Path) -> None:
    parquet, geojson = tmp_path / "f.parquet", tmp_path / "f.geojson"
    geoms = np.array([shapely.box(500_000, 4_000_000, 500_010, 4_000_010)], dtype=object)
    with pytest.raises(VectorizeError, match="at most one target of each format"):
        FeatureWriter((parquet, tmp_path / "g.geoparquet"), CRS)
    with (
        pytest.raises(ValueError, match="block_id"),
        FeatureWriter((parquet, geojson), CRS, extra=("block_id",), shared={"model": "m"}) as writer,
    ):
        writer.write(geoms, np.ones(1, np.int64), shapely.area(geoms))  # no block id
    assert list(tmp_path.iterdir()) == []  # neither file, nor a temporary one
    with FeatureWriter((parquet, geojson), CRS, extra=("block_id",), shared={"model": "m"}) as writer:
        writer.write(geoms, np.ones(1, np.int64), shapely.area(geoms), block_id=["r0c0"])
    assert geopandas.read_parquet(parquet).drop(columns="geometry").to_dict("records") == [
        {"class": 1, "area": 100.0, "block_id": "r0c0", "area_method": "planar", "model": "m"}
    ]
    [feature] = json.loads(geojson.read_text())["features"]
    assert feature["properties"] == {
        "class": 1,
        "area": 100.0,
        "block_id": "r0c0",
        "area_method": "planar",
        "model": "m",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.geojson", "f.parquet"]


def test_geojson_string_properties_repeated_and_distinct_are_each_features_own(tmp_path: Path) -> None:
    """Each distinct text is encoded once and reused: every feature still gets its own value,
    quotes and non-ASCII text included, in both formats alike."""
    parquet, geojson = tmp_path / "f.parquet", tmp_path / "f.geojson"
    geoms = np.array(
        [shapely.box(500_000 + 20 * i, 4_000_000, 500_010 + 20 * i, 4_000_010) for i in range(5)]
    )
    blocks = ["r0c0", 'say "r0c1"', "r0c0", "Kathmandu–Banepa", "r0c0"]
    names = ["roof", "roof", "tent", "roof", "tent"]
    with FeatureWriter((parquet, geojson), CRS, extra=("class_name", "block_id")) as writer:
        writer.write(
            geoms[:3], np.arange(3), shapely.area(geoms[:3]), class_name=names[:3], block_id=blocks[:3]
        )
        writer.write(
            geoms[3:], np.arange(3, 5), shapely.area(geoms[3:]), class_name=names[3:], block_id=blocks[3:]
        )
    features = json.loads(geojson.read_text(encoding="utf-8"))["features"]
    assert [(f["properties"]["class_name"], f["properties"]["block_id"]) for f in features] == list(
        zip(names, blocks, strict=True)
    )
    read = geopandas.read_parquet(parquet)
    assert list(zip(read["class_name"], read["block_id"], strict=True)) == list(
        zip(names, blocks, strict=True)
    )


def test_min_area_is_in_the_area_columns_square_metres_for_longitude_latitude(tmp_path: Path) -> None:
    """On a geographic raster a pixel's side is in degrees: min_area is in m², as ``area`` is."""
    import rasterio
    from rasterio.transform import from_origin

    m = np.zeros((8, 8), np.uint8)
    m[2:6, 2:6] = 1  # 16 pixels
    m[0, 7] = 2  # 1 pixel
    tif = tmp_path / "lonlat.tif"
    profile = {"driver": "GTiff", "height": 8, "width": 8, "count": 1, "dtype": "uint8", "nodata": 0}
    with rasterio.open(
        tif, "w", crs="EPSG:4326", transform=from_origin(85.52, 27.63, 1e-5, 1e-5), **profile
    ) as dst:
        dst.write(m, 1)
    areas = vectorize_raster(tif, block_size=4, scheduler="synchronous").set_index("class")["area"]
    assert 16 * 1.0 < areas[1] < 16 * 1.2  # a 1e-5 degree pixel there is about 1.1 m by 0.99 m
    between = (areas[2] + areas[1]) / 2
    frame = vectorize_raster(tif, block_size=4, scheduler="synchronous", min_area=between)
    assert frame["class"].tolist() == [1]
    out = tmp_path / "lonlat.parquet"
    assert vectorize_to_file(tif, out, block_size=4, scheduler="synchronous", min_area=between) == 1
