"""Fit the threshold on the dataset's training chips and log the model to MLflow as `model`.

The threshold is the one that best separates the labelled pixels (most of them right: band mean
above it for the target, at or below it for the background), unless `--threshold` gives one.

The dataset is what `preprocess` writes: `chips/*.tif`, their label rasters in `labels/`
(same file names) and `test.txt`, the chips held out for evaluation, which are not read here.
"""

import argparse
from pathlib import Path

import mlflow
import numpy as np
import rasterio

from __MODULE__.model import ThresholdModel

#: the label value that is not scored (as geomlops' evaluation reads it by default)
IGNORE_VALUE = 255


def training_chips(data: Path) -> list[Path]:
    """The chips of the dataset that are not listed in its test.txt."""
    test_list = data / "test.txt"
    lines = test_list.read_text().splitlines() if test_list.is_file() else []
    test = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    chips = sorted((data / "chips").glob("*.tif"))
    return [chip for chip in chips if chip.name not in test and chip.stem not in test]


def read_chip(chip: Path, data: Path) -> tuple[np.ndarray, np.ndarray]:
    """The band mean of each labelled pixel of a chip, and its label."""
    label_path = data / "labels" / chip.name
    if not label_path.is_file():
        raise SystemExit(f"{chip}: no label raster {label_path}")
    with rasterio.open(chip) as src:
        mean = src.read().astype("float32").mean(axis=0)
    with rasterio.open(label_path) as src:
        labels = src.read(1)
    if labels.shape != mean.shape:
        raise SystemExit(f"{label_path}: {labels.shape} pixels, its chip {chip} {mean.shape}")
    scored = labels != IGNORE_VALUE
    return mean[scored], labels[scored]


def best_threshold(pixels: np.ndarray, target: np.ndarray) -> float:
    """The threshold that classifies most labelled pixels right (``target`` those above it),
    halfway between the pixel values it separates, so that unseen values near either side
    are classified as their side."""
    values = np.unique(pixels)
    candidates = np.concatenate([[values[0] - 1.0], values])
    background, positive = np.sort(pixels[~target]), np.sort(pixels[target])
    right = np.searchsorted(background, candidates, side="right") + (
        positive.size - np.searchsorted(positive, candidates, side="right")
    )
    best = int(np.argmax(right))
    above = values[best] if best < values.size else candidates[best] + 1.0  # the next value up
    return float((candidates[best] + above) / 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--threshold", default="fit", help="'fit' (from the labels) or a band mean")
    args = parser.parse_args()
    chips = training_chips(args.data)
    if not chips:
        raise SystemExit(f"{args.data / 'chips'}: no training chip (*.tif not listed in test.txt)")
    means, labels = zip(*(read_chip(chip, args.data) for chip in chips), strict=True)
    pixels, truth = np.concatenate(means), np.concatenate(labels)
    if pixels.size == 0:
        raise SystemExit(f"{args.data}: every label is {IGNORE_VALUE} (not scored): nothing to train on")
    threshold = best_threshold(pixels, truth != 0) if args.threshold == "fit" else float(args.threshold)
    predicted = (pixels > threshold).astype(truth.dtype)
    # The package starts its own run: geomlops sets MLFLOW_EXPERIMENT_ID (the experiment) and
    # MLFLOW_RUN_CONTEXT (tags it finds the run by) and registers the model logged here.
    with mlflow.start_run():
        mlflow.log_param("threshold", args.threshold)
        mlflow.log_metrics(
            {
                "threshold": threshold,
                "train_accuracy": float(np.mean(predicted == truth)),
                "n_train_chips": float(len(chips)),
            }
        )
        mlflow.pyfunc.log_model(
            name="model",
            python_model=ThresholdModel(threshold),
            code_paths=[str(Path(__file__).parent)],
        )


if __name__ == "__main__":
    main()
