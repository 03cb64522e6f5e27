"""Predict one block of imagery with a halo, keeping only the centre.

Reading each block with a margin of ``halo`` pixels on every side and cropping the prediction
back to the block means a model with a receptive field up to ``halo`` pixels predicts exactly
what it would predict on the whole image: nothing changes at block edges.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from catalog_sync.mlm import ModelInput
from geomlops.errors import GeomlopsError, ImageryMismatchError

Predict = Callable[[NDArray[np.float32]], NDArray[Any]]

#: class value written where the imagery has no data
NODATA_CLASS = 255


def check_imagery(src: Any, model_input: ModelInput) -> None:
    """Check band count and data type against the model's MLM input.

    Raises:
        ImageryMismatchError: naming the file, what it has and what the model expects.
    """
    expected = len(model_input.bands) or (model_input.shape[1] if len(model_input.shape) > 1 else None)
    if expected and expected > 0 and src.count != expected:
        raise ImageryMismatchError(
            f"{src.name}: {src.count} band(s), but the model's input '{model_input.name}' expects "
            f"{expected} ({', '.join(model_input.bands)})"
        )
    target = np.dtype(model_input.data_type)
    for dtype in set(src.dtypes):
        if not np.can_cast(np.dtype(dtype), target, casting="same_kind"):
            raise ImageryMismatchError(
                f"{src.name}: data type {dtype} cannot be safely read as the model's {target}"
            )


def predict_block(
    predict: Predict,
    src: Any,
    window: tuple[int, int, int, int],
    *,
    halo: int,
    dtype: str = "float32",
) -> NDArray[np.uint8]:
    """Predict the block ``(col_off, row_off, width, height)`` of ``src`` with a halo.

    Args:
        predict: the model, taking ``(1, bands, h, w)`` and returning ``(1, h, w)`` classes.
        src: an open rasterio dataset.
        window: the block in pixels.
        halo: margin read around the block (at least the model's receptive-field radius).
        dtype: the model's input data type.

    Returns:
        ``(height, width)`` class values; ``NODATA_CLASS`` where any band has no data.

    Raises:
        GeomlopsError: the model returned an unexpected shape.
    """
    from rasterio.windows import Window

    col, row, width, height = window
    read = Window(col - halo, row - halo, width + 2 * halo, height + 2 * halo)
    data = src.read(window=read, boundless=True, masked=True)
    invalid = np.ma.getmaskarray(data).any(axis=0)
    batch = np.ma.filled(data, 0).astype(dtype)[None]
    out = np.asarray(predict(batch))
    if out.ndim == 4 and out.shape[1] == 1:
        out = out[:, 0]
    if out.shape != (1, height + 2 * halo, width + 2 * halo):
        raise GeomlopsError(
            f"model returned shape {out.shape} for input {batch.shape}; expected (1, H, W) classes"
        )
    classes = out[0].astype(np.uint8)
    classes[invalid] = NODATA_CLASS
    centre: NDArray[np.uint8] = classes[halo : halo + height, halo : halo + width]
    return centre
