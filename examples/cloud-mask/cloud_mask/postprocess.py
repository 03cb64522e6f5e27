"""``postprocess`` entry point: class mask GeoTIFF -> GeoJSON polygons (RFC 7946, WGS84).

Polygons follow pixel edges with 4-connectivity (so no ring touches itself at a corner);
each carries its class value and name. Exterior rings are counter-clockwise as RFC 7946
asks, coordinates are rounded to 1e-7 degrees (about 1 cm).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
import shapely
from numpy.typing import NDArray
from rasterio.crs import CRS
from rasterio.transform import Affine
from shapely.geometry import mapping, shape
from shapely.geometry.polygon import orient

from cloud_mask.data import CLASSES

_NAMES = {c["value"]: c["name"] for c in CLASSES}
WGS84 = CRS.from_epsg(4326)


def mask_to_polygons(
    mask: NDArray[np.integer[Any]],
    transform: Affine,
    *,
    classes: Collection[int] | None = None,
    nodata: int | None = None,
) -> list[tuple[dict[str, Any], int]]:
    """Vectorize a class mask into polygons in the mask's CRS. No file IO.

    Args:
        mask: 2-D class values.
        transform: Affine transform of the mask's grid.
        classes: Class values to vectorize; ``None`` means every value but ``nodata``.
        nodata: Value that is never vectorized.

    Returns:
        ``(GeoJSON-like geometry, class value)`` pairs in raster scan order.
    """
    data = np.asarray(mask).astype(np.int32)
    keep = np.ones(data.shape, dtype=bool)
    if classes is not None:
        keep &= np.isin(data, list(classes))
    if nodata is not None:
        keep &= data != nodata
    return [
        (geometry, int(value))
        for geometry, value in rasterio.features.shapes(data, mask=keep, connectivity=4, transform=transform)
    ]


def to_feature_collection(
    polygons: list[tuple[dict[str, Any], int]], crs: CRS, *, precision: int = 7
) -> dict[str, Any]:
    """Reproject polygons to WGS84 and wrap them in an RFC 7946 FeatureCollection.

    Args:
        polygons: Output of :func:`mask_to_polygons`.
        crs: CRS of the polygons.
        precision: Decimal places kept in the coordinates.

    Returns:
        The FeatureCollection as a dict.
    """
    features = []
    for index, (geometry, value) in enumerate(polygons):
        lonlat = rasterio.warp.transform_geom(crs, WGS84, geometry)
        polygon = orient(shape(lonlat), sign=1.0)
        polygon = shapely.transform(polygon, lambda xy: np.round(xy, precision))
        features.append(
            {
                "type": "Feature",
                "id": index,
                "geometry": mapping(polygon),
                "properties": {"class": value, "class_name": _NAMES.get(value, str(value))},
            }
        )
    return {"type": "FeatureCollection", "features": features}


def postprocess(mask: str | Path, output: str | Path, *, classes: Collection[int] | None = (1,)) -> Path:
    """Vectorize a mask GeoTIFF to a GeoJSON file.

    Args:
        mask: Single-band class mask GeoTIFF (as written by the ``inference`` entry point).
        output: GeoJSON file to write.
        classes: Class values to vectorize (default: cloud); ``None`` for all.

    Returns:
        The GeoJSON path.
    """
    with rasterio.open(mask) as src:
        data = src.read(1)
        nodata = None if src.nodata is None else int(src.nodata)
        polygons = mask_to_polygons(data, src.transform, classes=classes, nodata=nodata)
        collection = to_feature_collection(polygons, src.crs)
    out_path = Path(output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(collection) + "\n", encoding="utf-8")
    return out_path


def parse_classes(text: str) -> list[int] | None:
    """Parse ``"all"`` or a comma-separated list of class values (``"1"``, ``"0,1"``)."""
    if text.strip().lower() == "all":
        return None
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> None:
    """Command line of the ``postprocess`` entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mask", required=True, help="class mask GeoTIFF")
    parser.add_argument("--output", required=True, help="GeoJSON file to write")
    parser.add_argument("--classes", default="1", help='class values, e.g. "1", or "all"')
    args = parser.parse_args(argv)
    out = postprocess(args.mask, args.output, classes=parse_classes(args.classes))
    print(f"polygons written to {out}")


if __name__ == "__main__":
    main()
