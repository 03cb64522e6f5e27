"""Building probabilities -> building polygons (GeoJSON, EPSG:4326), simplified and squared.

Pixels above ``--threshold`` (the item's ``geomlops:threshold``) are buildings. Each connected
group becomes a polygon, worked on in the UTM zone of the image's centre (metres): holes under
``--min-area`` are filled, the outline is simplified by ``--simplify`` metres, and with
``--square`` an outline that is nearly a rectangle (its area at least 80 % of its minimum
rotated rectangle's) becomes that rectangle scaled to the outline's area. Buildings under
``--min-area`` m² are dropped. Each feature carries its ``area_m2``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
from shapely import affinity
from shapely.geometry import Polygon, mapping, shape

RECTANGULAR = 0.8


def utm_crs(lon: float, lat: float) -> str:
    return f"EPSG:{(32600 if lat >= 0 else 32700) + min(int((lon + 180) // 6) + 1, 60)}"


def clean(polygon: Polygon, *, simplify: float, square: bool, min_area: float) -> Polygon | None:
    """One building outline in metres, cleaned; None when too small."""
    holes = [ring for ring in polygon.interiors if Polygon(ring).area >= min_area]
    polygon = Polygon(polygon.exterior, holes).simplify(simplify, preserve_topology=True)
    if polygon.is_empty or polygon.area < min_area:
        return None
    if square and not holes:
        rectangle = polygon.minimum_rotated_rectangle
        if rectangle.area > 0 and polygon.area / rectangle.area >= RECTANGULAR:
            factor = math.sqrt(polygon.area / rectangle.area)
            polygon = affinity.scale(rectangle, factor, factor, origin="centroid")
    return polygon


def postprocess(probabilities: Path, *, threshold: float, simplify: float, square: bool,
                min_area: float) -> dict[str, Any]:  # fmt: skip
    with rasterio.open(probabilities) as src:
        probability = src.read(1)
        crs, transform = src.crs, src.transform
        lon, lat = rasterio.warp.transform(src.crs, "EPSG:4326", [src.bounds.left / 2 + src.bounds.right / 2],
                                           [src.bounds.bottom / 2 + src.bounds.top / 2])  # fmt: skip
    mask = (probability > threshold).astype(np.uint8)
    metric = utm_crs(lon[0], lat[0])
    features = []
    for geometry, _ in rasterio.features.shapes(
        mask, mask=mask.astype(bool), transform=transform, connectivity=4
    ):
        outline = shape(rasterio.warp.transform_geom(crs, metric, geometry))
        cleaned = clean(outline, simplify=simplify, square=square, min_area=min_area)
        if cleaned is None:
            continue
        features.append({
            "type": "Feature",
            "properties": {"class": "building", "area_m2": round(cleaned.area, 2)},
            "geometry": rasterio.warp.transform_geom(metric, "EPSG:4326", mapping(cleaned)),
        })  # fmt: skip
    return {"type": "FeatureCollection", "features": features}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--probabilities", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--simplify", type=float, default=0.5, help="metres")
    parser.add_argument("--square", type=int, default=1, help="1: square nearly rectangular outlines")
    parser.add_argument("--min-area", type=float, default=4.0, help="square metres")
    args = parser.parse_args(argv)
    collection = postprocess(args.probabilities, threshold=args.threshold, simplify=args.simplify,
                             square=bool(args.square), min_area=args.min_area)  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(collection), encoding="utf-8")
    print(f"{len(collection['features'])} buildings written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
