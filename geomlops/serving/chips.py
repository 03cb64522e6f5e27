"""Image chips posted to a model server: a GeoTIFF in memory, checked before any prediction.

A chip is refused, with a message naming what was wrong, when it is larger than the configured
limit (as sent or once decoded), is not a readable raster, has no georeference, or does not match
the model's MLM input (band count, data type).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from catalog_sync.mlm import ModelInput
from geomlops.errors import ChipError, ImageryMismatchError

if TYPE_CHECKING:
    from steps.model_io import ModelIO

#: a decoded chip may be this many times larger than the limit on what is sent (compression)
DECODED_FACTOR = 4


@contextmanager
def open_chip(data: bytes, model_input: ModelInput, max_bytes: int) -> Iterator[Any]:
    """Open a GeoTIFF chip held in memory, after checking it can be predicted.

    Args:
        data: the file's bytes.
        model_input: the model's MLM input (bands, data type).
        max_bytes: the largest chip accepted; decoded pixels may take ``DECODED_FACTOR`` times more.

    Yields:
        The open rasterio dataset.

    Raises:
        ChipError: too large, unreadable, not georeferenced, or not what the model takes.
    """
    import rasterio
    from rasterio.errors import RasterioIOError
    from rasterio.io import MemoryFile

    if not data:
        raise ChipError("chip: empty; expected the bytes of a GeoTIFF")
    if len(data) > max_bytes:
        raise ChipError(f"chip: {len(data)} bytes, larger than the limit of {max_bytes} bytes")
    with rasterio.Env(CPL_LOG="OFF"), MemoryFile(data) as memfile:
        try:
            src = memfile.open()
        except RasterioIOError as err:
            raise ChipError(f"chip: not a readable GeoTIFF ({err})") from err
        with src:
            decoded = src.width * src.height * sum(np.dtype(d).itemsize for d in src.dtypes)
            if decoded > DECODED_FACTOR * max_bytes:
                raise ChipError(
                    f"chip: {src.width}x{src.height} pixels x {src.count} bands decode to {decoded} bytes, "
                    f"more than {DECODED_FACTOR} x the limit of {max_bytes} bytes"
                )
            if src.crs is None or src.transform.is_identity:
                raise ChipError(
                    "chip: no georeference (the GeoTIFF needs a CRS and a geotransform to place polygons)"
                )
            try:
                from steps.predict import check_imagery

                check_imagery(src, model_input)
            except ImageryMismatchError as err:
                raise ChipError(f"chip: {str(err).split(': ', 1)[-1]}") from err
            try:
                src.read(1, window=((0, 1), (0, 1)))
            except RasterioIOError as err:
                raise ChipError(f"chip: pixel data cannot be decoded ({err})") from err
            yield src


def model_io(model_input: ModelInput, model_output: Mapping[str, Any] | None) -> ModelIO:
    """How a chip is prepared for the model and its answer read, from the MLM input and output
    (value scaling, resizing; class values, scores by arg-max or threshold): the one place
    serving asks :mod:`steps.model_io`. A chip is predicted whole, so no halo.

    Raises:
        InvalidModelItemError: the item asks for what geomlops cannot apply (the field named).
    """
    from catalog_sync.mlm import ModelOutput
    from steps.model_io import ModelIO

    output = ModelOutput.model_validate(model_output) if model_output else None
    return ModelIO.from_parts(model_input, output, halo=0)


def predict_chip(
    predict: Any, src: Any, model_input: ModelInput, io: ModelIO | None = None
) -> NDArray[np.uint8]:
    """Predict a whole chip; pixels with no data in any band become ``NODATA_CLASS``.

    ``io`` (:func:`model_io`) prepares the input and reads the answer as the model's MLM item
    says; default: values as read, class values back.

    Raises:
        ChipError: the pixels cannot be decoded (a truncated or corrupt file).
    """
    from rasterio.errors import RasterioIOError

    from steps.predict import predict_block

    try:
        return predict_block(
            predict, src, (0, 0, src.width, src.height), halo=0, dtype=model_input.data_type, io=io
        )
    except RasterioIOError as err:
        raise ChipError(f"chip: pixel data cannot be decoded ({err})") from err
