"""The one place where post-processing touches files: raster windows in, features out.

:class:`FeatureWriter` is the one feature writer: ``geomlops vectorize`` and batch inference
both write through it, so the same features give the same bytes. Each file is written under a
temporary name beside its target and renamed into place when complete
(:func:`geomlops.files.atomic_path`), so a failed or interrupted run never leaves a half-written
file under the target name.

- GeoParquet (``.parquet``, ``.geoparquet``): the geometries' CRS, WKB polygons, zstd, row
  groups of bounded size (memory does not grow with the output), GeoParquet 1.1 ``geo``
  metadata with the bounding box of every feature.
- GeoJSON (``.geojson``, ``.json``): RFC 7946, reprojected to WGS84 longitude/latitude, shells
  counter-clockwise and holes clockwise, no ``crs`` member, compact.

Each feature is one polygon with its ``class`` (the pixel value) and ``area`` (square metres;
in the CRS's units, squared, when the raster has no CRS), then the string properties the caller
names (batch inference: the block id), then ``area_method`` (``geodesic`` for a geographic CRS,
``planar`` otherwise; see :func:`postprocessing.finalize.area_method`) and the shared ones
(batch inference: the model's lineage). :mod:`postprocessing._feature_files` holds the two
formats' files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import shapely
from affine import Affine
from numpy.typing import NDArray

from geomlops.errors import VectorizeError
from geomlops.files import atomic_path
from postprocessing._feature_files import (
    ROW_GROUP_ROWS,
    GeoJSONFile,
    GeoParquetFile,
    binary_array,
    numeric_array,
    wkb_of,
    world_bounds,
)
from postprocessing._rings import IntArray, Polygons
from postprocessing.finalize import area_method, polygon_areas, to_geometries, to_wkb
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
    :func:`wgs84_transformer`; None: already WGS84), cut at the antimeridian where they cross it
    (:mod:`postprocessing.antimeridian`), polygon shells counter-clockwise and holes clockwise."""
    from postprocessing.antimeridian import cut_at_antimeridian

    if transformer is not None:
        geoms = shapely.transform(geoms, lambda c: np.column_stack(transformer.transform(c[:, 0], c[:, 1])))
    geoms = cut_at_antimeridian(geoms)
    oriented: NDArray[np.object_] = shapely.orient_polygons(geoms, exterior_cw=False)
    return oriented


FloatArray = NDArray[np.float64]
#: the most bytes of WKB in one Arrow binary array (its offsets are 32-bit)
_MAX_BINARY = 2**31 - 1


@dataclass(frozen=True)
class EncodedFeatures:
    """Features ready to write: what each of the writer's formats needs.

    Attributes:
        classes: the class of each feature.
        areas: the area of each feature.
        wkb: ``(offsets, data)`` of the features' WKB, for GeoParquet.
        geometries: shapely polygons in the writer's CRS, for GeoJSON.
        bounds: ``[xmin, ymin, xmax, ymax]`` of the features, for GeoParquet's ``bbox``.
        extra: the writer's ``extra`` string properties, one value per feature each.
    """

    classes: NDArray[np.int64]
    areas: NDArray[np.float64]
    wkb: tuple[NDArray[np.int64], NDArray[np.uint8]] | None = None
    geometries: NDArray[np.object_] | None = None
    bounds: NDArray[np.float64] | None = None
    extra: Mapping[str, Sequence[str]] = field(default_factory=dict)


class _Discarded(Exception):
    """Unwinds the writer's files when it is closed without success."""


class FeatureWriter:
    """Streams polygons to GeoParquet, GeoJSON or both; the files appear only when closed cleanly.

    The one feature writer: ``geomlops vectorize`` and batch inference both write through it, so
    the same features give the same bytes. Each feature is a polygon with its ``class`` and
    ``area``, then the ``extra`` and the ``shared`` string properties, in that order.

    Args:
        path: the target, or one GeoParquet and one GeoJSON target; the suffix picks the format.
        crs: the CRS of the geometries written (WKT or an authority code), or None when unknown.
        extra: names of string properties given to each write, one value per feature (a block id).
        shared: string properties with one value for every feature (lineage: model, version, run).
        row_group_rows: the most features in one GeoParquet row group.

    Raises:
        VectorizeError: on an unknown suffix, two targets of one format, a missing folder, or
            GeoJSON without a CRS.
    """

    def __init__(
        self,
        path: str | Path | Sequence[str | Path],
        crs: str | None,
        *,
        extra: Sequence[str] = (),
        shared: Mapping[str, str] | None = None,
        row_group_rows: int = ROW_GROUP_ROWS,
    ) -> None:
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

        self.paths = tuple(Path(p) for p in ([path] if isinstance(path, str | os.PathLike) else path))
        targets = {output_format(p): p for p in self.paths}
        if len(targets) != len(self.paths):
            raise VectorizeError(f"{', '.join(map(str, self.paths))}: at most one target of each format")
        for target in self.paths:
            if not target.parent.is_dir():
                raise VectorizeError(f"{target}: the folder {target.parent} does not exist")
        if "geojson" in targets and crs is None:
            raise VectorizeError(
                f"{targets['geojson']}: the raster has no CRS, so it cannot be written as WGS84 GeoJSON"
            )
        self.crs = crs
        self.extra = tuple(extra)
        # which areas these are (m², geodesic or planar), beside the caller's shared properties
        self.shared = {**({} if crs is None else {"area_method": area_method(crs)}), **(shared or {})}
        self.count = 0
        self._parquet_path = targets.get("parquet")
        self._to_wgs84 = wgs84_transformer(crs) if "geojson" in targets and crs is not None else None
        self._schema = pa.schema(
            [("class", pa.int64()), ("area", pa.float64()), ("geometry", pa.binary())]
            + [(name, pa.string()) for name in (*self.extra, *self.shared)]
        )
        self._parquet: GeoParquetFile | None = None
        self._geojson: GeoJSONFile | None = None
        self._files = ExitStack()
        try:
            # every temporary name first, so that all the files are closed before one is renamed
            tmp = {fmt: self._files.enter_context(atomic_path(p)) for fmt, p in targets.items()}
            if "parquet" in tmp:
                self._parquet = GeoParquetFile(tmp["parquet"], self._schema, crs, row_group_rows)
                self._files.callback(self._parquet.close)
            if "geojson" in tmp:
                self._geojson = GeoJSONFile(tmp["geojson"], self.extra, self.shared)
                self._files.callback(self._geojson.close)
        except BaseException:
            self.close(ok=False)
            raise

    def write_polygons(self, polys: Polygons, transform: Affine, **extra: Sequence[str]) -> None:
        """Append pixel-space polygons, placed by ``transform``; GeoParquet skips GEOS entirely."""
        self.write_encoded(self.encode(polys, transform, **extra))

    def encode(self, polys: Polygons, transform: Affine, **extra: Sequence[str]) -> EncodedFeatures:
        """What :meth:`write_encoded` writes of ``polys``, which the caller may then let go
        (a country-wide polygon need not be held beside its WKB while the file is written)."""
        parquet = self._parquet is not None
        return EncodedFeatures(
            polys.classes,
            polygon_areas(polys, transform, self.crs),
            wkb=to_wkb(polys, transform) if parquet else None,
            geometries=to_geometries(polys, transform) if self._geojson is not None else None,
            bounds=world_bounds(polys, transform) if parquet else None,
            extra=extra,
        )

    def write(
        self, geoms: NDArray[np.object_], classes: NDArray[Any], areas: NDArray[Any], **extra: Sequence[str]
    ) -> None:
        """Append features: shapely polygons in the writer's CRS, their classes and areas, and a
        value per feature of each ``extra`` property (raises as :meth:`write_encoded`)."""
        if len(geoms) == 0:
            return
        parquet = self._parquet is not None
        self.write_encoded(
            EncodedFeatures(
                np.asarray(classes, np.int64),
                np.asarray(areas, np.float64),
                wkb=wkb_of(geoms) if parquet else None,
                geometries=geoms,
                bounds=shapely.total_bounds(geoms) if parquet else None,
                extra=extra,
            )
        )

    def write_encoded(self, features: EncodedFeatures) -> None:
        """Append features made by :meth:`encode` or :meth:`write`.

        Raises:
            VectorizeError: on a polygon too large for one GeoParquet value (2 GiB of WKB).
            ValueError: the ``extra`` properties are not those the writer was made with, the
                features lack what one of its formats needs, or the writer is closed.
        """
        n = len(features.classes)
        if self._parquet is None and self._geojson is None:
            raise ValueError(f"{', '.join(map(str, self.paths))}: written after close")
        if n == 0:
            return
        if set(features.extra) != set(self.extra) or any(len(v) != n for v in features.extra.values()):
            raise ValueError(f"expected {n} values of each of {list(self.extra)}, got {list(features.extra)}")
        extra = [features.extra[name] for name in self.extra]
        classes = np.ascontiguousarray(features.classes, np.int64)
        areas = np.ascontiguousarray(features.areas, np.float64)
        if self._parquet is not None:
            if features.wkb is None or features.bounds is None:
                raise ValueError("GeoParquet needs the features' WKB and bounds")
            self._write_runs(features.wkb, classes, areas, extra)
            self._parquet.cover(features.bounds)
        if self._geojson is not None:
            if features.geometries is None:
                raise ValueError("GeoJSON needs the features' geometries")
            self._geojson.write(to_rfc7946(features.geometries, self._to_wgs84), classes, areas, extra)
        self.count += n

    def _write_runs(
        self, wkb: tuple[IntArray, NDArray[np.uint8]], classes: IntArray, areas: FloatArray, extra: list[Any]
    ) -> None:
        offsets, data = wkb
        # a binary column's offsets are 32-bit: cut the features into runs below 2 GiB of WKB
        start, n = 0, len(classes)
        while start < n:
            stop = int(np.searchsorted(offsets, offsets[start] + _MAX_BINARY, side="right")) - 1
            if stop <= start:
                size = int(offsets[start + 1] - offsets[start])
                raise VectorizeError(
                    f"{self._parquet_path}: a polygon of {size:,} bytes of WKB is larger than one "
                    "GeoParquet value can hold (2 GiB); write GeoJSON instead"
                )
            stop = min(stop, n)
            base = int(offsets[start])
            run_offsets = (offsets[start : stop + 1] - base).astype(np.int32)
            self._write_table(
                binary_array(run_offsets, data[base : int(offsets[stop])]),
                classes[start:stop],
                areas[start:stop],
                *(values[start:stop] for values in extra),
            )
            start = stop

    def _write_table(self, wkb: Any, classes: IntArray, areas: FloatArray, *extra: Sequence[str]) -> None:
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

        n = len(classes)
        columns = [
            numeric_array(pa.int64(), np.ascontiguousarray(classes, np.int64)),
            numeric_array(pa.float64(), np.ascontiguousarray(areas, np.float64)),
            wkb,
            *(pa.array(values, pa.string()) for values in extra),
            *(pa.repeat(pa.scalar(value, pa.string()), n) for value in self.shared.values()),
        ]
        if self._parquet is not None:
            self._parquet.append(pa.Table.from_arrays(columns, schema=self._schema), wkb.nbytes)

    def close(self, ok: bool = True) -> None:
        """Finish the files and move them into place (``ok``), or remove what was written.

        Every file is finished and closed before the first is renamed, and a failed rename
        removes the files not yet renamed (:func:`geomlops.files.atomic_path`).
        """
        files, self._files = self._files, ExitStack()
        try:
            with files:
                if not ok:
                    raise _Discarded
                if self._parquet is not None:
                    self._parquet.finish()
                if self._geojson is not None:
                    self._geojson.finish()
        except _Discarded:
            pass
        finally:
            self._parquet = self._geojson = None

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(ok=exc_type is None)
