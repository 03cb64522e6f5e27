"""Areas of interest: bad input named, reprojection reported, pixel extent exact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rasterio.transform import Affine
from rasterio.warp import transform as warp

from geomlops.errors import AoiError
from steps.aoi import grid_aoi, read_aoi

# the Landsat-8 demo scene's grid: 30 m pixels, UTM zone 16N, 627 x 603 pixels
CRS = "EPSG:32616"
TRANSFORM = Affine(30.0, 0.0, 452475.0, 0.0, -30.0, 3408645.0)
SHAPE = (603, 627)


def _lonlat(col: float, row: float) -> tuple[float, float]:
    x, y = TRANSFORM @ (col, row)
    lon, lat = warp(CRS, "EPSG:4326", [x], [y])
    return lon[0], lat[0]


def _polygon(corners: list[tuple[float, float]]) -> dict[str, Any]:
    ring = [list(c) for c in corners] + [list(corners[0])]
    return {"type": "Polygon", "coordinates": [ring]}


def test_aoi_is_reprojected_and_put_on_the_pixel_grid() -> None:
    aoi = _polygon([_lonlat(100, 100), _lonlat(300, 100), _lonlat(300, 250), _lonlat(100, 250)])
    gridded = grid_aoi(
        {"type": "Feature", "geometry": aoi, "properties": {}},
        raster_crs=CRS,
        raster_transform=TRANSFORM,
        raster_shape=SHAPE,
    )
    c0, r0, c1, r1 = gridded.pixel_bounds
    assert (c0, r0) in {(99, 99), (99, 100), (100, 99), (100, 100)}
    assert abs(c1 - 300) <= 1 and abs(r1 - 250) <= 1
    assert gridded.notes == ("area of interest reprojected from EPSG:4326 to EPSG:32616",)


def test_aoi_larger_than_the_imagery_is_clipped_to_it() -> None:
    aoi = _polygon([_lonlat(-50, -50), _lonlat(700, -50), _lonlat(700, 700), _lonlat(-50, 700)])
    gridded = grid_aoi(aoi, raster_crs=CRS, raster_transform=TRANSFORM, raster_shape=SHAPE)
    assert gridded.pixel_bounds == (0, 0, 627, 603)


@pytest.mark.parametrize(
    ("aoi", "message"),
    [
        (_polygon([(0, 0), (1, 1), (1, 0), (0, 1)]), "invalid polygon: Self-intersection"),
        ({"type": "FeatureCollection", "features": []}, "empty"),
        (_polygon([(179.5, 10), (-179.5, 10), (-179.5, 11), (179.5, 11)]), "crosses the antimeridian"),
        # in the degrees the AOI was given in, then in the imagery's own CRS
        (
            _polygon([(10, 10), (11, 10), (11, 11), (10, 11)]),
            r"area of interest \(10\.0, 10\.0, 11\.0, 11\.0\) does not overlap the imagery "
            r"\(-87\.49684, 30\.64671, -87\.29969, 30\.81055\) in EPSG:4326 \(\(452475\.0, 3390555\.0, "
            r"471285\.0, 3408645\.0\) in EPSG:32616\)",
        ),
        ({"type": "Point", "coordinates": [0, 0]}, "expected Polygon or MultiPolygon"),
    ],
)
def test_bad_areas_are_named(aoi: dict[str, Any], message: str) -> None:
    with pytest.raises(AoiError, match=message):
        grid_aoi(aoi, raster_crs=CRS, raster_transform=TRANSFORM, raster_shape=SHAPE)


def _scene_box() -> list[tuple[float, float]]:
    return [_lonlat(100, 100), _lonlat(300, 100), _lonlat(300, 250), _lonlat(100, 250)]


@pytest.mark.parametrize(
    ("aoi", "message"),
    [
        (
            {"type": "Polygon", "coordinates": [[list(c) for c in _scene_box()]]},
            r"ring not closed: it starts at \[.*\] and ends at",
        ),
        (
            _polygon([(lat, lon) for lon, lat in [(100.0, 27.0), (101.0, 27.0), (101.0, 28.0)]]),
            "latitude 100.0 outside",
        ),
        (_polygon([(190, 0), (191, 0), (191, 1)]), "longitude 190 outside"),
        (
            _polygon([(lat, lon) for lon, lat in _scene_box()]),
            "with longitude and latitude swapped it would",
        ),
    ],
)
def test_rfc7946_faults_are_named(aoi: dict[str, Any], message: str) -> None:
    with pytest.raises(AoiError, match=message):
        grid_aoi(aoi, raster_crs=CRS, raster_transform=TRANSFORM, raster_shape=SHAPE)


def test_a_whole_world_box_is_not_an_antimeridian_crossing() -> None:
    world = _polygon([(-180, -90), (180, -90), (180, 90), (-180, 90)])
    gridded = grid_aoi(world, raster_crs=CRS, raster_transform=TRANSFORM, raster_shape=SHAPE)
    assert gridded.pixel_bounds == (0, 0, 627, 603)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(AoiError, match="file not found"):
        read_aoi(str(tmp_path / "none.geojson"))
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(AoiError, match="not valid JSON"):
        read_aoi(f"file://{bad}")
    good = tmp_path / "good.geojson"
    good.write_text(json.dumps(_polygon([(0, 0), (1, 0), (1, 1)])))
    assert read_aoi(str(good))["type"] == "Polygon"


def test_an_inline_geojson_aoi_is_read_and_a_bad_or_oversized_one_named() -> None:
    from steps.aoi import INLINE_AOI_LIMIT

    square = {"type": "Polygon", "coordinates": [[[85, 27], [86, 27], [86, 28], [85, 28], [85, 27]]]}
    assert read_aoi(json.dumps(square)) == square
    with pytest.raises(AoiError, match=r"inline GeoJSON\): not valid JSON"):
        read_aoi('{"type": "Polygon", ')
    with pytest.raises(AoiError, match="expected a GeoJSON object with a 'type'"):
        read_aoi('{"coordinates": []}')
    with pytest.raises(AoiError, match=f"inline GeoJSON over {INLINE_AOI_LIMIT} bytes"):
        read_aoi(json.dumps({**square, "padding": "x" * INLINE_AOI_LIMIT}))


def test_an_aoi_is_read_from_the_s3_store_and_from_a_web_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduled run's areas sit in the object store (``s3://``) or on a web server; a missing
    object or page is named as such, permanently."""
    import functools
    import http.server
    import threading

    from moto.server import ThreadedMotoServer

    from geomlops.devstack.s3store import client
    from geomlops.ports import free_port

    area = {"type": "Feature", "properties": {}, "geometry": _polygon([(0, 0), (1, 0), (1, 1)])}
    port = free_port()
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3.start()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("GEOMLOPS_S3_ENDPOINT_URL", endpoint)
        for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        store = client(endpoint)
        store.create_bucket(Bucket="areas")
        store.put_object(Bucket="areas", Key="nepal/area.geojson", Body=json.dumps(area).encode())
        assert read_aoi("s3://areas/nepal/area.geojson") == area
        with pytest.raises(AoiError, match=r"area of interest s3://areas/nepal/gone.geojson: no such object"):
            read_aoi("s3://areas/nepal/gone.geojson")

        (tmp_path / "area.geojson").write_text(json.dumps(area))
        site = f"http://127.0.0.1:{web.server_address[1]}"
        assert read_aoi(f"{site}/area.geojson") == area
        with pytest.raises(AoiError, match=rf"area of interest {site}/gone.geojson: not found \(HTTP 404\)"):
            read_aoi(f"{site}/gone.geojson")
    finally:
        web.shutdown()
        s3.stop()
    with pytest.raises(AoiError, match=r"expected a file, an s3:// object or an http\(s\):// address"):
        read_aoi("gs://areas/area.geojson")
