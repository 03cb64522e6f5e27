"""Score the trained model on the chips ``test.txt`` holds out; log ``test_*`` metrics.

geomlops' training workflow runs this (the package's ``evaluate`` entry point) with
``MLFLOW_RUN_ID`` set to the training run, so the metrics land on it. Pixels are building where
the model's probability is above ``threshold`` (the item's, 0.5); label pixels equal to the
dataset's ignore value are not scored.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mlflow
import numpy as np
import rasterio

from building_footprints.data import CLASSES, IGNORE_VALUE, chip_pairs, read_rgb, scale


def confusion(model: object, pairs: list[tuple[Path, Path]], threshold: float) -> np.ndarray:
    """2x2 counts: rows label (background, building), columns prediction."""
    matrix = np.zeros((2, 2), np.int64)
    for chip, label_path in pairs:
        probability = model.predict(scale(read_rgb(chip))[None])[0, 0]  # type: ignore[attr-defined]
        with rasterio.open(label_path) as src:
            label = src.read(1)
        keep = label != IGNORE_VALUE
        predicted = (probability > threshold)[keep].astype(np.int64)
        truth = (label[keep] > 0).astype(np.int64)
        matrix += np.bincount(truth * 2 + predicted, minlength=4).reshape(2, 2)
    return matrix


def metrics(matrix: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    for value, info in enumerate(CLASSES):
        tp = matrix[value, value]
        fp, fn = matrix[:, value].sum() - tp, matrix[value].sum() - tp
        name = info["name"]
        out[f"test_iou_{name}"] = float(tp / max(tp + fp + fn, 1))
        out[f"test_precision_{name}"] = float(tp / max(tp + fp, 1))
        out[f"test_recall_{name}"] = float(tp / max(tp + fn, 1))
        out[f"test_f1_{name}"] = float(2 * tp / max(2 * tp + fp + fn, 1))
        out[f"test_support_{name}"] = float(matrix[value].sum())
    for key in ("iou", "precision", "recall", "f1"):
        out[f"test_{key}"] = out[f"test_{key}_building"]
    out["test_miou"] = (out["test_iou_background"] + out["test_iou_building"]) / 2
    out["test_accuracy"] = float(np.trace(matrix) / max(matrix.sum(), 1))
    out["test_n_pixels"] = float(matrix.sum())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args(argv)
    pairs = chip_pairs(args.data, test=True)
    if not pairs:
        print(f"evaluate: {args.data} holds out no chip (test.txt)", file=sys.stderr)
        return 2
    model = mlflow.pyfunc.load_model(args.model_uri)
    matrix = confusion(model, pairs, args.threshold)
    scores = metrics(matrix)
    with mlflow.start_run():  # MLFLOW_RUN_ID: the training run
        mlflow.log_metrics(scores)
        mlflow.log_dict(
            {
                "metrics": scores,
                "confusion_matrix": matrix.tolist(),
                "classes": list(CLASSES),
                "threshold": args.threshold,
                "test_chips": [chip.name for chip, _ in pairs],
            },
            "evaluation/metrics.json",
        )
    print(json.dumps(scores, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
