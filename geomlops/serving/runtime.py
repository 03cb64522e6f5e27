"""MLServer runtime: the MLflow model and the post-processing transformer in one inference step.

Loaded by MLServer (``implementation: geomlops.serving.runtime.GeoChipRuntime``) in the serving
environment that ``geomlops serve`` prepares. A request carries one GeoTIFF chip as a V2
``BYTES`` input (base64 in JSON); the answer is one ``BYTES`` output, ``geojson``, holding the
FeatureCollection. A refused chip is a 400 (413 when too large) naming what was wrong; the
server keeps serving.

``parameters.extra`` of the model settings holds ``model_uri`` (or ``predictor_url``: a V2
endpoint that predicts, as KServe's predictor does), ``input`` (the MLM input), ``transformer``
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
from geomlops.errors import GeomlopsError
from geomlops.serving.chips import open_chip, predict_chip
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
        """Load the MLflow model named in the settings and build the transformer."""
        import mlflow

        extra = dict(self.settings.parameters.extra or {})
        self._input = ModelInput.model_validate(extra["input"])
        self._max_bytes = int(extra["max_bytes"])
        self._transformer = GeoJSONTransformer(**extra["transformer"])
        if extra.get("predictor_url"):  # the model runs elsewhere (KServe's predictor)
            self._predict: Any = RemotePredictor(extra["predictor_url"])
        else:
            self._predict = mlflow.pyfunc.load_model(extra["model_uri"]).predict
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Decode the chip, predict its classes, vectorize them into a FeatureCollection."""
        data = _chip_bytes(payload)
        try:
            with open_chip(data, self._input, self._max_bytes) as src:
                georef = Georeference(crs=src.crs.to_wkt(), transform=tuple(src.transform)[:6])
                mask = predict_chip(self._predict, src, self._input)
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


class RemotePredictor:
    """The model behind a V2 endpoint: ``(1, bands, H, W)`` float tensor in, classes out.

    Args:
        url: the model's V2 ``infer`` URL.
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, batch: Any) -> Any:
        """Ask the predictor for the classes of ``batch`` (numpy codec both ways).

        Raises:
            ChipRefused: 502 when the predictor cannot be reached or refuses (its answer kept).
        """
        import numpy as np
        import requests

        body = {
            "parameters": {"content_type": "np"},
            "inputs": [
                {
                    "name": "input-0",
                    "shape": list(batch.shape),
                    "datatype": "FP32",
                    "data": np.asarray(batch, np.float32).ravel().tolist(),
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
        return np.asarray(output["data"]).reshape(output["shape"])


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
