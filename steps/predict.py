"""Predict one block of imagery with a halo, keeping only the centre.

Reading each block with a margin of ``halo`` pixels on every side and cropping the prediction
back to the block means a model with a receptive field up to ``halo`` pixels predicts exactly
what it would predict on the whole image: nothing changes at block edges. What goes into the
model and what its answer means come from its MLM item (:mod:`steps.model_io`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from catalog_sync.mlm import ModelInput
from geomlops.errors import ImageryMismatchError
from steps.model_io import NODATA_CLASS, ModelIO

Predict = Callable[[NDArray[Any]], NDArray[Any]]

__all__ = ["NODATA_CLASS", "Predict", "block_centre", "check_imagery", "predict_block", "read_block"]


#: STAC's common band names (the ``eo`` extension's ``common_name``)
COMMON_NAMES = frozenset(
    {
        "pan", "coastal", "blue", "green", "green05", "yellow", "red", "rededge", "rededge071",
        "rededge075", "rededge078", "nir", "nir08", "nir09", "cirrus", "swir16", "swir22", "lwir",
        "lwir11", "lwir12",
    }
)  # fmt: skip


def check_imagery(src: Any, model_input: ModelInput) -> None:
    """Check bands and data type against the model's MLM input.

    Imagery whose band descriptions name every MLM band may hold more bands: those are read.
    Imagery that describes its bands as the model names them (some of its bands, or STAC
    common names) but lacks some is refused, naming them; otherwise the band count must match.

    Raises:
        ImageryMismatchError: naming the file, what it has and what the model expects.
    """
    bands = model_input.source_bands  # derived bands (an index such as NDVI) are computed from these
    expected = len(bands) or (model_input.shape[1] if len(model_input.shape) > 1 else None)
    described = [d for d in (src.descriptions or ()) if d]
    named = bands and all(b in described for b in bands)
    missing = [b for b in bands if b not in described]
    # bands described in the model's own terms (some of its bands, or all common names): the
    # bands it needs and the imagery lacks are named, never read from other bands by position
    if (
        missing
        and len(described) == src.count
        and (len(missing) < len(bands) or set(described) | set(bands) <= COMMON_NAMES)
    ):
        raise ImageryMismatchError(
            f"{src.name}: its bands are {', '.join(described)}, but the model's input '{model_input.name}' "
            f"needs {', '.join(missing)} too ({', '.join(bands)})"
        )
    if not named and expected and expected > 0 and src.count != expected:
        raise ImageryMismatchError(
            f"{src.name}: {src.count} band(s), but the model's input '{model_input.name}' expects "
            f"{expected} ({', '.join(bands)})"
        )
    target = np.dtype(model_input.data_type)
    for dtype in set(src.dtypes):
        if not np.can_cast(np.dtype(dtype), target, casting="same_kind"):
            raise ImageryMismatchError(
                f"{src.name}: data type {dtype} cannot be safely read as the model's {target}"
            )


def read_block(
    src: Any, window: tuple[int, int, int, int], io: ModelIO, *, halo: int, size: int | None = None
) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """The model's input for the block ``(col_off, row_off, width, height)`` with its halo.

    Args:
        src: an open rasterio dataset.
        window: the block in pixels.
        io: the model's I/O (bands, scaling, data type).
        halo: margin read around the block.
        size: read a ``size`` x ``size`` block (beyond the imagery's edge: no data) so blocks at
            the edge stack with the others into one batch; their centre is the same.

    Returns:
        ``(bands, h, w)`` prepared values and the ``(h, w)`` mask of pixels with no data.
    """
    col, row, width, height = window
    width, height = max(width, size or 0), max(height, size or 0)
    data = _read_padded(
        src, io.band_indexes(src), col - halo, row - halo, width + 2 * halo, height + 2 * halo
    )
    return io.prepare(data, own=True)  # read just now: nobody else holds it


def _read_padded(src: Any, bands: list[int], col: int, row: int, width: int, height: int) -> Any:
    """The window of ``bands``, masked where it has no data; beyond the imagery's edge, the
    imagery mirrored at its edge.

    Only the part inside the imagery is read (a boundless read goes through a warped VRT: many
    times slower). What a block's halo, or an edge block's padding, reaches beyond the edge is
    that part reflected (``d c b | a b c d``, as PyTorch's reflection padding), values and no-data
    mask alike: a model sees plausible surroundings there, where a frame of zeros (black) makes
    some models see features along every edge of the imagery. A window wholly outside is no data.
    """
    from rasterio.windows import Window

    left, top = max(col, 0), max(row, 0)
    right, bottom = min(col + width, src.width), min(row + height, src.height)
    if (left, top, right, bottom) == (col, row, col + width, row + height):
        return src.read(bands, window=Window(col, row, width, height), masked=True)
    if right <= left or bottom <= top:
        dtype = np.dtype(src.dtypes[bands[0] - 1])
        shape = (len(bands), height, width)
        return np.ma.MaskedArray(np.zeros(shape, dtype), mask=np.ones(shape, bool))
    before, after = (top - row, left - col), (row + height - bottom, col + width - right)
    # read as far inside as the mirror reaches, so that it reflects the imagery, not the window
    first = [max(0, min(lo, hi - 1 - a)) for lo, hi, a in ((top, bottom, after[0]), (left, right, after[1]))]
    last = [
        min(n, max(hi, lo + b + 1))
        for lo, hi, b, n in ((top, bottom, before[0], src.height), (left, right, before[1], src.width))
    ]
    part = src.read(
        bands, window=Window(first[1], first[0], last[1] - first[1], last[0] - first[0]), masked=True
    )
    pads = ((0, 0), (before[0], after[0]), (before[1], after[1]))
    r0, c0 = row - (first[0] - before[0]), col - (first[1] - before[1])
    crop = (slice(None), slice(r0, r0 + height), slice(c0, c0 + width))
    return np.ma.MaskedArray(
        np.pad(np.ma.getdata(part), pads, mode="reflect")[crop],
        mask=np.pad(np.ma.getmaskarray(part), pads, mode="reflect")[crop],
    )


def block_centre(
    classes: NDArray[np.uint8], invalid: NDArray[np.bool_], window: tuple[int, int, int, int], halo: int
) -> NDArray[np.uint8]:
    """The block's own pixels of a prediction with its halo; no data where the imagery has none."""
    _, _, width, height = window
    classes = classes.copy()
    classes[invalid] = NODATA_CLASS
    centre: NDArray[np.uint8] = classes[halo : halo + height, halo : halo + width]
    return centre


def predict_block(
    predict: Predict,
    src: Any,
    window: tuple[int, int, int, int],
    *,
    halo: int,
    dtype: str = "float32",
    io: ModelIO | None = None,
) -> NDArray[np.uint8]:
    """Predict the block ``(col_off, row_off, width, height)`` of ``src`` with a halo.

    Args:
        predict: the model, taking ``(1, bands, h, w)``; its answer is read as ``io`` says.
        src: an open rasterio dataset.
        window: the block in pixels.
        halo: margin read around the block (at least the model's receptive-field radius).
        dtype: the model's input data type (when no ``io`` is given).
        io: the model's I/O from its MLM item (default: values as read, class values back).

    Returns:
        ``(height, width)`` class values; ``NODATA_CLASS`` where any band has no data.

    Raises:
        GeomlopsError: the model's answer does not fit its MLM output.
    """
    io = io or ModelIO(data_type=dtype, halo=halo)
    _, _, width, height = window
    array, invalid = read_block(src, window, io, halo=halo)
    raw = predict(io.to_model_size(array[None]))
    classes = io.interpret(raw, height + 2 * halo, width + 2 * halo)
    return block_centre(classes[0], invalid, window, halo)
