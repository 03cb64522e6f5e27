"""Quicklooks: the evaluation's (labels, prediction and errors over the test area, as a PNG)
and which of the imagery's bands a picture shows as red, green and blue.

Works on decimated arrays (at most ~800 px a side), so a large scene costs little memory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from catalog_sync.mlm import source_bands

NOT_EVALUATED = 255
# Quicklook codes of the error panel.
TRUE_NEGATIVE, TRUE_POSITIVE, FALSE_POSITIVE, FALSE_NEGATIVE = 0, 1, 2, 3


def pyplot() -> Any:
    """matplotlib's ``pyplot``, drawing off screen (Agg).

    Where matplotlib's own folders (``$XDG_CONFIG_HOME/matplotlib`` and ``$XDG_CACHE_HOME/matplotlib``,
    else under ``~/.config`` and ``~/.cache``) cannot be written, as in a task of the local runner's
    sandbox (the host's home is read-only there), its configuration and font cache go to the work
    folder's ``cache/matplotlib``: built once and shared, rather than built again in every task,
    each warning of it in its log.
    """
    if "matplotlib" not in sys.modules and "MPLCONFIGDIR" not in os.environ:
        config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        if not all(_writable(Path(folder) / "matplotlib") for folder in (config, cache)):
            from geomlops.settings import get_settings

            folder = get_settings().home_dir / "cache" / "matplotlib"
            if _writable(folder):
                os.environ["MPLCONFIGDIR"] = str(folder)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _writable(folder: Path) -> bool:
    """Whether ``folder`` is (or could be made) a folder this process may write in."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return folder.is_dir() and os.access(folder, os.W_OK)


#: the colours a picture is drawn in, as the ``eo:common_name`` of bands
RGB_NAMES = ("red", "green", "blue")


def _common_names(item: Mapping[str, Any]) -> dict[str, str]:
    """Band name -> common name, from an item's ``bands`` (STAC 1.1) or ``eo:bands`` (1.0)."""
    props = item.get("properties") or {}
    found: dict[str, str] = {}
    for band in [*(props.get("eo:bands") or []), *(props.get("bands") or [])]:
        if isinstance(band, Mapping) and band.get("name"):
            common = band.get("eo:common_name") or band.get("common_name")
            if common:
                found[str(band["name"])] = str(common)
    return found


def _reads(band: Mapping[str, Any], bands: list[Any]) -> tuple[str, ...]:
    """The bands a derived input band's expression reads (none where geomlops cannot read it)."""
    from catalog_sync.band_expression import BandExpressionError, derived_band

    try:
        return derived_band(band, bands).names
    except BandExpressionError:
        return ()


def rgb_bands(model_item: Mapping[str, Any] | None, colour_interpretation: Sequence[str] = ()) -> list[int]:
    """Which bands of the imagery (1-based) to show as red, green and blue.

    The imagery's bands are the model's input bands, in order (derived ones are not: the bands
    they read follow the others, as the model reads undescribed imagery). They are picked by the common
    names (``eo:common_name``) the MLM item gives them: in ``mlm:input``'s band objects, or in
    the item's own ``bands``/``eo:bands`` by band name. A model item that names no red, green
    and blue leaves it to the imagery's own colour interpretation (GDAL's ``red``, ``green``,
    ``blue``: drone imagery says so); otherwise the first band is drawn in grey.

    Args:
        model_item: the model's STAC item with the MLM extension, or None.
        colour_interpretation: the imagery's colour interpretation of each band, in order.

    Returns:
        Three band indexes: red, green, blue (the same one three times for grey).
    """
    names: list[str | None] = []
    if model_item is not None:
        inputs = (model_item.get("properties") or {}).get("mlm:input") or []
        bands = (inputs[0].get("bands") or []) if inputs and isinstance(inputs[0], Mapping) else []
        by_name = _common_names(model_item)
        objects = {str(b.get("name")): b for b in bands if isinstance(b, Mapping)}
        derived = {
            name: _reads(band, bands) for name, band in objects.items() if band.get("expression")
        }  # an index: the imagery holds the bands it reads, after the others
        listed = [str(b.get("name")) if isinstance(b, Mapping) else str(b) for b in bands]
        for name in source_bands(listed, derived):
            common = (objects.get(name) or {}).get("eo:common_name") or by_name.get(name)
            names.append(str(common) if common else None)
    for candidates in (names, [str(c).lower() for c in colour_interpretation]):
        if all(colour in candidates for colour in RGB_NAMES):
            return [candidates.index(colour) + 1 for colour in RGB_NAMES]
    return [1, 1, 1]


def error_codes(truth: NDArray[np.uint8], predicted: NDArray[np.uint8], positive: int) -> NDArray[np.uint8]:
    """Per pixel TN/TP/FP/FN codes for the positive class (no IO).

    Args:
        truth: True class values; :data:`NOT_EVALUATED` where not evaluated.
        predicted: Predicted class values, same shape.
        positive: The positive class value.

    Returns:
        uint8 codes (:data:`TRUE_NEGATIVE` ... :data:`FALSE_NEGATIVE`), :data:`NOT_EVALUATED`
        where ``truth`` is.
    """
    is_true, is_pred = truth == positive, predicted == positive
    codes = np.full(truth.shape, NOT_EVALUATED, dtype=np.uint8)
    evaluated = truth != NOT_EVALUATED
    codes[evaluated & ~is_true & ~is_pred] = TRUE_NEGATIVE
    codes[evaluated & is_true & is_pred] = TRUE_POSITIVE
    codes[evaluated & ~is_true & is_pred] = FALSE_POSITIVE
    codes[evaluated & is_true & ~is_pred] = FALSE_NEGATIVE
    return codes


def write_quicklook(
    path: Path,
    *,
    labels: NDArray[np.uint8],
    predicted: NDArray[np.uint8],
    test: NDArray[np.bool_],
    excluded: NDArray[np.bool_],
    class_names: list[str],
    positive: int,
    title: str,
) -> Path:
    """Draw three panels (labels with the split, prediction, errors) over the whole grid.

    Args:
        path: PNG to write.
        labels: Class values, :data:`NOT_EVALUATED` for ignored pixels.
        predicted: Predicted class values, :data:`NOT_EVALUATED` where not predicted.
        test: True on test pixels.
        excluded: True on pixels of neither split (the buffer between train and test).
        class_names: Name of each class value.
        positive: The positive class value.
        title: Figure title (the headline metrics).

    Returns:
        ``path``.
    """
    plt = pyplot()  # before any other import of matplotlib
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    n = len(class_names)
    palette = ["#2e7d32", "#f5f5f5", "#1565c0", "#ef6c00", "#6a1b9a", "#00838f"]
    class_colours = [palette[i % len(palette)] for i in range(n)]
    grey = "#9e9e9e"

    def as_index(values: NDArray[np.uint8]) -> NDArray[np.int64]:
        out = values.astype(np.int64)
        out[values >= n] = n  # ignored / not predicted -> grey
        return out

    truth_on_test = np.where(test, labels, NOT_EVALUATED).astype(np.uint8)
    codes = error_codes(truth_on_test, predicted, positive)
    class_cmap = ListedColormap([*class_colours, grey])
    error_colours = ["#2e7d32", "#f5f5f5", "#ef6c00", "#c2185b", grey]
    error_cmap = ListedColormap(error_colours)
    error_index = np.where(codes == NOT_EVALUATED, 4, codes)

    fig, axes = plt.subplots(1, 3, figsize=(13, 5.2), dpi=80, constrained_layout=True)
    panels = [
        (axes[0], as_index(labels), class_cmap, n, "Labels" + _marks(test, excluded)),
        (axes[1], as_index(predicted), class_cmap, n, "Prediction on test blocks"),
        (axes[2], error_index, error_cmap, 4, f"Errors on test pixels ({class_names[positive]})"),
    ]
    for ax, image, cmap, vmax, name in panels:
        ax.imshow(image, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
        if test.any() and not test.all():
            ax.contour(test.astype(np.uint8), levels=[0.5], colors="#d50000", linewidths=0.8)
        if ax is axes[0] and excluded.any():
            ax.imshow(np.ma.masked_where(~excluded, excluded), cmap=ListedColormap(["black"]), alpha=0.45)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1].legend(
        handles=[
            Patch(facecolor=c, edgecolor="#616161", label=name)
            for c, name in zip(class_colours, class_names, strict=True)
        ]
        + [Patch(facecolor=grey, edgecolor="#616161", label="ignored / not predicted")],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=3,
        fontsize=8,
    )
    axes[2].legend(
        handles=[
            Patch(facecolor=c, edgecolor="#616161", label=name)
            for c, name in zip(
                error_colours,
                ["true negative", "true positive", "false positive", "false negative"],
                strict=False,
            )
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=2,
        fontsize=8,
    )
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def _marks(test: NDArray[np.bool_], excluded: NDArray[np.bool_]) -> str:
    """What the labels panel marks: the test area where it is outlined, a buffer where one is
    dimmed (a dataset of chips has neither an outline across a scene nor a buffer)."""
    marks = [
        *(["test outlined"] if test.any() and not test.all() else []),
        *(["buffer dimmed"] if excluded.any() else []),
    ]
    return f" ({', '.join(marks)})" if marks else ""
