"""Predictions as vector tiles: one PMTiles archive a browser reads by HTTP ranges.

The GeoParquet the features were written to is streamed, row group by row group, to GDAL's
PMTiles driver (through pyogrio's Arrow writer), which cuts Mapbox Vector Tiles in web mercator
and packs them in one file with a spatial index, so a map fetches only the tiles in view. The
zoom levels follow the imagery's resolution: at the most detailed level one tile unit (1/4096
of a tile) is no larger than an imagery pixel, so polygon vertices (pixel corners) keep their
places, and deeper where the predictions are so dense that a tile would hold more than
``MAX_TILE_FEATURES``; a map shows the tiles over-zoomed beyond it. The coarser levels
(``levels`` in all) are an overview: there GDAL keeps at most 200,000 features a tile and
coarsens tiles above 500 kB, so only the most detailed level holds every feature whole.
Each feature carries ``class``, ``class_name``, ``area``, ``block_id`` and
``feature_id`` (its row in the GeoParquet), which join it to its lineage.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geomlops.files import atomic_path

#: the archive's file name beside the GeoParquet
PMTILES_FILE = "predictions.pmtiles"
#: the vector layer's name in every tile
LAYER = "predictions"
#: web mercator's equator length in metres (the side of the zoom-0 tile)
_WORLD = 40075016.685578488
#: tile units per tile side (the MVT default)
_EXTENT = 4096
#: the deepest zoom level written
MAX_ZOOM = 16
#: the most features one tile of the most detailed level holds (a few hundred kB a tile)
MAX_TILE_FEATURES = 10_000
#: zoom levels written by default (the most detailed one and the coarser ones above it)
LEVELS = 4


@dataclass(frozen=True)
class TilesInfo:
    """A written archive: where, its zoom levels, size and feature count."""

    path: Path
    min_zoom: int
    max_zoom: int
    bytes: int
    features: int


def zoom_range(
    crs: str, transform: tuple[float, ...], width: int, height: int, levels: int = LEVELS
) -> tuple[int, int]:
    """The zoom levels for imagery on a grid: the most detailed one where a tile unit is no larger
    than a pixel (measured in web mercator at the grid's centre), and ``levels - 1`` above it."""
    from pyproj import Transformer

    a, b, c, d, e, f = transform[:6]
    col, row = width / 2, height / 2
    to_mercator = Transformer.from_crs(crs, "EPSG:3857", always_xy=True)
    x0, y0 = to_mercator.transform(c + a * col + b * row, f + d * col + e * row)
    x1, y1 = to_mercator.transform(c + a * (col + 1) + b * row, f + d * (col + 1) + e * row)
    pixel = math.hypot(x1 - x0, y1 - y0)
    if not math.isfinite(pixel) or pixel <= 0:
        return max(0, MAX_ZOOM - levels + 1), MAX_ZOOM
    deepest = min(MAX_ZOOM, max(0, math.ceil(math.log2(_WORLD / (_EXTENT * pixel)))))
    return max(0, deepest - max(1, levels) + 1), deepest


def densest_tile(parquet: Path, crs: str, zoom: int) -> int:
    """How many features' centres fall in the fullest tile of ``zoom`` (web mercator)."""
    import numpy as np
    import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]
    import shapely
    from pyproj import Transformer

    to_mercator = Transformer.from_crs(crs, "EPSG:3857", always_xy=True)
    size = _WORLD / 2**zoom
    counts: dict[tuple[int, int], int] = {}
    for batch in pq.ParquetFile(parquet).iter_batches(columns=["geometry"]):
        bounds = shapely.bounds(shapely.from_wkb(batch.column("geometry").to_numpy(zero_copy_only=False)))
        x, y = to_mercator.transform((bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2)
        cols, rows = (
            np.floor((np.asarray(x) + _WORLD / 2) / size),
            np.floor((_WORLD / 2 - np.asarray(y)) / size),
        )
        tiles, many = np.unique(np.stack([cols, rows]).astype("int64"), axis=1, return_counts=True)
        for col, row, n in zip(tiles[0].tolist(), tiles[1].tolist(), many.tolist(), strict=True):
            counts[(col, row)] = counts.get((col, row), 0) + n
    return max(counts.values(), default=0)


def item_class_names(item: Mapping[str, Any] | None) -> dict[int, str]:
    """Class value → name, as a model's STAC item (MLM ``classification:classes``) says."""
    names: dict[int, str] = {}
    for output in ((item or {}).get("properties") or {}).get("mlm:output") or []:
        for cls in output.get("classification:classes") or []:
            if isinstance(cls, dict) and "value" in cls and cls.get("name"):
                names.setdefault(int(cls["value"]), str(cls["name"]))
    return names


def _batches(parquet: Path, class_names: Mapping[int, str]) -> Iterator[Any]:
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

    offset = 0
    for batch in pq.ParquetFile(parquet).iter_batches(columns=["class", "area", "block_id", "geometry"]):
        classes = batch.column("class").to_pylist()
        n = batch.num_rows
        yield pa.RecordBatch.from_arrays(
            [
                pa.array(classes, pa.int32()),
                pa.array([class_names.get(int(c), str(c)) for c in classes], pa.string()),
                batch.column("area").cast(pa.float64()),
                batch.column("block_id").cast(pa.string()),
                pa.array(range(offset, offset + n), pa.int64()),
                batch.column("geometry"),
            ],
            names=["class", "class_name", "area", "block_id", "feature_id", "geometry"],
        )
        offset += n


def write_prediction_tiles(
    parquet: Path,
    target: Path,
    *,
    crs: str,
    zooms: tuple[int, int],
    class_names: Mapping[int, str] | None = None,
    name: str = "",
    max_tile_features: int = MAX_TILE_FEATURES,
) -> TilesInfo | None:
    """Write the features of ``parquet`` (class, area, block_id, WKB geometry in ``crs``) to
    the PMTiles archive ``target`` (written beside it and renamed, so never half-written).

    Args:
        parquet: the predictions' GeoParquet.
        target: the archive to write.
        crs: the GeoParquet's CRS (any pyproj understands).
        zooms: the lowest and highest zoom levels (see :func:`zoom_range`).
        class_names: class value → name (``class_name``); absent: the value as text.
        name: the archive's title (its metadata).
        max_tile_features: the most features whose centres one tile of the most detailed level
            may hold; denser predictions move every level deeper until none holds more.

    Returns:
        The archive written; None when ``parquet`` holds no feature (then no archive is there).
    """
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]
    import pyogrio  # type: ignore[import-untyped,unused-ignore]

    schema = pa.schema(
        [
            ("class", pa.int32()),
            ("class_name", pa.string()),
            ("area", pa.float64()),
            ("block_id", pa.string()),
            ("feature_id", pa.int64()),
            ("geometry", pa.binary()),
        ]
    )
    count = pq.ParquetFile(parquet).metadata.num_rows
    if count == 0:  # GDAL writes no archive without a feature (no bounds): none, and no stale one
        target.unlink(missing_ok=True)
        return None
    low, high = zooms
    # dense predictions go deeper, so that no tile of the most detailed level is too full to be
    # written whole (GDAL drops features beyond MAX_FEATURES and coarsens tiles above MAX_SIZE)
    while high < MAX_ZOOM and densest_tile(parquet, crs, high) > max_tile_features:
        low, high = low + 1, high + 1
    with atomic_path(target) as tmp:
        reader = pa.RecordBatchReader.from_batches(schema, _batches(parquet, class_names or {}))
        pyogrio.write_arrow(
            reader,
            str(tmp),
            driver="PMTiles",
            layer=LAYER,
            geometry_name="geometry",
            geometry_type="Polygon",
            crs=crs,
            dataset_options={"MINZOOM": str(low), "MAXZOOM": str(high), "NAME": name or LAYER},
        )
    return TilesInfo(target, low, high, target.stat().st_size, count)
