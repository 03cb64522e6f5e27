"""Batch inference over the demo scene with the demo's model: outputs, lineage, resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import geopandas
import pytest
import rasterio
import yaml
from rasterio.warp import transform as warp

from catalog_sync.validation import validate_stac

pytestmark = pytest.mark.slow


def _imagery(work: dict[str, Any]) -> Path:
    assert work["first"].returncode == 0, work["first"].stdout + work["first"].stderr
    [image] = (work["home"] / "datasets").glob("*/image.tif")
    return image


def _params(work: dict[str, Any], output: Path, area: str, *extra: str) -> list[str]:
    args = ["-p", "model=cloud-mask", "-p", "model_version=1", "-p", f"imagery={_imagery(work)}"]
    args += ["-p", f"area={area}", "-p", "block_size=160", "-p", "group_size=4", "-p", f"output={output}"]
    for p in extra:
        args += ["-p", p]
    return args


@pytest.fixture(scope="module")
def scene(work: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run over the whole demo scene (area 'scene'), the reference the resumed and the
    distributed runs are compared with: ``out`` (its folder) and ``result`` (the CLI's)."""
    out = tmp_path_factory.mktemp("scene-run") / "scene"
    result = work["cli"]("run", "batch-inference", *_params(work, out, "scene"))
    assert result.returncode == 0, result.stdout + result.stderr
    return {"out": out, "result": result}


def test_scene_prediction_carries_its_lineage(
    work: dict[str, Any], scene: dict[str, Any], schema_dir: Path
) -> None:
    out, result = scene["out"], scene["result"]
    frame = geopandas.read_parquet(out / "predictions.parquet")
    assert len(frame) > 10
    # the summary ends with what the last task made: the item (its assets are the files)
    item_path = work["home"] / "catalog" / "predictions" / "cloud-mask-v1-scene" / "cloud-mask-v1-scene.json"
    assert f"publish-predictions.item = {item_path}" in result.stdout
    assert f"publish-predictions.features = {len(frame)}" in result.stdout
    assert frame.crs.to_epsg() == 32616
    assert set(frame["class"]) == {1}
    assert set(frame["class_name"]) == {"cloud"}  # named as the model's item names its classes
    from mlflow import MlflowClient

    mv = MlflowClient(tracking_uri=f"sqlite:///{work['home'] / 'mlflow.db'}").get_model_version(
        "cloud-mask", "1"
    )
    assert set(frame["model"]) == {"cloud-mask"} and set(frame["model_version"]) == {"1"}
    assert set(frame["mlflow_run_id"]) == {mv.run_id}
    assert frame["block_id"].str.fullmatch(r"r\d+c\d+").all()
    assert (frame["area"] > 0).all() and frame.geometry.is_valid.all()
    geojson = json.loads((out / "predictions.geojson").read_text())
    assert len(geojson["features"]) == len(frame)
    lon, lat = geojson["features"][0]["geometry"]["coordinates"][0][0][:2]
    assert -88 < lon < -87 and 30 < lat < 31  # RFC 7946: WGS84, longitude first
    assert (out / "quicklook.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    item = json.loads(
        (
            work["home"] / "catalog" / "predictions" / "cloud-mask-v1-scene" / "cloud-mask-v1-scene.json"
        ).read_text()
    )
    assert item["properties"]["mlflow:run_id"] == mv.run_id
    assert item["properties"]["geomlops:features"] == len(frame)
    # every output is an asset of the item, a file beside the others
    assets = item["assets"]
    assert set(assets) == {"geoparquet", "geojson", "quicklook", "mask", "pmtiles"}
    assert all(Path(a["href"]).parent == out and Path(a["href"]).is_file() for a in assets.values())
    assert assets["pmtiles"]["type"] == "application/vnd.pmtiles"
    derived = [link["href"] for link in item["links"] if link["rel"] == "derived_from"]
    assert derived and derived[0].endswith("model-versions/cloud-mask-v1/cloud-mask-v1.json")
    assert validate_stac(item, schema_dir).status == "valid"
    # each predict task reported its blocks done as its progress (N/M, as Argo reads it), and
    # the quicklook was drawn with matplotlib's cache in the work folder (the sandbox's home is
    # read-only), not a temporary one it warns of
    run_id = result.stdout.split("Succeeded: run ", 1)[1].split()[0]
    nodes = json.loads((work["home"] / "runs" / run_id / "state.json").read_text())["nodes"]
    reported = [n["progress"] for k, n in nodes.items() if k.startswith("predict-blocks(")]
    blocks = len(list((out / "blocks").glob("r*.tif")))
    assert reported and all(p.split("/")[0] == p.split("/")[1] for p in reported)
    assert sum(int(p.split("/")[1]) for p in reported) == blocks
    shown = work["cli"]("runs", "show", run_id)
    assert all(f"({p})" in shown.stdout for p in reported), shown.stdout
    publish_log = (work["home"] / "runs" / run_id / "logs" / "publish-predictions.log").read_text()
    assert "matplotlib" not in publish_log.lower(), publish_log


def test_killed_run_resumes_without_redoing_blocks_and_gives_identical_outputs(
    work: dict[str, Any], scene: dict[str, Any], tmp_path: Path
) -> None:
    whole, killed = scene["out"], tmp_path / "killed"  # the area's name is in no output compared
    runs = work["home"] / "runs"
    before = set(runs.iterdir())
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "geomlops"),
            "run",
            "batch-inference",
            *_params(work, killed, "same"),
        ],
        env=work["env"],
        cwd=work["home"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    total = len(list((whole / "blocks").glob("*.tif")))
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            finished = list((killed / "blocks").glob("r*.tif")) if (killed / "blocks").exists() else []
            if len(finished) >= 2:
                break
            time.sleep(0.1)
        else:
            pytest.fail("no block finished in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    kept = {p.name: p.stat().st_mtime_ns for p in (killed / "blocks").glob("r*.tif")}
    assert 2 <= len(kept) < total
    [run_dir] = set(runs.iterdir()) - before
    resumed = work["cli"]("run", "--resume", run_dir.name)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (killed / "blocks").glob("r*.tif")}
    assert len(after) == total
    assert all(after[name] == mtime for name, mtime in kept.items())  # finished blocks were not redone
    for name in ("predictions.parquet", "predictions.geojson", "mask.tif", "quicklook.png"):
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), name


def test_bad_areas_and_imagery_fail_at_planning(work: dict[str, Any], tmp_path: Path) -> None:
    far = tmp_path / "far.geojson"
    far.write_text(
        json.dumps({"type": "Polygon", "coordinates": [[[10, 10], [11, 10], [11, 11], [10, 11], [10, 10]]]})
    )
    # by pipeline name (or a manifest rendered from it) the CLI's preflight refuses it before a
    # run starts (exit 2); where nothing runs before the steps (on Argo; here a manifest that does
    # not say which pipeline it is) the planning step refuses it, once: a permanent error (exit 1)
    result = work["cli"]("run", "batch-inference", *_params(work, tmp_path / "o1", "far", f"aoi={far}"))
    assert result.returncode == 2
    assert "does not overlap the imagery" in result.stderr
    manifest = tmp_path / "batch-inference.yaml"
    assert work["cli"]("render", "batch-inference", "-o", str(manifest)).returncode == 0
    result = work["cli"]("run", str(manifest), *_params(work, tmp_path / "o1", "far", f"aoi={far}"))
    assert result.returncode == 2 and "(no run was started)" in result.stderr
    unlabelled = yaml.safe_load(manifest.read_text())
    del unlabelled["metadata"]["labels"]["geomlops.io/pipeline"]
    manifest.write_text(yaml.safe_dump(unlabelled))
    result = work["cli"]("run", str(manifest), *_params(work, tmp_path / "o1", "far", f"aoi={far}"))
    assert result.returncode == 1
    assert "does not overlap the imagery" in result.stdout + result.stderr
    assert "a permanent error (exit code 3" in result.stdout and "attempt 2" not in result.stdout
    assert not (tmp_path / "o1" / "blocks").exists()
    wrong = tmp_path / "three-bands.tif"
    with rasterio.open(_imagery(work)) as src:
        profile = {**src.profile, "count": 3}
        data = src.read([1, 2, 3])
    with rasterio.open(wrong, "w", **profile) as dst:
        dst.write(data)
    args = _params(work, tmp_path / "o2", "wrong")
    args[args.index(f"imagery={_imagery(work)}")] = f"imagery={wrong}"
    result = work["cli"]("run", "batch-inference", *args)
    assert result.returncode == 2
    assert "3 band(s), but the model's input" in result.stderr
    result = work["cli"]("run", str(manifest), *args)
    assert result.returncode == 1
    assert "3 band(s), but the model's input" in result.stdout + result.stderr


def _corner_aoi(work: dict[str, Any], folder: Path) -> Path:
    """An AOI over two of the scene's 160-px blocks (its top left)."""
    with rasterio.open(_imagery(work)) as src:
        xs, ys = [], []
        for col, row in ((10, 10), (200, 10), (200, 150), (10, 150)):
            x, y = src.transform @ (col, row)
            xs.append(x)
            ys.append(y)
        lons, lats = warp(src.crs, "EPSG:4326", xs, ys)
    ring = [[lon, lat] for lon, lat in zip(lons, lats, strict=True)]
    aoi = folder / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [[*ring, ring[0]]]}))
    return aoi


def test_area_of_interest_limits_the_blocks(work: dict[str, Any], tmp_path: Path) -> None:
    aoi = _corner_aoi(work, tmp_path)
    out = tmp_path / "part"
    result = work["cli"]("run", "batch-inference", *_params(work, out, "part", f"aoi={aoi}"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.stem for p in (out / "blocks").glob("*.tif")) == ["r0c0", "r0c1"]
    plan = json.loads((out / "plan.json").read_text())
    assert plan["notes"] == ["area of interest reprojected from EPSG:4326 to EPSG:32616"]


def test_a_new_run_in_a_used_folder_takes_none_of_the_earlier_runs_blocks(
    work: dict[str, Any], scene: dict[str, Any], tmp_path: Path
) -> None:
    """A run over a corner in 160-px blocks, then one over the whole scene in 320-px blocks into
    the same folder: the second predicts every block itself (the first's r0c0 and r0c1 are
    other pixels), and its mask is the scene's."""
    out = tmp_path / "reused"
    first = work["cli"](
        "run", "batch-inference", *_params(work, out, "reused", f"aoi={_corner_aoi(work, tmp_path)}")
    )
    assert first.returncode == 0, first.stdout + first.stderr
    whole = ["block_size=320" if a == "block_size=160" else a for a in _params(work, out, "reused")]
    second = work["cli"]("run", "batch-inference", *whole)
    assert second.returncode == 0, second.stdout + second.stderr
    run = json.loads((out / "plan.json").read_text())["run"]
    assert run  # the workflow's uid
    blocks = sorted((out / "blocks").glob("*.tif"))
    assert [p.stem for p in blocks] == ["r0c0", "r0c1", "r1c0", "r1c1"]
    for block in blocks:
        with rasterio.open(block) as src:
            assert src.tags()["GEOMLOPS_RUN"] == run
    with rasterio.open(out / "mask.tif") as got, rasterio.open(scene["out"] / "mask.tif") as expected:
        assert (got.read(1) == expected.read(1)).all()
    # the folder's files are item cloud-mask-v1-reused's assets: another item's run is refused
    files = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    other = work["cli"]("run", "batch-inference", *_params(work, out, "elsewhere"))
    assert other.returncode == 2, other.stdout + other.stderr
    assert "its files are the assets of predictions item 'cloud-mask-v1-reused'" in other.stderr
    assert "(no run was started)" in other.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == files


def test_schedule_runs_the_template_once_per_area(work: dict[str, Any]) -> None:
    areas = [{"area": "east", "aoi": "", "imagery": str(_imagery(work))}]
    result = work["cli"](
        "run",
        "batch-inference-schedule",
        "-p",
        f"areas={json.dumps(areas)}",
        "-p",
        "model=cloud-mask",
        "-p",
        "model_version=1",
        "-p",
        "block_size=320",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = work["home"] / "predictions" / "cloud-mask" / "v1" / "east"
    assert sorted(p.stem for p in (out / "blocks").glob("*.tif")) == ["r0c0", "r0c1", "r1c0", "r1c1"]
    item = work["home"] / "catalog" / "predictions" / "cloud-mask-v1-east" / "cloud-mask-v1-east.json"
    assert json.loads(item.read_text())["properties"]["geomlops:features"] > 0


def test_vectorization_through_a_distributed_scheduler_gives_the_same_outputs(
    work: dict[str, Any], scene: dict[str, Any], tmp_path: Path
) -> None:
    from distributed import LocalCluster
    from distributed.diagnostics.plugin import SchedulerPlugin

    class Finished(SchedulerPlugin):  # type: ignore[misc]
        """Counts the tasks the scheduler saw finish."""

        def __init__(self) -> None:
            self.count = 0

        def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
            if finish == "memory":
                self.count += 1

    local, remote = scene["out"], tmp_path / "remote"  # local: on the default threads scheduler
    finished = Finished()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        cluster.scheduler.add_plugin(finished)
        env = {**work["env"], "GEOMLOPS_DASK_SCHEDULER_ADDRESS": cluster.scheduler_address}
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "geomlops"),
                "run",
                "batch-inference",
                *_params(work, remote, "dask"),
            ],
            env=env,
            cwd=work["home"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    blocks = len(list((remote / "blocks").glob("*.tif")))
    assert finished.count >= blocks > 1, "the vectorization did not run on the distributed scheduler"
    for name in ("predictions.parquet", "predictions.geojson"):
        assert (remote / name).read_bytes() == (local / name).read_bytes(), name
