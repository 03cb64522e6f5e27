"""Predict a class mask for one GeoTIFF with a logged model.

geomlops runs this entry point on every block of a batch run, instead of loading the model
itself, where the MLM item's input says ``"geomlops:inference": "inference"``: the image is
the block with its halo (the imagery's bands as stored), and the mask written must be on its
grid.
"""

import argparse

import mlflow
import rasterio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    model = mlflow.pyfunc.load_model(args.model_uri)
    with rasterio.open(args.image) as src:
        mask = model.predict(src.read().astype("float32")[None])[0]
        profile = {**src.profile, "count": 1, "dtype": "uint8", "nodata": None}
    with rasterio.open(args.output, "w", **profile) as dst:
        dst.write(mask, 1)


if __name__ == "__main__":
    main()
