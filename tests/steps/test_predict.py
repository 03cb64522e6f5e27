"""Halo-cropped block prediction equals whole-image prediction; imagery checks name the fault."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from catalog_sync.mlm import ModelInput
from geomlops.errors import ImageryMismatchError
from steps.predict import NODATA_CLASS, check_imagery, predict_block


def _smooth_threshold(batch: np.ndarray, mode: str = "mirror") -> np.ndarray:
    """A model with a 5 x 5 receptive field: mean of band 0 over a window, thresholded; beyond
    its input's edge it mirrors the input, as blocks read beyond the imagery's edge do."""
    from scipy.ndimage import uniform_filter

    mean = uniform_filter(batch[0, 0], size=5, mode=mode)
    return (mean > 0.5).astype(np.uint8)[None]


def _float_input(name: str, bands: tuple[str, ...], **fields: Any) -> ModelInput:
    """A float32 input of ``bands`` in (batch, bands, height, width) of any size."""
    shape = (-1, len(bands), -1, -1)
    return ModelInput(
        name=name,
        bands=bands,
        shape=shape,
        dim_order=("batch", "bands", "height", "width"),
        data_type="float32",
        **fields,
    )


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
    spec = _float_input("rgn", ("red", "green", "nir"))

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
def test_a_window_past_the_edge_reads_the_imagery_mirrored_at_its_edge(
    image: Path, window: tuple[int, int, int, int]
) -> None:
    """Only the part inside the imagery is read; beyond the edge it is mirrored there, values
    and no-data mask alike (never a frame of zeros the model would see as black); a window
    wholly outside is no data."""
    from steps.predict import _read_padded

    col, row, width, height = window
    with rasterio.open(image) as src:
        ours = _read_padded(src, [2, 1], *window)
        whole = src.read([2, 1], masked=True)
    assert ours.shape == (2, height, width)
    if window == (200, 200, 10, 10):
        assert np.ma.getmaskarray(ours).all()
        return
    pads = ((0, 0), (300, 300), (300, 300))
    data = np.pad(np.ma.getdata(whole), pads, mode="reflect")[
        :, row + 300 : row + 300 + height, col + 300 : col + 300 + width
    ]
    mask = np.pad(np.ma.getmaskarray(whole), pads, mode="reflect")[
        :, row + 300 : row + 300 + height, col + 300 : col + 300 + width
    ]
    assert np.array_equal(np.ma.getmaskarray(ours), mask)
    assert np.array_equal(np.ma.getdata(ours)[~mask], data[~mask])
    inside = ours[:, max(-row, 0) : 97 - row, max(-col, 0) : 130 - col]
    assert np.array_equal(inside, whole[:, max(row, 0) : row + height, max(col, 0) : col + width])


def test_a_derived_band_is_computed_from_the_bands_it_reads(tmp_path: Path) -> None:
    """An index the MLM item derives (NDVI from nir and red) is computed from the imagery's
    bands, found by description in any order, or as stored (the model's source order) in
    undescribed imagery; where it is not finite (0 / 0) the pixel has no data."""
    from catalog_sync.mlm import DerivedBand
    from steps.model_io import ModelIO
    from steps.predict import read_block

    ndvi = DerivedBand(name="ndvi", expression="(nir - red) / (nir + red)", reads=("nir", "red"))
    spec = _float_input("rg-ndvi", ("red", "green", "ndvi"), derived=(ndvi,))
    assert spec.source_bands == ("red", "green", "nir")
    rng = np.random.default_rng(5)
    bands = {name: rng.uniform(1, 100, (20, 30)).astype("float32") for name in ("red", "green", "nir")}
    bands["red"][0, 0] = bands["nir"][0, 0] = 0  # 0 / 0
    profile = {"driver": "GTiff", "height": 20, "width": 30, "dtype": "float32", "crs": "EPSG:32616"}
    profile["transform"] = from_origin(452475, 3408645, 30, 30)
    io = ModelIO.from_parts(spec, None, halo=0)
    expected = (bands["nir"] - bands["red"]) / (bands["nir"] + bands["red"])
    for order, describe in ((("nir", "blue", "red", "green"), True), (("red", "green", "nir"), False)):
        path = tmp_path / f"{'-'.join(order)}.tif"
        with rasterio.open(path, "w", count=len(order), **profile) as dst:
            for i, name in enumerate(order, start=1):
                dst.write(bands.get(name, np.zeros((20, 30), "float32")), i)
                if describe:
                    dst.set_band_description(i, name)
        with rasterio.open(path) as src:
            check_imagery(src, spec)
            prepared, invalid = read_block(src, (0, 0, 30, 20), io, halo=0)
        assert prepared.shape == (3, 20, 30)
        np.testing.assert_array_equal(prepared[0], np.where(invalid, 0, bands["red"]))
        np.testing.assert_array_equal(prepared[1], np.where(invalid, 0, bands["green"]))
        np.testing.assert_allclose(prepared[2][~invalid], expected[~invalid], rtol=1e-6)
        assert invalid[0, 0] and invalid.sum() == 1 and prepared[:, 0, 0].tolist() == [0, 0, 0]
    # undescribed imagery must hold the bands read, not the model's input bands
    with rasterio.open(tmp_path / "red-green-nir.tif") as src:
        check_imagery(src, spec)
    two = tmp_path / "two.tif"
    with rasterio.open(two, "w", count=2, **profile) as dst:
        dst.write(np.stack([bands["red"], bands["green"]]))
    with (
        rasterio.open(two) as src,
        pytest.raises(
            ImageryMismatchError,
            match=r"2 band\(s\), but the model's input 'rg-ndvi' expects 3 \(red, green, nir\)",
        ),
    ):
        check_imagery(src, spec)
