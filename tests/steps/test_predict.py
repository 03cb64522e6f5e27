"""Halo-cropped block prediction equals whole-image prediction; imagery checks name the fault."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from catalog_sync.mlm import ModelInput
from geomlops.errors import ImageryMismatchError
from steps.predict import NODATA_CLASS, check_imagery, predict_block


def _smooth_threshold(batch: np.ndarray) -> np.ndarray:
    """A model with a 5 x 5 receptive field: mean of band 0 over a window, thresholded."""
    from scipy.ndimage import uniform_filter

    mean = uniform_filter(batch[0, 0], size=5, mode="constant")
    return (mean > 0.5).astype(np.uint8)[None]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    data = rng.random((2, 97, 130)).astype("float32")
    data[:, 40:45, 60:70] = -9999
    path = tmp_path / "image.tif"
    profile = {
        "driver": "GTiff",
        "height": 97,
        "width": 130,
        "count": 2,
        "dtype": "float32",
        "crs": "EPSG:32616",
        "transform": from_origin(452475, 3408645, 30, 30),
        "nodata": -9999,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def test_blocks_with_halo_match_the_whole_image(image: Path) -> None:
    with rasterio.open(image) as src:
        whole = predict_block(_smooth_threshold, src, (0, 0, src.width, src.height), halo=0)
        stitched = np.zeros_like(whole)
        for row in range(0, src.height, 32):
            for col in range(0, src.width, 32):
                w, h = min(32, src.width - col), min(32, src.height - row)
                stitched[row : row + h, col : col + w] = predict_block(
                    _smooth_threshold, src, (col, row, w, h), halo=2
                )
        naive = np.zeros_like(whole)
        for row in range(0, src.height, 32):
            for col in range(0, src.width, 32):
                w, h = min(32, src.width - col), min(32, src.height - row)
                naive[row : row + h, col : col + w] = predict_block(
                    _smooth_threshold, src, (col, row, w, h), halo=0
                )
    assert np.array_equal(stitched, whole)
    assert not np.array_equal(naive, whole)  # without the halo, block edges differ
    assert (whole[40:45, 60:70] == NODATA_CLASS).all()


def test_imagery_checks(image: Path) -> None:
    spec = ModelInput(
        name="two bands",
        bands=("a", "b"),
        shape=(-1, 2, -1, -1),
        dim_order=("batch", "bands", "height", "width"),
        data_type="float32",
    )
    with rasterio.open(image) as src:
        check_imagery(src, spec)
        with pytest.raises(
            ImageryMismatchError, match=r"2 band\(s\), but the model's input 'two bands' expects 3"
        ):
            check_imagery(src, spec.model_copy(update={"bands": ("a", "b", "c")}))
        with pytest.raises(ImageryMismatchError, match="float32 cannot be safely read as the model's uint8"):
            check_imagery(src, spec.model_copy(update={"data_type": "uint8"}))


def test_bands_described_as_the_model_names_them_must_all_be_there(image: Path, tmp_path: Path) -> None:
    """Imagery whose bands are described in the model's terms, and lacks one it needs, is
    refused naming it: never a band read in its place by position (blue fed in as nir)."""
    spec = ModelInput(
        name="rgn",
        bands=("red", "green", "nir"),
        shape=(-1, 3, -1, -1),
        dim_order=("batch", "bands", "height", "width"),
        data_type="float32",
    )

    def described(*names: str) -> Path:
        path = tmp_path / f"{'-'.join(n or 'none' for n in names)}.tif"
        with rasterio.open(image) as src:
            profile = {**src.profile, "count": len(names)}
            data = src.read(1)
        with rasterio.open(path, "w", **profile) as dst:
            for i, name in enumerate(names, start=1):
                dst.write(data, i)
                if name:
                    dst.set_band_description(i, name)
        return path

    for names, missing in (
        (("red", "green", "blue"), "nir"),
        (("coastal", "blue", "swir16"), "red, green, nir"),
    ):
        with (
            rasterio.open(described(*names)) as src,
            pytest.raises(
                ImageryMismatchError,
                match=rf"its bands are {', '.join(names)}, but the model's input 'rgn' needs {missing} too",
            ),
        ):
            check_imagery(src, spec)
    # every band there, in another order or among more: read by name
    for names in (("nir", "red", "green"), ("blue", "green", "red", "nir")):
        with rasterio.open(described(*names)) as src:
            check_imagery(src, spec)
    # bands described otherwise (the sensor's own names), or not at all: by count, as stored
    for names in (("B4", "B3", "B8"), ("", "", "")):
        with rasterio.open(described(*names)) as src:
            check_imagery(src, spec)


@pytest.mark.parametrize(
    "window",
    [(10, 20, 30, 40), (-8, -8, 40, 40), (110, 80, 40, 40), (-5, 30, 140, 20), (200, 200, 10, 10)],
    ids=["inside", "top left corner", "bottom right corner", "wider than the image", "outside"],
)
def test_a_window_past_the_edge_reads_as_a_boundless_read(
    image: Path, window: tuple[int, int, int, int]
) -> None:
    """Only the part inside the imagery is read; the rest is no data, as GDAL's boundless read
    (a warped VRT, many times slower) gives it."""
    from rasterio.windows import Window

    from steps.predict import _read_padded

    with rasterio.open(image) as src:
        ours = _read_padded(src, [2, 1], *window)
        theirs = src.read([2, 1], window=Window(*window), boundless=True, masked=True)
    assert ours.shape == theirs.shape == (2, window[3], window[2])
    assert np.array_equal(np.ma.getmaskarray(ours), np.ma.getmaskarray(theirs))
    assert np.ma.getmaskarray(ours).any() == (window != (10, 20, 30, 40))  # the no-data square, or the edge
    assert np.array_equal(ours.compressed(), theirs.compressed())
