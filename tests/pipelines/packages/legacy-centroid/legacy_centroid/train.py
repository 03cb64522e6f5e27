"""Fit class centroids on the train split; log the model with the package's MLflow 2 client."""

import argparse
import json
from pathlib import Path

import mlflow
import numpy as np
import rasterio

from legacy_centroid.model import CentroidModel

assert np.__version__.startswith("1."), np.__version__
assert mlflow.__version__.startswith("2."), mlflow.__version__


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--max-samples", type=int, default=20000)
    args = parser.parse_args()
    data = Path(args.data)
    with rasterio.open(data / "labels.tif") as src:
        labels = src.read(1).ravel()
    with rasterio.open(data / "split.tif") as src:
        split = src.read(1).ravel()
    with rasterio.open(data / "image.tif") as src:
        image = src.read(out_dtype="float32")
    pixels = image.reshape(image.shape[0], -1).T
    classes = [c["value"] for c in json.loads((data / "dataset.json").read_text())["classes"]]
    rng = np.random.default_rng(0)
    centroids = []
    for value in classes:
        index = np.flatnonzero((split == 1) & (labels == value))
        index = rng.choice(index, size=min(args.max_samples, index.size), replace=False)
        centroids.append(pixels[index].mean(axis=0))
    mlflow.set_experiment("legacy-centroid-own-experiment")
    with mlflow.start_run():
        mlflow.log_params({"max_samples": args.max_samples, "numpy": np.__version__})
        mlflow.pyfunc.log_model(
            artifact_path="model",
            python_model=CentroidModel(classes, np.stack(centroids)),
            code_paths=[str(Path(__file__).parent)],
            pip_requirements=["numpy<2", "pandas<2.3", "mlflow-skinny==2.22.1"],
        )


if __name__ == "__main__":
    main()
