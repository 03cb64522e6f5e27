"""Confusion-matrix metrics (steps._metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from steps._metrics import (
    accuracy,
    confusion_matrix,
    metric_suffix,
    per_class_metrics,
    per_class_table,
    segmentation_metrics,
)


def test_confusion_matrix_counts_truth_by_prediction() -> None:
    truth = np.array([[0, 0, 1], [1, 1, 2]])
    predicted = np.array([[0, 1, 1], [0, 1, 2]])
    assert confusion_matrix(truth, predicted, 3).tolist() == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]


def test_confusion_matrix_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 1]), np.array([-1, 1]), 3)
    with pytest.raises(ValueError, match="values"):
        confusion_matrix(np.array([0, 1]), np.array([0]), 2)
    assert confusion_matrix(np.array([], dtype=int), np.array([], dtype=int), 2).sum() == 0


def test_binary_metrics_by_hand() -> None:
    # tp 3, fp 1, fn 2, tn 4
    matrix = np.array([[4, 1], [2, 3]])
    m = per_class_metrics(matrix)
    assert m["iou"][1] == pytest.approx(3 / 6)
    assert m["f1"][1] == pytest.approx(6 / 9)
    assert m["precision"][1] == pytest.approx(3 / 4)
    assert m["recall"][1] == pytest.approx(3 / 5)
    assert m["iou"][0] == pytest.approx(4 / 7)
    assert m["support"].tolist() == [5, 5]
    assert accuracy(matrix) == pytest.approx(0.7)


def test_metrics_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(7)
    truth = rng.integers(0, 3, 5000)
    predicted = np.where(rng.random(5000) < 0.7, truth, rng.integers(0, 3, 5000))
    m = per_class_metrics(confusion_matrix(truth, predicted, 3))
    assert np.allclose(m["iou"], jaccard_score(truth, predicted, average=None))
    assert np.allclose(m["f1"], f1_score(truth, predicted, average=None))
    assert np.allclose(m["precision"], precision_score(truth, predicted, average=None))
    assert np.allclose(m["recall"], recall_score(truth, predicted, average=None))


def test_absent_class_is_undefined_not_perfect() -> None:
    m = per_class_metrics(np.array([[5, 0], [0, 0]]))
    assert math.isnan(m["iou"][1]) and math.isnan(m["precision"][1]) and math.isnan(m["recall"][1])
    assert m["iou"][0] == 1.0
    assert math.isnan(accuracy(np.zeros((2, 2), dtype=np.int64)))


def test_segmentation_metrics_names_and_values() -> None:
    matrix = np.array([[4, 1], [2, 3]])
    out = segmentation_metrics(matrix, ["clear", "cloud"], 1, prefix="test_")
    assert out["test_iou"] == out["test_iou_cloud"] == pytest.approx(0.5)
    assert out["test_accuracy"] == pytest.approx(0.7)
    assert out["test_miou"] == pytest.approx((4 / 7 + 0.5) / 2)
    assert out["test_n_pixels"] == 10
    assert out["test_support_clear"] == 5
    assert set(out) >= {
        f"test_{k}_{c}" for k in ("iou", "f1", "precision", "recall") for c in ("clear", "cloud")
    }
    with pytest.raises(ValueError, match="class names"):
        segmentation_metrics(matrix, ["only"], 0)
    with pytest.raises(ValueError, match="positive"):
        segmentation_metrics(matrix, ["a", "b"], 2)


def test_class_names_become_metric_name_suffixes() -> None:
    assert metric_suffix("clear") == "clear"
    assert metric_suffix(" built-up area ") == "built-up_area"
    assert metric_suffix("roads (paved)") == "roads__paved_"
    out = segmentation_metrics(np.array([[4, 1], [2, 3]]), ["no data?", "building"], 1, prefix="test_")
    assert {"test_iou_no_data_", "test_iou_building"} <= set(out)
    with pytest.raises(ValueError, match="same metric names"):
        segmentation_metrics(np.array([[4, 1], [2, 3]]), ["a b", "a_b"], 1)


def test_per_class_table_is_keyed_by_class_name() -> None:
    table = per_class_table(np.array([[4, 1], [2, 3]]), ["background", "building"])
    assert table["building"]["iou"] == pytest.approx(0.5)
    assert table["background"]["support"] == 5
    assert set(table["building"]) == {"iou", "f1", "precision", "recall", "support"}
