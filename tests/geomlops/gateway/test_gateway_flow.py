"""The whole flow through the gateway on the embedded defaults, over real HTTP:
train → batch inference → promotion → approval, then a refusal and a stop.

The gateway runs as ``geomlops gateway serve`` in its own process, on a work folder of its own
where the demo's dataset is versioned and its model catalogued (the demo's steps, without its
training: the gateway's training run is the only one). It is killed (SIGKILL) while the training
runs and started again: the run, detached from it, is still tracked and finishes. The approver
is the caller of the approving key, and that name reaches the MLflow tags and the STAC item as
the CLI's approval does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import MODEL, free_port

pytestmark = pytest.mark.slow
GEOMLOPS = str(Path(sys.executable).parent / "geomlops")
WORSE = '{"max_iter": 2, "max_samples": 300, "learning_rate": 0.05}'
APPROVER = "ada@example.org"


class Gateway:
    """``geomlops gateway serve`` in a process of its own, on a fixed port (kept over restarts)."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env, self.port = home, env, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.home / "gateway-serve.log").open("ab")
        self.proc = subprocess.Popen(
            [GEOMLOPS, "gateway", "serve", "--port", str(self.port)],
            env=self.env,
            cwd=self.home,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        raise AssertionError((self.home / "gateway-serve.log").read_text())

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def key(self, name: str, role: str) -> str:
        out = subprocess.run(
            [GEOMLOPS, "gateway", "keys", "create", name, "--role", role],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory, schema_dir: Path) -> Iterator[dict[str, Any]]:
    from geomlops.cli.demo import DATASET, default_package, ensure_data_repo, prepare_dataset
    from geomlops.settings import Settings
    from steps.catalog import publish_base_item

    home = tmp_path_factory.mktemp("gateway-flow")
    settings = Settings(home=home, schema_dir=schema_dir)
    repo = Path(settings.data_repo_url)
    ensure_data_repo(repo, settings.dvc_remote_url)
    prepare_dataset(repo, default_package(), settings)
    publish_base_item(default_package(), settings.catalog_href, schema_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOMLOPS_", "MLFLOW_"))}
    env |= {"GEOMLOPS_HOME": str(home), "GEOMLOPS_SCHEMA_DIR": str(schema_dir)}
    gateway = Gateway(home, env)
    keys = {
        "operator": gateway.key("ops-bot", "operator"),
        "approver": gateway.key(APPROVER, "approver"),
        "viewer": gateway.key("field-analyst", "viewer"),
        "admin": gateway.key("admin@example.org", "admin"),
    }
    gateway.start()
    yield {"home": home, "gateway": gateway, "keys": keys, "dataset": DATASET}
    if gateway.proc is not None and gateway.proc.poll() is None:
        gateway.kill()


def _client(flow: dict[str, Any], role: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {flow['keys'][role]}"}
    return httpx.Client(base_url=flow["gateway"].url, headers=headers, timeout=120)


def _until(
    flow: dict[str, Any], run_id: str, done: Callable[[dict[str, Any]], bool], limit: float = 900
) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    with _client(flow, "operator") as client:
        while True:
            run: dict[str, Any] = client.get(f"/api/v1/runs/{run_id}").json()
            if done(run) or time.monotonic() > deadline:
                return run
            time.sleep(1)


def _finished(run: dict[str, Any]) -> bool:
    return run["phase"] in ("Succeeded", "Failed", "Error", "Interrupted", "Suspended")


def _mlflow(flow: dict[str, Any]) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{flow['home'] / 'mlflow.db'}")


def test_training_survives_a_gateway_killed_mid_run(flow: dict[str, Any]) -> None:
    body = {"model": MODEL, "dataset_path": flow["dataset"], "parameters": {"train_params": WORSE}}
    with _client(flow, "operator") as operator:
        started = operator.post("/api/v1/runs/training", json=body)
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    assert started.json()["submitted_by"] == "ops-bot"
    running = _until(flow, run_id, lambda r: any(t["name"] == "train" for t in r["tasks"]) or _finished(r))
    assert running["phase"] == "Running", running

    flow["gateway"].kill()
    state = flow["home"] / "runs" / run_id / "state.json"
    before = state.stat().st_mtime
    time.sleep(2)
    flow["gateway"].start()  # a new gateway process, same database and work folder

    with _client(flow, "operator") as operator:
        listed = operator.get("/api/v1/runs").json()
        assert run_id in [r["run_id"] for r in listed]
        again = operator.get(f"/api/v1/runs/{run_id}").json()
    assert again["phase"] in ("Running", "Succeeded"), again
    assert again["submitted_by"] == "ops-bot" and again["parameters"]["train_params"] == WORSE
    done = _until(flow, run_id, _finished)
    assert done["phase"] == "Succeeded", done["message"]
    assert state.stat().st_mtime > before  # the runner went on writing while no gateway ran
    finished, pods = done["progress"].split("/")
    assert finished == pods and int(pods) >= 4  # every pod of the run, retries' included
    assert {t["name"] for t in done["tasks"]} >= {"fetch-model", "resolve-dataset", "train", "register"}
    for task in done["tasks"]:
        finished, pods = task["progress"].split("/")
        assert task["phase"] in ("Succeeded", "Skipped") and finished == pods != "0", task
    with _client(flow, "operator") as operator:
        log = operator.get(f"/api/v1/runs/{run_id}/logs", params={"task": "train"})
        assert log.status_code == 200 and "attempt 1" in log.text
        whole = operator.get(f"/api/v1/runs/{run_id}/logs").text
        assert "Succeeded" in whole
        last = operator.get(f"/api/v1/runs/{run_id}/logs", params={"tail": 3}).text
        assert last.splitlines() == whole.splitlines()[-3:]
        assert operator.get(f"/api/v1/runs/{run_id}/logs", params={"tail": 0}).status_code == 422
        model = operator.get(f"/api/v1/models/{MODEL}").json()
    assert model["versions"] == ["1"] and model["aliases"] == {}
    assert model["version_details"][0]["metrics"] and model["version_details"][0]["run_id"]
    flow["version"] = "1"
    # a decision on a run that waits at no gate (one with a container template) says so
    with _client(flow, "approver") as approver:
        finished = approver.post(f"/api/v1/runs/{run_id}/approve", json={"reason": "looks fine"})
    assert finished.status_code == 409, finished.text
    assert "has no gate waiting for a decision (phase Succeeded)" in finished.json()["detail"]


def test_batch_inference_of_the_new_version_publishes_predictions(flow: dict[str, Any]) -> None:
    imagery = flow["home"] / "data" / flow["dataset"] / "image.tif"
    body = {
        "model": MODEL,
        "version": flow["version"],
        "imagery": str(imagery),
        "aoi": {
            "type": "Polygon",
            "coordinates": [
                [[-87.45, 30.70], [-87.40, 30.70], [-87.40, 30.75], [-87.45, 30.75], [-87.45, 30.70]]
            ],
        },
        "parameters": {"area": "gateway", "block_size": "160", "group_size": "4"},
    }
    with _client(flow, "operator") as operator:
        plan = operator.post("/api/v1/runs/batch-inference/plan", json=body)
        assert plan.status_code == 200, plan.text
        started = operator.post("/api/v1/runs/batch-inference", json=body)
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        assert operator.get(f"/api/v1/runs/{run_id}/predictions").status_code in (404, 200)
    seen = _until(flow, run_id, lambda r: (r["blocks"] or {}).get("total", 0) > 0 or _finished(r))
    assert seen["blocks"]["total"] == plan.json()["blocks"] > 0, seen  # what the plan said
    assert seen["blocks"]["unit"] == "blocks" and seen["blocks"]["started"] == seen["started"]
    assert seen["aoi_bbox"] == pytest.approx([-87.45, 30.70, -87.40, 30.75])  # what the run page shows
    done = _until(flow, run_id, _finished)
    assert done["phase"] == "Succeeded", done["message"]
    assert done["blocks"]["done"] == done["blocks"]["total"] and done["blocks"]["eta_s"] == 0
    assert done["blocks"]["elapsed_s"] > 0
    with _client(flow, "viewer") as viewer:
        found = viewer.get(f"/api/v1/runs/{run_id}/predictions").json()
        parquet = viewer.get(f"/api/v1/runs/{run_id}/predictions", params={"format": "geoparquet"})
        geojson_file = viewer.get(f"/api/v1/runs/{run_id}/predictions", params={"format": "geojson"})
        bad_format = viewer.get(f"/api/v1/runs/{run_id}/predictions", params={"format": "shp"})
        lineage = viewer.get(f"/api/v1/runs/{run_id}/lineage").json()
        tiles = viewer.get(f"/api/v1/runs/{run_id}/predictions.pmtiles")
        header = viewer.get(f"/api/v1/runs/{run_id}/predictions.pmtiles", headers={"Range": "bytes=0-126"})
        model_item = viewer.get(lineage["model_item_url"])
        predictions_item = viewer.get(lineage["predictions_item_url"])
    assert found["item"]["id"] == f"{MODEL}-v1-gateway"
    assert predictions_item.status_code == 200 and predictions_item.json() == found["item"]
    assert {"geoparquet", "geojson", "quicklook"} <= set(found["assets"]) and found["features"] is not None
    geojson = json.loads(Path(found["assets"]["geojson"].removeprefix("file://")).read_text())
    assert geojson["type"] == "FeatureCollection"
    route = f"/api/v1/runs/{run_id}"
    assert found["links"]["geoparquet"] == f"{route}/predictions?format=geoparquet"
    assert found["links"]["lineage"] == f"{route}/lineage"
    assert ("pmtiles" in found["links"]) == bool(found["features"])
    assert parquet.status_code == 200 and parquet.content[:4] == b"PAR1"
    assert parquet.content == Path(found["assets"]["geoparquet"].removeprefix("file://")).read_bytes()
    assert geojson_file.status_code == 200 and geojson_file.json() == geojson
    assert bad_format.status_code == 422 and bad_format.json()["detail"][0]["loc"] == ["query", "format"]
    run = _mlflow(flow).get_model_version(MODEL, "1").run_id
    assert (lineage["model"], lineage["model_version"], lineage["mlflow_run_id"]) == (MODEL, "1", run)
    assert lineage["dataset_hash"] and lineage["code_sha256"]
    assert (
        lineage["predictions_item_url"] == f"/api/v1/stac/collections/predictions/items/{found['item']['id']}"
    )
    assert found["item"]["id"] in found["item_href"]
    assert model_item.status_code == 200 and model_item.json()["id"] == f"{MODEL}-v1"
    if found["features"]:
        _check_tiles(tiles, header, found["features"])
    else:  # the flow's poor model found no cloud there: no archive (GDAL writes none without a feature)
        assert tiles.status_code == 404 and "no PMTiles archive" in tiles.json()["detail"]
    flow["batch"] = {"body": body, "geojson": geojson, "run_id": run_id}


def _check_tiles(tiles: httpx.Response, header: httpx.Response, features: int) -> None:
    """The archive whole and by a range; every feature at its most detailed zoom, with its id."""
    import tempfile

    import pyogrio

    assert tiles.status_code == 200 and tiles.headers["accept-ranges"] == "bytes"
    assert tiles.headers["content-type"] == "application/vnd.pmtiles"
    assert header.status_code == 206 and header.content == tiles.content[:127]
    assert header.headers["content-range"] == f"bytes 0-126/{len(tiles.content)}"
    assert header.content[:8] == b"PMTiles\x03"
    with tempfile.NamedTemporaryFile(suffix=".pmtiles") as file:
        file.write(tiles.content)
        file.flush()
        read = pyogrio.read_dataframe(file.name)
    assert set(read["feature_id"]) == set(range(features))
    assert set(read["class_name"]) <= {"cloud"} and read["block_id"].str.fullmatch(r"r\d+c\d+").all()


def _areas(collection: dict[str, Any]) -> dict[int, float]:
    areas: dict[int, float] = {}
    for feature in collection["features"]:
        props = feature["properties"]
        areas[props["class"]] = areas.get(props["class"], 0.0) + props["area"]
    return areas


def test_on_demand_inference_in_process_matches_the_batch_run(flow: dict[str, Any]) -> None:
    """No serving endpoint runs: the gateway predicts with the model's own environment (the one
    it was trained in) in a worker process, over the batch run's AOI, and finds the same areas
    per class (the model's features are per pixel, so blocks and halos change nothing). The
    flow's deliberately poor model may find no cloud there: then both collections are empty
    (class 0, clear, is background and never a feature), and the comparison still holds."""
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.windows import Window

    batch = flow["batch"]["body"]
    body = {k: batch[k] for k in ("model", "version", "imagery", "aoi")}
    with _client(flow, "operator") as operator:
        answer = operator.post("/api/v1/inference", json=body)
        assert answer.status_code == 200, answer.text
        found = answer.json()
        assert (found["via"], found["model"], found["version"]) == ("in-process", MODEL, flow["version"])
        run_id = found["run_id"]
        assert found["type"] == "FeatureCollection" and 150 * 150 < found["pixels"] < 200 * 200
        for feature in found["features"]:
            props = feature["properties"]
            assert (props["model"], props["model_version"], props["mlflow_run_id"]) == (MODEL, "1", run_id)
            assert props["class_name"] in ("clear", "cloud")
        expected = _areas(flow["batch"]["geojson"])
        got = _areas(found)
        assert got.keys() == expected.keys()
        for value, area in expected.items():
            assert got[value] == pytest.approx(area, rel=0.005), (value, got, expected)

        with rasterio.open(batch["imagery"]) as src, MemoryFile() as memfile:
            window = Window(40, 40, 64, 48)
            profile = src.profile | {
                "width": 64,
                "height": 48,
                "transform": src.window_transform(window),
                "compress": "deflate",
            }
            profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
            with memfile.open(**profile) as dst:
                dst.write(src.read(window=window))
            chip = bytes(memfile.read())
        uploaded = operator.post(
            "/api/v1/inference/chip",
            params={"model": MODEL, "version": flow["version"]},
            content=chip,
            headers={"Content-Type": "image/tiff"},
        )
        assert uploaded.status_code == 200, uploaded.text
        assert uploaded.json()["via"] == "in-process" and uploaded.json()["pixels"] == 64 * 48
        assert uploaded.json()["type"] == "FeatureCollection" and uploaded.json()["run_id"] == run_id


def test_promotion_waits_for_the_approver_whose_name_reaches_mlflow_and_the_catalogue(
    flow: dict[str, Any],
) -> None:
    with _client(flow, "operator") as operator:
        refused_id = operator.post("/api/v1/runs/promotion", json={"model": MODEL, "candidate": "1"}).json()[
            "run_id"
        ]
    assert _until(flow, refused_id, _finished)["phase"] == "Suspended"
    with _client(flow, "approver") as approver:
        answer = approver.post(f"/api/v1/runs/{refused_id}/refuse", json={"reason": "not yet"})
        assert answer.status_code == 200, answer.text
    done = _until(flow, refused_id, lambda r: r["phase"] != "Suspended" and _finished(r))
    assert done["phase"] == "Failed" and done["message"].startswith(f"refused by {APPROVER}: not yet")
    # the gate passed the refusal on: the promotion recorded it in the model's audit trail
    assert f"refused by {APPROVER}: not yet. Nothing moved; the refusal is recorded" in done["message"]
    registered = _mlflow(flow).get_registered_model(MODEL)
    assert registered.aliases == {}  # nothing promoted
    audit = [json.loads(v) for k, v in registered.tags.items() if k.startswith("geomlops.audit.")]
    assert [(a["action"], a["approver"], a["reason"]) for a in audit] == [("refused", APPROVER, "not yet")]
    gate = next(t for t in done["tasks"] if t["name"] == "approval")
    assert gate["approval"]["decision"] == "refused" and gate["approval"]["approver"] == APPROVER

    with _client(flow, "operator") as operator:
        started = operator.post("/api/v1/runs/promotion", json={"model": MODEL, "candidate": flow["version"]})
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    waiting = _until(flow, run_id, _finished)
    assert waiting["phase"] == "Suspended" and waiting["waiting_gate"] == "approval", waiting
    with _client(flow, "operator") as operator:
        refused = operator.post(f"/api/v1/runs/{run_id}/approve", json={"reason": "I am not an approver"})
        assert refused.status_code == 403
    with _client(flow, "approver") as approver:
        bogus = approver.post(
            f"/api/v1/runs/{run_id}/approve", json={"reason": "x", "outputs": {"bogus": "1"}}
        )
        assert bogus.status_code == 422 and "outputs: -o bogus" in bogus.json()["detail"]
        assert _until(flow, run_id, _finished)["phase"] == "Suspended"  # nothing resumed
        approved = approver.post(f"/api/v1/runs/{run_id}/approve", json={"reason": "checked the report"})
        assert approved.status_code == 200, approved.text
        twice = approver.post(f"/api/v1/runs/{run_id}/approve", json={"reason": "again"})
        assert twice.status_code == 409
    done = _until(flow, run_id, lambda r: r["phase"] != "Suspended" and _finished(r))
    assert done["phase"] == "Succeeded", done["message"]
    gate = next(t for t in done["tasks"] if t["name"] == "approval")
    assert gate["approval"]["approver"] == APPROVER and gate["approval"]["reason"] == "checked the report"
    assert gate["approval"]["decision"] == "approved"

    with _client(flow, "viewer") as viewer:
        report = viewer.get(f"/api/v1/runs/{run_id}/report")
        picture = viewer.get(f"/api/v1/runs/{run_id}/report.png")
        not_promotion = viewer.get(f"/api/v1/runs/{flow['batch']['run_id']}/report")
    assert report.status_code == 200, report.text
    shown = report.json()
    assert (shown["model"], shown["candidate"], shown["production"]) == (MODEL, "1", None)
    assert shown["verdict"] == "passed" and shown["summary"] and shown["primary_metric"]
    assert shown["class_names"] == ["clear", "cloud"]
    rows = {row["name"]: row for row in shown["metrics"]}
    assert shown["primary_metric"] in rows and all(r["production"] is None for r in rows.values())
    assert [c["name"] for c in shown["per_class"]] == ["clear", "cloud"]
    cloud = {row["name"]: row for row in shown["per_class"][1]["metrics"]}
    assert {"test_iou", "test_f1"} <= set(cloud)
    assert cloud["test_iou"]["candidate"] == rows["test_iou_cloud"]["candidate"]
    assert picture.status_code == 200 and picture.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert not_promotion.status_code == 404 and "no promotion report" in not_promotion.json()["detail"]
    with _client(flow, "admin") as admin:
        nothing_before = admin.post(f"/api/v1/models/{MODEL}/rollback", json={"reason": "undo"})
    assert nothing_before.status_code == 422 and "no previous version" in nothing_before.json()["detail"]

    client = _mlflow(flow)
    assert str(client.get_model_version_by_alias(MODEL, "production").version) == flow["version"]
    decision = json.loads(client.get_model_version(MODEL, flow["version"]).tags["geomlops.promotion"])
    assert decision["approver"] == APPROVER and decision["reason"] == "checked the report"
    item_path = flow["home"] / "catalog" / "model-versions" / f"{MODEL}-v1" / f"{MODEL}-v1.json"
    item = json.loads(item_path.read_text())
    assert item["properties"]["geomlops:promotion"] == decision
    assert item["properties"]["mlflow:aliases"] == ["production"]


def test_a_stopped_run_stops(flow: dict[str, Any]) -> None:
    imagery = flow["home"] / "data" / flow["dataset"] / "image.tif"
    body = {"model": MODEL, "alias": "production", "imagery": str(imagery), "parameters": {"area": "stopped"}}
    with _client(flow, "operator") as operator:
        started = operator.post("/api/v1/runs/batch-inference", json=body)
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        stopped = operator.post(f"/api/v1/runs/{run_id}/stop")
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["phase"] in ("Failed", "Interrupted"), stopped.json()
        again = operator.post(f"/api/v1/runs/{run_id}/stop")
        assert again.status_code == 409 and "not running" in again.json()["detail"]
