"""What the web app reads from the gateway, over real HTTP: its page and settings, the caller,
model cards and search, imagery and its map tiles, a batch plan, run progress, and rollback.

The runs themselves (progress while predicting, PMTiles, downloads, lineage, reports) are
checked on real runs in ``test_gateway_flow.py``; the override rule on Argo's gate in
``test_argo_backend.py``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from fastapi import FastAPI
from PIL import Image
from pyproj import Transformer

from geomlops.gateway.app import create_app
from geomlops.gateway.auth import create_key
from geomlops.gateway.backends.base import Phase, RunInfo, TaskInfo
from geomlops.gateway.results import aoi_bbox, aoi_folder, block_progress
from geomlops.gateway.settings import GatewaySettings
from geomlops.gateway.webapp import WEB_DIST, mount_web_app
from geomlops.settings import Settings

from .conftest import MODEL, ROLES, Served, _clean_env, serve_in_thread

#: the example model's input bands, in order (its MLM input)
BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "B10", "B11")
#: the centre of the example model's extent (W 87.4°, N 30.7°), in its UTM zone
CENTRE = Transformer.from_crs("EPSG:4326", "EPSG:32616", always_xy=True).transform(-87.4, 30.7)
DATASET = json.dumps(
    {"repo": "data", "path": "datasets/scene", "rev": "", "commit": "c0ffee", "md5": "d41d8cd9", "url": ""}
)
AOI = {
    "type": "Polygon",
    "coordinates": [[[-87.41, 30.69], [-87.39, 30.69], [-87.39, 30.71], [-87.41, 30.71], [-87.41, 30.69]]],
}


def _scene(path: Path) -> Path:
    """A 10-band float32 scene of 200 x 160 30 m pixels around CENTRE, with a no-data corner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    data = rng.uniform(0.0, 0.3, (len(BANDS), 160, 200)).astype("float32")
    data[:, :20, :20] = np.nan
    profile = {
        "driver": "GTiff",
        "width": 200,
        "height": 160,
        "count": len(BANDS),
        "dtype": "float32",
        "crs": "EPSG:32616",
        "transform": rasterio.transform.from_origin(CENTRE[0] - 3000, CENTRE[1] + 2400, 30, 30),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for index, band in enumerate(BANDS, start=1):
            dst.set_band_description(index, band)
    return path


def _version_item(version: str, base: dict[str, Any]) -> dict[str, Any]:
    """A version's item as training writes it: the base item's MLM fields (batch inference of
    the version reads them), its own id and version."""
    properties = {**base["properties"], "datetime": "2026-12-01T00:00:00Z", "mlflow:model_version": version}
    return {**base, "id": f"{MODEL}-v{version}", "properties": properties, "links": []}


@pytest.fixture(scope="module")
def webapp(catalogued: Path, schema_dir: Path) -> Iterator[tuple[Served, Path]]:
    """The gateway on ``catalogued`` with a scene in the data repository's dataset folder and
    versions 2 (previous) and 3 (production), each with its MLflow run and catalogue item."""
    from mlflow import MlflowClient

    from catalog_sync import open_store
    from catalog_sync.collections import MODELS, VERSIONS

    with pytest.MonkeyPatch.context() as monkeypatch:
        _clean_env(monkeypatch, catalogued, schema_dir)
        settings = Settings()
        scene = _scene(Path(settings.data_repo_url) / "datasets" / "scene" / "image.tif")
        described = Path(settings.data_repo_url) / "datasets" / "described"
        _scene(described / "image.tif")
        shutil.copy(described / "image.tif", described / "labels.tif")
        (described / "dataset.json").write_text(json.dumps({"files": {"image": "image.tif"}}))
        client = MlflowClient(tracking_uri=f"sqlite:///{catalogued / 'mlflow.db'}")
        experiment = client.create_experiment("webapp-versions")
        for _ in range(2):  # versions 2 and 3, each from a run of its own
            run = client.create_run(experiment)
            made = client.create_model_version(
                MODEL, source=str(catalogued / "no-weights"), run_id=run.info.run_id
            )
            client.set_model_version_tag(MODEL, made.version, "geomlops.dataset", DATASET)
        client.set_registered_model_alias(MODEL, "previous", "2")
        client.set_registered_model_alias(MODEL, "production", "3")
        store = open_store(settings.catalog_href)
        base = store.get_item(MODELS, MODEL)
        for version in ("2", "3"):
            store.put_item(VERSIONS, _version_item(version, base))
        app = create_app(settings, GatewaySettings(basemap_url="https://tiles.example/{z}/{x}/{y}.png"))
        keys = {role: create_key(app.state.gateway.db, f"{role}-web", role).token for role in ROLES}
        url, server, thread = serve_in_thread(app)
        yield Served(url, app, keys), scene
        server.should_exit = True
        thread.join(10)
        app.state.gateway.db.dispose()


def test_the_config_is_public_and_whoami_names_each_role(webapp: tuple[Served, Path]) -> None:
    served, _scene_path = webapp
    with served.client() as anyone:
        config = anyone.get("/api/v1/config")
        assert config.status_code == 200, config.text
        assert config.json()["basemap_url"] == "https://tiles.example/{z}/{x}/{y}.png"
        assert config.json()["version"]
        assert anyone.get("/api/v1/whoami").status_code == 401
    for role in ROLES:
        with served.client(role) as client:
            me = client.get("/api/v1/whoami").json()
        assert (me["name"], me["role"]) == (f"{role}-web", role)
        assert served.keys[role].startswith(f"gmk_{me['key_id']}_")


def test_the_app_is_served_at_the_root_or_a_page_says_how_to_build_it(
    webapp: tuple[Served, Path], tmp_path: Path
) -> None:
    import httpx

    served, _scene_path = webapp
    with served.client() as anyone:
        page = anyone.get("/")
        built = (WEB_DIST / "index.html").is_file()
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.text == (WEB_DIST / "index.html").read_text() if built else "make web" in page.text
        assert anyone.get("/app/assets/no-such-file.js").status_code == 404
        assert anyone.get("/api/v1/health").status_code == 200
    app = FastAPI()
    mount_web_app(app, tmp_path / "web_dist")  # not built yet
    url, server, thread = serve_in_thread(app)
    try:
        with httpx.Client(base_url=url) as client:
            page = client.get("/")
            assert page.status_code == 200 and "make web" in page.text and "not built" in page.text
            assert client.get("/app/assets/index.js").status_code == 404
            (tmp_path / "web_dist" / "assets").mkdir(parents=True)  # built while serving
            (tmp_path / "web_dist" / "index.html").write_text(
                '<!doctype html><script src="/app/assets/index.js"></script>'
            )
            (tmp_path / "web_dist" / "assets" / "index.js").write_text("console.log('map')")
            index = client.get("/")
            assert index.status_code == 200 and "/app/assets/index.js" in index.text
            script = client.get("/app/assets/index.js")
            assert script.status_code == 200 and script.text == "console.log('map')"
            assert client.get("/app/assets/missing.js").status_code == 404
            assert client.get("/app/../../etc/hostname").status_code == 404
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_model_card_and_search_by_text_task_and_box(webapp: tuple[Served, Path]) -> None:
    served, _scene_path = webapp
    with served.client("viewer") as viewer:
        found = viewer.get(
            "/api/v1/models",
            params={"q": "cloud", "task": "semantic-segmentation", "bbox": "-88,30,-87,31"},
        )
        assert found.status_code == 200, found.text
        assert [m["id"] for m in found.json()] == [MODEL]
        for params in ({"q": "no such words"}, {"task": "object-detection"}, {"bbox": "10,10,11,11"}):
            assert viewer.get("/api/v1/models", params=params).json() == [], params
        bad = viewer.get("/api/v1/models", params={"bbox": "1,2,3"})
        assert bad.status_code == 422 and "bbox" in bad.text
        card = viewer.get(f"/api/v1/models/{MODEL}").json()
        item = viewer.get(card["item_url"])
        assert item.status_code == 200 and item.json()["id"] == MODEL
        unknown = viewer.get("/api/v1/stac/collections/things/items/x")
        assert unknown.status_code == 422 and "collection 'things'" in unknown.json()["detail"]
    assert card["description"] and card["framework"] == "scikit-learn"
    assert card["classes"] == [
        {"value": 0, "name": "clear", "description": card["classes"][0]["description"], "color": "#2E7D32"},
        {"value": 1, "name": "cloud", "description": card["classes"][1]["description"], "color": "#F5F5F5"},
    ]
    assert [b["name"] for b in card["bands"]] == list(BANDS)
    assert [b["common_name"] for b in card["bands"][1:4]] == ["blue", "green", "red"]
    assert (card["production"], card["previous"], card["versions"]) == ("3", "2", ["1", "2", "3"])
    assert card["geometry"]["type"] == "Polygon" and len(card["bbox"]) == 4
    details = {d["version"]: d for d in card["version_details"]}
    assert details["3"]["aliases"] == ["production"] and details["3"]["metrics"] == {}
    assert details["2"]["item_url"] == f"/api/v1/stac/collections/model-versions/items/{MODEL}-v2"
    assert details["1"]["item_url"] is None  # no catalogue item
    assert details["2"]["mlflow_run_url"] is None  # SQLite tracking, no UI configured


def _png(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.size == (256, 256)
    return np.asarray(image.convert("RGBA"))


def _tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    import math

    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


def test_imagery_is_listed_and_rendered_as_map_tiles(webapp: tuple[Served, Path]) -> None:
    served, scene = webapp
    x, y = _tile(-87.4, 30.7, 14)  # a tile of about 2 km, inside the 6 x 4.8 km scene
    with served.client("viewer") as viewer:
        listed = viewer.get("/api/v1/imagery").json()
        one = next(i for i in listed if i["href"] == str(scene))
        described = [i["href"] for i in listed if "/described/" in i["href"]]
        assert described == [str(scene.parent.parent / "described" / "image.tif")]  # its dataset.json says
        assert one["bands"] == list(BANDS) and one["common_names"][1:4] == ["blue", "green", "red"]
        west, south, east, north = one["bbox"]
        assert west < -87.4 < east and south < 30.7 < north
        tile = viewer.get(f"/api/v1/imagery/{one['id']}/tiles/14/{x}/{y}.png")
        assert tile.status_code == 200 and tile.headers["content-type"] == "image/png"
        pixels = _png(tile.content)
        by_path = viewer.get(f"/api/v1/imagery/tiles/14/{x}/{y}.png", params={"path": str(scene)})
        assert by_path.status_code == 200 and by_path.content == tile.content
        away = viewer.get(f"/api/v1/imagery/{one['id']}/tiles/14/{x + 40}/{y}.png")
        assert away.status_code == 200 and not _png(away.content)[..., 3].any()  # transparent
        # 300 m into the no-data corner, a tile of about 260 m: inside the scene, all no data
        to_wgs84 = Transformer.from_crs("EPSG:32616", "EPSG:4326", always_xy=True)
        nodata = _tile(*to_wgs84.transform(CENTRE[0] - 3000 + 300, CENTRE[1] + 2400 - 300), 17)
        corner = viewer.get(f"/api/v1/imagery/{one['id']}/tiles/17/{nodata[0]}/{nodata[1]}.png")
        inside = viewer.get(f"/api/v1/imagery/{one['id']}/tiles/17/{x * 8 + 3}/{y * 8 + 3}.png")
        errors = {
            "outside": viewer.get("/api/v1/imagery/tiles/1/0/0.png", params={"path": "/etc/hostname"}),
            "relative": viewer.get("/api/v1/imagery/tiles/1/0/0.png", params={"path": "scene.tif"}),
            "x": viewer.get("/api/v1/imagery/tiles/1/5/0.png", params={"path": str(scene)}),
            "unknown": viewer.get("/api/v1/imagery/no-such-id/tiles/1/0/0.png"),
            "z": viewer.get(f"/api/v1/imagery/{one['id']}/tiles/30/0/0.png"),
        }
    assert pixels[..., 3].all()  # the scene covers the tile: opaque
    assert not _png(corner.content)[..., 3].any() and _png(inside.content)[..., 3].all()
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 100  # the scene's colours, RGB
    assert not (pixels[..., 0] == pixels[..., 1]).all()  # not grey: the bands' common names say RGB
    assert errors["outside"].status_code == 422 and "GEOMLOPS_GATEWAY_IMAGERY_ROOTS" in errors["outside"].text
    assert errors["relative"].status_code == 422 and "path 'scene.tif'" in errors["relative"].text
    assert errors["x"].status_code == 422 and "x 5" in errors["x"].text
    assert errors["unknown"].status_code == 404 and "imagery_id 'no-such-id'" in errors["unknown"].text
    assert errors["z"].status_code == 422 and errors["z"].json()["detail"][0]["loc"] == ["path", "z"]


def test_a_batch_plan_counts_blocks_without_starting_a_run(webapp: tuple[Served, Path]) -> None:
    served, scene = webapp
    body = {"model": MODEL, "alias": "production", "imagery": str(scene), "aoi": AOI}
    with served.client("operator") as operator:
        runs_before = operator.get("/api/v1/runs").json()
        whole = operator.post("/api/v1/runs/batch-inference/plan", json={**body, "aoi": None})
        assert whole.status_code == 200, whole.text
        assert whole.json()["blocks"] == 1 and whole.json()["groups"] == 1  # 200 x 160 in 512-px blocks
        small = operator.post(
            "/api/v1/runs/batch-inference/plan",
            json={**body, "parameters": {"block_size": "32", "group_size": "3"}},
        )
        assert small.status_code == 200, small.text
        plan = small.json()
        bad_size = operator.post(
            "/api/v1/runs/batch-inference/plan", json={**body, "parameters": {"block_size": "0"}}
        )
        far = {**AOI, "coordinates": [[[10, 10], [11, 10], [11, 11], [10, 11], [10, 10]]]}
        outside = operator.post("/api/v1/runs/batch-inference/plan", json={**body, "aoi": far})
        missing = operator.post(
            "/api/v1/runs/batch-inference/plan", json={**body, "imagery": "/nowhere/scene.tif"}
        )
        runs_after = operator.get("/api/v1/runs").json()
    # the AOI is 0.02° square: about 1,900 m x 2,200 m, 64 x 74 pixels, within 3 x 3 to 4 x 4 blocks
    assert 9 <= plan["blocks"] <= 16 and plan["groups"] == -(-plan["blocks"] // 3)
    assert plan["block_size"] == 32
    west, south, east, north = plan["bbox"]
    assert west <= -87.41 and east >= -87.39 and south <= 30.69 and north >= 30.71
    assert east - west < 0.04 and north - south < 0.04
    assert bad_size.status_code == 422 and "parameters.block_size" in bad_size.text
    assert outside.status_code == 422 and outside.json()["detail"].startswith("aoi: ")
    assert "does not overlap the imagery" in outside.json()["detail"]
    assert missing.status_code == 422 and "imagery '/nowhere/scene.tif'" in missing.text
    assert runs_after == runs_before  # nothing started


def test_progress_of_a_batch_run_from_its_plan_and_block_files(tmp_path: Path) -> None:
    plan = {"groups": [[{"id": "r0c0"}, {"id": "r0c1"}], [{"id": "r1c0"}, {"id": "r1c1"}]]}
    (tmp_path / "blocks").mkdir()
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    started = time.time() - 100
    planned = started + 20

    def stamp(seconds: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))

    run = RunInfo(
        run_id="r",
        pipeline="batch-inference",
        phase=Phase.RUNNING,
        started=stamp(started),
        tasks=[TaskInfo(name="plan-blocks", phase=Phase.SUCCEEDED, finished=stamp(planned))],
        outputs={"plan-blocks": {"output": str(tmp_path), "groups": "[0, 1]"}},
    )
    assert block_progress(run) is not None
    early = block_progress(run)
    assert early is not None and (early.done, early.total, early.eta_s) == (0, 4, None)
    for block in ("r0c0", "r0c1", "r1c0"):
        (tmp_path / "blocks" / f"{block}.tif").write_bytes(b"")
    (tmp_path / "blocks" / "r9c9.tif").write_bytes(b"")  # not in the plan: not counted
    found = block_progress(run)
    assert found is not None and (found.done, found.total, found.unit) == (3, 4, "blocks")
    assert found.elapsed_s is not None and 99 <= found.elapsed_s <= 110
    # 3 blocks in the 80 s since planning: the last one in about 27 s
    assert found.eta_s is not None and 25 <= found.eta_s <= 30
    os.utime(tmp_path / "blocks" / "r0c0.tif", (started, started))  # an earlier run's block
    resumed = block_progress(run)
    # 2 blocks predicted by this run in 80 s: 40 s a block, 1 block left
    assert resumed is not None and resumed.eta_s is not None and 38 <= resumed.eta_s <= 43
    argo = run.model_copy(update={"outputs": {"plan-blocks": {"output": "/in/a/pod", "groups": "[0, 1]"}}})
    argo = argo.model_copy(
        update={"tasks": [*run.tasks, TaskInfo(name="predict-blocks(0:0)", phase=Phase.SUCCEEDED)]}
    )
    groups = block_progress(argo)
    assert groups is not None and (groups.done, groups.total, groups.unit) == (1, 2, "groups")
    # the plan counts the blocks, and each predict task reports its own done as its progress
    # (N/M; Argo's 0/1 before it starts)
    reported = argo.model_copy(
        update={
            "outputs": {"plan-blocks": {"output": "/in/a/pod", "groups": "[0, 1, 2]", "blocks": "150"}},
            "tasks": [
                *run.tasks,
                TaskInfo(name="predict-blocks(0:0)", phase=Phase.SUCCEEDED, progress="64/64"),
                TaskInfo(name="predict-blocks(1:1)", phase=Phase.RUNNING, progress="23/64"),
                TaskInfo(name="predict-blocks(2:2)", phase=Phase.PENDING, progress="0/1"),
            ],
        }
    )
    blocks = block_progress(reported)
    assert blocks is not None and (blocks.done, blocks.total, blocks.unit) == (87, 150, "blocks")
    # 87 blocks in the 80 s since planning: 63 left, in about 58 s
    assert blocks.eta_s is not None and 55 <= blocks.eta_s <= 62
    # on Argo a retried task is a Retry node with a pod an attempt: its last attempt counts (it
    # reports the blocks the first finished too), and the Retry node and the first attempt don't
    retried = reported.model_copy(
        update={
            "tasks": [
                *reported.tasks[:-2],
                TaskInfo(name="predict-blocks(1:1)", type="Retry", phase=Phase.RUNNING, progress="53/65"),
                TaskInfo(name="predict-blocks(1:1)(0)", type="Pod", phase=Phase.FAILED, progress="23/64"),
                TaskInfo(name="predict-blocks(1:1)(1)", type="Pod", phase=Phase.RUNNING, progress="30/64"),
                reported.tasks[-1],
            ]
        }
    )
    again = block_progress(retried)
    assert again is not None and (again.done, again.total) == (94, 150)
    assert block_progress(run.model_copy(update={"pipeline": "training"})) is None


def test_rollback_is_admin_only_audited_and_names_what_is_missing(webapp: tuple[Served, Path]) -> None:
    served, _scene_path = webapp
    with served.client("approver") as approver:
        refused = approver.post(f"/api/v1/models/{MODEL}/rollback", json={"reason": "worse on floods"})
        assert refused.status_code == 403
    with served.client("admin") as admin:
        no_reason = admin.post(f"/api/v1/models/{MODEL}/rollback", json={})
        assert no_reason.status_code == 422 and no_reason.json()["detail"][0]["loc"] == ["body", "reason"]
        unknown = admin.post("/api/v1/models/no-such-model/rollback", json={"reason": "x"})
        assert unknown.status_code == 404
        done = admin.post(f"/api/v1/models/{MODEL}/rollback", json={"reason": "worse on floods"})
        assert done.status_code == 200, done.text
        assert (done.json()["production"], done.json()["demoted"]) == ("2", "3")
        card = admin.get(f"/api/v1/models/{MODEL}").json()
        again = admin.post(f"/api/v1/models/{MODEL}/rollback", json={"reason": "once more"})
        audit = admin.get("/api/v1/audit", params={"limit": 20}).json()
    assert (card["production"], card["previous"]) == ("2", None)
    assert again.status_code == 422 and "no previous version" in again.json()["detail"]
    lines = [a for a in audit if a["action"] == "POST /api/v1/models/{model_id}/rollback"]
    assert [(a["actor"], a["status"]) for a in lines][:3] == [
        ("admin-web", 422),
        ("admin-web", 200),
        (
            "admin-web",
            404,
        ),
    ]
    assert lines[1]["detail"] == f"rolled back {MODEL}: production rolled back from v3 to v2: worse on floods"
    assert any(a["actor"] == "approver-web" and a["status"] == 403 for a in lines)
    from mlflow import MlflowClient

    tracking = served.app.state.gateway.settings.tracking_uri
    tags = MlflowClient(tracking_uri=tracking).get_model_version(MODEL, "2").tags
    assert json.loads(tags["geomlops.promotion"])["approver"] == "admin-web"


def test_a_batch_runs_area_of_interest_is_read_only_where_the_gateway_put_it(tmp_path: Path) -> None:
    """The W,S,E,N a run page shows: from GeoJSON in the parameter (Argo) or a file in the
    gateway's own folder; a file elsewhere, no area and other pipelines give none."""
    settings = Settings(home=tmp_path / "home")
    polygon = {"type": "Polygon", "coordinates": [[[10, 1], [12, 1], [12, 3], [10, 1]]]}
    own = aoi_folder(settings) / "a.geojson"
    own.parent.mkdir(parents=True)
    own.write_text(json.dumps(polygon))
    elsewhere = tmp_path / "b.geojson"
    elsewhere.write_text(json.dumps(polygon))

    def run(aoi: str, pipeline: str = "batch-inference") -> RunInfo:
        return RunInfo(run_id="r", pipeline=pipeline, phase=Phase.RUNNING, parameters={"aoi": aoi})

    assert aoi_bbox(run(json.dumps(polygon)), settings) == [10.0, 1.0, 12.0, 3.0]
    assert aoi_bbox(run(str(own)), settings) == [10.0, 1.0, 12.0, 3.0]
    assert aoi_bbox(run(str(elsewhere)), settings) is None
    assert aoi_bbox(run(""), settings) is None
    assert aoi_bbox(run(json.dumps(polygon), "training"), settings) is None
    assert aoi_bbox(run('{"type": "Circle"}'), settings) is None
