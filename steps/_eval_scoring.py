"""Scoring one scene of an evaluation dataset: windowed reads, prediction, confusion matrix.

Also lays every scene's decimated labels, prediction and split out on one quicklook grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.windows import Window

from geomlops.errors import GeomlopsError, InvalidDatasetError
from steps._eval_classes import ClassScheme
from steps._eval_layout import Scene
from steps._metrics import confusion_matrix
from steps._quicklook import NOT_EVALUATED
from steps.model_io import ModelIO

EXCLUDED_SPLIT, TEST_SPLIT = 0, 2
QUICKLOOK_MAX_SIDE = 800


def chip_windows(height: int, width: int, chip_size: int) -> list[Window]:
    """Non-overlapping chips covering the grid row by row (edge chips are smaller)."""
    if chip_size < 1:
        raise GeomlopsError(f"chip_size must be >= 1, got {chip_size}")
    return [
        Window(col, row, min(chip_size, width - col), min(chip_size, height - row))
        for row in range(0, height, chip_size)
        for col in range(0, width, chip_size)
    ]


def _decimate_into(target: NDArray[Any], chip: NDArray[Any], window: Window, step: int) -> None:
    """Copy the chip's pixels on rows/columns that are multiples of ``step`` into ``target``."""
    row0, col0 = int(window.row_off), int(window.col_off)
    dr, dc = (-row0) % step, (-col0) % step
    part = chip[dr::step, dc::step]
    r, c = (row0 + dr) // step, (col0 + dc) // step
    target[r : r + part.shape[0], c : c + part.shape[1]] = part


def _indices(values: NDArray[Any], known: Sequence[int | None]) -> NDArray[np.int64]:
    """Class index of every value (its position in ``known``), -1 for values not in it."""
    pairs = sorted((v, i) for i, v in enumerate(known) if v is not None)
    flat = np.asarray(values).astype(np.int64)
    if not pairs:
        return np.full(flat.shape, -1, dtype=np.int64)
    sorted_values = np.array([v for v, _ in pairs], dtype=np.int64)
    index = np.array([i for _, i in pairs], dtype=np.int64)
    pos = np.clip(np.searchsorted(sorted_values, flat), 0, len(pairs) - 1)
    return np.where(sorted_values[pos] == flat, index[pos], -1)


def _unknown(values: NDArray[Any], indices: NDArray[np.int64]) -> list[int]:
    return sorted(int(v) for v in np.unique(np.asarray(values)[indices < 0]))[:10]


class Quicklook:
    """Decimated labels, prediction and split of every scene, laid out as a grid of cells."""

    def __init__(self, scenes: Sequence[Scene]) -> None:
        self.columns = max(1, math.ceil(math.sqrt(len(scenes))))
        self.cell = (max(sc.height for sc in scenes), max(sc.width for sc in scenes))
        rows = math.ceil(len(scenes) / self.columns)
        height, width = rows * self.cell[0], self.columns * self.cell[1]
        self.step = max(1, math.ceil(max(height, width) / QUICKLOOK_MAX_SIDE))
        small = (math.ceil(height / self.step), math.ceil(width / self.step))
        self.labels = np.full(small, NOT_EVALUATED, dtype=np.uint8)
        self.predicted = np.full(small, NOT_EVALUATED, dtype=np.uint8)
        self.test = np.zeros(small, dtype=bool)
        self.excluded = np.zeros(small, dtype=bool)

    def put(self, target: NDArray[Any], number: int, window: Window, chip: NDArray[Any]) -> None:
        row, col = divmod(number, self.columns)
        placed = Window(
            window.col_off + col * self.cell[1],
            window.row_off + row * self.cell[0],
            window.width,
            window.height,
        )
        _decimate_into(target, chip, placed, self.step)


def score_scene(
    number: int,
    scene: Scene,
    scheme: ClassScheme,
    predict: Callable[[NDArray[Any]], NDArray[Any]],
    chip_size: int,
    quicklook: Quicklook,
    what_model: str,
    io: ModelIO | None = None,
) -> NDArray[np.int64]:
    """The confusion matrix of one scene; its decimated arrays go into ``quicklook``.

    The model's input is prepared and its answer read as its MLM item says (``io``; default:
    values as read, class values back)."""
    io = io or ModelIO()
    n = len(scheme.names)
    matrix = np.zeros((n, n), dtype=np.int64)
    with ExitStack() as stack:
        image = stack.enter_context(rasterio.open(scene.image))
        labels = stack.enter_context(rasterio.open(scene.labels))
        split = stack.enter_context(rasterio.open(scene.split)) if scene.split else None
        for window in chip_windows(scene.height, scene.width, chip_size):
            truth = labels.read(1, window=window)
            if split is not None:
                split_chip = split.read(1, window=window)
                test, excluded = split_chip == TEST_SPLIT, split_chip == EXCLUDED_SPLIT
            else:
                test, excluded = np.full(truth.shape, scene.test), np.zeros(truth.shape, dtype=bool)
            ignored = truth == scheme.ignore_value if scheme.ignore_value is not None else np.zeros_like(test)
            truth_index = _indices(truth, scheme.label_values)
            evaluated = test & ~ignored
            if np.any(truth_index[evaluated] < 0):
                raise InvalidDatasetError(
                    f"{scene.labels} holds class values {_unknown(truth[evaluated], truth_index[evaluated])} "
                    f"that the dataset does not define (label values {scheme.label_values} of "
                    f"{scheme.names}, ignore {scheme.ignore_value}; from {scheme.source})"
                )
            shown = np.where(ignored | (truth_index < 0), NOT_EVALUATED, truth_index).astype(np.uint8)
            quicklook.put(quicklook.labels, number, window, shown)
            quicklook.put(quicklook.test, number, window, test)
            quicklook.put(quicklook.excluded, number, window, excluded)
            if not evaluated.any():
                continue
            height, width = int(window.height), int(window.width)
            chip, _ = io.prepare(image.read(io.band_indexes(image), window=window, masked=True), own=True)
            try:
                predicted = io.interpret(predict(io.to_model_size(chip[None])), height, width)
            except GeomlopsError as err:
                raise GeomlopsError(
                    f"{what_model}, predicting {(1, *chip.shape)} from {scene.image.name}: {err}"
                ) from err
            predicted_index = _indices(predicted[0], scheme.model_values)
            if np.any(predicted_index[evaluated] < 0):
                raise GeomlopsError(
                    f"{what_model} predicted class values "
                    f"{_unknown(predicted[0][evaluated], predicted_index[evaluated])} that are not "
                    f"among its classes {scheme.model_values} ({', '.join(scheme.names)})"
                )
            matrix += confusion_matrix(truth_index[evaluated], predicted_index[evaluated], n)
            shown_pred = np.where(test & (predicted_index >= 0), predicted_index, NOT_EVALUATED)
            quicklook.put(quicklook.predicted, number, window, shown_pred.astype(np.uint8))
    return matrix
