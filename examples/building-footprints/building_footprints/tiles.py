"""Web-Mercator (XYZ) tile arithmetic: which tiles cover a bounding box, and where a tile lies.

OpenAerialMap serves each image as XYZ tiles; the chips this package trains on are single
zoom-19 tiles, georeferenced in EPSG:4326 by their corners (as fAIr's chips are).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

#: the latitude range Web Mercator covers
MAX_LAT = 85.0511287798066


def lonlat_to_tile(lon: float, lat: float, zoom: int) -> tuple[int, int]:
    """The tile (x, y) holding a point at ``zoom``."""
    lat = max(-MAX_LAT, min(MAX_LAT, lat))
    n = 2**zoom
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return min(max(x, 0), n - 1), min(max(y, 0), n - 1)


def tile_bounds(x: int, y: int, zoom: int) -> tuple[float, float, float, float]:
    """A tile's (west, south, east, north) in degrees."""
    n = 2**zoom

    def lat(row: int) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * row / n))))

    return x / n * 360.0 - 180.0, lat(y + 1), (x + 1) / n * 360.0 - 180.0, lat(y)


def tiles_in_bbox(bbox: tuple[float, float, float, float], zoom: int) -> Iterator[tuple[int, int]]:
    """Every tile (x, y) at ``zoom`` that intersects ``bbox`` (west, south, east, north), row by row."""
    west, south, east, north = bbox
    x0, y0 = lonlat_to_tile(west, north, zoom)
    x1, y1 = lonlat_to_tile(east, south, zoom)
    for y in range(y0, y1 + 1):
        for x in range(x0, x1 + 1):
            yield x, y


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``"west,south,east,north"`` in degrees; a clear error for anything else."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise ValueError(f"bbox: expected 'west,south,east,north' in degrees, got {text!r}")
    west, south, east, north = values
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise ValueError(
            f"bbox: expected west < east within -180..180 and south < north within -90..90, got {text!r}"
        )
    return west, south, east, north
