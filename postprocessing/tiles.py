"""Predictions as vector tiles: one PMTiles archive a browser reads by HTTP ranges.

The GeoParquet the features were written to is streamed, row group by row group, to GDAL's
PMTiles driver (through pyogrio's Arrow writer), which cuts Mapbox Vector Tiles in web mercator
and packs them in one file with a spatial index, so a map fetches only the tiles in view. The
zoom levels follow the imagery's resolution: at the most detailed level one tile unit (1/4096
of a tile) is no larger than an imagery pixel, so polygon vertices (pixel corners) keep their
places; a map shows the tiles over-zoomed beyond it, and the coarser levels (``levels`` in all)
give an overview. Each feature carries ``class``, ``class_name``, ``area``, ``block_id`` and
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
