"""Turn a class mask into GeoJSON polygons of class 1, in longitude/latitude (RFC 7946).

geomlops runs this entry point on a batch run's class mask where the MLM item's output says
``"post_processing_function": {"format": "mlproject", "expression": "postprocess"}``, and
publishes the polygons it writes; each feature's ``class`` is a class value or name of the item.
"""

import argparse
import json

import rasterio
from rasterio.features import shapes
from rasterio.warp import transform_geom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mask", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    with rasterio.open(args.mask) as src:
        mask = src.read(1)
        features = [
            {
                "type": "Feature",
                "geometry": transform_geom(src.crs, "EPSG:4326", geometry),
                "properties": {"class": int(value)},
            }
            for geometry, value in shapes(mask, mask=mask == 1, transform=src.transform, connectivity=4)
        ]
    with open(args.output, "w") as out:
        json.dump({"type": "FeatureCollection", "features": features}, out)


if __name__ == "__main__":
    main()
