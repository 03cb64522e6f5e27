"""Fit a LightGBM booster on labelled train pixels and log it as a pyfunc model."""

import argparse
import tempfile
from pathlib import Path

import lightgbm
import mlflow
import numpy as np
import rasterio

from lgb_pixels.model import BoosterModel


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--num-rounds", type=int, default=20)
    args = parser.parse_args()
    data = Path(args.data)
    with rasterio.open(data / "labels.tif") as src:
        labels = src.read(1).ravel()
    with rasterio.open(data / "split.tif") as src:
        split = src.read(1).ravel()
    with rasterio.open(data / "image.tif") as src:
        image = src.read(out_dtype="float32")
    index = np.flatnonzero((split == 1) & (labels != 255))
    index = np.random.default_rng(0).choice(index, size=min(50000, index.size), replace=False)
    pixels = image.reshape(image.shape[0], -1).T[index]
    params = {"objective": "binary", "verbose": -1, "num_threads": 1}
    booster = lightgbm.train(params, lightgbm.Dataset(pixels, labels[index]), args.num_rounds)
    with mlflow.start_run(), tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params({"num_rounds": args.num_rounds, "lightgbm": lightgbm.__version__})
        booster.save_model(f"{tmp}/booster.txt")
        mlflow.pyfunc.log_model(
            name="model",
            python_model=BoosterModel(),
            artifacts={"booster": f"{tmp}/booster.txt"},
            code_paths=[str(Path(__file__).parent)],
            pip_requirements=[f"lightgbm=={lightgbm.__version__}", "numpy>=2", "mlflow-skinny>=3.1"],
        )


if __name__ == "__main__":
    main()
