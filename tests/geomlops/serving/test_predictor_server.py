"""The predictor that runs in a model's own environment: V2 routes over real HTTP, a real MLflow
model, refusals by name, and a model that does not load ends it with the missing module's name.

These run it with this interpreter (it needs only numpy and MLflow); ``test_serve.py`` runs it
in a model package's own environment behind ``geomlops serve``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pytest
import requests

from geomlops.serving.local import PREDICTOR

MODULE = '''
import mlflow.pyfunc
import numpy as np


class Threshold(mlflow.pyfunc.PythonModel):
    """Class 1 where the first band is above 0.5: (N, C, H, W) in, (N, H, W) uint8 out."""

    def predict(self, context, model_input, params=None):
        x = np.asarray(model_input)
        if x.ndim != 4:
            raise ValueError(f"expected (N, C, H, W), got shape {x.shape}")
        return (x[:, 0] > 0.5).astype(np.uint8)


class NeedsFramework(Threshold):
    """A model whose framework its environment lacks."""

    def load_context(self, context):
        import geomlops_absent_framework  # noqa: F401
'''


def _save(tmp_path: Path, name: str) -> Path:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "threshold_model.py").write_text(textwrap.dedent(MODULE))
    sys.path.insert(0, str(code))
    try:
        import threshold_model

        target = tmp_path / name
        mlflow.pyfunc.save_model(
            str(target),
            python_model=getattr(threshold_model, name)(),
            code_paths=[str(code / "threshold_model.py")],
        )
    finally:
        sys.path.remove(str(code))
        sys.modules.pop("threshold_model", None)
    return target


def _start(model_dir: Path, name: str = "roofs") -> subprocess.Popen[str]:
    args = ["--model-dir", str(model_dir), "--name", name, "--version", "3", "--port", "0", "--device", "cpu"]
    return subprocess.Popen(
        [sys.executable, str(PREDICTOR), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The predictor serving the threshold model; yields its root URL."""
    proc = _start(_save(tmp_path_factory.mktemp("model"), "Threshold"))
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline() or "{}")
    assert ready.get("ready"), proc.stderr.read() if proc.stderr else ""
    yield f"http://127.0.0.1:{ready['port']}"
    proc.terminate()
    proc.wait(timeout=30)


def _infer(url: str, body: Any, route: str = "/v2/models/roofs/infer") -> requests.Response:
    return requests.post(url + route, json=body, timeout=60)


def test_health_readiness_and_metadata(predictor: str) -> None:
    for route in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/roofs/ready",
        "/v2/models/roofs/versions/3/ready",
    ):
        assert requests.get(predictor + route, timeout=10).status_code == 200, route
    meta = requests.get(predictor + "/v2/models/roofs", timeout=10).json()
    assert meta["name"] == "roofs" and meta["versions"] == ["3"]
    missing = requests.get(predictor + "/v2/models/other/ready", timeout=10)
    assert missing.status_code == 404 and "roofs" in missing.json()["error"]


def test_infer_answers_the_models_prediction(predictor: str) -> None:
    x = np.linspace(0, 1, 2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    tensor = {"name": "input-0", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    for route in ("/v2/models/roofs/infer", "/v2/models/roofs/versions/3/infer"):
        answer = _infer(predictor, {"id": "r1", "inputs": [tensor]}, route)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        [out] = body["outputs"]
        assert body["id"] == "r1" and body["model_name"] == "roofs" and body["model_version"] == "3"
        assert out["datatype"] == "UINT8" and out["shape"] == [2, 4, 5]
        assert np.array_equal(np.asarray(out["data"]).reshape(2, 4, 5), (x[:, 0] > 0.5).astype(np.uint8))
    nested = dict(tensor, data=x.tolist())  # nested lists, as some clients send
    assert _infer(predictor, {"inputs": [nested]}).status_code == 200


def test_bad_requests_are_refused_by_name_and_the_model_error_comes_back(predictor: str) -> None:
    good = {"name": "input-0", "shape": [1, 1, 2, 2], "datatype": "FP32", "data": [0.1, 0.9, 0.2, 0.8]}
    cases = [
        ({"inputs": []}, 400, "inputs: expected a list of one tensor"),
        ({"inputs": [dict(good, datatype="FLOAT")]}, 400, "inputs[0].datatype: 'FLOAT'"),
        (
            {"inputs": [dict(good, shape=[1, 1, 3, 3])]},
            400,
            "inputs[0].data: does not fill shape [1, 1, 3, 3]",
        ),
        ({"inputs": [dict(good, shape=[4], data=[1, 2, 3, 4])]}, 500, "ValueError: expected (N, C, H, W)"),
    ]
    for body, status, message in cases:
        answer = _infer(predictor, body)
        assert answer.status_code == status, answer.text
        assert message in answer.json()["error"], answer.text
    bad_json = requests.post(predictor + "/v2/models/roofs/infer", data=b"{not json", timeout=10)
    assert bad_json.status_code == 400 and "not JSON" in bad_json.json()["error"]
    assert _infer(predictor, {"inputs": [good]}).status_code == 200  # still serving


def test_seldon_model_route_keeps_the_meta(predictor: str) -> None:
    meta = {"tags": {"crs": "EPSG:32645", "transform": [0.5, 0, 330000, 0, -0.5, 3060000]}}
    body = {"data": {"tensor": {"shape": [1, 1, 1, 2], "values": [0.2, 0.7]}}, "meta": meta}
    answer = _infer(predictor, body, "/api/v1.0/predictions").json()
    assert answer["data"]["tensor"] == {"shape": [1, 1, 2], "values": [0, 1]}
    assert answer["meta"] == meta
    nd = _infer(predictor, {"data": {"ndarray": [[[[0.9]]]]}}, "/api/v1.0/predictions").json()
    assert nd["data"]["tensor"]["values"] == [1]
    assert requests.get(predictor + "/health/ping", timeout=10).status_code == 200


def test_a_model_that_does_not_load_ends_the_predictor_naming_the_module(tmp_path: Path) -> None:
    proc = _start(_save(tmp_path, "NeedsFramework"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3 and out == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith("geomlops-predictor: cannot load the model")
    assert "ModuleNotFoundError: No module named 'geomlops_absent_framework'" in last
