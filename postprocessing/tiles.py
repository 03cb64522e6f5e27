"""Predictions as vector tiles: one PMTiles archive a browser reads by HTTP ranges.

The GeoParquet the features were written to is streamed, row group by row group, to GDAL's
PMTiles driver (through pyogrio's Arrow writer), which cuts Mapbox Vector Tiles in web mercator
and packs them in one file with a spatial index, so a map fetches only the tiles in view. The
zoom levels follow the imagery's resolution: at the most detailed level one tile unit (1/4096
of a tile) is no larger than an imagery pixel, so polygon vertices (pixel corners) keep their
places, and deeper where the predictions are so dense that a tile would hold more than
``MAX_TILE_FEATURES``; a map shows the tiles over-zoomed beyond it. Only the most detailed
level holds every feature whole. The coarser levels (``levels`` in all) are an overview, as
tippecanoe makes one: a polygon smaller than ``OVERVIEW_MIN_UNITS`` square tile units (one
screen pixel on a 512-pixel tile, too small to show a shape) is not drawn alone there; the
small polygons whose centres share a cell of ``OVERVIEW_CELL_UNITS`` tile units a side (two
screen pixels) become one square at the cell's centre whose area is their summed area (so the
overview keeps how much was predicted where, not only that something was; at least two tile
units a side, or cutting the tile would round it away), with ``feature_id`` -1, ``features``
their count, ``area`` their summed area and the ``class`` most of them have.
GDAL keeps at most 200,000 features a tile and coarsens tiles above 500 kB.

Each level is written as its own archive (two at a time), then the archives are joined into
one (:mod:`postprocessing.pmtiles`): writing every feature into every level cost GDAL about
9 s a level for 150,000 features, most of it for specks no map could show. GDAL's writer keeps
the features of each tile in a temporary SQLite database; for a level of at most
``MEMORY_FEATURES`` features it is kept in memory (``TEMPORARY_DB`` on ``/vsimem``: about 200
bytes a feature, and half the time of a file), else in a file beside the archive. The PMTiles
driver hands that option to its MVT writer without listing it, so GDAL's check of creation
options is turned off while the archive is written.
Each feature carries ``class``, ``class_name``, ``area``, ``block_id``, ``feature_id`` (its
row in the GeoParquet), which join it to its lineage, and ``features`` (1).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
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
#: the smallest polygon the overview levels keep, in square tile units of their zoom (one screen
#: pixel of a 512-pixel tile: a quarter of one cost GDAL 17% more CPU time on the demo scene's
#: tiles, for shapes no screen shows)
OVERVIEW_MIN_UNITS = 64
#: the side of the cells that gather the small polygons of an overview level, in tile units
OVERVIEW_CELL_UNITS = 16
#: the most features a level may have for GDAL's temporary database to be kept in memory
MEMORY_FEATURES = 1_000_000
#: GDAL's switch for its check of creation options
_VALIDATE = "GDAL_VALIDATE_CREATION_OPTIONS"
#: web mercator's sphere radius (metres)
_RADIUS = _WORLD / (2 * math.pi)


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


def _centres(parquet: Path, crs: str) -> tuple[Any, Any]:
    """Web mercator x and y of every feature's bounding-box centre, in the GeoParquet's order."""
    import numpy as np
    import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]
    import shapely
    from pyproj import Transformer

    to_mercator = Transformer.from_crs(crs, "EPSG:3857", always_xy=True)
    xs, ys = [], []
    for batch in pq.ParquetFile(parquet).iter_batches(columns=["geometry"]):
        bounds = shapely.bounds(shapely.from_wkb(batch.column("geometry").to_numpy(zero_copy_only=False)))
        x, y = to_mercator.transform((bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2)
        xs.append(np.asarray(x, "float64"))
        ys.append(np.asarray(y, "float64"))
    return np.concatenate(xs or [np.zeros(0)]), np.concatenate(ys or [np.zeros(0)])


#: a square of a web mercator grid as one number: column * _PACK + row
_PACK = 1 << 31


def _square_ids(x: Any, y: Any, size: float) -> Any:
    """The squares of ``size`` metres (web mercator, counted from the top left of the world,
    as tiles are) holding the points ``x``, ``y``, each as ``column * _PACK + row``."""
    import numpy as np

    cols = np.floor((x + _WORLD / 2) / size).astype("int64")
    rows = np.floor((_WORLD / 2 - y) / size).astype("int64")
    return cols * _PACK + rows


def _cell_size(zoom: int) -> float:
    """The side of an overview cell of ``zoom``, in web mercator metres."""
    return float(_WORLD / 2.0**zoom / _EXTENT * OVERVIEW_CELL_UNITS)


def _densest(x: Any, y: Any, zoom: int) -> int:
    import numpy as np

    if not len(x):
        return 0
    _, counts = np.unique(_square_ids(x, y, _WORLD / 2**zoom), return_counts=True)
    return int(counts.max())


def densest_tile(parquet: Path, crs: str, zoom: int) -> int:
    """How many features' centres fall in the fullest tile of ``zoom`` (web mercator)."""
    return _densest(*_centres(parquet, crs), zoom)


def overview_min_area(zoom: int, latitude: float) -> float:
    """The area (m² on the ground) under which a polygon is drawn as its cell at the overview
    level ``zoom``: ``OVERVIEW_MIN_UNITS`` square tile units, shrunk from web mercator to the
    ground at ``latitude`` (degrees)."""
    unit = _WORLD / 2.0**zoom / _EXTENT * math.cos(math.radians(latitude))
    return float(OVERVIEW_MIN_UNITS * unit * unit)


def item_class_names(item: Mapping[str, Any] | None) -> dict[int, str]:
    """Class value → name, as a model's STAC item (MLM ``classification:classes``) says."""
    names: dict[int, str] = {}
    for output in ((item or {}).get("properties") or {}).get("mlm:output") or []:
        for cls in output.get("classification:classes") or []:
            if isinstance(cls, dict) and "value" in cls and cls.get("name"):
                names.setdefault(int(cls["value"]), str(cls["name"]))
    return names


@dataclass(frozen=True)
class _Level:
    """One zoom level's archive: its zoom, the smallest polygon it holds whole (0: every one)
    and where it is written."""

    zoom: int
    min_area: float
    part: Path


def _batches(
    parquet: Path,
    class_names: Mapping[int, str],
    *,
    crs: str = "",
    level: _Level | None = None,
    centres: tuple[Any, Any] | None = None,
) -> Iterator[Any]:
    """The GeoParquet's features as the archive's columns (``feature_id``: the row,
    ``features``: 1). At an overview ``level`` the polygons under its ``min_area`` are not
    written one by one: those whose centres (``centres``, web mercator) share a cell of
    ``OVERVIEW_CELL_UNITS`` tile units a side become one square of their summed area at the
    cell's centre, with the class most of them have, their summed ``area``, their count in
    ``features`` and ``feature_id`` -1."""
    import numpy as np
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

    def columns(classes: Any, areas: Any, blocks: Any, ids: Any, counts: Any, geometry: Any) -> Any:
        return pa.RecordBatch.from_arrays(
            [
                classes,
                pa.array([class_names.get(int(c), str(c)) for c in classes.to_pylist()], pa.string()),
                areas,
                blocks,
                ids,
                counts,
                geometry,
            ],
            schema=_schema(),
        )

    small: list[tuple[Any, Any, Any]] = []  # (cell, class, area) of the polygons under min_area
    offset = 0
    for batch in pq.ParquetFile(parquet).iter_batches(columns=["class", "area", "block_id", "geometry"]):
        n = batch.num_rows
        classes = batch.column("class").cast(pa.int32())
        areas = batch.column("area").cast(pa.float64())
        ids = pa.array(np.arange(offset, offset + n, dtype="int64"))
        keep = None
        if level is not None and level.min_area > 0 and centres is not None:
            area = areas.to_numpy(zero_copy_only=False)
            tiny = area < level.min_area
            if tiny.any():
                x, y = centres[0][offset : offset + n][tiny], centres[1][offset : offset + n][tiny]
                cell = _square_ids(x, y, _cell_size(level.zoom))
                small.append((cell, classes.to_numpy(zero_copy_only=False)[tiny], area[tiny]))
                keep = pa.array(~tiny)
        offset += n
        whole = columns(
            classes, areas, batch.column("block_id").cast(pa.string()), ids,
            pa.array(np.ones(n, "int32")), batch.column("geometry"),
        )  # fmt: skip
        if keep is not None:
            whole = whole.filter(keep)
        if whole.num_rows:
            yield whole
    if small and level is not None:
        yield _cells(small, level.zoom, crs, columns)


def _cells(small: list[tuple[Any, Any, Any]], zoom: int, crs: str, columns: Any) -> Any:
    """One square a cell for the small polygons of an overview level (see :func:`_batches`)."""
    import numpy as np
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
    import shapely
    from pyproj import Transformer

    cell = np.concatenate([c for c, _, _ in small])
    cls = np.concatenate([k for _, k, _ in small]).astype("int64")
    area = np.concatenate([a for _, _, a in small])
    cells, where, counts = np.unique(cell, return_inverse=True, return_counts=True)
    sums = np.bincount(where, weights=area, minlength=len(cells))
    # the class most of a cell's polygons have (the lowest value on a tie)
    pairs, pair_counts = np.unique(np.stack([where, cls]), axis=1, return_counts=True)
    order = np.lexsort((pairs[1], -pair_counts, pairs[0]))
    first = np.ones(len(order), bool)
    first[1:] = pairs[0][order][1:] != pairs[0][order][:-1]
    majority = np.zeros(len(cells), "int64")
    majority[pairs[0][order][first]] = pairs[1][order][first]
    size = _cell_size(zoom)
    col, row = cells // _PACK, cells % _PACK
    cx, cy = (col + 0.5) * size - _WORLD / 2, _WORLD / 2 - (row + 0.5) * size
    # the summed ground area as web mercator area at the cell's latitude, at most the cell and
    # at least two tile units a side (a smaller square is rounded away when the tile is cut)
    stretch = np.cosh(cy / _RADIUS)  # 1 / cos(latitude)
    unit = _WORLD / 2**zoom / _EXTENT
    half = np.clip(np.sqrt(sums) * stretch, 2 * unit, size) / 2
    xs = np.stack([cx - half, cx + half, cx + half, cx - half, cx - half], axis=1)
    ys = np.stack([cy + half, cy + half, cy - half, cy - half, cy + half], axis=1)
    to_crs = Transformer.from_crs("EPSG:3857", crs, always_xy=True)
    x, y = to_crs.transform(xs.ravel(), ys.ravel())
    squares = shapely.polygons(np.stack([np.asarray(x), np.asarray(y)], axis=1).reshape(len(cells), 5, 2))
    n = len(cells)
    return columns(
        pa.array(majority, pa.int32()),
        pa.array(sums, pa.float64()),
        pa.array([""] * n, pa.string()),
        pa.array(np.full(n, -1, "int64")),
        pa.array(counts.astype("int32")),
        pa.array(shapely.to_wkb(squares), pa.binary()),
    )


def _schema() -> Any:
    """The archive's columns."""
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

    return pa.schema(
        [
            ("class", pa.int32()),
            ("class_name", pa.string()),
            ("area", pa.float64()),
            ("block_id", pa.string()),
            ("feature_id", pa.int64()),
            ("features", pa.int32()),
            ("geometry", pa.binary()),
        ]
    )


def _write_level(
    parquet: Path,
    level: _Level,
    *,
    crs: str,
    centres: tuple[Any, Any],
    class_names: Mapping[int, str],
    name: str,
) -> Path:
    """One zoom level's archive at ``level.part``."""
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
    import pyogrio  # type: ignore[import-untyped,unused-ignore]

    database = (
        f"/vsimem/geomlops-tiles-{uuid.uuid4().hex}.db"
        if len(centres[0]) <= MEMORY_FEATURES
        else str(level.part.with_name(level.part.name + ".db"))
    )
    batches = _batches(parquet, class_names, crs=crs, level=level, centres=centres)
    pyogrio.write_arrow(
        pa.RecordBatchReader.from_batches(_schema(), batches),
        str(level.part),
        driver="PMTiles",
        layer=LAYER,
        geometry_name="geometry",
        geometry_type="Polygon",
        crs=crs,
        dataset_options={
            "MINZOOM": str(level.zoom),
            "MAXZOOM": str(level.zoom),
            "NAME": name,
            "TEMPORARY_DB": database,
        },
    )
    return level.part


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
    """Write the features of ``parquet`` (class, area in m², block_id, WKB geometry in ``crs``)
    to the PMTiles archive ``target`` (written beside it and renamed, so never half-written).

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
    import numpy as np
    import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

    from postprocessing.pmtiles import join_levels

    count = pq.ParquetFile(parquet).metadata.num_rows
    if count == 0:  # GDAL writes no archive without a feature (no bounds): none, and no stale one
        target.unlink(missing_ok=True)
        return None
    low, high = zooms
    x, y = _centres(parquet, crs)
    # dense predictions go deeper, so that no tile of the most detailed level is too full to be
    # written whole (GDAL drops features beyond MAX_FEATURES and coarsens tiles above MAX_SIZE)
    while high < MAX_ZOOM and _densest(x, y, high) > max_tile_features:
        low, high = low + 1, high + 1
    latitude = math.degrees(math.atan(math.sinh(float(np.mean(y)) / _RADIUS)))
    with atomic_path(target) as tmp:
        levels = []
        for zoom in range(high, low - 1, -1):  # the largest first: it sets the pace
            min_area = 0.0 if zoom == high else overview_min_area(zoom, latitude)
            levels.append(_Level(zoom, min_area, tmp.with_name(f"{tmp.name}.z{zoom}")))
        import pyogrio  # type: ignore[import-untyped,unused-ignore]

        checked = pyogrio.get_gdal_config_option(_VALIDATE)
        pyogrio.set_gdal_config_options({_VALIDATE: "NO"})  # TEMPORARY_DB: see the module's text
        try:
            with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
                futures = [
                    pool.submit(
                        _write_level,
                        parquet,
                        level,
                        crs=crs,
                        centres=(x, y),
                        class_names=class_names or {},
                        name=name or LAYER,
                    )
                    for level in levels
                ]
                parts = [f.result() for f in futures]
            join_levels(parts, tmp)
        finally:
            pyogrio.set_gdal_config_options({_VALIDATE: checked})
            for level in levels:
                level.part.unlink(missing_ok=True)
                level.part.with_name(level.part.name + ".db").unlink(missing_ok=True)
    return TilesInfo(target, low, high, target.stat().st_size, count)
