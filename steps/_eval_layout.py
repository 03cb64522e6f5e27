"""The two dataset layouts evaluation reads, as a list of scenes (image, labels, test split).

- **raster**: ``image.tif``, ``labels.tif`` and ``split.tif`` (2 marks test pixels, 0 excluded
  ones), as the cloud-mask example's ``preprocess`` writes them: one scene.
- **chips**: ``chips/*.tif`` image chips and ``labels/`` label rasters of the same file name
  (or the same stem with ``.tif``/``.tiff``): one scene per chip. ``test.txt`` at the dataset
  root, one chip name (or stem) a line, picks the test chips; without it every chip is a test
  chip.

Opening the rasters to compare sizes and grids is the only IO here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio

from geomlops.errors import DatasetNotFoundError, InvalidDatasetError

IMAGE_FILE, LABELS_FILE, SPLIT_FILE = "image.tif", "labels.tif", "split.tif"
CHIPS_DIR, CHIP_LABELS_DIR, TEST_LIST = "chips", "labels", "test.txt"
CHIP_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class Scene:
    """One image with its labels; ``split`` None means all of it is test (or train) data."""

    image: Path
    labels: Path
    split: Path | None
    test: bool = True
    height: int = 0
    width: int = 0


def _grid(path: Path) -> tuple[int, int, Any, Any]:
    try:
        with rasterio.open(path) as src:
            return src.height, src.width, src.crs, src.transform
    except rasterio.errors.RasterioIOError as err:
        raise InvalidDatasetError(f"{path}: not a readable raster ({err})") from err


def _check_same_grid(image: Path, others: list[Path]) -> tuple[int, int]:
    """Sizes must agree; CRS and transform too where both rasters are georeferenced."""
    height, width, crs, transform = _grid(image)
    for other in others:
        h, w, other_crs, other_transform = _grid(other)
        if (h, w) != (height, width):
            raise InvalidDatasetError(
                f"{other} is {h}x{w} pixels but {image} is {height}x{width}: a label raster must "
                "cover its image pixel for pixel"
            )
        if crs and other_crs and crs != other_crs:
            raise InvalidDatasetError(f"{other} has CRS {other_crs} but {image} has {crs}")
        if crs and other_crs and not transform.almost_equals(other_transform):
            raise InvalidDatasetError(
                f"{other} is not on the grid of {image}: transform {tuple(other_transform)[:6]} "
                f"vs {tuple(transform)[:6]}"
            )
    return height, width


def _raster_scenes(root: Path) -> list[Scene]:
    for name in (IMAGE_FILE, LABELS_FILE, SPLIT_FILE):
        if not (root / name).is_file():
            raise DatasetNotFoundError(
                f"{root / name} does not exist: an evaluation dataset needs {IMAGE_FILE}, "
                f"{LABELS_FILE} and {SPLIT_FILE} (or {CHIPS_DIR}/ and {CHIP_LABELS_DIR}/ folders)"
            )
    image, labels, split = root / IMAGE_FILE, root / LABELS_FILE, root / SPLIT_FILE
    height, width = _check_same_grid(image, [labels, split])
    return [Scene(image, labels, split, True, height, width)]


def _label_for(chip: Path, labels_dir: Path) -> Path:
    candidates = [labels_dir / chip.name] + [labels_dir / (chip.stem + s) for s in CHIP_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InvalidDatasetError(
        f"chip {chip} has no label raster: expected {labels_dir / chip.name} "
        f"(or {chip.stem} with {' or '.join(CHIP_SUFFIXES)})"
    )


def _test_names(path: Path, chips: list[Path]) -> set[str]:
    known = {c.name for c in chips} | {c.stem for c in chips}
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = {line for line in lines if line and not line.startswith("#")}
    unknown = sorted(names - known)
    if unknown:
        raise InvalidDatasetError(
            f"{path} names chips that are not in {path.parent / CHIPS_DIR}: {unknown[:5]}"
        )
    if not names:
        raise InvalidDatasetError(f"{path} lists no chip: remove it to evaluate on every chip")
    return names


def _chip_scenes(root: Path) -> list[Scene]:
    chips_dir, labels_dir = root / CHIPS_DIR, root / CHIP_LABELS_DIR
    chips = sorted(p for p in chips_dir.iterdir() if p.is_file() and p.suffix.lower() in CHIP_SUFFIXES)
    if not chips:
        raise InvalidDatasetError(f"{chips_dir} holds no GeoTIFF chip ({', '.join(CHIP_SUFFIXES)})")
    if not labels_dir.is_dir():
        raise InvalidDatasetError(
            f"{labels_dir} does not exist: each chip in {chips_dir} needs its label raster there"
        )
    test = _test_names(root / TEST_LIST, chips) if (root / TEST_LIST).is_file() else None
    scenes = []
    for chip in chips:
        labels = _label_for(chip, labels_dir)
        height, width = _check_same_grid(chip, [labels])
        is_test = test is None or chip.name in test or chip.stem in test
        scenes.append(Scene(chip, labels, None, is_test, height, width))
    return scenes


def dataset_scenes(root: Path) -> tuple[str, list[Scene]]:
    """The dataset's layout (``"chips"`` or ``"raster"``) and its scenes, checked.

    Raises:
        DatasetNotFoundError: neither layout's files are there (the missing file named).
        InvalidDatasetError: a chip without its label, rasters that differ in size, CRS or grid,
            a ``test.txt`` naming an unknown chip.
    """
    if (root / CHIPS_DIR).is_dir():
        return "chips", _chip_scenes(root)
    return "raster", _raster_scenes(root)
