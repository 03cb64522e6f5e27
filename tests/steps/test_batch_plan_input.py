"""Batch planning names imagery that cannot be placed on the Earth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geomlops.errors import ImageryMismatchError
from steps.batch import plan_batch


def _write(path: Path, driver: str) -> Path:
    with rasterio.open(
        path, "w", driver=driver, width=16, height=16, count=3, dtype="uint8"
    ) as dst:  # no CRS, no transform
        dst.write(np.zeros((3, 16, 16), np.uint8))
    return path


@pytest.mark.parametrize("driver", ["GTiff", "JPEG", "PNG"])
def test_imagery_without_georeference_is_named(tmp_path: Path, driver: str) -> None:
    written = _write(tmp_path / f"scene.{driver.lower()}", driver)
    renamed = written.rename(tmp_path / "scene.tif")  # a JPEG renamed .tif is still a JPEG
    with pytest.raises(ImageryMismatchError, match=rf"scene.tif: {driver} file without a CRS; expected"):
        plan_batch(str(renamed), None, block_size=8, group_size=1)


def test_blocks_are_read_ahead_as_far_as_the_memory_budget_allows(tmp_path: Path) -> None:
    """While the worker starts, reading goes on up to READ_AHEAD_BYTES of prepared blocks, never
    fewer than two batches (the building example: 4 blocks of 3 bands, 512 px and a 96 px halo,
    in float32, 23.8 MB a batch)."""
    from rasterio.transform import from_origin

    from steps.batch import READ_AHEAD_BYTES, _read_ahead_depth
    from steps.model_io import ModelIO

    path = tmp_path / "drone.tif"
    profile = {"driver": "GTiff", "width": 2048, "height": 2048, "count": 3, "dtype": "uint8"}
    place = {"crs": "EPSG:32645", "transform": from_origin(330000, 3060000, 0.3, 0.3)}
    with rasterio.open(path, "w", **profile, **place) as dst:
        dst.write(np.zeros((3, 2048, 2048), np.uint8))
    plan = plan_batch(str(path), None, block_size=512, group_size=64)
    rgb = ModelIO(bands=("red", "green", "blue"), halo=96)
    batch = 4 * 704 * 704 * (3 * 4 + 1)
    assert _read_ahead_depth(plan, rgb, 4) == READ_AHEAD_BYTES // batch == 10
    assert _read_ahead_depth(plan, ModelIO(halo=96), 4) == 10  # bands counted in the imagery
    assert _read_ahead_depth(plan, rgb, 64) == 2  # a huge batch: two still
    assert _read_ahead_depth(plan, rgb, 4, threads=4) == 7  # three more batches being read


def test_a_plan_says_when_the_imagery_is_decoded_whole_for_every_block(
    shared_data: Path, tmp_path: Path
) -> None:
    """An OpenAerialMap chip is a JPEG named .tif (placed by its .aux.xml): it predicts, but a
    note says it reads slowly, and how to convert it; the same pixels as a GeoTIFF get none."""
    chip = shared_data / "banepa" / "predict" / "oam" / "OAM-386698-220244-19.tif"
    with rasterio.open(chip) as src:
        assert src.driver == "JPEG" and src.width > 128
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": src.count,
                   "dtype": src.dtypes[0], "crs": src.crs, "transform": src.transform}  # fmt: skip
        with rasterio.open(tmp_path / "chip.tif", "w", **profile) as dst:
            dst.write(src.read())
    assert plan_batch(str(tmp_path / "chip.tif"), None, block_size=128, group_size=4).notes == ()
    [note] = plan_batch(str(chip), None, block_size=128, group_size=4).notes
    assert "JPEG file" in note and f"gdal_translate -of COG {chip.name}" in note
    assert plan_batch(str(chip), None, block_size=4096, group_size=4).notes == ()  # one block: no cost
