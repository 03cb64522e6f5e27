"""Turn source GeoTIFFs and their labels into the training dataset.

The source folder holds the images (``*.tif``) and a ``labels/`` folder with one label raster
per image, of the same file name and size (class values as in ``stac-item.json``, 255 not
scored). The dataset is the layout geomlops' evaluation reads after training:

- ``chips/``: the images;
- ``labels/``: their label rasters, same file names;
- ``test.txt``: the chips held out for evaluation (``train`` does not read them), one a line.
"""

import argparse
import shutil
from pathlib import Path

import rasterio


def held_out(names: list[str], test_share: float) -> list[str]:
    """Every n-th chip for the test share; none when there is one chip only (nothing to train on)."""
    if len(names) < 2 or test_share <= 0:
        return []
    step = max(2, round(1 / test_share))
    return names[step - 1 :: step] or names[-1:]


def _size(path: Path) -> tuple[int, int]:
    with rasterio.open(path) as src:
        return src.height, src.width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--test-share", type=float, default=0.2)
    args = parser.parse_args()
    images = sorted(args.source.glob("*.tif"))
    if not images:
        raise SystemExit(f"{args.source}: no GeoTIFF (*.tif) to make a dataset of")
    for image in images:
        label = args.source / "labels" / image.name
        if not label.is_file():
            raise SystemExit(f"{image}: no label raster {label}")
        if _size(label) != _size(image):
            raise SystemExit(f"{label}: not the size of {image} (a label covers its image pixel for pixel)")
    for folder in ("chips", "labels"):
        (args.output / folder).mkdir(parents=True, exist_ok=True)
    for image in images:
        shutil.copy2(image, args.output / "chips" / image.name)
        shutil.copy2(args.source / "labels" / image.name, args.output / "labels" / image.name)
    test = held_out([image.name for image in images], args.test_share)
    test_list = args.output / "test.txt"
    if test:
        test_list.write_text("# chips held out for evaluation\n" + "".join(f"{name}\n" for name in test))
    else:  # without test.txt evaluation scores every chip
        test_list.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
