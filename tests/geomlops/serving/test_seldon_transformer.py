"""The transformer under the real seldon-core Python wrapper: ``seldon-core-microservice`` runs the
command and graph parameters of the rendered SeldonDeployment, in an isolated environment
(seldon-core 1.18.2 pins numpy < 2, so it never joins the library's dependencies), and answers
``/transform-output`` with the same GeoJSON as the class itself."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from geomlops.serving.isolated_env import isolated_env
from geomlops.serving.local import free_port
from geomlops.serving.manifests import ServedModel, seldon_v1
from geomlops.serving.transformer import GeoJSONTransformer, Georeference

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
#: what the transformer's Seldon image holds (Python 3.11; setuptools < 81 keeps pkg_resources)
SELDON_REQUIREMENTS = ("seldon-core==1.18.2", "setuptools<81", "shapely", "contourpy", "affine", "pyproj")
TRANSFORM = [30.0, 0.0, 460000.0, 0.0, -30.0, 3400000.0]
MODEL = ServedModel(
    name="cloud-mask",
    version="3",
    run_id="f" * 32,
    model_uri="s3://mlflow-artifacts/1/models/m-1/artifacts",
    tasks=("semantic-segmentation",),
    classes={0: "clear", 1: "cloud"},
    image="ghcr.io/example/cloud-mask:3",
)


def _mask() -> np.ndarray:
    mask = np.zeros((20, 24), np.uint8)
    mask[2:7, 3:9] = 1
    mask[10:18, 12:22] = 1
    mask[13:15, 15:18] = 0  # a hole
    mask[0:2, 20:24] = 255  # no data
    return mask


@pytest.fixture(scope="module")
def seldon() -> Iterator[str]:
    """``seldon-core-microservice`` running the SeldonDeployment's transformer container."""
    env_dir = isolated_env("seldon", SELDON_REQUIREMENTS)
    [_, deployment] = seldon_v1(MODEL, namespace="ns", secret="s", image="unused")
    [predictor] = deployment["spec"]["predictors"]
    container, _ = predictor["componentSpecs"][0]["spec"]["containers"]  # the transformer, the model
    command = [str(env_dir / "bin" / container["command"][0]), *container["command"][1:]]
    port = free_port()
    args = ["--http-port", str(port), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    args += ["--parameters", json.dumps(predictor["graph"]["parameters"]), "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [*command, *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its REST, gRPC and metrics servers are child processes
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"seldon-core-microservice exited {proc.returncode}:\n{proc.stdout.read()[-3000:]}"
                )  # type: ignore[union-attr]
            try:
                if requests.get(f"{url}/health/ping", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "seldon-core-microservice did not answer"
            time.sleep(0.5)
        yield url
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """Stop the microservice and every process it started."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            continue
        # children may outlive the leader: wait until the group is gone
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def test_the_environment_keeps_numpy_below_2() -> None:
    env_dir = isolated_env("seldon", SELDON_REQUIREMENTS)
    out = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import numpy, seldon_core; print(numpy.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(out.stdout.strip().split(".")[0]) < 2


def test_transform_output_answers_geojson_with_lineage(seldon: str) -> None:
    body: dict[str, Any] = {
        "data": {"ndarray": _mask().tolist()},
        "meta": {"tags": {"crs": "EPSG:32616", "transform": TRANSFORM}},
    }
    response = requests.post(f"{seldon}/transform-output", json=body, timeout=60)
    assert response.status_code == 200, response.text
    answer = response.json()
    collection = answer["jsonData"]
    assert collection["type"] == "FeatureCollection"
    assert len(collection["features"]) == 2
    for feature in collection["features"]:
        props = feature["properties"]
        assert (props["model"], props["model_version"], props["mlflow_run_id"]) == (
            "cloud-mask",
            "3",
            "f" * 32,
        )
        assert props["class"] == 1 and props["class_name"] == "cloud"
        lon, lat = feature["geometry"]["coordinates"][0][0]
        assert -88 < lon < -87 and 30 < lat < 31
    assert sorted(f["properties"]["area"] for f in collection["features"]) == [30 * 900.0, 74 * 900.0]
    # what the class answers in this environment, to the last digit JSON keeps
    here = GeoJSONTransformer(
        model_name="cloud-mask", model_version="3", run_id="f" * 32, classes='{"0": "clear", "1": "cloud"}'
    ).to_geojson(_mask(), Georeference(crs="EPSG:32616", transform=tuple(TRANSFORM)))  # type: ignore[arg-type]
    assert collection == json.loads(json.dumps(here))
    assert answer["meta"]["tags"]["mlflow_run_id"] == "f" * 32


def test_a_request_without_georeference_is_an_error_and_the_service_goes_on(seldon: str) -> None:
    response = requests.post(
        f"{seldon}/transform-output", json={"data": {"ndarray": _mask().tolist()}}, timeout=60
    )
    assert response.status_code == 400, response.text
    assert "tags.crs: missing" in response.text
    body = {
        "data": {"ndarray": _mask().tolist()},
        "meta": {"tags": {"crs": "EPSG:32616", "transform": TRANSFORM}},
    }
    assert requests.post(f"{seldon}/transform-output", json=body, timeout=60).status_code == 200
