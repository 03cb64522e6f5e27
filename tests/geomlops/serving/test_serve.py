"""`geomlops serve`: the demo's model and the transformer on a real MLServer, over HTTP, with a real
chip cut from the demo scene; bad chips get a 4xx naming what was wrong and the server keeps serving."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import rasterio
import requests
from rasterio.io import MemoryFile
from rasterio.windows import Window

from geomlops.ports import free_port

pytestmark = pytest.mark.slow

GEOMLOPS = str(Path(__file__).resolve().parents[3] / ".venv" / "bin" / "geomlops")
#: small enough that a 128 px chip of the 10-band scene is refused, large enough for a 48 px one
LIMIT = 200_000


def _imagery(work: dict[str, Any]) -> Path:
    assert work["first"].returncode == 0, work["first"].stdout + work["first"].stderr
    [image] = (work["home"] / "datasets").glob("*/image.tif")
    return image


def _chip(image: Path, size: int, *, bands: list[int] | None = None, georeferenced: bool = True) -> bytes:
    """A GeoTIFF chip cut from the scene, in memory."""
    with rasterio.open(image) as src:
        window = Window(260, 200, size, size)
        data = src.read(bands, window=window)
        profile = {
            "driver": "GTiff",
            "width": size,
            "height": size,
            "count": data.shape[0],
            "dtype": data.dtype.name,
            "nodata": src.nodata,
        }
        if georeferenced:
            profile |= {"crs": src.crs, "transform": src.window_transform(window)}
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data)
        return bytes(mem.read())


def _request(data: bytes | str, name: str = "chip", datatype: str = "BYTES") -> dict[str, Any]:
    value = base64.b64encode(data).decode() if isinstance(data, bytes) else data
    return {"inputs": [{"name": name, "shape": [1], "datatype": datatype, "data": [value]}]}


@contextmanager
def _running(command: list[str], env: dict[str, str], ready: str, log: Path, cwd: Path) -> Iterator[Any]:
    """Run a server until the block ends; wait until ``ready`` answers 200."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 600  # the first run builds the MLServer environment
        while True:
            assert proc.poll() is None, f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                if requests.get(ready, timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"server not ready:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        yield proc
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the server and anything it started
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=60)
                break
            except subprocess.TimeoutExpired:
                continue


@pytest.fixture(scope="module")
def server(work: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``geomlops serve cloud-mask@1`` on a free port, until the module's tests are done."""
    _imagery(work)
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = {**work["env"], "GEOMLOPS_SERVING_MAX_IMAGE_BYTES": str(LIMIT)}
    url = f"http://127.0.0.1:{port}/v2/models/cloud-mask"
    command = [GEOMLOPS, "serve", "cloud-mask@1", "--port", str(port)]
    with _running(command, env, f"{url}/ready", log, work["home"]) as proc:
        yield {"url": f"{url}/infer", "proc": proc, "log": log}


def _features(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert output["name"] == "geojson" and output["datatype"] == "BYTES"
    collection: dict[str, Any] = json.loads(output["data"][0])
    return collection


def test_a_chip_from_the_demo_scene_comes_back_as_polygons(
    server: dict[str, Any], work: dict[str, Any]
) -> None:
    from mlflow import MlflowClient

    chip = _chip(_imagery(work), 48)
    assert len(chip) < LIMIT
    collection = _features(requests.post(server["url"], json=_request(chip), timeout=120))
    assert collection["type"] == "FeatureCollection"
    assert collection["features"], "the chip holds clouds: expected polygons"
    run_id = (
        MlflowClient(tracking_uri=f"sqlite:///{work['home'] / 'mlflow.db'}")
        .get_model_version("cloud-mask", "1")
        .run_id
    )
    for feature in collection["features"]:
        props = feature["properties"]
        assert props["model"] == "cloud-mask" and props["model_version"] == "1"
        assert props["mlflow_run_id"] == run_id
        assert props["class"] == 1 and props["class_name"] == "cloud"
        assert props["area"] > 0 and props["area"] % 900 == 0  # whole 30 m pixels
        assert feature["geometry"]["type"] == "Polygon"
        lon, lat = feature["geometry"]["coordinates"][0][0]
        assert -88 < lon < -87 and 30 < lat < 31  # RFC 7946: WGS84, longitude first


def test_bad_chips_get_a_4xx_naming_the_problem_and_the_server_keeps_serving(
    server: dict[str, Any], work: dict[str, Any]
) -> None:
    image = _imagery(work)
    bad = [
        (_request(_chip(image, 48, georeferenced=False)), 400, "no georeference"),
        (_request(_chip(image, 48, bands=[1, 2, 3])), 400, "3 band(s), but the model's input"),
        (_request(_chip(image, 128)), 413, f"larger than the limit of {LIMIT} bytes"),
        (_request(b"II*\x00 this is not a GeoTIFF" * 10), 400, "not a readable GeoTIFF"),
        (_request(_chip(image, 48)[:3000]), 400, "chip:"),  # truncated file
        (_request("%%%not base64%%%"), 400, "not base64"),
        (_request(_chip(image, 48), name="image"), 400, "no input named 'chip'"),
        (_request(_chip(image, 48), datatype="FP32"), 400, "datatype FP32; expected BYTES"),
    ]
    for body, status, message in bad:
        response = requests.post(server["url"], json=body, timeout=120)
        assert response.status_code == status, response.text
        assert message in response.json()["error"], response.text
    assert server["proc"].poll() is None
    good = _features(requests.post(server["url"], json=_request(_chip(image, 48)), timeout=120))
    assert good["features"]


def test_unknown_version_is_refused_before_starting(work: dict[str, Any]) -> None:
    """Named as batch inference names it: with the versions and aliases there are."""
    assert work["first"].returncode == 0, work["first"].stdout + work["first"].stderr
    result = work["cli"]("serve", "cloud-mask@99", "--port", str(free_port()))
    assert result.returncode == 2
    [line] = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("! ")]
    assert "model 'cloud-mask' has no version '99' in MLflow (versions: 1" in line, result.stderr
    assert "; aliases: " in line and "Model Version" not in line, result.stderr
    result = work["cli"]("serve", "cloud-mask@prodution", "--port", str(free_port()))
    assert result.returncode == 2
    assert "model 'cloud-mask' has no alias 'prodution' in MLflow (versions: 1" in result.stderr
    result = work["cli"]("serve", "cloud-maks@1", "--port", str(free_port()))
    assert result.returncode == 2 and "no registered model 'cloud-maks' in MLflow" in result.stderr


def test_a_port_in_use_is_refused_before_the_model_loads() -> None:
    """Before the model is looked up (here: none by that name), so not minutes later."""
    from click.testing import CliRunner

    from geomlops.cli.serve import serve_command

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for given in (["--port", str(port)], ["--port", str(free_port()), "--grpc-port", str(port)]):
            option = given[-2]
            result = CliRunner().invoke(serve_command, ["no-such-model", *given])
            assert result.exit_code == 2, result.output
            assert result.output.strip() == (
                f"error: {option} {port}: cannot listen on 127.0.0.1:{port} "
                "(in use: something else listens there; give a free one)"
            )
    result = CliRunner().invoke(serve_command, ["m", "--port", "8181", "--grpc-port", "8181"])
    assert result.exit_code == 2 and "--grpc-port 8181: the same port as --port" in result.output


def _environment_hash(work: dict[str, Any]) -> str:
    """The environment the demo's model was trained in (its run's tag)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work['home'] / 'mlflow.db'}")
    run_id = client.get_model_version("cloud-mask", "1").run_id
    return str(client.get_run(run_id).data.tags["geomlops.environment"])


def test_kserve_transformer_in_front_of_the_predictor_answers_the_same(
    server: dict[str, Any], work: dict[str, Any], tmp_path: Path
) -> None:
    """The InferenceService's two containers as KServe starts them: the predictor container's
    command and arguments run by the model environment's Python (its files where the storage
    initializer would put them), the transformer container's command with the arguments KServe
    appends, in geomlops' MLServer environment."""
    from geomlops.serving.deploy import resolve_served_model
    from geomlops.serving.isolated_env import own_packages_path
    from geomlops.serving.local import mlserver_env
    from geomlops.serving.manifests import MODEL_DIR, PREDICTOR_DIR, kserve
    from geomlops.settings import Settings
    from steps.package_env import cached_interpreter

    settings = Settings(home=work["home"])
    model = resolve_served_model("cloud-mask", "1", settings)
    [_, config_map, service] = kserve(model, namespace="ns", secret="s", image="unused")
    name = service["metadata"]["name"]
    [predictor] = service["spec"]["predictor"]["containers"]
    [transformer] = service["spec"]["transformer"]["containers"]
    # the ConfigMap's script as mounted, the model's files as downloaded
    mounted = tmp_path / "opt"
    mounted.mkdir()
    for file, text in config_map["data"].items():
        (mounted / file).write_text(text)
    # where geomlops serve put them (other tests serve other models from this work folder)
    [served] = [
        d
        for d in (work["home"] / "serving" / "models").iterdir()
        if model.run_id in (d / "MLmodel").read_text()
    ]
    python = cached_interpreter(_environment_hash(work))
    assert python is not None
    p_port, t_port = free_port(), free_port()
    args = [a.replace(MODEL_DIR, str(served)) for a in predictor["args"]]
    args[args.index("--port") + 1] = str(p_port)
    command = [str(python), predictor["command"][1].replace(PREDICTOR_DIR, str(mounted)), *args]
    env = {**work["env"], "GEOMLOPS_SERVING_MAX_IMAGE_BYTES": str(LIMIT)}
    env |= {e["name"]: e["value"] for e in transformer["env"]}
    python_name, *rest = transformer["command"]
    kserve_args = [
        "--model_name",
        name,
        "--predictor_host",
        f"127.0.0.1:{p_port}",
        "--http_port",
        str(t_port),
    ]
    front = [str(mlserver_env() / "bin" / python_name), *rest, *kserve_args, "--grpc_port", str(free_port())]
    p_url, t_url = (f"http://127.0.0.1:{p}/v2/models/{name}" for p in (p_port, t_port))
    with (
        _running(command, work["env"], f"{p_url}/ready", tmp_path / "predictor.log", tmp_path),
        _running(
            front,
            env | {"PYTHONPATH": str(own_packages_path())},
            f"{t_url}/ready",
            tmp_path / "transformer.log",
            tmp_path,
        ),
    ):
        chip = _request(_chip(_imagery(work), 48))
        through_kserve = _features(requests.post(f"{t_url}/infer", json=chip, timeout=120))
        local = _features(requests.post(server["url"], json=chip, timeout=120))
        assert through_kserve["features"] and through_kserve == local
        refused = requests.post(f"{t_url}/infer", json=_request(b"not a tiff"), timeout=60)
        assert refused.status_code == 400 and "not a readable GeoTIFF" in refused.json()["error"]


NEEDS_TORCH = """
import mlflow.pyfunc


class NeedsTorch(mlflow.pyfunc.PythonModel):
    \"\"\"A model written for PyTorch: it loads its network when MLflow loads it.\"\"\"

    def load_context(self, context):
        import torch  # noqa: F401

    def predict(self, context, model_input, params=None):
        return model_input
"""


def test_a_model_that_does_not_load_in_its_environment_fails_serve_naming_the_module(
    work: dict[str, Any], home: Path, tmp_path: Path
) -> None:
    """A PyTorch model registered with the demo package's environment, which has no torch:
    ``geomlops serve`` exits non-zero with the module's name, and MLServer is never started."""
    import sys

    import mlflow
    from mlflow import MlflowClient

    from catalog_sync.store import StaticCatalog

    code = tmp_path / "code"
    code.mkdir()
    (code / "needs_torch.py").write_text(NEEDS_TORCH)
    sys.path.insert(0, str(code))
    try:
        import needs_torch

        with mlflow.start_run() as run:
            mlflow.set_tag("geomlops.environment", _environment_hash(work))
            mlflow.pyfunc.log_model(
                name="model",
                python_model=needs_torch.NeedsTorch(),
                code_paths=[str(code / "needs_torch.py")],
                registered_model_name="roof-net",
            )
    finally:
        sys.path.remove(str(code))
        sys.modules.pop("needs_torch", None)
    assert MlflowClient().get_model_version("roof-net", "1").run_id == run.info.run_id
    item = json.loads(
        (Path(__file__).resolve().parents[3] / "examples/cloud-mask/stac-item.json").read_text()
    )
    item["id"] = "roof-net"
    StaticCatalog(str(home / "catalog" / "catalog.json")).put_item("models", item)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOMLOPS_", "MLFLOW_"))}
    result = subprocess.run(
        [GEOMLOPS, "serve", "roof-net@1", "--port", str(free_port())],
        env=env | {"GEOMLOPS_HOME": str(home)},
        cwd=home,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: model roof-net v1 does not load in its own environment"), error
    assert "ModuleNotFoundError: No module named 'torch'" in error
    assert "Uvicorn running" not in result.stderr and "mlserver" not in error.lower()
