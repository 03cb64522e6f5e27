"""The model's predictor: an MLflow pyfunc model served over the V2 inference protocol, from the
model package's own environment.

Run as a script by the package environment's Python (locally: the uv environment the version
was trained in; on a cluster: the model's image, the file mounted from a ConfigMap), never
imported by geomlops::

    python predictor_server.py --model-dir DIR --name NAME [--version V] [--host H] [--port P]

It needs only the standard library, numpy and the package's own MLflow, which every package
environment has since it logged the model. It loads the model once, before listening: a model
that does not load ends the process with exit status 3 and one line on stderr naming the cause
(``geomlops-predictor: cannot load the model …: ModuleNotFoundError: No module named 'torch'``).
Once listening it writes one JSON line on stdout, ``{"ready": true, "port": N, ...}`` (``--port
0`` takes a free port, so a supervisor never races for one).

Routes (the V2 protocol's REST binding, as KServe and MLServer answer it):

- ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2/models/NAME[/versions/V]/ready``;
- ``GET /v2``, ``/v2/models/NAME[/versions/V]``: server and model metadata;
- ``POST /v2/models/NAME[/versions/V]/infer``: the first input tensor (``shape``, ``datatype``,
  ``data`` flat or nested) is passed to ``model.predict`` as a numpy array; the answer is one
  output tensor, ``output-0``. A malformed request is a 400, a failed prediction a 500, both
  with ``{"error": …}``;
- Seldon Core v1's model API, for a ``SeldonDeployment`` graph: ``POST /api/v1.0/predictions``
  (``data.tensor`` or ``data.ndarray`` in, ``data.tensor`` out, ``meta`` passed through, so the
  chip's georeference in ``meta.tags`` reaches the output transformer), ``GET /health/ping``.

Why not MLServer with ``mlserver-mlflow`` installed into a copy of the package's environment:
MLServer 1.7 brings some forty pinned dependencies (FastAPI < 0.116, uvicorn, pydantic 2,
its own numpy and Python ranges) that must resolve against the package's own pins; a package
on numpy < 2 with MLflow 2.22, or on a Python MLServer does not support, can have no solution,
and every model image would have to carry MLServer too. This file runs unchanged in any package
environment and any model image. The post-processing transformer (chips in, GeoJSON out) stays
on MLServer in geomlops' own serving environment and talks to this predictor over the same V2
protocol locally and in KServe (:mod:`geomlops.serving.runtime`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: exit status when the model does not load
EXIT_NOT_LOADED = 3
#: V2 datatypes and numpy's names for them
DATATYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
#: the largest request body read (a 4,096 x 4,096 x 4 band chip as JSON numbers fits)
MAX_BODY = 1 << 30


class BadRequest(Exception):
    """A request the predictor answers with 400 and the reason."""


def _message(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".replace("\n", " ").strip()


def _choose_device(requested: str) -> str:
    """``cuda`` when asked for (or ``auto``) and torch reports a GPU, else ``cpu``."""
    if requested not in ("cuda", "auto"):
        return "cpu"
    try:
        import torch  # type: ignore[import-not-found,unused-ignore]

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 - no torch, or a broken CUDA install: the CPU
        return "cpu"


def load_model(model_dir: str, device: str) -> Any:
    """The pyfunc model at ``model_dir``, given the device where its flavor takes a config."""
    import mlflow.pyfunc

    if device == "cuda":
        try:
            return mlflow.pyfunc.load_model(model_dir, model_config={"device": "cuda"})
        except TypeError:  # an MLflow or flavor without model_config
            pass
    return mlflow.pyfunc.load_model(model_dir)


class Predictor:
    """The loaded model behind a lock (a framework model need not be thread-safe)."""

    def __init__(self, model: Any, name: str, version: str) -> None:
        import numpy as np

        self.np = np
        self.model = model
        self.name = name
        self.version = version
        self.lock = threading.Lock()

    def predict(self, array: Any) -> Any:
        """The model's answer for ``array``, as a numpy array of numbers."""
        with self.lock:
            result = self.np.ascontiguousarray(self.np.asarray(self.model.predict(array)))
        if result.dtype.hasobject:
            raise TypeError(f"the model returned an array of Python objects ({result.dtype})")
        return result

    def tensor(self, spec: Any, where: str) -> Any:
        """A V2 request tensor as a numpy array.

        Raises:
            BadRequest: naming the field that is missing or malformed.
        """
        np = self.np
        if not isinstance(spec, dict):
            raise BadRequest(f"{where}: expected a tensor object")
        datatype = spec.get("datatype")
        if datatype not in DATATYPES:
            raise BadRequest(f"{where}.datatype: {datatype!r}; expected one of {', '.join(DATATYPES)}")
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise BadRequest(f"{where}.shape: {shape!r}; expected a list of sizes")
        try:
            values = np.asarray(spec.get("data"), dtype=DATATYPES[datatype])
            return values.reshape(shape)
        except (TypeError, ValueError) as err:
            raise BadRequest(f"{where}.data: does not fill shape {shape} as {datatype} ({err})") from err

    def output(self, result: Any) -> dict[str, Any]:
        """A numpy answer as a V2 response tensor."""
        datatype = next((k for k, v in DATATYPES.items() if v == result.dtype.name), None)
        if datatype is None:
            result, datatype = result.astype("float64"), "FP64"
        data = result.ravel().tolist()
        return {"name": "output-0", "shape": list(result.shape), "datatype": datatype, "data": data}


class Handler(BaseHTTPRequestHandler):
    """The V2 REST routes, and Seldon Core v1's model routes."""

    predictor: Predictor
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no line per request: the supervisor's log stays readable

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _model_path(self, path: str) -> str | None:
        """What follows ``/v2/models/NAME[/versions/V]`` when the path names this model, else None."""
        p = self.predictor
        for prefix in (f"/v2/models/{p.name}/versions/{p.version}", f"/v2/models/{p.name}"):
            if path == prefix or path.startswith(prefix + "/"):
                return path[len(prefix) :]
        return None

    def do_GET(self) -> None:
        """Health, readiness and metadata."""
        path = self.path.split("?", 1)[0].rstrip("/")
        p = self.predictor
        rest = self._model_path(path)
        if path in ("/v2/health/live", "/v2/health/ready", "/health/ping", "/health/status"):
            self._answer(200, {"live": True, "ready": True})
        elif path == "/v2":
            self._answer(200, {"name": "geomlops-predictor", "version": "1", "extensions": []})
        elif rest == "/ready":
            self._answer(200, {"name": p.name, "ready": True})
        elif rest == "":
            self._answer(200, {"name": p.name, "versions": [p.version], "platform": "mlflow"})
        else:
            self._answer(404, {"error": f"{path}: no such route (model {p.name!r} version {p.version!r})"})

    def do_POST(self) -> None:
        """Predict: V2 ``infer`` or Seldon's ``predictions``."""
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.close_connection = True
                raise BadRequest(f"request body of {length} bytes; at most {MAX_BODY}")
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except ValueError as err:
                raise BadRequest(f"request body: not JSON ({err})") from err
            if self._model_path(path) == "/infer":
                self._answer(200, self._infer(body))
            elif path in ("/api/v1.0/predictions", "/predict"):
                self._answer(200, self._seldon(body))
            else:
                self._answer(404, {"error": f"{path}: no such route"})
        except BadRequest as err:
            self._answer(400, {"error": str(err)})
        except Exception as err:  # noqa: BLE001 - the model failed: the reason goes back
            traceback.print_exc()
            self._answer(500, {"error": f"the model failed to predict: {_message(err)}"})

    def _infer(self, body: Any) -> dict[str, Any]:
        p = self.predictor
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs:
            raise BadRequest("inputs: expected a list of one tensor")
        result = p.predict(p.tensor(inputs[0], "inputs[0]"))
        answer: dict[str, Any] = {
            "model_name": p.name,
            "model_version": p.version,
            "outputs": [p.output(result)],
        }
        if isinstance(body, dict) and body.get("id"):
            answer["id"] = body["id"]
        return answer

    def _seldon(self, body: Any) -> dict[str, Any]:
        p = self.predictor
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise BadRequest("data: expected {'tensor': {shape, values}} or {'ndarray': [...]}")
        if isinstance(data.get("tensor"), dict):
            tensor = data["tensor"]
            spec = {"datatype": "FP32", "shape": tensor.get("shape"), "data": tensor.get("values")}
            array = p.tensor(spec, "data.tensor")
        elif "ndarray" in data:
            try:
                array = p.np.asarray(data["ndarray"], dtype="float32")
            except (TypeError, ValueError) as err:
                raise BadRequest(f"data.ndarray: not an array of numbers ({err})") from err
        else:
            raise BadRequest("data: expected 'tensor' or 'ndarray'")
        result = p.predict(array)
        tensor = {"shape": list(result.shape), "values": result.ravel().tolist()}
        return {"data": {"tensor": tensor}, "meta": body.get("meta") or {}}


def main(argv: list[str] | None = None) -> int:
    """Load the model, then serve until interrupted; returns the exit status."""
    parser = argparse.ArgumentParser(description="Serve an MLflow model over the V2 inference protocol.")
    parser.add_argument("--model-dir", required=True, help="the model's local folder (with MLmodel)")
    parser.add_argument("--name", required=True, help="the model name in the V2 routes")
    parser.add_argument("--version", default="1", help="the model version in the V2 routes")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PREDICTIVE_UNIT_HTTP_SERVICE_PORT") or 8080),
        help="0: a free port (default: Seldon's PREDICTIVE_UNIT_HTTP_SERVICE_PORT, else 8080)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = parser.parse_args(argv)
    announce = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the model's own prints go to stderr, never into the ready line
    device = _choose_device(args.device)
    try:
        model = load_model(args.model_dir, device)
        predictor = Predictor(model, args.name, args.version)
    except Exception as err:  # noqa: BLE001 - any failure to load is reported the same way
        traceback.print_exc()
        print(f"geomlops-predictor: cannot load the model {args.model_dir}: {_message(err)}", file=sys.stderr)
        return EXIT_NOT_LOADED
    handler = type("BoundHandler", (Handler,), {"predictor": predictor})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    port = server.server_address[1]
    ready = {"ready": True, "port": port, "device": device, "python": sys.executable}
    announce.write(json.dumps(ready) + "\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
