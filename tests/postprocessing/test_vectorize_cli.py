"""``geomlops vectorize`` on a generated GeoTIFF with an explicit CRS and transform."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from vector_checks import CRS, TRANSFORM, reference, write_tif

from geomlops.cli.main import main


@pytest.fixture
def tif(tmp_path: Path) -> Path:
    m = np.zeros((30, 40), np.uint8)
    m[3:27, 4:36] = 1
    m[8:22, 10:30] = 0  # a courtyard
    m[12:18, 15:25] = 2  # with a pond
    m[0, 0] = m[1, 1] = 3  # diagonal pixels: two polygons
    return write_tif(tmp_path / "mask.tif", m, nodata=0)


def _keys(frame: geopandas.GeoDataFrame) -> list[tuple[int, bytes]]:
    wkb = shapely.to_wkb(shapely.normalize(frame.geometry.values)).tolist()
    return sorted(zip(frame["class"].tolist(), wkb, strict=True))


def test_vectorize_writes_geoparquet_equal_to_the_whole_raster(tif: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    args = [
        "vectorize",
        str(tif),
        str(out),
        "--block-size",
        "7",
        "--scheduler",
        "synchronous",
        "--no-progress",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "wrote 4 polygons" in result.output
    frame = geopandas.read_parquet(out)
    assert frame.crs.equals(CRS)
    with rasterio.open(tif) as ds:
        mask = ds.read(1)
    assert _keys(frame) == reference(mask, 0, TRANSFORM)


def test_vectorize_geojson_with_options(tif: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.geojson"
    pixel = abs(TRANSFORM.a * TRANSFORM.e)
    args = ["vectorize", str(tif), str(out), "--block-size", "8", "--min-area", str(2 * pixel), "--progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "vectorize: 100%" in result.output  # the progress bar over blocks
    doc = json.loads(out.read_text())
    assert sorted(f["properties"]["class"] for f in doc["features"]) == [1, 2]  # 1-pixel class 3 dropped
    assert all(
        -180 <= x <= 180 and -90 <= y <= 90
        for f in doc["features"]
        for x, y in f["geometry"]["coordinates"][0]
    )


def test_nodata_none_vectorizes_the_background(tif: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.parquet"
    result = CliRunner().invoke(main, ["vectorize", str(tif), str(out), "--nodata", "none", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert 0 in set(geopandas.read_parquet(out)["class"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--scheduler", "fast"], "error: scheduler 'fast'"),
        (["--nodata", "zero"], "error: --nodata 'zero'"),
        (["--block-size", "0"], "Invalid value for '--block-size'"),
    ],
)
def test_bad_options_fail_cleanly(tif: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(main, ["vectorize", str(tif), str(out), "--no-progress", *extra])
    assert result.exit_code == 2
    assert message in result.output
    assert not out.exists()


def test_unknown_output_format_fails_cleanly(tif: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["vectorize", str(tif), str(tmp_path / "out.csv")])
    assert result.exit_code == 2 and "unknown output format" in result.output


def test_help_explains_the_command() -> None:
    result = CliRunner().invoke(main, ["vectorize", "--help"])
    assert result.exit_code == 0
    for text in (
        "MASK",
        "OUTPUT",
        "--block-size",
        "--scheduler",
        "tcp://HOST:PORT",
        "--min-area",
        "--simplify",
    ):
        assert text in result.output


def test_a_raster_without_crs_exits_non_zero_unless_pixel_coordinates(tmp_path: Path) -> None:
    m = np.zeros((8, 8), np.uint8)
    m[2:5, 2:5] = 1
    tif = write_tif(tmp_path / "plain.tif", m, nodata=0, crs=None)
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(main, ["vectorize", str(tif), str(out)])
    assert result.exit_code != 0
    assert "no CRS" in result.output and "--pixel-coordinates" in result.output
    assert not out.exists()
    result = CliRunner().invoke(main, ["vectorize", str(tif), str(out), "--pixel-coordinates"])
    assert result.exit_code == 0, result.output
    assert geopandas.read_parquet(out).crs is None
