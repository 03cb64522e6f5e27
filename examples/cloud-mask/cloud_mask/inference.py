"""``inference`` entry point: predict a cloud mask GeoTIFF from a 10-band image, chip by chip.

Memory stays bounded by the chip size. The features are per pixel, so chips need no halo
and the mask does not change at chip edges.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import rasterio
from rasterio.windows import Window

from cloud_mask.data import CLASSES, IGNORE_VALUE, N_BANDS

NODATA = IGNORE_VALUE


class Predictor(Protocol):
    """Anything with a pyfunc-style ``predict`` (an MLflow ``PyFuncModel``, the raw model)."""

    def predict(self, data: Any) -> Any:
        """Map a ``(batch, 10, h, w)`` float32 array to ``(batch, h, w)`` class values."""


def chip_windows(height: int, width: int, chip_size: int) -> list[Window]:
    """Cover a ``height`` x ``width`` grid with non-overlapping chips, row by row.

    Args:
        height: Rows of the grid.
        width: Columns of the grid.
        chip_size: Side of a chip; edge chips are smaller.

    Returns:
        The chip windows.

    Raises:
        ValueError: If ``chip_size`` is below 1.
    """
    if chip_size < 1:
        raise ValueError(f"chip_size must be >= 1, got {chip_size}")
    return [
        Window(col, row, min(chip_size, width - col), min(chip_size, height - row))
        for row in range(0, height, chip_size)
        for col in range(0, width, chip_size)
    ]


def predict_raster(model: Predictor, image: str | Path, output: str | Path, *, chip_size: int = 256) -> Path:
    """Write the model's class mask for ``image`` on the image's grid.

    Pixels whose bands are all NaN (fill) get :data:`NODATA`.

    Args:
        model: The loaded model.
        image: GeoTIFF with the 10 scaled bands (as ``image.tif`` of a dataset).
        output: Mask GeoTIFF to write (uint8, nodata 255, same CRS and transform).
        chip_size: Side of the chips read and predicted at once.

    Returns:
        The mask path.

    Raises:
        ValueError: If the image does not have 10 bands or the model returns a wrong shape.
    """
    out_path = Path(output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(image) as src:
        if src.count != N_BANDS:
            raise ValueError(f"{image} has {src.count} bands, the model reads {N_BANDS}")
        profile = {
            "driver": "GTiff",
            "width": src.width,
            "height": src.height,
            "count": 1,
            "dtype": "uint8",
            "crs": src.crs,
            "transform": src.transform,
            "nodata": NODATA,
            "compress": "deflate",
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
        }
        with rasterio.open(out_path, "w", **profile) as dst:
            dst.set_band_description(1, "cloud mask")
            dst.update_tags(1, classes=json.dumps(list(CLASSES), sort_keys=True))
            for window in chip_windows(src.height, src.width, chip_size):
                chip = src.read(window=window, out_dtype="float32")
                mask = np.asarray(model.predict(chip[None]))
                expected = (1, int(window.height), int(window.width))
                if mask.shape != expected:
                    raise ValueError(f"model returned shape {mask.shape}, expected {expected}")
                result = mask[0].astype(np.uint8)
                result[np.all(np.isnan(chip), axis=0)] = NODATA
                dst.write(result, 1, window=window)
    return out_path


def main(argv: list[str] | None = None) -> None:
    """Command line of the ``inference`` entry point."""
    import mlflow.pyfunc

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", required=True, help="e.g. runs:/<run id>/model")
    parser.add_argument("--image", required=True, help="10-band GeoTIFF")
    parser.add_argument("--output", required=True, help="mask GeoTIFF to write")
    parser.add_argument("--chip-size", type=int, default=256)
    args = parser.parse_args(argv)
    model = mlflow.pyfunc.load_model(args.model_uri)
    out = predict_raster(model, args.image, args.output, chip_size=args.chip_size)
    print(f"mask written to {out}")


if __name__ == "__main__":
    main()
