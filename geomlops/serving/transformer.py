"""The post-processing transformer of the serving graph: a model's output for a georeferenced
chip -> a GeoJSON FeatureCollection (RFC 7946: WGS84, longitude first, exteriors counterclockwise).

Which post-processor runs comes from the model's MLM output (its ``post_processing_function``,
else its tasks) through :mod:`postprocessing.registry`; segmentation masks are traced by the
vectorizer's kernel. Every feature carries its class, area in square metres with ``area_method``
(``geodesic`` on a geographic CRS's ellipsoid, ``planar`` in a projected one), the model name,
version and MLflow run id.

:class:`GeoJSONTransformer` also follows seldon-core's Python wrapper interface, so the same class
runs under ``seldon-core-microservice`` on both sides of the model in a ``SeldonDeployment``
graph: as its ``TRANSFORMER`` (``transform_input_raw``: the chip's band values prepared as the
MLM input says, in the model's band order, scaling, type and size) and as its
``OUTPUT_TRANSFORMER`` (``transform_output``: the model's raw answer read as the MLM output says
(class values, arg-max of per-class scores, or one score above the threshold), then GeoJSON).
Its imports stay light (numpy, shapely, contourpy, affine, pyproj, pydantic): the seldon-core
environment pins numpy < 2 and has no GDAL.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from affine import Affine
from numpy.typing import NDArray

from geomlops.errors import ChipError, GeomlopsError, PostprocessorError
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

if TYPE_CHECKING:
    from catalog_sync.mlm import ModelInput
    from steps.model_io import ModelIO

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
        input: JSON object of the MLM input: how ``transform_input_raw`` prepares a chip.
        output: JSON object of the MLM output: how ``transform_output`` reads the model's raw
            answer. Empty: the answer is taken as class values. (:meth:`to_geojson` takes class
            values whatever these say: the MLServer runtime reads answers itself.)

    Raises:
        PostprocessorError: the MLM output names no registered post-processor, or a JSON
            parameter is malformed (named).
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
        input: str = "",
        output: str = "",
    ) -> None:
        self.lineage = {"model": model_name, "model_version": str(model_version), "mlflow_run_id": run_id}
        task_list = [t.strip() for t in tasks.split(",") if t.strip()]
        extra = _json_object(options, "options", "the MLM output's post-processor options")
        chosen = extra | {"tasks": task_list, "post_processing_function": post_processing_function or None}
        self.postprocessor: PostProcessor = resolve_postprocessor(chosen)
        self.finish = resolve_finisher(chosen)
        self.model_input, self.io = _model_io(input, output)
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
        _check_numeric(data)
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

    def transform_input_raw(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Seldon ``TRANSFORMER``: a chip's band values -> the model's input tensor.

        ``data`` holds the chip as ``(bands, height, width)`` (or a batch of one), in the MLM
        input's band order, as ``ndarray`` or ``tensor``; it is scaled, cast and resized as the
        MLM input says and sent on as ``data.tensor`` of ``(1, bands, h, w)``. ``meta`` passes
        through, its tags gaining ``chip_height`` and ``chip_width``, by which the output
        transformer reads an answer given at the model's fixed size back onto the chip's grid.

        Raises:
            ChipError: no chip, or not the bands the MLM input lists; under the seldon-core
                wrapper, as a 400.
        """
        try:
            message = request if isinstance(request, Mapping) else {}
            meta = dict(message.get("meta") or {})
            chip = _message_array(message.get("data"))
            if chip.ndim == 4 and chip.shape[0] == 1:
                chip = chip[0]
            if chip.ndim != 3:
                raise ChipError(f"data: got shape {chip.shape}; expected the chip as (bands, height, width)")
            # the imagery's bands: derived ones (an index such as NDVI) are computed from these
            bands = self.model_input.source_bands if self.model_input is not None else ()
            if bands and chip.shape[0] != len(bands):
                raise ChipError(
                    f"data: {chip.shape[0]} bands; the model takes {len(bands)} ({', '.join(bands)}), "
                    "in that order"
                )
            batch = chip[None]
            if self.io is not None and self.model_input is not None:
                prepared, _ = self.io.prepare(np.ma.masked_invalid(chip))
                batch = self.io.to_model_size(prepared[None])
            tags = dict(meta.get("tags") or {}) | {"chip_height": chip.shape[1], "chip_width": chip.shape[2]}
        except GeomlopsError as err:
            raise _bad_request(err) from err
        tensor = {"shape": list(batch.shape), "values": batch.ravel().tolist()}
        return {"data": {"names": [], "tensor": tensor}, "meta": meta | {"tags": tags}}

    def transform_output(
        self, X: Any, features_names: Sequence[str] | None = None, meta: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Seldon ``OUTPUT_TRANSFORMER``: the model's output ``X`` -> GeoJSON (as ``jsonData``).

        ``X`` is read as the MLM output says (``output``): class values, the arg-max of per-class
        scores, or one score above ``geomlops:threshold``, on the chip's grid (``chip_height``
        and ``chip_width`` from the input transformer, else ``X``'s own). The chip's
        georeference comes from the request's ``meta.tags`` (``crs``, ``transform``).

        Raises:
            ChipError: the tags lack a georeference, or ``X`` is not a numeric array or not the
                answer the MLM output declares; under the seldon-core wrapper, as its
                ``SeldonMicroserviceException`` with status 400 (the client's fault, not the
                server's: the wrapper answers 500 to any other error).
        """
        try:
            tags = (meta or {}).get("tags") or {}
            georef = Georeference.from_tags(tags)
            answer = np.asarray(X)
            if self.io is not None:
                _check_numeric(answer)
                if answer.ndim == 2 or (answer.ndim == 3 and self.io.class_axis is not None):
                    answer = answer[None]  # a batch of one
                height = int(tags.get("chip_height") or answer.shape[-2])
                width = int(tags.get("chip_width") or answer.shape[-1])
                answer = self.io.interpret(answer, height, width)[0]
            return self.to_geojson(answer, georef)
        except GeomlopsError as err:
            raise _bad_request(err) from err

    def tags(self) -> dict[str, str]:
        """Lineage added to the ``meta.tags`` of every Seldon response."""
        return dict(self.lineage)


def _check_numeric(data: NDArray[Any]) -> None:
    """Raises ChipError unless the model's output ``data`` is a non-empty array of numbers."""
    if data.size == 0 or not np.issubdtype(data.dtype, np.number):
        raise ChipError(f"model output: expected a numeric array, got {data.dtype} of shape {data.shape}")


def _json_object(text: str, name: str, what: str) -> dict[str, Any]:
    """The JSON object parameter ``name`` (empty: none).

    Raises:
        PostprocessorError: not JSON, or not an object (``name`` and ``what`` it should be named).
    """
    try:
        value = json.loads(text or "{}")
    except ValueError as err:
        raise PostprocessorError(f"{name}: not JSON ({err}): {text!r}") from err
    if not isinstance(value, dict):
        raise PostprocessorError(f"{name}: expected a JSON object of {what}, got {text!r}")
    return value


def _model_io(model_input: str, model_output: str) -> tuple[ModelInput | None, ModelIO | None]:
    """The MLM input and how chips are prepared and answers read, from the ``input`` and
    ``output`` parameters (both empty: neither).

    Raises:
        PostprocessorError: a parameter that is not the MLM object it should be (named).
    """
    from pydantic import ValidationError

    from catalog_sync.mlm import ModelInput, ModelOutput
    from steps.model_io import ModelIO

    raw_input = _json_object(model_input, "input", "the MLM input")
    raw_output = _json_object(model_output, "output", "the MLM output")
    try:
        parsed_input = ModelInput.model_validate(raw_input) if raw_input else None
        parsed_output = ModelOutput.model_validate(raw_output) if raw_output else None
    except ValidationError as err:
        raise PostprocessorError(f"input/output: not an MLM input and output ({err})") from err
    try:
        if parsed_input is not None:
            return parsed_input, ModelIO.from_parts(parsed_input, parsed_output, halo=0)
        return None, ModelIO.from_output(parsed_output) if parsed_output is not None else None
    except GeomlopsError as err:
        raise PostprocessorError(f"input/output: {err}") from err


def _message_array(data: Any) -> NDArray[np.float32]:
    """The array of a Seldon message's ``data`` (``ndarray``, or ``tensor`` with shape and values).

    Raises:
        ChipError: neither, or not numbers of that shape.
    """
    if not isinstance(data, Mapping):
        raise ChipError("data: expected {'ndarray': [...]} or {'tensor': {'shape': [...], 'values': [...]}}")
    try:
        if isinstance(data.get("tensor"), Mapping):
            tensor = data["tensor"]
            return np.asarray(tensor.get("values"), np.float32).reshape(tensor.get("shape"))
        if "ndarray" in data:
            return np.asarray(data["ndarray"], np.float32)
    except (TypeError, ValueError) as err:
        raise ChipError(f"data: not an array of numbers of its shape ({err})") from err
    raise ChipError("data: expected 'ndarray' or 'tensor'")


def _bad_request(err: GeomlopsError) -> Exception:
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
