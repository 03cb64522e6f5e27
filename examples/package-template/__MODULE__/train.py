"""Fit the threshold on the dataset's training chips and log the model to MLflow as `model`.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--threshold-quantile", type=float, default=0.5)
    args = parser.parse_args()
    chips = training_chips(args.data)
    if not chips:
        raise SystemExit(f"{args.data / 'chips'}: no training chip (*.tif not listed in test.txt)")
    means, labels = zip(*(read_chip(chip, args.data) for chip in chips), strict=True)
    pixels, truth = np.concatenate(means), np.concatenate(labels)
    if pixels.size == 0:
        raise SystemExit(f"{args.data}: every label is {IGNORE_VALUE} (not scored): nothing to train on")
    threshold = float(np.quantile(pixels, args.threshold_quantile))
    predicted = (pixels > threshold).astype(truth.dtype)
    # The package starts its own run: geomlops sets MLFLOW_EXPERIMENT_ID (the experiment) and
    # MLFLOW_RUN_CONTEXT (tags it finds the run by) and registers the model logged here.
    with mlflow.start_run():
        mlflow.log_param("threshold_quantile", args.threshold_quantile)
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
