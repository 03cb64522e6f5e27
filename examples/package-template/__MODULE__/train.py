"""Fit the threshold on the dataset's images and log the model to MLflow as `model`."""

import argparse
from pathlib import Path

import mlflow
import numpy as np
import rasterio

from __MODULE__.model import ThresholdModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--threshold-quantile", type=float, default=0.5)
    args = parser.parse_args()
    means = []
    for path in sorted(args.data.rglob("*.tif")):
        with rasterio.open(path) as src:
            means.append(src.read().astype("float32").mean(axis=0).ravel())
    if not means:
        raise SystemExit(f"{args.data}: no GeoTIFF found to train on")
    threshold = float(np.quantile(np.concatenate(means), args.threshold_quantile))
    # geomlops starts the run; the package logs into it (MLFLOW_RUN_ID is set)
    with mlflow.start_run():
        mlflow.log_param("threshold_quantile", args.threshold_quantile)
        mlflow.log_metric("threshold", threshold)
        mlflow.pyfunc.log_model(
            name="model",
            python_model=ThresholdModel(threshold),
            code_paths=[str(Path(__file__).parent)],
        )


if __name__ == "__main__":
    main()
