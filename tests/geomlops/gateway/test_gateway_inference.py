"""On-demand inference over real HTTP: an AOI of imagery or an uploaded chip → GeoJSON.

Here the catalogued model has no weights, so what is tested is everything but the model: the
refusals (each naming its field and, for sizes, the limit), the roles, the audit line, and the
way through a serving endpoint (a stand-in speaking MLServer's V2 protocol, found where
``geomlops serve`` leaves its settings). Predicting in-process with a trained model's own
environment is tested in ``test_gateway_flow.py``, on the model the flow trains.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.io import MemoryFile

from geomlops.gateway.app import create_app
from geomlops.gateway.auth import create_key
from geomlops.gateway.settings import GatewaySettings
from geomlops.settings import Settings

from .conftest import MODEL, ROLES, Served, _clean_env, serve_in_thread

CRS = "EPSG:32616"
TRANSFORM = Affine(30.0, 0.0, 480000.0, 0.0, -30.0, 3400000.0)
MAX_PIXELS = 60 * 60
FEATURES = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [-87.2, 30.7]},
            "properties": {"class": 1, "model": MODEL, "model_version": "1"},
        }
    ],
    "bbox": [-87.2, 30.7, -87.2, 30.7],
}


def _raster(path: Path, size: int, bands: int = 10) -> Path:
    data = np.arange(bands * size * size, dtype=np.float32).reshape(bands, size, size)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": bands, "dtype": "float32"}
    with rasterio.open(path, "w", crs=CRS, transform=TRANSFORM, **profile) as dst:
        dst.write(data)
    return path


def _aoi(col0: int, row0: int, col1: int, row1: int) -> dict[str, Any]:
    """A WGS 84 polygon over the pixels [col0, col1) x [row0, row1) of the test imagery."""
    to_wgs84 = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    corners = [(col0, row0), (col1, row0), (col1, row1), (col0, row1), (col0, row0)]
    ring = [list(to_wgs84.transform(*(TRANSFORM @ c))) for c in corners]
    return {"type": "Polygon", "coordinates": [ring[::-1]]}  # counterclockwise


def _chip(size: int, bands: int = 10) -> bytes:
    profile = {"driver": "GTiff", "width": size, "height": size, "count": bands, "dtype": "float32"}
    profile["compress"] = "deflate"
    with MemoryFile() as memfile:
        with memfile.open(crs=CRS, transform=TRANSFORM, **profile) as dst:
            dst.write(np.ones((bands, size, size), np.float32))
        return bytes(memfile.read())


class FakeServing:
    """MLServer's V2 routes for one model version: ready, and infer answering ``FEATURES``."""

    def __init__(self, version: str) -> None:
        self.chips: list[bytes] = []
        self.refuse = False
        state = self
        base = f"/v2/models/{MODEL}/versions/{version}"

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200 if self.path == f"{base}/ready" else 404, {})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != f"{base}/infer":
                    self._send(404, {"error": "no such model"})
                    return
                if state.refuse:
                    self._send(400, {"error": "chip: 3 band(s), but the model expects 10"})
                    return
                [chip] = body["inputs"]
                state.chips.append(base64.b64decode(chip["data"][0]))
                output = {
                    "name": "geojson",
                    "shape": [1],
                    "datatype": "BYTES",
                    "data": [json.dumps(FEATURES)],
                }
                self._send(200, {"model_name": MODEL, "outputs": [output]})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def small(catalogued: Path, schema_dir: Path) -> Iterator[Served]:
    """The gateway on ``catalogued`` with a small pixel limit and a 64 KiB chip limit."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _clean_env(monkeypatch, catalogued, schema_dir)
        monkeypatch.setenv("GEOMLOPS_SERVING_MAX_IMAGE_BYTES", str(64 * 1024))
        app = create_app(
            Settings(), GatewaySettings(max_body_bytes=16 * 1024, predictions_max_pixels=MAX_PIXELS)
        )
        keys = {role: create_key(app.state.gateway.db, f"{role}-inference", role).token for role in ROLES}
        url, server, thread = serve_in_thread(app)
        yield Served(url, app, keys)
        server.should_exit = True
        thread.join(10)
        app.state.gateway.db.dispose()


@pytest.fixture
def serving(catalogued: Path) -> Iterator[FakeServing]:
    """A serving endpoint for version 1, where ``geomlops serve`` leaves its settings."""
    fake = FakeServing("1")
    settings = catalogued / "serving" / "local" / MODEL / "settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"host": "0.0.0.0", "http_port": fake.port}))
    yield fake
    settings.unlink()
    fake.close()


def _detail(answer: httpx.Response) -> str:
    return json.dumps(answer.json()["detail"])


def _readable(home: Path, tmp_path: Path) -> Path:
    """A folder for this test's rasters in the gateway's work folder (where it reads imagery)."""
    folder = home / "imagery" / tmp_path.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_refusals_name_the_field_and_the_limit(small: Served, catalogued: Path, tmp_path: Path) -> None:
    imagery = str(_raster(_readable(catalogued, tmp_path) / "scene.tif", 100))
    three_bands = str(_raster(_readable(catalogued, tmp_path) / "three.tif", 20, bands=3))
    outside = str(_raster(tmp_path / "outside.tif", 100))  # a raster elsewhere on the machine
    inside = _aoi(10, 10, 30, 30)
    cases: list[tuple[dict[str, Any], int, str]] = [
        (
            {"model": MODEL, "alias": "production", "imagery": outside, "aoi": inside},
            422,
            "outside the folders the gateway reads imagery from",
        ),
        (
            {"model": MODEL, "alias": "production", "imagery": "/etc/passwd", "aoi": inside},
            422,
            "GEOMLOPS_GATEWAY_IMAGERY_ROOTS",
        ),
        ({"model": "no-such-model", "alias": "production", "imagery": imagery, "aoi": inside}, 404, "model"),
        ({"model": MODEL, "alias": "staging", "imagery": imagery, "aoi": inside}, 422, "alias 'staging'"),
        ({"model": MODEL, "version": "9", "imagery": imagery, "aoi": inside}, 422, "version '9'"),
        ({"model": MODEL, "imagery": imagery, "aoi": inside}, 422, "version, alias: give exactly one"),
        ({"model": MODEL, "alias": "production", "imagery": imagery}, 422, '"aoi"'),
        ({"model": MODEL, "alias": "production", "imagery": "scene.tif", "aoi": inside}, 422, "imagery"),
        (
            {"model": MODEL, "alias": "production", "imagery": f"{imagery}.x", "aoi": inside},
            422,
            "no such file",
        ),
        ({"model": MODEL, "alias": "production", "imagery": three_bands, "aoi": inside}, 422, "imagery: "),
        (
            {"model": MODEL, "alias": "production", "imagery": imagery, "aoi": {"type": "Circle"}},
            422,
            "aoi: ",
        ),
        (
            {"model": MODEL, "alias": "production", "imagery": imagery, "aoi": _aoi(500, 500, 510, 510)},
            422,
            "aoi: area of interest",
        ),
        (
            {"model": MODEL, "alias": "production", "imagery": imagery, "aoi": _aoi(0, 0, 70, 70)},
            413,
            f"pixels of the imagery, more than the limit of {MAX_PIXELS} pixels (GEOMLOPS_GATEWAY",
        ),
        ({"model": MODEL, "alias": "production", "imagery": imagery, "aoi": inside, "gpu": 1}, 422, '"gpu"'),
    ]
    with small.client("operator") as operator:
        for body, status, named in cases:
            answer = operator.post("/api/v1/inference", json=body)
            assert (answer.status_code, named in _detail(answer)) == (status, True), (body, answer.text)
        chip = {"model": MODEL, "alias": "production"}
        refusals: list[tuple[dict[str, str], bytes, int, str]] = [
            ({"Content-Type": "application/json"}, b"{}", 415, "Content-Type 'application/json'"),
            ({"Content-Type": "image/tiff"}, b"", 422, "chip: empty"),
            ({"Content-Type": "image/tiff"}, b"II*\x00 not really", 422, "chip: not a readable GeoTIFF"),
            (
                {"Content-Type": "image/tiff"},
                _chip(61),
                413,
                f"chip: 3721 pixels, more than the limit of {MAX_PIXELS}",
            ),
            (
                {"Content-Type": "image/tiff"},
                b"x" * (64 * 1024 + 1),
                413,
                "chip: larger than the gateway accepts (65536",
            ),
            ({"Content-Type": "image/tiff"}, _chip(8, bands=3), 422, "chip: 3 band(s)"),
        ]
        for headers, data, status, named in refusals:
            answer = operator.post("/api/v1/inference/chip", params=chip, content=data, headers=headers)
            assert (answer.status_code, named in answer.json()["detail"]) == (status, True), answer.text
        bad_query = operator.post(
            "/api/v1/inference/chip",
            params={"model": "../x"},
            content=_chip(8),
            headers={"Content-Type": "image/tiff"},
        )
        assert bad_query.status_code == 422 and bad_query.json()["detail"][0]["loc"] == ["query", "model"]
    for role in ("viewer", "approver"):
        with small.client(role) as other:
            body = {"model": MODEL, "alias": "production", "imagery": imagery, "aoi": inside}
            assert other.post("/api/v1/inference", json=body).status_code == 403


def test_through_the_serving_endpoint_when_one_serves_the_version(
    small: Served, serving: FakeServing, catalogued: Path, tmp_path: Path
) -> None:
    imagery = str(_raster(_readable(catalogued, tmp_path) / "scene.tif", 100))
    body = {"model": MODEL, "alias": "production", "imagery": imagery, "aoi": _aoi(10, 20, 40, 45)}
    with small.client("operator") as operator:
        answer = operator.post("/api/v1/inference", json=body)
        assert answer.status_code == 200, answer.text
        found = answer.json()
        assert found["via"] == "serving" and (found["model"], found["version"]) == (MODEL, "1")
        assert found["type"] == "FeatureCollection" and found["features"] == FEATURES["features"]
        assert found["bbox"] == FEATURES["bbox"]

        # the chip sent is the AOI's window (to the pixel the AOI's reprojection touches),
        # georeferenced, with the area outside masked
        with MemoryFile(serving.chips[-1]) as memfile, memfile.open() as chip:
            col, row = (round(v) for v in ~TRANSFORM @ (chip.transform.c, chip.transform.f))
            assert 9 <= col <= 10 and 19 <= row <= 20 and chip.transform.a == TRANSFORM.a
            assert 30 <= chip.width <= 32 and 25 <= chip.height <= 27
            assert (chip.count, chip.crs.to_string()) == (10, CRS)
            assert found["pixels"] == chip.width * chip.height
            with rasterio.open(imagery) as src:
                window = ((row, row + chip.height), (col, col + chip.width))
                assert np.array_equal(chip.read(), src.read(window=window))
            inside = chip.read_masks(1).astype(bool)
            assert inside[20 - row : 45 - row, 10 - col : 40 - col][1:-1, 1:-1].all()
            assert 0.8 < inside.mean() < 1

        data = _chip(16)
        uploaded = operator.post(
            "/api/v1/inference/chip",
            params={"model": MODEL, "version": "1"},
            content=data,
            headers={"Content-Type": "image/tiff"},
        )
        assert uploaded.status_code == 200, uploaded.text
        assert uploaded.json()["via"] == "serving" and uploaded.json()["pixels"] == 256
        assert serving.chips[-1] == data  # as sent

        serving.refuse = True
        refused = operator.post("/api/v1/inference", json=body)
        assert refused.status_code == 422 and "the serving endpoint refused it: chip: 3 band" in refused.text
    with small.client("admin") as admin:
        audit = admin.get("/api/v1/audit", params={"limit": 3}).json()
    assert [(a["action"], a["actor"], a["status"]) for a in audit] == [
        ("POST /api/v1/inference", "operator-inference", 422),
        ("POST /api/v1/inference/chip", "operator-inference", 200),
        ("POST /api/v1/inference", "operator-inference", 200),
    ]
    assert (
        audit[1]["detail"]
        == f"predicted {MODEL} v1 on an uploaded chip of {len(data)} bytes (256 pixels, serving): 1 features"
    )
    assert audit[2]["detail"].startswith(
        f"predicted {MODEL} v1 on {imagery} ({found['pixels']} pixels, serving)"
    )
