"""MLServer runtime: the post-processing transformer in front of the model's predictor.

Loaded by MLServer (``implementation: geomlops.serving.runtime.GeoChipRuntime``) in geomlops'
serving environment (``geomlops serve``, KServe's transformer container). A request carries one
GeoTIFF chip as a V2 ``BYTES`` input (base64 in JSON); the chip is checked, prepared as the
model's MLM input says (bands, value scaling, resizing), sent to the predictor over the V2
protocol, its answer read as the MLM output says (class values, or scores by arg-max or
threshold) and vectorized; the answer is one ``BYTES`` output, ``geojson``, holding the
FeatureCollection. A refused chip is a 400 (413 when too large) naming what was wrong; the
server keeps serving. The model itself never runs here: it runs in its own environment
(:mod:`geomlops.serving.predictor_server`).

``parameters.extra`` of the model settings holds ``predictor_url`` (the predictor's V2
``infer`` URL), ``input`` and ``output`` (the MLM input and output), ``transformer``
(:class:`geomlops.serving.transformer.GeoJSONTransformer` arguments) and ``max_bytes``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from mlserver import MLModel
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

from catalog_sync.mlm import ModelInput
from geomlops.errors import ConfigurationError, GeomlopsError
from geomlops.serving.chips import model_io, open_chip, predict_chip
from geomlops.serving.transformer import GeoJSONTransformer, Georeference

#: the name of the request input that carries the chip
CHIP_INPUT = "chip"


class ChipRefused(MLServerError):  # type: ignore[misc]
    """A request MLServer answers with a 4xx and the reason."""

    def __init__(self, msg: str, status_code: int = 400) -> None:
        super().__init__(msg, status_code)


class GeoChipRuntime(MLModel):  # type: ignore[misc]
    """Predicts a georeferenced chip with the MLflow model, answers GeoJSON polygons."""

    async def load(self) -> bool:
        """Read the MLM input and output, build the transformer, point at the predictor.

        Raises:
            ConfigurationError: the settings name no predictor.
        """
        extra = dict(self.settings.parameters.extra or {})
        if not extra.get("predictor_url"):
            raise ConfigurationError(
                f"model {self.name}: parameters.extra.predictor_url is missing; the transformer "
                "needs the V2 infer URL of the model's predictor"
            )
        self._input = ModelInput.model_validate(extra["input"])
        self._io = model_io(self._input, extra.get("output"))
        self._max_bytes = int(extra["max_bytes"])
        self._transformer = GeoJSONTransformer(**extra["transformer"])
        self._predict = RemotePredictor(extra["predictor_url"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Decode the chip, predict its classes, vectorize them into a FeatureCollection."""
        data = _chip_bytes(payload)
        try:
            with open_chip(data, self._input, self._max_bytes) as src:
                georef = Georeference(crs=src.crs.to_wkt(), transform=tuple(src.transform)[:6])
                mask = predict_chip(self._predict, src, self._input, self._io)
            collection = self._transformer.to_geojson(mask, georef)
        except GeomlopsError as err:
            status = 413 if "larger than the limit" in str(err) or "decode to" in str(err) else 400
            raise ChipRefused(str(err), status) from err
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[
                ResponseOutput(
                    name="geojson",
                    shape=[1],
                    datatype="BYTES",
                    data=[json.dumps(collection)],
                    parameters={"content_type": "application/geo+json"},
                )
            ],
        )


#: V2 datatypes of numpy's types
V2_DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}


class RemotePredictor:
    """The model behind a V2 endpoint: the prepared ``(1, bands, H, W)`` tensor in, its raw
    answer out (class values or scores, read by the MLM output afterwards).

    Args:
        url: the model's V2 ``infer`` URL.
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, batch: Any) -> Any:
        """Ask the predictor for its answer to ``batch`` (numpy codec both ways, its data type kept).

        Raises:
            ChipRefused: 502 when the predictor cannot be reached or refuses (its answer kept).
        """
        import numpy as np
        import requests

        array = np.asarray(batch)
        if array.dtype.name not in V2_DATATYPES:
            array = array.astype(np.float32)
        body = {
            "parameters": {"content_type": "np"},
            "inputs": [
                {
                    "name": "input-0",
                    "shape": list(array.shape),
                    "datatype": V2_DATATYPES[array.dtype.name],
                    "data": array.ravel().tolist(),
                    "parameters": {"content_type": "np"},
                }
            ],
        }
        try:
            answer = requests.post(self.url, json=body, timeout=300)
        except requests.RequestException as err:
            raise ChipRefused(f"predictor {self.url}: cannot be reached ({err})", 502) from err
        if answer.status_code != 200:
            raise ChipRefused(f"predictor {self.url}: {answer.status_code} {answer.text[:500]}", 502)
        output = answer.json()["outputs"][0]
        dtype = next((k for k, v in V2_DATATYPES.items() if v == output.get("datatype")), None)
        return np.asarray(output["data"], dtype=dtype).reshape(output["shape"])


def _chip_bytes(payload: InferenceRequest) -> bytes:
    """The chip's bytes from the request input ``chip`` (base64 text over REST, raw over gRPC)."""
    inputs = {i.name: i for i in payload.inputs}
    if CHIP_INPUT not in inputs:
        raise ChipRefused(
            f"inputs: no input named '{CHIP_INPUT}' (got {', '.join(inputs) or 'none'}); "
            "expected one BYTES input 'chip' holding a base64-encoded GeoTIFF"
        )
    chip = inputs[CHIP_INPUT]
    if chip.datatype != "BYTES":
        raise ChipRefused(f"inputs.chip: datatype {chip.datatype}; expected BYTES (a base64-encoded GeoTIFF)")
    values: Any = chip.data.root if hasattr(chip.data, "root") else chip.data
    if isinstance(values, str | bytes):
        values = [values]
    if not isinstance(values, list) or len(values) != 1:
        raise ChipRefused("inputs.chip: expected exactly one element, the GeoTIFF")
    value = values[0]
    if isinstance(value, bytes):
        return value
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ChipRefused(f"inputs.chip: not base64 ({err})") from err
