"""The transformer under the real seldon-core Python wrapper: ``seldon-core-microservice`` runs the
command and graph parameters of the rendered SeldonDeployment, in an isolated environment
(seldon-core 1.18.2 pins numpy < 2, so it never joins the library's dependencies), and answers
``/transform-output`` with the same GeoJSON as the class itself; for a model whose MLM item
declares scaling and one score (the building example), ``/transform-input`` prepares the chip
and ``/transform-output`` thresholds the answer as the item says."""

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

from geomlops.ports import free_port
from geomlops.serving.isolated_env import isolated_env
from geomlops.serving.manifests import ServedModel, seldon_v1
from geomlops.serving.transformer import GeoJSONTransformer, Georeference

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
#: what the transformer's Seldon image holds (Python 3.11; setuptools < 81 keeps pkg_resources)
SELDON_REQUIREMENTS = (
    "seldon-core==1.18.2", "setuptools<81", "shapely", "contourpy", "affine", "pyproj", "pydantic>=2"
)  # fmt: skip
BUILDING_ITEM = REPO / "examples" / "building-footprints" / "stac-item.json"
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


@contextlib.contextmanager
def _microservice(model: ServedModel) -> Iterator[str]:
    """``seldon-core-microservice`` running the SeldonDeployment's transformer container."""
    env_dir = isolated_env("seldon", SELDON_REQUIREMENTS)
    [_, deployment] = seldon_v1(model, namespace="ns", secret="s", image="unused")
    [predictor] = deployment["spec"]["predictors"]
    containers = predictor["componentSpecs"][0]["spec"]["containers"]
    container = containers[0]  # preprocess; postprocess runs the same command with the same parameters
    assert [c["command"] for c in containers[:2]] == [container["command"]] * 2
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


@pytest.fixture(scope="module")
def seldon() -> Iterator[str]:
    with _microservice(MODEL) as url:
        yield url


def _building_model() -> ServedModel:
    """The building example as its MLM item declares it: RGB scaled 0..255 -> 0..1, one float
    score thresholded at 0.5 into background (0) and building (1)."""
    from catalog_sync.mlm import parse_model_item

    spec = parse_model_item(json.loads(BUILDING_ITEM.read_text()))
    output = spec.outputs[0]
    return ServedModel(
        name="building-footprints",
        version="2",
        run_id="b" * 32,
        model_uri="s3://mlflow-artifacts/2/models/m-2/artifacts",
        tasks=output.tasks,
        post_processing_function=output.post_processing_function,
        classes={c.value: c.name for c in output.classes},
        model_input=spec.inputs[0].model_dump(mode="json"),
        model_output=output.model_dump(mode="json"),
        image="ghcr.io/example/building-footprints:2",
    )


@pytest.fixture(scope="module")
def seldon_buildings() -> Iterator[str]:
    with _microservice(_building_model()) as url:
        yield url


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


BUILDING_TRANSFORM = [0.3, 0.0, 330000.0, 0.0, -0.3, 3060000.0]  # UTM 45N, 30 cm pixels


def test_the_graph_prepares_the_chip_and_reads_one_score_as_the_item_says(seldon_buildings: str) -> None:
    chip = np.zeros((3, 64, 64), np.uint8)
    chip[:, 10:40, 12:50] = 255
    tags = {"crs": "EPSG:32645", "transform": BUILDING_TRANSFORM, "request": "r-1"}
    prepared = requests.post(
        f"{seldon_buildings}/transform-input",
        json={"data": {"ndarray": chip.tolist()}, "meta": {"tags": tags}},
        timeout=60,
    )
    assert prepared.status_code == 200, prepared.text
    message = prepared.json()
    tensor = message["data"]["tensor"]
    assert tensor["shape"] == [1, 3, 64, 64]
    values = np.asarray(tensor["values"], np.float32).reshape(tensor["shape"])
    assert np.array_equal(values, chip[None] / np.float32(255))  # min-max 0..255, as the item says
    # the request's tags pass through to the output transformer, with the chip's size
    assert message["meta"]["tags"] == tags | {"chip_height": 64, "chip_width": 64}
    # the model answers one probability a pixel; the output transformer thresholds it at 0.5
    score = np.full((1, 1, 64, 64), 0.2, np.float32)
    score[0, 0, 10:40, 12:50] = 0.9
    score[0, 0, 50:52, 50:52] = 0.5  # at the threshold: not a building
    answer = requests.post(
        f"{seldon_buildings}/transform-output",
        json={"data": {"tensor": {"shape": list(score.shape), "values": score.ravel().tolist()}},
              "meta": message["meta"]},
        timeout=60,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    features = answer.json()["jsonData"]["features"]
    assert len(features) == 1
    props = features[0]["properties"]
    assert props["class"] == 1 and props["class_name"] == "building"
    assert props["model"] == "building-footprints" and props["mlflow_run_id"] == "b" * 32
    assert props["area"] == pytest.approx(30 * 38 * 0.09, rel=0.01)  # 30 x 38 px of 0.09 m², squared


def test_a_chip_with_the_wrong_bands_or_an_answer_the_item_does_not_declare_is_refused(
    seldon_buildings: str,
) -> None:
    tags = {"crs": "EPSG:32645", "transform": BUILDING_TRANSFORM}
    wrong = requests.post(
        f"{seldon_buildings}/transform-input",
        json={"data": {"ndarray": np.zeros((4, 8, 8)).tolist()}, "meta": {"tags": tags}},
        timeout=60,
    )
    assert wrong.status_code == 400, wrong.text
    assert "4 bands; the model takes 3 (red, green, blue)" in wrong.text
    odd = requests.post(
        f"{seldon_buildings}/transform-output",
        json={"data": {"ndarray": np.zeros((1, 8, 8)).tolist()},
              "meta": {"tags": tags | {"chip_height": 16, "chip_width": 16}}},
        timeout=60,
    )  # fmt: skip
    assert odd.status_code == 400, odd.text
    assert "8 x 8 px for an input of 16 x 16 px" in odd.text
