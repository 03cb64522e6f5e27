"""Confusion-matrix metrics for semantic segmentation. Pure numpy, no IO.

The confusion matrix has one row per true class and one column per predicted class.
A metric whose denominator is zero (a class absent from both truth and prediction) is
``nan``: undefined, not perfect and not zero.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


def confusion_matrix(
    truth: NDArray[np.integer[Any]], predicted: NDArray[np.integer[Any]], n_classes: int
) -> IntArray:
    """Count (true class, predicted class) pairs.

    Args:
        truth: True class indices, any shape.
        predicted: Predicted class indices, same shape as ``truth``.
        n_classes: Number of classes; indices must lie in ``[0, n_classes)``.

    Returns:
        int64 matrix shaped ``(n_classes, n_classes)``; rows are truth, columns prediction.

    Raises:
        ValueError: If the shapes differ or an index is out of range.
    """
    t = np.asarray(truth).ravel().astype(np.int64)
    p = np.asarray(predicted).ravel().astype(np.int64)
    if t.shape != p.shape:
        raise ValueError(f"truth has {t.size} values, prediction {p.size}")
    for name, values in (("truth", t), ("prediction", p)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"{name} holds class indices outside [0, {n_classes})")
    counts = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64)


def _ratio(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    out = np.full(numerator.shape, np.nan, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def per_class_metrics(matrix: IntArray) -> dict[str, FloatArray]:
    """IoU, F1, precision, recall and support of every class.

    Args:
        matrix: A confusion matrix from :func:`confusion_matrix`.

    Returns:
        ``{"iou", "f1", "precision", "recall", "support"}`` -> one value per class.
    """
    cm = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    return {
        "iou": _ratio(tp, tp + fp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "support": cm.sum(axis=1),
    }


def accuracy(matrix: IntArray) -> float:
    """Share of correctly classified pixels (``nan`` for an empty matrix)."""
    total = float(np.sum(matrix))
    return float(np.trace(matrix)) / total if total else float("nan")


def metric_suffix(class_name: str) -> str:
    """A class name as a metric-name suffix: characters MLflow refuses and spaces become ``_``.

    ``"clear"`` stays ``"clear"``; ``"built-up area"`` becomes ``"built-up_area"``.
    """
    return re.sub(r"[^A-Za-z0-9_.\-/]", "_", class_name.strip()) or "_"


def segmentation_metrics(
    matrix: IntArray, class_names: list[str], positive: int, *, prefix: str = ""
) -> dict[str, float]:
    """Flatten a confusion matrix into named metrics.

    Args:
        matrix: A confusion matrix from :func:`confusion_matrix`.
        class_names: One name per class index.
        positive: Index of the positive class (cloud, building, flood...).
        prefix: Prepended to every key, e.g. ``"test_"``.

    Returns:
        ``iou``, ``f1``, ``precision``, ``recall`` of the positive class; ``accuracy``;
        ``miou`` (mean IoU over classes that occur); ``n_pixels``; and per class
        ``iou_<name>``, ``f1_<name>``, ``precision_<name>``, ``recall_<name>``,
        ``support_<name>``, the name made safe by :func:`metric_suffix`.

    Raises:
        ValueError: If the names or the positive index do not match the matrix, or two names
            give the same metric name.
    """
    n = np.asarray(matrix).shape[0]
    if len(class_names) != n:
        raise ValueError(f"{len(class_names)} class names for a {n}-class matrix")
    if not 0 <= positive < n:
        raise ValueError(f"positive class {positive} outside [0, {n})")
    suffixes = [metric_suffix(name) for name in class_names]
    if len(set(suffixes)) != n:
        raise ValueError(f"class names {class_names} give the same metric names {suffixes}")
    per_class = per_class_metrics(matrix)
    out: dict[str, float] = {
        f"{prefix}{key}": float(per_class[key][positive]) for key in ("iou", "f1", "precision", "recall")
    }
    out[f"{prefix}accuracy"] = accuracy(matrix)
    iou = per_class["iou"]
    out[f"{prefix}miou"] = float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")
    out[f"{prefix}n_pixels"] = float(np.sum(matrix))
    for index, suffix in enumerate(suffixes):
        for key, values in per_class.items():
            out[f"{prefix}{key}_{suffix}"] = float(values[index])
    return out


def per_class_table(matrix: IntArray, class_names: list[str]) -> dict[str, dict[str, float]]:
    """:func:`per_class_metrics` keyed by class name: ``{name: {"iou": …, "support": …}}``."""
    per_class = per_class_metrics(matrix)
    return {
        name: {key: float(values[index]) for key, values in per_class.items()}
        for index, name in enumerate(class_names)
    }
