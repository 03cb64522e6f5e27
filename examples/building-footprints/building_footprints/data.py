"""What the model sees: RGB chips scaled to 0..1, building labels 0/1; the dataset layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from numpy.typing import NDArray

BANDS = ("red", "green", "blue")
#: MLM value scaling of every band: min-max 0..255 -> 0..1 (the item says the same)
SCALE_MIN, SCALE_MAX = 0.0, 255.0
CLASSES = ({"value": 0, "name": "background"}, {"value": 1, "name": "building"})
IGNORE_VALUE = 255
CHIPS, LABELS, TEST_LIST, METADATA = "chips", "labels", "test.txt", "dataset.json"


def scale(pixels: NDArray[np.generic]) -> NDArray[np.float32]:
    """min-max scaling 0..255 -> 0..1, as the item's ``value_scaling`` declares."""
    return ((np.asarray(pixels, np.float32) - SCALE_MIN) / (SCALE_MAX - SCALE_MIN)).astype(np.float32)


def read_rgb(path: Path) -> NDArray[np.uint8]:
    """The first three bands of an image as (3, height, width)."""
    with rasterio.open(path) as src:
        if src.count < 3:
            raise ValueError(f"{path}: expected an RGB image (3 bands or more), found {src.count} band(s)")
        return np.asarray(src.read([1, 2, 3]))


def test_names(data: Path) -> set[str]:
    """Chip file names ``test.txt`` holds out."""
    listing = data / TEST_LIST
    if not listing.is_file():
        return set()
    lines = (line.split("#", 1)[0].strip() for line in listing.read_text(encoding="utf-8").splitlines())
    return {line for line in lines if line}


def chip_pairs(data: Path, *, test: bool) -> list[tuple[Path, Path]]:
    """(chip, label) paths of the training chips (``test=False``) or the held-out ones."""
    chips = sorted((data / CHIPS).glob("*.tif"))
    if not chips:
        raise FileNotFoundError(f"{data / CHIPS}: no *.tif chips (run the preprocess entry point first)")
    held_out = test_names(data)
    pairs = []
    for chip in chips:
        if (chip.name in held_out or chip.stem in held_out) != test:
            continue
        label = data / LABELS / chip.name
        if not label.is_file():
            raise FileNotFoundError(f"{label}: the label raster of {chip} is missing")
        pairs.append((chip, label))
    return pairs


def dataset_record(data: Path) -> dict[str, object]:
    path = data / METADATA
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
