"""The package's own evaluation: pixel accuracy on the test split, logged to the training run."""

import argparse
from pathlib import Path

import mlflow
import mlflow.pyfunc
import rasterio


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--data", required=True)
    args = parser.parse_args()
    data = Path(args.data)
    with rasterio.open(data / "labels.tif") as src:
        labels = src.read(1)
    with rasterio.open(data / "split.tif") as src:
        test = (src.read(1) == 2) & (labels != 255)
    with rasterio.open(data / "image.tif") as src:
        image = src.read(out_dtype="float32")
    predicted = mlflow.pyfunc.load_model(args.model_uri).predict(image[None])[0]
    with mlflow.start_run():
        mlflow.log_metrics(
            {
                "package_test_accuracy": float((predicted[test] == labels[test]).mean()),
                "package_test_pixels": int(test.sum()),
            }
        )


if __name__ == "__main__":
    main()
