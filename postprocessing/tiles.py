"""Predictions as vector tiles: one PMTiles archive a browser reads by HTTP ranges.

The GeoParquet the features were written to is read row group by row group, projected to web
mercator once, and cut into Mapbox Vector Tiles of every zoom level at once
(:mod:`postprocessing.mvt`, numpy over whole batches), then packed into one archive with a
spatial index (:mod:`postprocessing.pmtiles`), so a map fetches only the tiles in view. The zoom
levels follow the imagery's resolution: at the most detailed level one tile unit (1/4096 of a
tile) is no larger than an imagery pixel, so polygon vertices (pixel corners) keep their places,
and deeper where the predictions are so dense that a tile would hold more than
``MAX_TILE_FEATURES``; a map shows the tiles over-zoomed beyond it. Only the most detailed
level holds every feature whole. The coarser levels (``levels`` in all) are an overview, as
tippecanoe makes one: a polygon smaller than ``OVERVIEW_MIN_UNITS`` square tile units (one
screen pixel on a 512-pixel tile, too small to show a shape) is not drawn alone there; the
small polygons whose centres share a cell of ``OVERVIEW_CELL_UNITS`` tile units a side (two
screen pixels) become one square at the cell's centre whose area is their summed area (so the
overview keeps how much was predicted where, not only that something was; at least two tile
units a side, or cutting the tile would round it away), with ``feature_id`` -1, ``features``
their count, ``area`` their summed area and the ``class`` most of them have.

GDAL's PMTiles driver wrote these tiles before: about 37 µs of CPU a feature and level (19 to
21 s for the 150,000 polygons of the benchmark scene's four levels), most of the time of
publishing predictions. Encoding whole batches with numpy does the same work in a fraction of
that (``benchmarks/web_tiles.py --compare`` measures both side by side); GDAL still reads the
archives in the tests.
Each feature carries ``class``, ``class_name``, ``area``, ``block_id``, ``feature_id`` (its
row in the GeoParquet), which join it to its lineage, and ``features`` (1).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geomlops.background import InOrder
from geomlops.files import atomic_path
from postprocessing.mvt import EXTENT as _EXTENT
from postprocessing.mvt import WORLD as _WORLD
from postprocessing.mvt import apart_at_antimeridian

#: the archive's file name beside the GeoParquet
PMTILES_FILE = "predictions.pmtiles"
#: the vector layer's name in every tile
LAYER = "predictions"
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
#: batches of features handed to each level's thread and not cut yet, at most
_BATCHES_AHEAD = 2
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
    dx = x1 - x0
    if abs(dx) > _WORLD / 2:  # a pixel across the antimeridian: its x wrapped by the world's width
        dx -= math.copysign(_WORLD, dx)
    pixel = math.hypot(dx, y1 - y0)
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
        x, y = _bbox_centres(
            shapely.from_wkb(batch.column("geometry").to_numpy(zero_copy_only=False)), to_mercator
        )
        xs.append(x)
        ys.append(y)
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
    """One zoom level: its zoom and the smallest polygon it holds whole (0: every one)."""

    zoom: int
    min_area: float


#: the archive's properties and how :mod:`postprocessing.mvt` types them (tilestats' words)
_FIELDS = {
    "class": "Number",
    "class_name": "String",
    "area": "Number",
    "block_id": "String",
    "feature_id": "Number",
    "features": "Number",
}


def _cells(small: list[tuple[Any, Any, Any]], zoom: int) -> tuple[Any, dict[str, Any]]:
    """One square a cell for the small polygons of an overview level: the squares (web
    mercator) and their properties (see the module's text)."""
    import numpy as np
    import shapely

    cell = np.concatenate([c for c, _, _ in small])
    cls = np.concatenate([k for _, k, _ in small]).astype("int64")
    area = np.concatenate([a for _, _, a in small])
    cells, where, counts = np.unique(cell, return_inverse=True, return_counts=True)
    where = where.reshape(-1)
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
    squares = shapely.box(cx - half, cy - half, cx + half, cy + half)
    n = len(cells)
    return squares, {
        "class": majority.astype("int32"),
        "area": sums.astype("float64"),
        "block_id": np.full(n, "", object),
        "feature_id": np.full(n, -1, "int64"),
        "features": counts.astype("int32"),
    }


class _Stats:
    """What the archive's metadata says of each property (tilestats): type, distinct values
    (the 100 least listed, at most 1,000 counted), least and greatest number."""

    def __init__(self) -> None:
        self.distinct: dict[str, set[Any]] = {name: set() for name in _FIELDS}
        self.low: dict[str, float] = {}
        self.high: dict[str, float] = {}

    def add(self, columns: Mapping[str, Any]) -> None:
        import numpy as np

        for name, values in columns.items():
            if not len(values):
                continue
            # the 1,000 least: the same whatever the batches (the tiles are the same bytes
            # from the features gathered in memory and from the GeoParquet's row groups)
            least = sorted(self.distinct[name] | set(np.unique(values)[:1000].tolist()))[:1000]
            self.distinct[name] = set(least)
            if _FIELDS[name] == "Number":
                self.low[name] = min(self.low.get(name, math.inf), float(np.min(values)))
                self.high[name] = max(self.high.get(name, -math.inf), float(np.max(values)))

    def attributes(self) -> list[dict[str, Any]]:
        out = []
        for name, kind in _FIELDS.items():
            values = sorted(self.distinct[name])
            entry: dict[str, Any] = {
                "attribute": name,
                "count": len(values),
                "type": kind.lower(),
                "values": values[:100],
            }
            if name in self.low:
                entry.update(min=self.low[name], max=self.high[name])
            out.append(entry)
        return out


class _Box:
    """The web mercator bounds of features, and the same with every part in the western half
    of the world moved one world east: narrower when the data straddles the antimeridian (its
    polygons cut there, parts at both edges of the world)."""

    def __init__(self) -> None:
        self.plain = [math.inf, math.inf, -math.inf, -math.inf]
        self.east = [math.inf, -math.inf]  # x of every part moved east where it lies west of 0

    def add(self, geoms: Any) -> None:
        import numpy as np
        import shapely

        _, _, b = apart_at_antimeridian(geoms, 0, shapely.bounds(geoms))  # a cut polygon: its parts'
        b = b[~np.isnan(b).any(axis=1)]  # empty shapes have no bounds
        if not len(b):
            return
        low, high = b.min(axis=0), b.max(axis=0)
        self.plain = [
            min(self.plain[0], low[0]),
            min(self.plain[1], low[1]),
            max(self.plain[2], high[2]),
            max(self.plain[3], high[3]),
        ]
        shift = np.where(b[:, 2] <= 0, _WORLD, 0.0)
        self.east = [min(self.east[0], (b[:, 0] + shift).min()), max(self.east[1], (b[:, 2] + shift).max())]

    def lonlat(self, to_lonlat: Any, *, across: bool = False) -> tuple[float, float, float, float]:
        """West, south, east, north in degrees; ``across``: east past 180° where that is narrower
        (tippecanoe's ``antimeridian_adjusted_bounds``)."""
        x0, y0, x1, y1 = self.plain
        beyond = 0.0
        # parts at both edges of the world, closer together once the western ones move east
        if across and x1 - x0 > _WORLD / 2 and self.east[1] - self.east[0] < x1 - x0:
            x0, x1 = self.east
            if x1 > _WORLD / 2:
                x1, beyond = x1 - _WORLD, 360.0
        lon, lat = to_lonlat.transform([x0, x1], [y0, y1])
        return float(lon[0]), float(lat[0]), float(lon[1]) + beyond, float(lat[1])


def class_names_of(classes: Any, names: Mapping[int, str]) -> Any:
    """Each class value's name (``class_name``); a value without one, as text. Each distinct
    value is looked up once (a batch holds a few classes and up to a few hundred thousand
    features)."""
    import numpy as np

    distinct, where = np.unique(np.asarray(classes), return_inverse=True)
    named = np.array([names.get(int(c), str(c)) for c in distinct.tolist()], object)
    return named[where.reshape(-1)]


def _mercator(geoms: Any, to_mercator: Any) -> Any:
    """Shapes projected to web mercator, cut at the antimeridian where they cross it (else a
    polygon straddling 180° would cover a whole row of tiles)."""
    import numpy as np
    import shapely

    from postprocessing.antimeridian import cut_at_antimeridian

    def project(xy: Any) -> Any:
        x, y = to_mercator.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return cut_at_antimeridian(shapely.transform(geoms, project), period=_WORLD)


#: the most features :class:`TileFeatures` keeps in memory (web mercator shapes: 735 bytes a
#: feature for the cloud mask's, of ten vertices on average; about 370 MB at most): beyond, the
#: tiles are made from the GeoParquet once it is written
IN_MEMORY_FEATURES = 500_000


class TileFeatures:
    """The features of the tiles, gathered batch by batch while they are written to the
    GeoParquet (projected to web mercator, with their bounding-box centres), so that making the
    tiles need not read the file back and parse and project every shape again.

    Up to ``limit`` features are kept; past it, none is (:attr:`kept` turns False) and the tiles
    are made from the GeoParquet. Either way the archive is the same, byte for byte.
    """

    def __init__(self, crs: str, limit: int = IN_MEMORY_FEATURES) -> None:
        from pyproj import Transformer

        self.crs, self.limit, self.count, self.kept = crs, limit, 0, True
        self._to_mercator = Transformer.from_crs(crs, "EPSG:3857", always_xy=True)
        self._batches: list[tuple[Any, Any, Any, Any]] = []
        self._centres: list[tuple[Any, Any]] = []

    def add(self, geoms: Any, classes: Any, areas: Any, block_ids: Sequence[str]) -> None:
        """A batch of features as the GeoParquet gets them (shapes in :attr:`crs`)."""
        import numpy as np

        self.count += len(geoms)
        if not self.kept:
            return
        if self.count > self.limit:
            self.kept = False
            self._batches.clear()
            self._centres.clear()
            return
        self._centres.append(_bbox_centres(geoms, self._to_mercator))
        self._batches.append(
            (
                _mercator(geoms, self._to_mercator),
                np.asarray(classes).astype("int32"),
                np.asarray(areas, "float64"),
                np.asarray(block_ids, object),
            )
        )

    def centres(self) -> tuple[Any, Any]:
        import numpy as np

        return (
            np.concatenate([x for x, _ in self._centres] or [np.zeros(0)]),
            np.concatenate([y for _, y in self._centres] or [np.zeros(0)]),
        )

    def batches(self) -> Iterator[tuple[Any, Any, Any, Any]]:
        yield from self._batches


def _bbox_centres(geoms: Any, to_mercator: Any) -> tuple[Any, Any]:
    """Web mercator x and y of each shape's bounding-box centre (in its own CRS)."""
    import numpy as np
    import shapely

    bounds = shapely.bounds(geoms)
    x, y = to_mercator.transform((bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2)
    return np.asarray(x, "float64"), np.asarray(y, "float64")


def _parquet_batches(parquet: Path, crs: str) -> Iterator[tuple[Any, Any, Any, Any]]:
    """The GeoParquet's features as :meth:`TileFeatures.batches` gives them."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]
    import shapely
    from pyproj import Transformer

    to_mercator = Transformer.from_crs(crs, "EPSG:3857", always_xy=True)
    for batch in pq.ParquetFile(parquet).iter_batches(columns=["class", "area", "block_id", "geometry"]):
        wkb = batch.column("geometry").to_numpy(zero_copy_only=False)
        yield (
            _mercator(shapely.from_wkb(wkb), to_mercator),
            batch.column("class").to_numpy(zero_copy_only=False).astype("int32"),
            batch.column("area").to_numpy(zero_copy_only=False).astype("float64"),
            batch.column("block_id").to_numpy(zero_copy_only=False).astype(object),
        )


def _level_tiles(
    encoder: Any, small: list[tuple[Any, Any, Any]], names: Mapping[int, str]
) -> list[tuple[int, bytes]]:
    """A level's tiles, once its features are in: with the squares of its small polygons."""
    if small:
        squares, columns = _cells(small, encoder.zoom)
        encoder.add(squares, {**columns, "class_name": class_names_of(columns["class"], names)})
    return list(encoder.tiles())


def write_prediction_tiles(
    parquet: Path,
    target: Path,
    *,
    crs: str,
    zooms: tuple[int, int],
    class_names: Mapping[int, str] | None = None,
    name: str = "",
    max_tile_features: int = MAX_TILE_FEATURES,
    gathered: TileFeatures | None = None,
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
        gathered: the same features, gathered while the GeoParquet is written; used instead of
            reading it where they were all kept (then ``parquet`` need not be finished yet).

    Returns:
        The archive written; None when ``parquet`` holds no feature (then no archive is there).
    """
    import numpy as np
    import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]
    from pyproj import Transformer

    from postprocessing.mvt import LevelEncoder
    from postprocessing.pmtiles import write_archive

    # every feature gathered: the GeoParquet is not read (it may still be being written)
    kept = gathered if gathered is not None and gathered.kept else None
    count = kept.count if kept is not None else pq.ParquetFile(parquet).metadata.num_rows
    if count == 0:  # no bounds to give and nothing to show: no archive, and no stale one
        target.unlink(missing_ok=True)
        return None
    low, high = zooms
    x, y = kept.centres() if kept is not None else _centres(parquet, crs)
    batches = kept.batches() if kept is not None else _parquet_batches(parquet, crs)
    # dense predictions go deeper, so that no tile of the most detailed level is too full
    while high < MAX_ZOOM and _densest(x, y, high) > max_tile_features:
        low, high = low + 1, high + 1
    latitude = math.degrees(math.atan(math.sinh(float(np.mean(y)) / _RADIUS)))
    levels = [
        _Level(zoom, 0.0 if zoom == high else overview_min_area(zoom, latitude))
        for zoom in range(low, high + 1)
    ]
    encoders = {level.zoom: LevelEncoder(level.zoom, LAYER) for level in levels}
    small: dict[int, list[tuple[Any, Any, Any]]] = {level.zoom: [] for level in levels}
    stats = _Stats()
    names = class_names or {}
    box = _Box()
    offset = 0
    # each level is cut in a thread of its own (GEOS and numpy work without Python's lock), its
    # batches in order; no level waits for another. At most a few batches wait in each: read
    # from the GeoParquet, the features are not all held while the levels catch up
    failed = threading.Event()  # one level's failure stops them all
    with ExitStack() as stack:
        threads = {
            level.zoom: stack.enter_context(InOrder(f"tiles-{level.zoom}", _BATCHES_AHEAD, failed))
            for level in levels
        }
        for geoms, classes, areas, blocks in batches:
            n = len(geoms)
            if n == 0:  # a row of blocks that completed no feature
                continue
            box.add(geoms)
            columns = {
                "class": classes,
                "class_name": class_names_of(classes, names),
                "area": areas,
                "block_id": blocks,
                "feature_id": np.arange(offset, offset + n, dtype="int64"),
                "features": np.ones(n, "int32"),
            }
            stats.add(columns)
            for level in levels:
                keep: Any = slice(None)
                if level.min_area > 0:
                    tiny = areas < level.min_area
                    if tiny.any():
                        centres = x[offset : offset + n][tiny], y[offset : offset + n][tiny]
                        small[level.zoom].append(
                            (_square_ids(*centres, _cell_size(level.zoom)), classes[tiny], areas[tiny])
                        )
                        keep = ~tiny
                part = {k: v[keep] for k, v in columns.items()}
                threads[level.zoom].submit(encoders[level.zoom].add, geoms[keep], part)
            offset += n
        built = [
            threads[level.zoom].submit(_level_tiles, encoders[level.zoom], small[level.zoom], names)
            for level in levels
        ]
    # every level's work is done here, or its first error raised
    tiles = [tile for future in built for tile in future.result()]
    to_lonlat = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    west, south, east, north = box.lonlat(to_lonlat)
    adjusted = box.lonlat(to_lonlat, across=True)
    # the map opens over the middle of the data, across 180° where the data is
    middle = (adjusted[0] + adjusted[2]) / 2
    centre = (middle - 360 if middle > 180 else middle, (south + north) / 2)
    title = name or LAYER
    metadata = {
        "name": title,
        "description": "",
        "version": "2",
        "minzoom": str(low),
        "maxzoom": str(high),
        "center": f"{centre[0]:.7f},{centre[1]:.7f},{high}",
        "bounds": f"{west:.7f},{south:.7f},{east:.7f},{north:.7f}",
        # as tippecanoe writes it: east past 180° where the data is narrower so
        "antimeridian_adjusted_bounds": ",".join(f"{v:.7f}" for v in adjusted),
        "type": "overlay",
        "format": "pbf",
        "vector_layers": [
            {"id": LAYER, "description": "", "minzoom": low, "maxzoom": high, "fields": _FIELDS}
        ],
        "tilestats": {
            "layerCount": 1,
            "layers": [
                {
                    "layer": LAYER,
                    "count": count,
                    "geometry": "Polygon",
                    "attributeCount": len(_FIELDS),
                    "attributes": stats.attributes(),
                }
            ],
        },
    }
    with atomic_path(target) as tmp:
        write_archive(
            tmp, tiles, metadata=metadata, zooms=(low, high), bounds=(west, south, east, north), center=centre
        )
    return TilesInfo(target, low, high, target.stat().st_size, count)
