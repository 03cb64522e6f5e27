"""The one place where vectorization touches files: raster windows in, features out.

Outputs are written to a temporary file beside the target and renamed into place when complete,
so a failed or interrupted run never leaves a half-written file under the target name.

- GeoParquet (``.parquet``, ``.geoparquet``): the raster's CRS, WKB polygons, GeoParquet 1.1
  metadata; written row group by row group (pyarrow), so memory does not grow with the output.
- GeoJSON (``.geojson``, ``.json``): RFC 7946, reprojected to WGS84 longitude/latitude, shells
  counter-clockwise, no ``crs`` member.

Each feature is one polygon with its ``class`` (the pixel value) and ``area`` (in the raster
CRS's units, squared).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import numpy as np
import shapely
from affine import Affine
from numpy.typing import NDArray

from geomlops.errors import VectorizeError
from postprocessing._rings import Polygons
from postprocessing.finalize import polygon_areas, to_geometries, to_wkb
from postprocessing.grid import Block

PARQUET_SUFFIXES = (".parquet", ".geoparquet")
GEOJSON_SUFFIXES = (".geojson", ".json")


@dataclass(frozen=True)
class RasterInfo:
    """What vectorization needs to know of a raster band.

    Attributes:
        path: the raster file.
        band: the band read (1-based).
        height: rows.
        width: columns.
        transform: the geotransform.
        crs_wkt: the CRS as WKT, or None when the raster has none.
        nodata: the band's nodata value, or None.
        dtype: the band's data type name.
    """

    path: str
    band: int
    height: int
    width: int
    transform: Affine
    crs_wkt: str | None
    nodata: int | None
    dtype: str


def read_raster_info(path: str | Path, band: int = 1) -> RasterInfo:
    """Open a raster and describe one of its bands.

    Raises:
        VectorizeError: when the file cannot be opened, has no such band, or is not integer.
    """
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(path) as ds:
            if not 1 <= band <= ds.count:
                raise VectorizeError(f"{path}: band {band} does not exist (the raster has {ds.count})")
            dtype = ds.dtypes[band - 1]
            nodata = ds.nodatavals[band - 1]
            return RasterInfo(
                path=str(path),
                band=band,
                height=ds.height,
                width=ds.width,
                transform=ds.transform,
                crs_wkt=ds.crs.to_wkt() if ds.crs else None,
                nodata=None if nodata is None else int(nodata),
                dtype=dtype,
            )
    except RasterioError as err:
        raise VectorizeError(f"{path}: cannot read the raster ({err})") from err


def read_block(info: RasterInfo, block: Block) -> NDArray[Any]:
    """Read one block's window of the band.

    Raises:
        VectorizeError: naming the block when the window cannot be read (a corrupt file).
    """
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    try:
        with rasterio.open(info.path) as ds:
            data: NDArray[Any] = ds.read(
                info.band, window=Window(block.col_off, block.row_off, block.width, block.height)
            )
            return data
    except RasterioError as err:
        raise VectorizeError(f"{info.path}: block {block.id} cannot be read ({err})") from err


def output_format(path: str | Path) -> str:
    """``"parquet"`` or ``"geojson"`` from the file suffix.

    Raises:
        VectorizeError: for any other suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in GEOJSON_SUFFIXES:
        return "geojson"
    raise VectorizeError(
        f"{path}: unknown output format; use one of {', '.join(PARQUET_SUFFIXES + GEOJSON_SUFFIXES)}"
    )


def wgs84_transformer(crs: str) -> Any:
    """The transform from ``crs`` (WKT, an authority code …) to WGS84 longitude/latitude, or
    None when ``crs`` already is WGS84.

    Raises:
        pyproj.exceptions.CRSError: ``crs`` is not a coordinate reference system pyproj knows.
    """
    from pyproj import CRS, Transformer

    source = CRS.from_user_input(crs)
    if source.equals(CRS.from_epsg(4326), ignore_axis_order=True):
        return None
    return Transformer.from_crs(source, "EPSG:4326", always_xy=True)


def to_rfc7946(geoms: NDArray[np.object_], transformer: Any) -> NDArray[np.object_]:
    """Geometries as RFC 7946 wants them: reprojected by ``transformer`` (from
    :func:`wgs84_transformer`; None: already WGS84), polygon shells counter-clockwise."""
    if transformer is not None:
        geoms = shapely.transform(geoms, lambda c: np.column_stack(transformer.transform(c[:, 0], c[:, 1])))
    oriented: NDArray[np.object_] = shapely.orient_polygons(geoms, exterior_cw=False)
    return oriented


#: the most bytes of WKB in one Arrow binary array (its offsets are 32-bit)
_MAX_BINARY = 2**31 - 1


@dataclass(frozen=True)
class EncodedFeatures:
    """Features ready to write: classes, areas, and either WKB (GeoParquet) or geometries.

    Attributes:
        classes: the class of each feature.
        areas: the area of each feature.
        wkb: ``(offsets, data)`` of the features' WKB, for GeoParquet.
        geometries: shapely polygons in the raster's CRS, for GeoJSON.
    """

    classes: NDArray[np.int64]
    areas: NDArray[np.float64]
    wkb: tuple[NDArray[np.int64], NDArray[np.uint8]] | None = None
    geometries: NDArray[np.object_] | None = None


def _buffer(array: NDArray[Any]) -> Any:
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

    return pa.py_buffer(array)


def _numeric(arrow_type: Any, values: NDArray[Any]) -> Any:
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values)])


def _binary(n: int, buffers: list[Any]) -> Any:
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

    return pa.Array.from_buffers(pa.binary(), n, buffers)


class FeatureWriter:
    """Streams polygons to GeoParquet or GeoJSON; the file appears only when closed cleanly.

    Args:
        path: target file; the suffix picks the format.
        crs_wkt: the CRS of the geometries written (the raster's), or None.

    Raises:
        VectorizeError: on an unknown suffix, a missing folder, or GeoJSON without a CRS.
    """

    def __init__(self, path: str | Path, crs_wkt: str | None) -> None:
        self.path = Path(path)
        self.format = output_format(self.path)
        if not self.path.parent.is_dir():
            raise VectorizeError(f"{self.path}: the folder {self.path.parent} does not exist")
        if self.format == "geojson" and crs_wkt is None:
            raise VectorizeError(
                f"{self.path}: the raster has no CRS, so it cannot be written as WGS84 GeoJSON"
            )
        self.crs_wkt = crs_wkt
        self.count = 0
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._parquet: Any = None
        self._text: TextIO | None = None
        self._to_wgs84: Any = None
        if self.format == "parquet":
            self._open_parquet()
        else:
            self._open_geojson()

    def _open_parquet(self) -> None:
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
        import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

        crs: Any = None
        if self.crs_wkt is not None:
            from pyproj import CRS

            crs = CRS.from_wkt(self.crs_wkt).to_json_dict()
        geo = {
            "version": "1.1.0",
            "primary_column": "geometry",
            "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"], "crs": crs}},
        }
        self._schema = pa.schema(
            [("class", pa.int64()), ("area", pa.float64()), ("geometry", pa.binary())],
            metadata={b"geo": json.dumps(geo).encode()},
        )
        # no dictionary for the WKB column: every value differs, and it would copy them all
        self._parquet = pq.ParquetWriter(
            self._tmp,
            self._schema,
            compression="zstd",
            use_dictionary=["class"],
            write_statistics=["class", "area"],
        )

    def _open_geojson(self) -> None:
        self._to_wgs84 = wgs84_transformer(str(self.crs_wkt))
        self._text = self._tmp.open("w", encoding="utf-8")
        self._text.write('{"type":"FeatureCollection","features":[')

    def write_polygons(self, polys: Polygons, transform: Affine) -> None:
        """Append pixel-space polygons, placed by ``transform``; GeoParquet skips GEOS entirely."""
        self.write_encoded(self.encode(polys, transform))

    def encode(self, polys: Polygons, transform: Affine) -> EncodedFeatures:
        """What :meth:`write_encoded` writes of ``polys``, which the caller may then let go
        (a country-wide polygon need not be held beside its WKB while the file is written).

        Raises:
            VectorizeError: on a polygon too large for one GeoParquet value (2 GiB of WKB).
        """
        areas = polygon_areas(polys, transform)
        if self._parquet is None:
            return EncodedFeatures(polys.classes, areas, geometries=to_geometries(polys, transform))
        offsets, data = to_wkb(polys, transform)
        return EncodedFeatures(polys.classes, areas, wkb=(offsets, data))

    def write_encoded(self, features: EncodedFeatures) -> None:
        """Append features made by :meth:`encode`."""
        if len(features.classes) == 0:
            return
        if features.wkb is None:
            if features.geometries is not None:
                self.write(features.geometries, features.classes, features.areas)
            return
        offsets, data = features.wkb
        # a binary column's offsets are 32-bit: cut the features into runs below 2 GiB of WKB
        start, n = 0, len(features.classes)
        while start < n:
            stop = int(np.searchsorted(offsets, offsets[start] + _MAX_BINARY, side="right")) - 1
            if stop <= start:
                size = int(offsets[start + 1] - offsets[start])
                raise VectorizeError(
                    f"{self.path}: a polygon of {size:,} bytes of WKB is larger than one GeoParquet "
                    "value can hold (2 GiB); write GeoJSON instead"
                )
            stop = min(stop, n)
            base = int(offsets[start])
            run_offsets = (offsets[start : stop + 1] - base).astype(np.int32)
            buffers = [None, _buffer(run_offsets), _buffer(data[base : int(offsets[stop])])]
            self._write_table(
                _binary(stop - start, buffers), features.classes[start:stop], features.areas[start:stop]
            )
            start = stop

    def _write_table(self, wkb: Any, classes: NDArray[Any], areas: NDArray[np.float64]) -> None:
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

        # arrays over numpy's buffers: no copy, and pyarrow need not import pandas to look at them
        columns = [
            _numeric(pa.int64(), np.ascontiguousarray(classes, np.int64)),
            _numeric(pa.float64(), np.ascontiguousarray(areas, np.float64)),
            wkb,
        ]
        self._parquet.write_table(pa.Table.from_arrays(columns, schema=self._schema))
        pa.default_memory_pool().release_unused()  # give the encoding buffers back
        self.count += len(classes)

    def write(self, geoms: NDArray[np.object_], classes: NDArray[Any], areas: NDArray[np.float64]) -> None:
        """Append features (one shapely polygon each, in the raster's CRS) to the output."""
        if len(geoms) == 0:
            return
        if self._parquet is not None:
            import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

            wkb = shapely.to_wkb(geoms, output_dimension=2).tolist()  # a list: no pandas import
            self._write_table(pa.array(wkb, pa.binary()), classes, areas)
            return
        if self._text is not None:
            geoms = to_rfc7946(geoms, self._to_wgs84)
            parts = [
                f'{{"type":"Feature","properties":{{"class":{int(k)},"area":{float(a)!r}}},"geometry":{g}}}'
                for g, k, a in zip(
                    shapely.to_geojson(geoms).tolist(), classes.tolist(), areas.tolist(), strict=True
                )
            ]
            self._text.write(("," if self.count else "") + ",".join(parts))
            self.count += len(geoms)

    def close(self, ok: bool = True) -> None:
        """Finish the file and move it into place (``ok``), or remove what was written."""
        try:
            if self._parquet is not None:
                writer, self._parquet = self._parquet, None
                writer.close()
            if self._text is not None:
                text, self._text = self._text, None
                if ok:
                    text.write("]}\n")
                text.close()
            if ok:
                os.replace(self._tmp, self.path)
        except BaseException:
            ok = False
            raise
        finally:
            if not ok:
                self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(ok=exc_type is None)
