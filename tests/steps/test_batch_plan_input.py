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
