"""Per-pixel features: the 10 scaled bands plus a few normalised band ratios.

Features use no neighbourhood, so predictions do not depend on chip boundaries and a
train/test buffer of one pixel already keeps features disjoint.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from cloud_mask.data import BAND_IDS, N_BANDS

_INDEX: Final[dict[str, int]] = {band_id: i for i, band_id in enumerate(BAND_IDS)}

#: Normalised differences (a - b) / (a + b), by name.
RATIOS: Final[dict[str, tuple[str, str]]] = {
    "ndvi": ("B5", "B4"),  # vegetation is dark in red, bright in NIR; clouds are flat
    "ndsi": ("B3", "B6"),  # clouds are bright in SWIR, snow is not
    "ndwi": ("B3", "B5"),  # water
    "swir_ratio": ("B6", "B7"),
}
FEATURE_NAMES: Final[tuple[str, ...]] = (*BAND_IDS, *RATIOS, "visible_mean", "thermal_diff")


def pixel_features(bands: NDArray[np.floating]) -> NDArray[np.float32]:
    """Compute the model's features for a set of pixels.

    Args:
        bands: Scaled bands shaped ``(10, n_pixels)`` in :data:`~cloud_mask.data.BAND_IDS`
            order.

    Returns:
        float32 features shaped ``(n_pixels, len(FEATURE_NAMES))``; NaN where a ratio's
        denominator is 0 or an input is NaN (the classifier handles NaN).

    Raises:
        ValueError: If ``bands`` is not shaped ``(10, n)``.
    """
    if bands.ndim != 2 or bands.shape[0] != N_BANDS:
        raise ValueError(f"bands must be shaped ({N_BANDS}, n_pixels), got {bands.shape}")
    x = bands.astype(np.float32, copy=False)
    columns = [x[i] for i in range(N_BANDS)]
    with np.errstate(divide="ignore", invalid="ignore"):
        for a, b in RATIOS.values():
            numerator = x[_INDEX[a]] - x[_INDEX[b]]
            denominator = x[_INDEX[a]] + x[_INDEX[b]]
            columns.append(np.where(denominator != 0, numerator / denominator, np.nan))
    columns.append((x[_INDEX["B2"]] + x[_INDEX["B3"]] + x[_INDEX["B4"]]) / 3)
    columns.append(x[_INDEX["B10"]] - x[_INDEX["B11"]])
    return np.stack(columns, axis=1).astype(np.float32, copy=False)
