"""Bad input, as a new user types it: each refusal exits 2 with one clear line naming the field
or file, before any run starts, and leaves no file behind.

The cases run against the shared ``work`` folder where the demo trained ``cloud-mask`` v1, so
"the model and version exist" is real. ``benchmarks/bad_input.py`` measures how long each takes
to fail.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from geomlops.cli.main import main

#: the demo scene's area (UTM 16N, around 87.4° W 30.7° N), as GeoJSON rings in WGS84
BOX = [[-87.45, 30.68], [-87.35, 30.68], [-87.35, 30.78], [-87.45, 30.78], [-87.45, 30.68]]


def _polygon(ring: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [ring]}


def _files(folder: Path) -> dict[str, int]:
    skip = ("mlflow.db", "runs/.locks")  # SQLite's own journal; lock files of the runs folder
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in folder.rglob("*")
        if p.is_file() and not str(p.relative_to(folder)).startswith(skip)
    }


def make_inputs(home: Path, folder: Path) -> dict[str, str]:
    """Files the cases point at, written in ``folder``: good and bad AOIs and imagery (the good
    imagery is the demo's scene in the work folder ``home``)."""
    [image] = (home / "datasets").glob("*/image.tif")
    paths = {"imagery": str(image)}
    aois = {
        "aoi": _polygon(BOX),
        "unclosed": _polygon(BOX[:-1]),
        "swapped": _polygon([[lat, lon] for lon, lat in BOX]),
        "bowtie": _polygon(
            [[-87.45, 30.68], [-87.35, 30.78], [-87.35, 30.68], [-87.45, 30.78], [-87.45, 30.68]]
        ),
        "elsewhere": _polygon([[10, 10], [11, 10], [11, 11], [10, 11], [10, 10]]),
        "point": {"type": "Point", "coordinates": [-87.4, 30.7]},
    }
    for name, geometry in aois.items():
        (folder / f"{name}.geojson").write_text(json.dumps(geometry))
        paths[name] = str(folder / f"{name}.geojson")
    (folder / "broken.geojson").write_text('{"type": "Polygon", "coordinates": [[[0, 0]')
    paths["broken"] = str(folder / "broken.geojson")
    with rasterio.open(
        folder / "photo.jpg", "w", driver="JPEG", width=8, height=8, count=3, dtype="uint8"
    ) as dst:
        dst.write(np.zeros((3, 8, 8), np.uint8))
    (folder / "photo.jpg").rename(folder / "photo.tif")
    paths["jpeg"] = str(folder / "photo.tif")
    with rasterio.open(image) as src:
        profile = {**src.profile, "count": 3}
        with rasterio.open(folder / "rgb.tif", "w", **profile) as dst:
            dst.write(src.read([1, 2, 3]))
    paths["rgb"] = str(folder / "rgb.tif")
    with rasterio.open(
        folder / "complex.tif",
        "w",
        driver="GTiff",
        width=8,
        height=8,
        count=10,
        dtype="complex64",
        crs="EPSG:32616",
        transform=from_origin(452475.0, 3408645.0, 30, 30),
    ) as dst:
        dst.write(np.zeros((10, 8, 8), np.complex64))
    paths["complex"] = str(folder / "complex.tif")
    paths["missing"] = str(folder / "nothing-here.tif")
    return paths


@pytest.fixture(scope="module")
def inputs(work: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The cases' files, beside the demo's work folder."""
    assert work["first"].returncode == 0, work["first"].stdout + work["first"].stderr
    return make_inputs(work["home"], tmp_path_factory.mktemp("bad-inputs"))


@pytest.fixture
def cli(work: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``geomlops ARGS…`` in-process in the demo's work folder; checks that nothing was written."""
    for key in list(os.environ):
        if key.startswith(("GEOMLOPS_", "MLFLOW_")) and key != "GEOMLOPS_TEST_SCHEMA_DIR":
            monkeypatch.delenv(key)
    monkeypatch.setenv("GEOMLOPS_HOME", str(work["home"]))
    monkeypatch.chdir(work["home"])
    before = _files(work["home"])

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(main, list(args))

    yield invoke
    import mlflow

    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # in-process commands set it
    assert _files(work["home"]) == before, "a refused request wrote or changed files"


def _bi(inputs: dict[str, str], **given: str) -> list[str]:
    params = {"model": "cloud-mask", "model_version": "1", "imagery": inputs["imagery"], "area": "t", **given}
    return ["run", "batch-inference", *[w for k, v in params.items() for w in ("-p", f"{k}={v}")]]


#: (name, arguments given the input files, what the one line must say)
CASES: list[tuple[str, Any, str]] = [
    (
        "unknown model",
        lambda i: _bi(i, model="no-such-model"),
        "model 'no-such-model' is not in the catalogue",
    ),
    (
        "unknown version",
        lambda i: _bi(i, model_version="99"),
        "model 'cloud-mask' has no version '99' in MLflow",
    ),
    (
        "alias typo",
        lambda i: _bi(i, model_version="prodution"),
        "has no alias 'prodution' in MLflow (versions: 1",
    ),
    (
        "area escapes",
        lambda i: _bi(i, area="../../../../somewhere/escaped"),
        "parameter 'area' '../../../../",
    ),
    ("shell in area", lambda i: _bi(i, area="x; rm -rf ~"), "parameter 'area' 'x; rm -rf ~': expected"),
    ("model escapes", lambda i: _bi(i, model="../m"), "parameter 'model' '../m': expected"),
    (
        "relative output",
        lambda i: _bi(i, output="out"),
        "parameter 'output' 'out': expected an absolute path",
    ),
    (
        "relative imagery",
        lambda i: _bi(i, imagery=os.path.relpath(i["imagery"])),
        "expected an absolute path or a URL (each task runs in a folder of its own, where a relative",
    ),
    (
        "relative package",
        lambda i: ["run", "registration", "-p", "package=water-mask"],
        "parameter 'package' 'water-mask': expected an absolute path or a URL",
    ),
    (
        "relative AOI",
        lambda i: _bi(i, aoi=os.path.relpath(i["unclosed"])),
        "parameter 'aoi' '../",  # the AOIs' folder and the work folder share pytest's base folder
    ),
    ("unclosed ring", lambda i: _bi(i, aoi=i["unclosed"]), "ring not closed"),
    ("swapped lon/lat", lambda i: _bi(i, aoi=i["swapped"]), "with longitude and latitude swapped it would"),
    ("self-intersection", lambda i: _bi(i, aoi=i["bowtie"]), "invalid polygon: Self-intersection"),
    ("no overlap", lambda i: _bi(i, aoi=i["elsewhere"]), "does not overlap the imagery"),
    (
        "point AOI",
        lambda i: _bi(i, aoi=i["point"]),
        "expected Polygon or MultiPolygon geometries, got 'Point'",
    ),
    ("AOI not JSON", lambda i: _bi(i, aoi=i["broken"]), "not valid JSON"),
    ("AOI missing", lambda i: _bi(i, aoi=i["missing"]), "file not found"),
    ("JPEG renamed .tif", lambda i: _bi(i, imagery=i["jpeg"]), "JPEG file without a CRS"),
    ("imagery missing", lambda i: _bi(i, imagery=i["missing"]), "cannot be read"),
    (
        "imagery a folder of tiles",
        lambda i: _bi(i, imagery=str(Path(i["jpeg"]).parent)),
        "a folder; expected one raster. Mosaic its tiles first",
    ),
    ("3-band imagery", lambda i: _bi(i, imagery=i["rgb"]), "3 band(s), but the model's input"),
    ("complex imagery", lambda i: _bi(i, imagery=i["complex"]), "data type complex64 cannot be safely read"),
    (
        "block size 0",
        lambda i: _bi(i, block_size="0"),
        "parameter 'block_size' '0': expected a whole number > 0",
    ),
    ("block size text", lambda i: _bi(i, block_size="big"), "parameter 'block_size' 'big'"),
    ("negative halo", lambda i: _bi(i, halo="-1"), "parameter 'halo' '-1': expected a whole number >= 0"),
    ("undeclared parameter", lambda i: [*_bi(i), "-p", "epochs=3"], "epochs"),
    (
        "not NAME=VALUE",
        lambda i: ["run", "batch-inference", "-p", "model"],
        "-p 'model': expected NAME=VALUE",
    ),
    (
        "unknown pipeline",
        lambda i: ["run", "batch-inferense"],
        "nor a manifest file; did you mean 'batch-inference'?",
    ),
    (
        "manifest file missing",
        lambda i: ["run", "nofile.yaml"],
        "nofile.yaml: no such file (PIPELINE is a pipeline name — batch-inference, batch-inference-schedule,",
    ),
    (
        "training: unknown model",
        lambda i: ["run", "training", "-p", "model=nope", "-p", "dataset_path=d"],
        "model 'nope' is not in the catalogue",
    ),
    (
        "train_params not JSON",
        lambda i: [
            "run",
            "training",
            "-p",
            "model=cloud-mask",
            "-p",
            "dataset_path=d",
            "-p",
            "train_params={max_iter: 5",
        ],
        "parameter 'train_params' '{max_iter: 5': expected a JSON object",
    ),
    (
        "train_params a list",
        lambda i: [
            "run",
            "training",
            "-p",
            "model=cloud-mask",
            "-p",
            "dataset_path=d",
            "-p",
            "train_params=[5]",
        ],
        "expected a JSON object, not list",
    ),
    (
        "train_params the train entry point does not declare",
        lambda i: [
            "run",
            "training",
            "-p",
            "model=cloud-mask",
            "-p",
            "dataset_path=d",
            "-p",
            'train_params={"epochs": 3}',
        ],
        "parameter 'train_params': 'epochs' is not a parameter geomlops can pass to the train entry point",
    ),
    (
        "eval_params with an unknown field",
        lambda i: [
            "run",
            "training",
            "-p",
            "model=cloud-mask",
            "-p",
            "dataset_path=d",
            "-p",
            'eval_params={"label_valu": 255}',
        ],
        "parameter 'eval_params': 'label_valu' is not an evaluation parameter (it takes: background_value, "
        "ignore_value, label_value, label_values, positive_class)",
    ),
    (
        "promotion: unknown candidate",
        lambda i: ["run", "promotion", "-p", "model=cloud-mask", "-p", "candidate=7"],
        "model 'cloud-mask' has no version '7' in MLflow",
    ),
    (
        "tolerance not a number",
        lambda i: ["run", "promotion", "-p", "model=cloud-mask", "-p", "candidate=1", "-p", "tolerance=abc"],
        "tolerance parameter: expected a number >= 0, got 'abc'",
    ),
    (
        "negative tolerance",
        lambda i: ["run", "promotion", "-p", "model=cloud-mask", "-p", "candidate=1", "-p", "tolerance=-1"],
        "tolerance",
    ),
    (
        "unknown metric",
        lambda i: [
            "run",
            "promotion",
            "-p",
            "model=cloud-mask",
            "-p",
            "candidate=1",
            "-p",
            "primary_metric=accuracy",
        ],
        "primary metric 'accuracy': version 1 of 'cloud-mask' logged no such metric",
    ),
    (
        "approve without reason",
        lambda i: [
            "run",
            "promotion",
            "-p",
            "model=cloud-mask",
            "-p",
            "candidate=1",
            "--approve",
            "Ada Lovelace",
        ],
        "--reason: required with --approve",
    ),
    (
        "approver not a name",
        lambda i: [
            "run",
            "promotion",
            "-p",
            "model=cloud-mask",
            "-p",
            "candidate=1",
            "--approve",
            "x",
            "--reason",
            "r",
        ],
        "--approve:",
    ),
    ("override alone", lambda i: ["run", "promotion", "--override"], "--override needs --approve NAME"),
    ("resume unknown run", lambda i: ["run", "--resume", "no-such-run"], "unknown run id 'no-such-run'"),
    ("resume with a pipeline", lambda i: ["run", "training", "--resume", "x"], "--resume takes no PIPELINE"),
    ("show unknown run", lambda i: ["runs", "show", "nope"], "unknown run id 'nope'"),
    ("render unknown", lambda i: ["render", "nope"], "unknown pipeline 'nope'"),
    (
        "promote status unknown",
        lambda i: ["promote", "status", "nope"],
        "no registered model 'nope' in MLflow",
    ),
    (
        "rollback with no production",
        lambda i: ["promote", "rollback", "cloud-mask", "--approver", "Ada Lovelace", "--reason", "drill"],
        "roll back",  # no production version yet, or no previous one (other tests may promote)
    ),
    ("install bad namespace", lambda i: ["install", "-n", "Geo_MLOps"], "--namespace 'Geo_MLOps': expected"),
    (
        "search bad datetime",
        lambda i: ["catalog", "search", "--datetime", "yesterday"],
        "'yesterday' is not an RFC 3339",
    ),
]


@pytest.mark.parametrize(("name", "args", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_clear_line(
    cli: Any, inputs: dict[str, str], name: str, args: Any, message: str
) -> None:
    result = cli(*args(inputs))
    assert result.exit_code == 2, f"{name}: exit {result.exit_code}\n{result.output}"
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("! ")]
    assert len(lines) == 1, f"{name}: expected one line, got:\n{result.output}"
    assert message in lines[0], f"{name}: {message!r} not in {lines[0]!r}"
    refused_before_a_run = (
        "unknown model",
        "unknown version",
        "imagery missing",
        "relative imagery",
        "relative AOI",
        "relative package",
    )
    if name in refused_before_a_run:
        assert lines[0].endswith("(no run was started)"), lines[0]
    if name.startswith("relative"):  # the refusal alone, not a warning saying the same before it
        assert "is a relative path" not in result.output, result.output
    assert "Traceback" not in result.output and "resume with" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
