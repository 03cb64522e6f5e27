"""Chips posted for serving: small GeoTIFFs made here, checked before prediction, then predicted."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.io import MemoryFile

from catalog_sync.mlm import ModelInput
from geomlops.errors import ChipError
from geomlops.serving.chips import open_chip, predict_chip
from steps.predict import NODATA_CLASS

INPUT = ModelInput(
    name="two bands",
    bands=("B1", "B2"),
    shape=(-1, 2, -1, -1),
    dim_order=("batch", "bands", "height", "width"),
    data_type="float32",
)
TRANSFORM = Affine(30.0, 0.0, 460000.0, 0.0, -30.0, 3400000.0)


def _tif(
    data: np.ndarray, *, georeferenced: bool = True, nodata: float | None = None, compress: str | None = None
) -> bytes:
    profile: dict[str, object] = {
        "driver": "GTiff",
        "count": data.shape[0],
        "height": data.shape[1],
        "width": data.shape[2],
        "dtype": data.dtype.name,
        "nodata": nodata,
    }
    if georeferenced:
        profile |= {"crs": "EPSG:32616", "transform": TRANSFORM}
    if compress:
        profile["compress"] = compress
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data)
        return bytes(mem.read())


def test_a_good_chip_is_predicted_with_nodata_kept() -> None:
    data = np.zeros((2, 4, 5), np.float32)
    data[0, 1:3, 1:4] = 1.0
    data[:, 0, 4] = -9999
    with open_chip(_tif(data, nodata=-9999), INPUT, 10_000) as src:
        assert src.crs.to_epsg() == 32616 and src.transform == TRANSFORM
        mask = predict_chip(lambda batch: (batch[:, 0] > 0.5).astype(np.uint8), src, INPUT)
    assert mask.shape == (4, 5)
    assert mask[1:3, 1:4].all() and mask[0, 4] == NODATA_CLASS and mask[3].sum() == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: b"", "chip: empty"),
        (lambda: b"\x00" * 20_000, "20000 bytes, larger than the limit of 10000 bytes"),
        (lambda: b"not a tiff at all", "chip: not a readable GeoTIFF"),
        (lambda: _tif(np.zeros((2, 4, 4), np.float32), georeferenced=False), "chip: no georeference"),
        (
            lambda: _tif(np.zeros((3, 4, 4), np.float32)),
            "3 band(s), but the model's input 'two bands' expects 2",
        ),
        (lambda: _tif(np.zeros((2, 4, 4), np.complex64)), "data type complex64 cannot be safely read"),
        (
            lambda: _tif(np.zeros((2, 300, 300), np.float32), compress="deflate"),
            "decode to 720000 bytes, more than 4 x the limit",
        ),
    ],
)
def test_bad_chips_are_refused_by_name(make: object, message: str) -> None:
    with pytest.raises(ChipError, match=message.replace("(", r"\(").replace(")", r"\)")):
        with open_chip(make(), INPUT, 10_000):  # type: ignore[operator]
            pass
