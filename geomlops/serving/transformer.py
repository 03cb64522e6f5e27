"""The post-processing transformer of the serving graph: a model's output for a georeferenced
chip -> a GeoJSON FeatureCollection (RFC 7946: WGS84, longitude first, exteriors counterclockwise).

Which post-processor runs comes from the model's MLM output (its ``post_processing_function``,
else its tasks) through :mod:`postprocessing.registry`; segmentation masks are traced by the
vectorizer's kernel. Every feature carries its class, area in square metres with ``area_method``
(``geodesic`` on a geographic CRS's ellipsoid, ``planar`` in a projected one), the model name,
version and MLflow run id.

:class:`GeoJSONTransformer` also follows seldon-core's Python wrapper interface
(``transform_output(X, features_names, meta)``, ``tags()``), so the same class runs as an
``OUTPUT_TRANSFORMER`` under ``seldon-core-microservice``. Its imports stay light (numpy, shapely,
contourpy, affine, pyproj): the seldon-core environment pins numpy < 2 and has no GDAL.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine
from numpy.typing import NDArray

from geomlops.errors import ChipError, PostprocessorError
from postprocessing import _rings
from postprocessing.finalize import (
    area_method,
    canonical,
    finish_each,
    geometry_areas,
    in_scan_order,
    polygon_areas,
    to_geometries,
)
from postprocessing.grid import Block
from postprocessing.io import to_rfc7946, wgs84_transformer
from postprocessing.registry import BlockOutput, PostProcessor, resolve_finisher, resolve_postprocessor

#: class value of pixels with no data (``steps.predict.NODATA_CLASS``): never a feature
NODATA = 255


@dataclass(frozen=True)
class Georeference:
    """Where a chip lies: its CRS (EPSG code or WKT) and its GDAL-order geotransform.

    Attributes:
        crs: the chip's coordinate reference system, as pyproj reads it.
        transform: ``(a, b, c, d, e, f)`` of the chip's affine transform (pixel -> CRS).
    """

    crs: str
    transform: tuple[float, float, float, float, float, float]

    @classmethod
    def from_tags(cls, tags: Mapping[str, Any] | None) -> Georeference:
        """Read ``crs`` and ``transform`` (six numbers, or their JSON) from request tags.

        Raises:
            ChipError: naming the tag that is missing or malformed.
        """
        tags = tags or {}
        crs, transform = tags.get("crs"), tags.get("transform")
        if not crs or not isinstance(crs, str):
            raise ChipError("tags.crs: missing; expected the chip's CRS (e.g. 'EPSG:32616' or WKT)")
        if isinstance(transform, str):
            try:
                transform = json.loads(transform)
            except ValueError as err:
                raise ChipError(f"tags.transform: {transform!r} is not JSON; expected six numbers") from err
        if (
            not isinstance(transform, Sequence)
            or len(transform) < 6
            or not all(isinstance(v, int | float) for v in transform[:6])
        ):
            raise ChipError(f"tags.transform: {transform!r}; expected six numbers (a, b, c, d, e, f)")
        a, b, c, d, e, f = (float(v) for v in transform[:6])
        if a * e - b * d == 0:
            raise ChipError(f"tags.transform: {transform!r} is singular (no pixel size)")
        return cls(crs=crs, transform=(a, b, c, d, e, f))


class GeoJSONTransformer:
    """Turns a model output for one chip into a GeoJSON FeatureCollection with lineage.

    Constructor arguments are strings, as model servers pass parameters (Seldon's graph
    ``parameters``, MLServer's ``extra``).

    Args:
        model_name: registered model name (written on every feature).
        model_version: model version.
        run_id: MLflow run of the version.
        tasks: the MLM output's tasks, comma-separated (choose the built-in post-processor).
        post_processing_function: the MLM output's ``module:function``, if it names one.
        classes: JSON object of class value -> class name.
        nodata: class value never vectorized (default 255, what prediction writes where the
            imagery has no data).
        background: class value that is not a feature (default 0); empty: keep every class.
        options: JSON object of the MLM output's post-processor options (``geomlops:buildings``):
            whole polygons are finished by its finisher as batch inference finishes them.

    Raises:
        PostprocessorError: the MLM output names no registered post-processor.
    """

    def __init__(
        self,
        model_name: str = "",
        model_version: str = "",
        run_id: str = "",
        tasks: str = "semantic-segmentation",
        post_processing_function: str = "",
        classes: str = "{}",
        nodata: str | int = NODATA,
        background: str | int = 0,
        options: str = "{}",
    ) -> None:
        self.lineage = {"model": model_name, "model_version": str(model_version), "mlflow_run_id": run_id}
        task_list = [t.strip() for t in tasks.split(",") if t.strip()]
        try:
            extra = json.loads(options or "{}")
        except ValueError as err:
            raise PostprocessorError(f"options: not JSON ({err}): {options!r}") from err
        if not isinstance(extra, dict):
            raise PostprocessorError(
                f"options: expected a JSON object of the MLM output's options, got {options!r}"
            )
        output = extra | {"tasks": task_list, "post_processing_function": post_processing_function or None}
        self.postprocessor: PostProcessor = resolve_postprocessor(output)
        self.finish = resolve_finisher(output)
        self.classes = {int(k): str(v) for k, v in json.loads(classes or "{}").items()}
        self.nodata = int(nodata) if str(nodata).strip() else None
        self.background = int(background) if str(background).strip() else None

    def to_geojson(self, output: NDArray[Any], georef: Georeference) -> dict[str, Any]:
        """The FeatureCollection for the model's ``output`` on a chip placed by ``georef``.

        Args:
            output: a class mask ``(H, W)`` or ``(1, H, W)``, scores ``(C, H, W)``, or what the
                model's registered post-processor takes.
            georef: the chip's CRS and transform.

        Returns:
            A GeoJSON FeatureCollection in WGS84 whose features carry ``class``,
            ``class_name`` (when known), ``area`` (m²), ``area_method``, ``score`` (when the model gives one),
            ``model``, ``model_version`` and ``mlflow_run_id``.

        Raises:
            ChipError: the output is empty or not an array of numbers, or the CRS is unknown.
        """
        data = np.asarray(output)
        if data.ndim == 4 and data.shape[0] == 1:
            data = data[0]  # a batch of one
        if data.size == 0 or not np.issubdtype(data.dtype, np.number):
            raise ChipError(f"model output: expected a numeric array, got {data.dtype} of shape {data.shape}")
        transform = Affine(*georef.transform)
        method = _area_method(georef.crs)
        height, width = data.shape[-2:] if data.ndim >= 2 else (1, 1)
        block = Block(row=0, col=0, row_off=0, col_off=0, height=height, width=width, shared=(False,) * 4)
        found = self.postprocessor(
            BlockOutput(data=data, block=block, transform=transform, nodata=self.nodata)
        )
        scores: NDArray[np.float64] | None
        if found.pieces is not None:
            polys = canonical(in_scan_order(_rings.concat([found.pieces.final, found.pieces.edge])))
            geoms = to_geometries(polys, transform)
            classes = np.asarray(polys.classes, np.int64)
            scores = None
            if self.finish is not None:  # as publishing finishes them; parts keep their class
                geoms, index, areas = finish_each(self.finish, geoms, georef.crs)
                classes = classes[index]
            else:
                areas = polygon_areas(polys, transform, georef.crs)
        else:
            geoms, classes, scores = found.geometries, found.classes, found.scores
            areas = geometry_areas(geoms, georef.crs) if len(geoms) else np.zeros(0)
        keep = np.ones(len(classes), bool)
        if self.background is not None:
            keep &= classes != self.background
        if self.nodata is not None:
            keep &= classes != self.nodata
        index = np.flatnonzero(keep)
        wgs84 = _to_wgs84(np.asarray(geoms, dtype=object)[index], georef.crs)
        features = []
        for i, geom in zip(index, wgs84, strict=True):
            props: dict[str, Any] = {"class": int(classes[i])}
            if int(classes[i]) in self.classes:
                props["class_name"] = self.classes[int(classes[i])]
            props["area"] = float(areas[i])
            props["area_method"] = method
            if scores is not None:
                props["score"] = float(scores[i])
            props.update(self.lineage)
            features.append(
                {"type": "Feature", "geometry": json.loads(shapely.to_geojson(geom)), "properties": props}
            )
        collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
        if len(wgs84):
            collection["bbox"] = [float(v) for v in shapely.total_bounds(wgs84)]
        return collection

    # seldon-core Python wrapper interface

    def transform_output(
        self, X: Any, features_names: Sequence[str] | None = None, meta: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Seldon ``OUTPUT_TRANSFORMER``: the model's output ``X`` -> GeoJSON (as ``jsonData``).

        The chip's georeference comes from the request's ``meta.tags`` (``crs``, ``transform``).

        Raises:
            ChipError: the tags lack a georeference, or ``X`` is not a numeric array; under the
                seldon-core wrapper, as its ``SeldonMicroserviceException`` with status 400 (the
                client's fault, not the server's: the wrapper answers 500 to any other error).
        """
        try:
            return self.to_geojson(np.asarray(X), Georeference.from_tags((meta or {}).get("tags")))
        except ChipError as err:
            raise _bad_request(err) from err

    def tags(self) -> dict[str, str]:
        """Lineage added to the ``meta.tags`` of every Seldon response."""
        return dict(self.lineage)


def _bad_request(err: ChipError) -> Exception:
    """``err`` as the seldon-core wrapper reports a bad request (400), where it is installed."""
    try:
        from seldon_core.flask_utils import SeldonMicroserviceException
    except ImportError:  # not under seldon-core: the error as it is
        return err
    bad: Exception = SeldonMicroserviceException(str(err), status_code=400)
    return bad


def _area_method(crs: str) -> str:
    """How areas are measured in ``crs`` (``geodesic`` or ``planar``; square metres either way)."""
    from pyproj.exceptions import CRSError

    try:
        return area_method(crs)
    except CRSError as err:
        raise ChipError(f"crs {crs[:80]!r}: not a coordinate reference system pyproj knows ({err})") from err


def _to_wgs84(geoms: NDArray[np.object_], crs: str) -> NDArray[np.object_]:
    """Reproject to WGS84 (longitude, latitude), exteriors counterclockwise (RFC 7946)."""
    from pyproj.exceptions import CRSError

    if not len(geoms):
        return geoms
    try:
        transformer = wgs84_transformer(crs)
    except CRSError as err:
        raise ChipError(f"crs {crs[:80]!r}: not a coordinate reference system pyproj knows ({err})") from err
    return to_rfc7946(geoms, transformer)
