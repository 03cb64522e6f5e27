"""Predict building probabilities over a whole image, window by window with a halo.

Each ``--chip-size`` window is read with ``--halo`` extra pixels on every side (the model's
receptive-field radius, the item's ``geomlops:halo``), scaled to 0..1 and predicted;
only the centre is kept, so the result does not depend on where the windows fall. Writes a
float32 GeoTIFF of probabilities on the image's grid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import rasterio
from rasterio.windows import Window

from building_footprints.data import scale

HALO = 48


def predict_raster(model: Any, image: Path, output: Path, *, chip_size: int = 512, halo: int = HALO) -> Path:
    with rasterio.open(image) as src:
        if src.count < 3:
            raise ValueError(f"{image}: expected an RGB image, found {src.count} band(s)")
        profile = {"driver": "GTiff", "height": src.height, "width": src.width, "count": 1,
                   "dtype": "float32", "crs": src.crs, "transform": src.transform,
                   "compress": "deflate"}  # fmt: skip
        output.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(output, "w", **profile) as dst:
            for row in range(0, src.height, chip_size):
                for col in range(0, src.width, chip_size):
                    height, width = min(chip_size, src.height - row), min(chip_size, src.width - col)
                    read = Window(col - halo, row - halo, width + 2 * halo, height + 2 * halo)
                    pixels = src.read([1, 2, 3], window=read, boundless=True, fill_value=0)
                    probability = model.predict(scale(pixels)[None])[0, 0]
                    centre = probability[halo : halo + height, halo : halo + width]
                    dst.write(centre.astype(np.float32), 1, window=Window(col, row, width, height))
            dst.set_band_description(1, "building probability")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--image", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--chip-size", type=int, default=512)
    parser.add_argument("--halo", type=int, default=HALO)
    parser.add_argument(
        "--device", default="cpu", help="cpu, or cuda where a GPU and a CUDA build of torch are"
    )
    args = parser.parse_args(argv)
    model = mlflow.pyfunc.load_model(args.model_uri, model_config={"device": args.device})
    predict_raster(model, args.image, args.output, chip_size=args.chip_size, halo=args.halo)
    print(f"probabilities written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
