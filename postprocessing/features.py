"""What a model gives for one block, and what a post-processor makes of it.

Kept apart from :mod:`postprocessing.registry` so that built-in post-processors in their own
modules (:mod:`postprocessing.buildings`) depend on these types, and the registry on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from affine import Affine
from numpy.typing import NDArray

from postprocessing.grid import Block
from postprocessing.kernel import BlockPieces


@dataclass(frozen=True)
class BlockOutput:
    """A model's output for one block, and where that block lies.

    Attributes:
        data: the output tensor for the block (batch dimension removed).
        block: the block's window in the raster.
        transform: the raster's geotransform.
        nodata: class value that is not vectorized (segmentation).
    """

    data: NDArray[Any]
    block: Block
    transform: Affine
    nodata: int | None = None


def _no_geometries() -> NDArray[np.object_]:
    return np.empty(0, dtype=object)


@dataclass(frozen=True)
class BlockFeatures:
    """What a post-processor makes of one block.

    Attributes:
        pieces: pixel-space polygons still to merge across block edges (segmentation).
        geometries: complete features in the raster's CRS (boxes, footprints).
        classes: the class of each complete feature.
        scores: the model's confidence for each complete feature, when it gives one.
    """

    pieces: BlockPieces | None = None
    geometries: NDArray[np.object_] = field(default_factory=_no_geometries)
    classes: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    scores: NDArray[np.float64] | None = None
