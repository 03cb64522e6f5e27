"""Stream predicted features into GeoParquet and GeoJSON as the merge completes them.

Both files are written under temporary names beside the targets and renamed into place only when
every feature has been written, so a failed or killed publish never leaves a half-written output.

- GeoParquet keeps the imagery's CRS. Features are buffered into row groups of at most
  ``row_group_rows`` rows, so memory holds one row group, not the output. The ``geo`` metadata
  (GeoParquet 1.1: encoding, geometry types, CRS as PROJJSON, bounding box) goes into the footer
  when the file is closed, once the bounding box of every feature is known.
- GeoJSON is RFC 7946 (WGS84 longitude/latitude, shells counter-clockwise, no ``crs`` member),
  one feature per polygon, in the text layout of ``GeoDataFrame.to_json``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import numpy as np
from numpy.typing import NDArray

#: properties of every feature, in file order (``geometry`` sits after ``area`` in GeoParquet)
LINEAGE_COLUMNS = ("block_id", "model", "model_version", "mlflow_run_id")
ROW_GROUP_ROWS = 65_536


class PredictionFiles:
    """GeoParquet and GeoJSON of predicted features, written batch by batch; a context manager.

    Args:
        parquet: the GeoParquet target.
        geojson: the GeoJSON target.
        crs: the CRS of the geometries written (the imagery's), as WKT or an authority code.
        lineage: ``model``, ``model_version`` and ``mlflow_run_id`` of every feature.
        row_group_rows: the most features held before a GeoParquet row group is written.
    """

    def __init__(
        self,
        parquet: Path,
        geojson: Path,
        *,
        crs: str,
        lineage: dict[str, str],
        row_group_rows: int = ROW_GROUP_ROWS,
    ) -> None:
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
        import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

        from postprocessing.io import wgs84_transformer

        self.targets = (parquet, geojson)
        self.crs = crs
        self.lineage = lineage
        self.row_group_rows = row_group_rows
        self.count = 0
        self.classes: Counter[int] = Counter()
        self._bounds = np.array([np.inf, np.inf, -np.inf, -np.inf])
        self._pending: list[Any] = []
        self._pending_rows = 0
        self._to_wgs84 = wgs84_transformer(crs)  # None: already WGS84
        self._tmp = tuple(p.with_name(f".{p.name}.partial") for p in self.targets)
        self._schema = pa.schema(
            [
                ("class", pa.int64()),
                ("area", pa.float64()),
                ("geometry", pa.binary()),
                *((name, pa.large_string()) for name in LINEAGE_COLUMNS),
            ]
        )
        self._parquet: Any = None
        self._text: TextIO | None = None
        try:
            # no stored Arrow schema: the footer's ``geo`` entry, written at close, is the only one
            self._parquet = pq.ParquetWriter(self._tmp[0], self._schema, store_schema=False)
            self._text = self._tmp[1].open("w", encoding="utf-8")
            self._text.write('{"type": "FeatureCollection", "features": [')
        except BaseException:
            self.close(ok=False)
            raise

    def write(
        self, geoms: NDArray[np.object_], classes: NDArray[Any], areas: NDArray[Any], block_ids: list[str]
    ) -> None:
        """Append features: shapely polygons in the imagery's CRS with their class, area and block."""
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
        import shapely
        from shapely.geometry import mapping

        from postprocessing.io import to_rfc7946

        n = len(geoms)
        if n == 0:
            return
        classes = np.asarray(classes, np.int64)
        areas = np.asarray(areas, np.float64)
        lineage = [self.lineage[name] for name in LINEAGE_COLUMNS[1:]]
        columns = [
            pa.array(classes),
            pa.array(areas),
            pa.array(shapely.to_wkb(geoms, output_dimension=2), pa.binary()),
            pa.array(block_ids, pa.large_string()),
            *(pa.array([value] * n, pa.large_string()) for value in lineage),
        ]
        self._pending.append(pa.record_batch(columns, schema=self._schema))
        self._pending_rows += n
        if self._pending_rows >= self.row_group_rows:
            self._flush()
        box = shapely.total_bounds(geoms)
        self._bounds = np.concatenate(
            [np.minimum(self._bounds[:2], box[:2]), np.maximum(self._bounds[2:], box[2:])]
        )

        wgs84 = to_rfc7946(geoms, self._to_wgs84)
        names = ("class", "area", *LINEAGE_COLUMNS)
        rows = zip(classes.tolist(), areas.tolist(), block_ids, *([v] * n for v in lineage), strict=True)
        parts = [
            json.dumps(
                {"type": "Feature", "properties": dict(zip(names, row, strict=True)), "geometry": mapping(g)}
            )
            for row, g in zip(rows, wgs84, strict=True)
        ]
        if self._text is None:
            raise ValueError(f"{self.targets[1]}: written after close")
        self._text.write((", " if self.count else "") + ", ".join(parts))
        self.count += n
        self.classes.update(classes.tolist())

    def _flush(self) -> None:
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

        if self._pending:
            self._parquet.write_table(pa.Table.from_batches(self._pending, schema=self._schema))
            self._pending, self._pending_rows = [], 0

    def _geo_metadata(self) -> str:
        from pyproj import CRS

        column: dict[str, Any] = {
            "encoding": "WKB",
            "geometry_types": ["Polygon"],
            "crs": CRS.from_user_input(self.crs).to_json_dict(),
        }
        if self.count:
            column["bbox"] = [float(v) for v in self._bounds]
        return json.dumps({"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}})

    def close(self, ok: bool = True) -> None:
        """Finish both files and rename them into place (``ok``), or remove what was written."""
        try:
            if self._parquet is not None:
                if ok:
                    self._flush()
                    self._parquet.add_key_value_metadata({"geo": self._geo_metadata()})
                writer, self._parquet = self._parquet, None
                writer.close()
            if self._text is not None:
                text, self._text = self._text, None
                if ok:
                    text.write("]}")
                text.close()
            if ok:
                for tmp, target in zip(self._tmp, self.targets, strict=True):
                    os.replace(tmp, target)
        except BaseException:
            ok = False
            raise
        finally:
            if not ok:
                for tmp in self._tmp:
                    tmp.unlink(missing_ok=True)

    def __enter__(self) -> PredictionFiles:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(ok=exc_type is None)
