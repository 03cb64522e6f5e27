"""The building-footprints example package: its own torch environment, its preprocess on real
(local) data and loopback servers, and its training through the workflow on the Banepa chips.

The package's code runs only in its own environment (built once per session from
``python_env.yaml``, torch's CPU wheel from ``/opt/wheels`` where that folder exists); nothing of
torch is in geomlops' environment.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote_plus, urlparse

import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box, shape

from steps.package_env import PackageEnvironment, command_environment, ensure_environment

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "examples" / "building-footprints"
WHEELS = Path("/opt/wheels")
GEOMLOPS = str(Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "geomlops")
#: the Banepa segmentation dataset's extent (its STAC item's bbox)
BANEPA_BBOX = (85.518782, 27.629193, 85.523263, 27.634351)


@pytest.fixture(scope="session")
def building_env() -> Iterator[PackageEnvironment]:
    """The package's environment, built once; torch's CPU wheel comes from /opt/wheels there."""
    with pytest.MonkeyPatch.context() as patch:
        if WHEELS.is_dir():
            patch.setenv("UV_FIND_LINKS", str(WHEELS))
        yield ensure_environment(PACKAGE)


def run_in_package(
    env: PackageEnvironment, *args: str, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """``python ARGS…`` in the package's environment, in the package folder (no bytecode there)."""
    variables = command_environment(env) | {"PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        ["python", *args], cwd=PACKAGE, env=variables, capture_output=True, text=True, timeout=timeout
    )


def preprocess(env: PackageEnvironment, output: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_in_package(env, "-m", "building_footprints.preprocess", "--output", str(output), *args)


def test_the_environment_has_torch_cpu_and_geomlops_has_no_torch(building_env: PackageEnvironment) -> None:
    done = run_in_package(
        building_env, "-c", "import torch; print(torch.__version__, torch.cuda.is_available())"
    )
    assert done.returncode == 0, done.stderr
    if WHEELS.is_dir():
        assert done.stdout.split() == ["2.13.0+cpu", "False"]
        site = next((building_env.root / "lib").glob("python3.*/site-packages"))
        assert not list(site.glob("nvidia*")), "a CUDA build of torch was installed"
        size = sum(
            f.stat().st_size for f in building_env.root.rglob("*") if f.is_file() and not f.is_symlink()
        )
        assert size < 2.5 * 2**30, f"the environment takes {size / 2**30:.1f} GiB: CUDA libraries?"
    assert importlib.util.find_spec("torch") is None


def test_package_check_passes(schema_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOMLOPS_")}
    env |= {"GEOMLOPS_SCHEMA_DIR": str(schema_dir), "GEOMLOPS_HOME": str(tmp_path)}
    done = subprocess.run(
        [GEOMLOPS, "package", "check", str(PACKAGE)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✓" in done.stdout


# --- preprocess ---------------------------------------------------------------------------


def aux_transform(chip: Path) -> Affine:
    """The georeference of a Banepa chip, read from its .aux.xml sidecar (not through GDAL)."""
    text = ET.parse(f"{chip}.aux.xml").getroot().findtext("GeoTransform")
    assert text is not None
    c, a, b, f, d, e = (float(v) for v in text.replace(",", " ").split())
    return Affine(a, b, c, d, e, f)


def test_local_chips_and_footprints_become_the_chips_layout(
    building_env: PackageEnvironment, shared_data: Path, tmp_path: Path
) -> None:
    source = shared_data / "banepa" / "train"
    out = tmp_path / "dataset"
    done = preprocess(
        building_env, out, "--imagery", str(source / "oam"), "--footprints", str(source / "osm")
    )
    assert done.returncode == 0, done.stderr
    chips = sorted(p.name for p in (out / "chips").glob("*.tif"))
    assert chips == sorted(p.name for p in (source / "oam").glob("*.tif")) and len(chips) == 48
    held_out = (out / "test.txt").read_text().split()
    assert len(held_out) == 12 and set(held_out) <= set(chips)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["classes"] == [{"value": 0, "name": "background"}, {"value": 1, "name": "building"}]
    assert meta["footprints"] == 1466
    features = json.loads(next((source / "osm").glob("*.geojson")).read_text())["features"]
    footprints = [shape(f["geometry"]) for f in features]
    checked = 0
    for name in chips[:6]:
        with rasterio.open(out / "chips" / name) as chip, rasterio.open(out / "labels" / name) as label:
            assert chip.count == 3 and chip.dtypes[0] == "uint8" and chip.crs.to_epsg() == 4326
            assert chip.transform.almost_equals(aux_transform(source / "oam" / name))
            assert label.transform == chip.transform and label.shape == chip.shape
            mask = label.read(1)
            extent = box(*chip.bounds)
        assert set(np.unique(mask)) <= {0, 1}
        # an independent look: a footprint's inner point inside the chip is labelled building,
        # a point outside every footprint is not
        for footprint in footprints:
            point = footprint.representative_point()
            if extent.contains(point.buffer(1e-5)):
                row, col = rasterio.transform.rowcol(chip.transform, point.x, point.y)
                inside = footprint.contains(
                    box(*chip.xy(row, col, offset="ul"), *chip.xy(row, col, offset="lr"))
                )
                if inside:
                    assert mask[row, col] == 1, (name, footprint.wkt[:80])
                    checked += 1
        fraction = mask.mean()
        assert 0.0 <= fraction < 0.95
    assert checked > 20
    # rerunning into a folder that exists is refused, naming it
    again = preprocess(
        building_env, out, "--imagery", str(source / "oam"), "--footprints", str(source / "osm")
    )
    assert again.returncode == 2 and f"{out}" in again.stderr and "not empty" in again.stderr


def test_tiles_from_a_template_are_placed_on_their_web_mercator_tiles(
    building_env: PackageEnvironment, shared_data: Path, tmp_path: Path
) -> None:
    oam = shared_data / "banepa" / "train" / "oam"
    out = tmp_path / "dataset"
    west, south, _, _ = BANEPA_BBOX
    bbox = f"{west},{south},{west + 0.0008},{south + 0.0008}"  # a corner: a few tiles
    template = f"file://{oam}/OAM-{{x}}-{{y}}-{{z}}.tif"
    done = preprocess(building_env, out, "--bbox", bbox, "--tiles", template,
                      "--footprints", str(shared_data / "banepa" / "train" / "osm"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    chips = sorted((out / "chips").glob("*.tif"))
    assert 1 <= len(chips) <= 9
    for chip in chips:
        original = oam / chip.name  # named by tile: OAM-x-y-z
        assert original.is_file()
        with rasterio.open(chip) as written, rasterio.open(original) as source:
            # the tile arithmetic puts each tile where the source's own georeference says
            assert written.transform.almost_equals(aux_transform(original), precision=1e-9)
            assert np.array_equal(written.read(), source.read())
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["source"]["imagery"] == {"tiles": template}


class _Servers(BaseHTTPRequestHandler):
    """OpenAerialMap's API and tile server and the Overpass API, on the loopback interface."""

    tiles: ClassVar[Path]
    elements: ClassVar[list[dict[str, Any]]]
    queries: ClassVar[list[str]]

    def _send(self, code: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/meta":
            self.queries.append(parse_qs(url.query)["bbox"][0])
            port = self.server.server_address[1]
            result = {"_id": "banepa-sample", "title": "Banepa sample", "provider": "fAIr",
                      "properties": {"tms": f"http://127.0.0.1:{port}/tiles/{{z}}/{{x}}/{{y}}"}}  # fmt: skip
            self._send(
                200, json.dumps({"results": [{"title": "no tiles", "properties": {}}, result]}).encode()
            )
        elif url.path.startswith("/tiles/"):
            z, x, y = url.path.split("/")[2:5]
            tile = self.tiles / f"OAM-{x}-{y}-{z}.tif"
            self._send(200, tile.read_bytes(), "image/jpeg") if tile.is_file() else self._send(404, b"")
        else:
            self._send(404, b"")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        self.queries.append(unquote_plus(body))
        self._send(200, json.dumps({"elements": self.elements}).encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def servers(shared_data: Path) -> Iterator[str]:
    """The loopback servers, answering Overpass with Banepa's footprints as OSM ways."""
    features = json.loads(next((shared_data / "banepa" / "train" / "osm").glob("*.geojson")).read_text())
    elements = []
    for feature in features["features"]:
        geometry = feature["geometry"]
        if geometry["type"] == "Polygon":
            ring = geometry["coordinates"][0]
            points = [{"lon": x, "lat": y} for x, y in ring]
            osm_id = feature["properties"]["osm_id"]
            elements.append({"type": "way", "id": osm_id, "tags": {"building": "yes"}, "geometry": points})
    elements.append({"type": "way", "id": 1, "tags": {"highway": "path"}, "geometry": []})
    _Servers.tiles = shared_data / "banepa" / "train" / "oam"
    _Servers.elements = elements
    _Servers.queries = []
    server = HTTPServer(("127.0.0.1", 0), _Servers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_a_bbox_alone_searches_openaerialmap_and_asks_overpass(
    building_env: PackageEnvironment, servers: str, tmp_path: Path
) -> None:
    out = tmp_path / "dataset"
    west, south, _, _ = BANEPA_BBOX
    bbox = (west + 0.001, south + 0.001, west + 0.0018, south + 0.0018)
    done = preprocess(building_env, out, "--bbox", ",".join(map(str, bbox)), "--oam-api", servers,
                      "--overpass-url", f"{servers}/api/interpreter")  # fmt: skip
    assert done.returncode == 0, done.stderr
    search, overpass = _Servers.queries
    assert [float(v) for v in search.split(",")] == pytest.approx(bbox)
    south_west_north_east = f"({bbox[1]},{bbox[0]},{bbox[3]},{bbox[2]})"
    assert 'way["building"]' in overpass and "out geom" in overpass and south_west_north_east in overpass
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["source"]["imagery"]["title"] == "Banepa sample"
    assert meta["footprints"] == len(_Servers.elements) - 1  # the highway is no building
    assert meta["building_pixels"] > 0 and meta["chips"] >= 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--tiles", "http://127.0.0.1:{port}/{{z}}/{{x}}/{{y}}.png"],
            "cannot download http://127.0.0.1:{port}/19/",
        ),
        (["--oam-api", "http://127.0.0.1:{port}"], "cannot download http://127.0.0.1:{port}/meta?bbox="),
        (["--bbox", "85.6,27.6,85.5,27.7"], "bbox: expected west < east"),
    ],
)
def test_a_failing_source_is_a_clear_error_and_leaves_nothing(
    building_env: PackageEnvironment, tmp_path: Path, args: list[str], expected: str
) -> None:
    port = _closed_port()
    out = tmp_path / "dataset"
    west, south, _, _ = BANEPA_BBOX
    bbox = ["--bbox", f"{west},{south},{west + 0.001},{south + 0.001}"] if "--bbox" not in args else []
    done = preprocess(building_env, out, *bbox, *(a.format(port=port) for a in args))
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected.format(port=port) in done.stderr
    if "cannot download" in expected:
        assert "local sources" in done.stderr and "refused" in done.stderr.lower()
    assert not out.exists() and list(tmp_path.iterdir()) == []


# --- the package's own inference and postprocess, on a model trained for one epoch ----------


@pytest.fixture(scope="module")
def quick_model(
    building_env: PackageEnvironment, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    """(tracking URI, model URI) of a one-epoch training with the package's own ``train``."""
    base = tmp_path_factory.mktemp("quick-buildings")
    source = shared_data / "banepa" / "train"
    done = preprocess(
        building_env, base / "data", "--imagery", str(source / "oam"), "--footprints", str(source / "osm")
    )
    assert done.returncode == 0, done.stderr
    tracking = f"sqlite:///{base / 'mlflow.db'}"
    variables = command_environment(building_env) | {
        "PYTHONDONTWRITEBYTECODE": "1",
        "MLFLOW_TRACKING_URI": tracking,
    }
    # run from the temporary folder: MLflow's default artifact root (./mlruns) lands there
    trained = subprocess.run(
        ["python", "-m", "building_footprints.train", "--data", str(base / "data"), "--epochs", "1"],
        cwd=base, env=variables | {"PYTHONPATH": str(PACKAGE)}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    [uri] = [w for w in trained.stdout.split() if w.startswith("runs:/")]
    return tracking, uri


def test_inference_with_the_items_halo_equals_whole_image_prediction_and_postprocess_gives_buildings(
    building_env: PackageEnvironment, quick_model: tuple[str, str], shared_data: Path, tmp_path: Path
) -> None:
    tracking, uri = quick_model
    image = shared_data / "banepa" / "predict" / "oam" / "OAM-386698-220244-19.tif"
    halo = json.loads((PACKAGE / "stac-item.json").read_text())["properties"]["mlm:input"][0]["geomlops:halo"]
    variables = command_environment(building_env) | {
        "PYTHONDONTWRITEBYTECODE": "1",
        "MLFLOW_TRACKING_URI": tracking,
    }

    def entry(module: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["python", "-m", f"building_footprints.{module}", *args],
            cwd=PACKAGE, env=variables, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    for size in (512, 128):
        out = str(tmp_path / f"p{size}.tif")
        done = entry("inference", "--model-uri", uri, "--image", str(image), "--output", out,
                     "--chip-size", str(size), "--halo", str(halo))  # fmt: skip
        assert done.returncode == 0, done.stderr
    with rasterio.open(tmp_path / "p512.tif") as whole, rasterio.open(tmp_path / "p128.tif") as blocks:
        assert whole.transform == rasterio.open(image).transform and whole.dtypes[0] == "float32"
        a, b = whole.read(1), blocks.read(1)
    assert a.min() >= 0.0 and a.max() <= 1.0 and a.std() > 0  # raw probabilities
    assert np.abs(a - b).max() < 1e-5  # 16 windows of 128 px with the item's halo: no seams
    geojson = str(tmp_path / "b.geojson")
    # a threshold the one-epoch model's probabilities cross somewhere (the item's is for a trained one)
    threshold = str(float(np.quantile(a, 0.6)))
    args = ["--probabilities", str(tmp_path / "p512.tif"), "--output", geojson, "--threshold", threshold]
    done = entry("postprocess", *args, "--min-area", "4")
    assert done.returncode == 0, done.stderr
    features = json.loads((tmp_path / "b.geojson").read_text())["features"]
    assert features, "no building polygon"
    for feature in features:
        polygon = shape(feature["geometry"])
        assert polygon.is_valid and feature["properties"]["area_m2"] >= 4
        lon, lat = polygon.exterior.coords[0]
        assert 85.5 < lon < 85.6 and 27.6 < lat < 27.7
    # asked for a GPU that torch's CPU build cannot see, the model says so
    load = "import mlflow, sys; mlflow.pyfunc.load_model(sys.argv[1], model_config={'device': 'cuda'})"
    cuda = subprocess.run(
        ["python", "-c", load, uri], cwd=tmp_path, env=variables, capture_output=True, text=True, timeout=600
    )
    if WHEELS.is_dir():
        assert (
            cuda.returncode != 0
            and "model_config device 'cuda'" in cuda.stderr
            and "sees no CUDA device" in cuda.stderr
        )


# --- the workflows: registration, training on the Banepa chips, batch inference -------------


def _latest_state(home: Path, prefix: str) -> dict[str, Any]:
    runs = sorted((home / "runs").glob(f"{prefix}*"), key=lambda p: p.stat().st_mtime)
    state: dict[str, Any] = json.loads((runs[-1] / "state.json").read_text())
    return state


@pytest.fixture(scope="module")
def trained(work: dict[str, Any], building_env: PackageEnvironment, shared_data: Path) -> dict[str, Any]:
    """The package registered and trained once through the workflows, in the shared work folder,
    on the Banepa chips preprocessed by the package and versioned with ``geomlops data add``."""
    assert work["first"].returncode == 0, work["first"].stdout + work["first"].stderr
    home, cli = work["home"], work["cli"]
    source = shared_data / "banepa" / "train"
    dataset = home / "sources" / "buildings"
    done = preprocess(
        building_env, dataset, "--imagery", str(source / "oam"), "--footprints", str(source / "osm")
    )
    assert done.returncode == 0, done.stderr
    added = cli("data", "add", str(dataset), "--as", "datasets/buildings")
    assert added.returncode == 0, added.stdout + added.stderr
    registered = cli("run", "registration", "-p", f"package={PACKAGE}")
    assert registered.returncode == 0, registered.stdout + registered.stderr
    training = cli(
        "run", "training", "-p", "model=building-footprints", "-p", "dataset_path=datasets/buildings"
    )
    assert training.returncode == 0, training.stdout + training.stderr
    state = _latest_state(home, "geomlops-training")
    return {
        "state": state,
        "nodes": state["nodes"],
        "run_id": state["nodes"]["collect-run"]["outputs"]["run_id"],
    }


def test_it_trains_and_evaluates_itself_through_the_training_workflow(
    work: dict[str, Any], trained: dict[str, Any], schema_dir: Path
) -> None:
    from mlflow import MlflowClient

    nodes = trained["nodes"]
    assert nodes["evaluate-in-image"]["status"] == "Succeeded"  # the package's own evaluate
    client = MlflowClient(tracking_uri=f"sqlite:///{work['home'] / 'mlflow.db'}")
    run = client.get_run(trained["run_id"])
    metrics = run.data.metrics
    # 12 held-out 512 x 512 chips, scored at the item's threshold
    assert metrics["test_n_pixels"] == 12 * 512 * 512
    assert metrics["test_iou"] > 0.4 and metrics["test_iou_background"] > 0.2
    assert run.data.params["train_chips"] == "36"
    # the halo the item declares covers the receptive field the run measured
    item = json.loads((PACKAGE / "stac-item.json").read_text())
    assert metrics["receptive_field_radius"] <= item["properties"]["mlm:input"][0]["geomlops:halo"]
    [version] = client.search_model_versions("name='building-footprints'")
    assert version.run_id == trained["run_id"]
    published = json.loads(Path(nodes["publish"]["outputs"]["item"]).read_text())
    assert published["properties"]["mlm:output"][0]["geomlops:threshold"] == 0.5
    # the logged model answers as the item says, in the package's own environment
    env = work["env"] | {
        "GEOMLOPS_SCHEMA_DIR": str(schema_dir),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work['home'] / 'mlflow.db'}",
    }
    checked = subprocess.run(
        [GEOMLOPS, "package", "check", str(PACKAGE), "--model-uri", f"runs:/{trained['run_id']}/model"],
        env=env, cwd=work["home"], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def predict_mosaic(shared_data: Path, path: Path) -> Path:
    """The 16 Banepa predict chips (4 x 4 zoom-19 tiles) as one GeoTIFF, as imagery arrives."""
    from rasterio.merge import merge

    chips = sorted((shared_data / "banepa" / "predict" / "oam").glob("*.tif"))
    sources = [rasterio.open(chip) for chip in chips]
    try:
        pixels, transform = merge(sources)
        crs = sources[0].crs
    finally:
        for source in sources:
            source.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", height=pixels.shape[1], width=pixels.shape[2], count=3,
                       dtype="uint8", crs=crs, transform=transform, photometric="RGB", compress="deflate",
                       tiled=True) as dst:  # fmt: skip
        dst.write(pixels)
        dst.descriptions = ("red", "green", "blue")
    return path


def test_batch_inference_on_the_predict_chips_gives_building_polygons_in_square_metres(
    work: dict[str, Any], trained: dict[str, Any], shared_data: Path, tmp_path: Path
) -> None:
    import geopandas

    imagery = predict_mosaic(shared_data, work["home"] / "sources" / "banepa-predict.tif")
    out = tmp_path / "banepa"
    args = ["-p", "model=building-footprints", "-p", "model_version=1", "-p", f"imagery={imagery}"]
    args += ["-p", "area=banepa", "-p", "block_size=512", "-p", f"output={out}"]
    done = work["cli"]("run", "batch-inference", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    frame = geopandas.read_parquet(out / "predictions.parquet")
    assert frame.crs.to_epsg() == 4326
    assert set(frame["class"]) == {1}  # the building class; the background is not traced
    assert len(frame) >= 1 and frame.geometry.is_valid.all()
    # finished by the item's buildings post-processor: nothing under its min_area_m2 (4 m², measured
    # in a local metric frame; the column's geodesic area may differ by a fraction of a percent)
    assert (frame["area"] >= 4.0 * 0.98).all()
    # areas in square metres on the ellipsoid: checked against an equal-area projection here
    assert set(frame["area_method"]) == {"geodesic"}
    projected = frame.to_crs("EPSG:6933").area  # World Cylindrical Equal Area
    assert np.allclose(frame["area"], projected, rtol=0.01)
    assert frame["area"].median() > 5  # buildings, not square degrees
    geojson = json.loads((out / "predictions.geojson").read_text())
    assert len(geojson["features"]) == len(frame)
    lon, lat = geojson["features"][0]["geometry"]["coordinates"][0][0][:2]
    assert 85.5 < lon < 85.6 and 27.6 < lat < 27.7
    assert (out / "quicklook.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_imagery_decoded_whole_for_every_block_is_noted_before_the_run_starts(
    work: dict[str, Any], trained: dict[str, Any], shared_data: Path, tmp_path: Path
) -> None:
    """An OpenAerialMap chip as it comes (a JPEG named .tif): the run predicts it, and the
    console says first how to make it read faster, not only the plan task's log."""
    chip = shared_data / "banepa" / "predict" / "oam" / "OAM-386698-220244-19.tif"
    args = ["-p", "model=building-footprints", "-p", "model_version=1", "-p", f"imagery={chip}"]
    args += ["-p", "area=banepa-chip", "-p", "block_size=128", "-p", f"output={tmp_path / 'chip'}"]
    done = work["cli"]("run", "batch-inference", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    [note] = [line for line in done.stderr.splitlines() if line.startswith("! note: ")]
    assert "is a JPEG file" in note and f"gdal_translate -of COG {chip.name} imagery.tif" in note, note


def test_its_first_version_is_promoted_only_after_approval_with_a_report_of_its_classes(
    work: dict[str, Any], trained: dict[str, Any], schema_dir: Path
) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from catalog_sync.validation import validate_stac

    client = MlflowClient(tracking_uri=f"sqlite:///{work['home'] / 'mlflow.db'}")
    out = work["cli"]("run", "promotion", "-p", "model=building-footprints", "-p", "candidate=1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Suspended" in out.stdout, out.stdout
    with pytest.raises(MlflowException):  # nothing moves before the approval
        client.get_model_version_by_alias("building-footprints", "production")
    run_id = re.search(r"Suspended: run (\S+)", out.stdout).group(1)  # type: ignore[union-attr]
    resumed = work["cli"]("run", "--resume", run_id, "--approve", "Grace Hopper", "--reason", "checked")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert str(client.get_model_version_by_alias("building-footprints", "production").version) == "1"
    decision = json.loads(client.get_model_version("building-footprints", "1").tags["geomlops.promotion"])
    assert decision["approver"] == "Grace Hopper" and "compared with nothing" in decision["summary"]
    # the candidate was scored in its own environment on the dataset's test chips, per class
    report_dir = Path(decision["report"].removeprefix("file://")).parent
    report = json.loads((report_dir / "report.json").read_text())
    assert (report_dir / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    evaluation = report["evaluation"]
    assert evaluation["class_names"] == ["background", "building"]
    assert evaluation["candidate"]["n_test_pixels"] == 12 * 512 * 512
    assert evaluation["candidate"]["metrics"]["test_iou"] > 0.4
    item = json.loads(
        (
            work["home"]
            / "catalog"
            / "model-versions"
            / "building-footprints-v1"
            / "building-footprints-v1.json"
        ).read_text()
    )
    assert item["properties"]["mlflow:aliases"] == ["production"]
    assert validate_stac(item, schema_dir).status == "valid"


def _served(
    command: list[str], env: dict[str, str], ready: str, log: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    """A server started from ``command``, once ``ready`` answers 200 (its log in ``log``)."""
    import requests

    with open(log, "w") as out:
        proc = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 600
    while True:
        assert proc.poll() is None, f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            if requests.get(ready, timeout=5).status_code == 200:
                return proc
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"server not ready:\n{log.read_text()[-3000:]}"
        time.sleep(1)


def test_it_serves_a_drone_chip_as_building_polygons_from_its_own_environment(
    work: dict[str, Any], trained: dict[str, Any], shared_data: Path, tmp_path: Path
) -> None:
    import base64

    import requests
    from rasterio.io import MemoryFile
    from rasterio.windows import Window

    from geomlops.ports import free_port

    imagery = predict_mosaic(shared_data, work["home"] / "sources" / "banepa-predict.tif")
    with rasterio.open(imagery) as src, MemoryFile() as memory:
        window = Window(256, 256, 512, 512)
        profile = src.profile | {"width": 512, "height": 512, "transform": src.window_transform(window)}
        with memory.open(**profile) as chip:
            chip.write(src.read(window=window))
        data = memory.read()
    port = free_port()
    url = f"http://127.0.0.1:{port}/v2/models/building-footprints"
    command = [GEOMLOPS, "serve", "building-footprints@1", "--port", str(port)]
    proc = _served(command, work["env"], f"{url}/ready", tmp_path / "server.log", work["home"])
    try:
        body = {
            "inputs": [
                {"name": "chip", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(data).decode()]}
            ]
        }
        answer = requests.post(f"{url}/infer", json=body, timeout=300)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    assert answer.status_code == 200, answer.text
    [output] = answer.json()["outputs"]
    collection = json.loads(output["data"][0])
    assert collection["type"] == "FeatureCollection" and collection["features"], (
        "a town centre: expected buildings"
    )
    for feature in collection["features"]:
        props = feature["properties"]
        assert (props["class"], props["class_name"]) == (1, "building")
        assert props["model"] == "building-footprints" and props["model_version"] == "1"
        assert props["mlflow_run_id"] == trained["run_id"]
        assert props["area"] >= 4.0 * 0.98  # square metres, the item's minimum building
        lon, lat = feature["geometry"]["coordinates"][0][0][:2]
        assert 85.5 < lon < 85.6 and 27.6 < lat < 27.7
    # the model ran in the package's environment: geomlops' has no torch
    assert importlib.util.find_spec("torch") is None
