"""The two formats :class:`postprocessing.io.FeatureWriter` writes, one open file each.

- :class:`GeoParquetFile`: WKB polygons and their properties, zstd, row groups buffered to a
  bounded size, GeoParquet 1.1 ``geo`` metadata (with the bounding box) added to the footer last.
- :class:`GeoJSONFile`: an RFC 7946 feature collection, compact, streamed feature by feature.

Neither knows about temporary names or renames: the writer owns those.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import shapely
from affine import Affine
from numpy.typing import NDArray

from postprocessing._rings import Polygons

#: a GeoParquet row group is written once this many features wait ...
ROW_GROUP_ROWS = 65_536
#: ... or this many bytes of WKB: memory holds about one row group, and small batches (a row of
#: blocks with a few features) still make row groups large enough to read efficiently
ROW_GROUP_BYTES = 32 << 20
#: zstd, not snappy (pyarrow's default): our WKB (pixel-grid coordinates) comes out about 45 %
#: smaller (measured on 61k polygons), reads about as fast, and every reader the files go to
#: (pyarrow, GDAL, DuckDB, QGIS) reads it
COMPRESSION = "zstd"


def geo_metadata(projjson: dict[str, Any] | None, bounds: NDArray[np.float64] | None) -> str:
    """GeoParquet 1.1 ``geo`` metadata of the ``geometry`` column of WKB polygons.

    Args:
        projjson: the geometries' CRS as PROJJSON; None writes ``null`` (unknown).
        bounds: ``[xmin, ymin, xmax, ymax]`` of every feature; None (no feature) omits ``bbox``.

    Returns:
        The metadata as JSON text.
    """
    column: dict[str, Any] = {"encoding": "WKB", "geometry_types": ["Polygon"], "crs": projjson}
    if bounds is not None:
        column["bbox"] = [float(v) for v in bounds]
    return json.dumps({"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}})


def world_bounds(polys: Polygons, transform: Affine, chunk: int = 1 << 20) -> NDArray[np.float64]:
    """``[xmin, ymin, xmax, ymax]`` of pixel-space polygons placed by ``transform``.

    Computed vertex by vertex with :mod:`postprocessing.finalize`'s arithmetic, so it equals the
    bounds of the WKB written; ``chunk`` vertices at a time, so a country-wide polygon needs no
    copy of its coordinates.
    """
    t = transform
    box = np.array([np.inf, np.inf, -np.inf, -np.inf])
    for start in range(0, len(polys.xy), chunk):
        cols, rows = polys.xy[start : start + chunk, 0], polys.xy[start : start + chunk, 1]
        for axis, (a, b, c) in enumerate(((t.a, t.b, t.c), (t.d, t.e, t.f))):
            values = a * cols + b * rows + c
            box[axis] = min(box[axis], values.min())
            box[axis + 2] = max(box[axis + 2], values.max())
    return box


def wkb_of(geoms: NDArray[np.object_]) -> tuple[NDArray[np.int64], NDArray[np.uint8]]:
    """``(offsets, data)`` of shapely geometries' 2D WKB, as ``finalize.to_wkb`` gives them."""
    wkb = shapely.to_wkb(geoms, output_dimension=2).tolist()
    offsets = np.zeros(len(wkb) + 1, np.int64)
    np.cumsum([len(value) for value in wkb], out=offsets[1:])
    return offsets, np.frombuffer(b"".join(wkb), np.uint8)


def numeric_array(arrow_type: Any, values: NDArray[Any]) -> Any:
    """An Arrow array over a contiguous numpy array's buffer (no copy, no pandas import)."""
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values)])


def binary_array(offsets: NDArray[np.int32], data: NDArray[np.uint8]) -> Any:
    """An Arrow binary array over numpy's 32-bit offsets and bytes (no copy)."""
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.binary(), len(offsets) - 1, buffers)


class GeoParquetFile:
    """One GeoParquet file being written: tables buffered into row groups, ``geo`` metadata last.

    Args:
        path: where to write.
        schema: ``class``, ``area``, ``geometry`` (WKB), then string properties.
        crs: the geometries' CRS (WKT or an authority code), or None when unknown.
        row_group_rows: the most features in one row group.

    Raises:
        pyproj.exceptions.CRSError: ``crs`` is not a coordinate reference system pyproj knows.
    """

    def __init__(
        self, path: Path, schema: Any, crs: str | None, row_group_rows: int = ROW_GROUP_ROWS
    ) -> None:
        import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]
        from pyproj import CRS

        self._projjson = None if crs is None else CRS.from_user_input(crs).to_json_dict()
        self._bounds: NDArray[np.float64] | None = None
        strings = schema.names[3:]
        self._row_group_rows = row_group_rows
        self._pending: list[Any] = []
        self._rows = self._bytes = 0
        # no stored Arrow schema: the footer's ``geo`` entry, added once the bounding box is known,
        # is the only one; no dictionary or statistics for the WKB: every value differs
        self._writer = pq.ParquetWriter(
            path,
            schema,
            compression=COMPRESSION,
            use_dictionary=["class", *strings],
            write_statistics=["class", "area", *strings],
            store_schema=False,
        )

    def append(self, table: Any, nbytes: int) -> None:
        """Add a table of features; a row group is written when enough rows or bytes wait."""
        self._pending.append(table)
        self._rows += table.num_rows
        self._bytes += nbytes
        if self._rows >= self._row_group_rows or self._bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

        if self._pending:
            table = pa.concat_tables(self._pending)
            self._pending, self._rows, self._bytes = [], 0, 0
            self._writer.write_table(table, row_group_size=self._row_group_rows)
            del table
            pa.default_memory_pool().release_unused()  # give the encoding buffers back

    def cover(self, bounds: NDArray[np.float64]) -> None:
        """Grow the file's bounding box to ``[xmin, ymin, xmax, ymax]`` of features appended."""
        box = bounds if self._bounds is None else self._bounds
        self._bounds = np.concatenate([np.fmin(box[:2], bounds[:2]), np.fmax(box[2:], bounds[2:])])

    def finish(self) -> None:
        """Write what waits and the ``geo`` metadata (see :func:`geo_metadata`)."""
        self._flush()
        self._writer.add_key_value_metadata({"geo": geo_metadata(self._projjson, self._bounds)})

    def close(self) -> None:
        """Close the file (finished or not)."""
        self._writer.close()


class GeoJSONFile:
    """One GeoJSON feature collection being written, compact: no spaces (the files are read by
    machines, and large).

    Args:
        path: where to write.
        extra: names of the string properties given per feature, after ``class`` and ``area``.
        shared: string properties with one value for every feature, after those.
    """

    def __init__(self, path: Path, extra: Sequence[str], shared: Mapping[str, str]) -> None:
        self._names = [json.dumps(name) for name in extra]
        self._shared = "".join(f",{json.dumps(k)}:{json.dumps(v)}" for k, v in shared.items())
        self._empty = True
        self._text: TextIO = path.open("w", encoding="utf-8")
        self._text.write('{"type":"FeatureCollection","features":[')

    def write(
        self,
        geoms: NDArray[np.object_],
        classes: NDArray[np.int64],
        areas: NDArray[np.float64],
        extra: Sequence[Sequence[str]],
    ) -> None:
        """Append features; ``geoms`` already as RFC 7946 wants them (``io.to_rfc7946``)."""
        if len(geoms) == 0:
            return
        # GEOS writes the geometries: 4-8 times faster than Python's json, and every coordinate
        # reads back as the same double (at most 17 digits, not always the shortest)
        geometries = shapely.to_geojson(geoms).tolist()
        columns = [_encoded(name, values) for name, values in zip(self._names, extra, strict=True)]
        rows = zip(*columns, strict=True) if columns else [()] * len(geometries)
        parts = []
        for g, k, a, row in zip(geometries, classes.tolist(), areas.tolist(), rows, strict=True):
            properties = f'"class":{k},"area":{a!r}{"".join(row)}{self._shared}'
            parts.append(f'{{"type":"Feature","properties":{{{properties}}},"geometry":{g}}}')
        self._text.write(("" if self._empty else ",") + ",".join(parts))
        self._empty = False

    def finish(self) -> None:
        """End the collection (and the file, with a newline)."""
        self._text.write("]}\n")

    def close(self) -> None:
        """Close the file (finished or not)."""
        self._text.close()


def _encoded(name: str, values: Sequence[str]) -> list[str]:
    """``,"name":value`` for each value as JSON, each distinct value encoded once (a column such
    as ``block_id`` or ``class_name`` repeats a few values over many features)."""
    done: dict[str, str] = {}
    out = []
    for value in values:
        text = done.get(value)
        if text is None:
            text = done[value] = f",{name}:{json.dumps(value)}"
        out.append(text)
    return out
