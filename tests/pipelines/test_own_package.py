"""A user's own package, from nothing to a trained version, with the README's commands.

``geomlops package new`` → its item chooses the package's own ``inference`` and ``postprocess``
entry points → ``package check`` → the package's own ``preprocess`` (``geomlops package run``:
in its own environment) → ``geomlops data add`` → ``geomlops run registration`` → ``geomlops
run training`` → ``geomlops run batch-inference``, each as the installed command, in a work
folder of its own. The package lies under ``/tmp``, which sandboxed tasks do not see:
registration catalogues a copy they do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

pytestmark = pytest.mark.slow
GEOMLOPS = str(Path(sys.executable).parent / "geomlops")


def test_a_scaffolded_package_registers_and_trains_through_the_workflows(
    tmp_path: Path, schema_dir: Path, labelled_source: Callable[[Path, list[str]], None]
) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOMLOPS_", "MLFLOW_"))}
    env.update(GEOMLOPS_HOME=str(home), GEOMLOPS_SCHEMA_DIR=str(schema_dir))

    def geomlops(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GEOMLOPS, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900
        )

    made = geomlops("package", "new", "water-mask", "--image", "registry.example.org/water-mask:0.1.0")
    assert made.returncode == 0, made.stdout + made.stderr
    package = tmp_path / "water-mask"
    # the item chooses the package's own entry points to predict and to post-process with
    item_file = package / "stac-item.json"
    item = json.loads(item_file.read_text())
    item["properties"]["mlm:input"][0]["geomlops:inference"] = "inference"
    own_postprocess = {"format": "mlproject", "expression": "postprocess"}
    item["properties"]["mlm:output"][0]["post_processing_function"] = own_postprocess
    item_file.write_text(json.dumps(item, indent=2))
    checked = geomlops("package", "check", str(package))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # the package's own preprocess, in its own environment, writes the dataset
    source = tmp_path / "source"
    labelled_source(source, [f"{c}.tif" for c in "abcde"])
    dataset = tmp_path / "water-dataset"
    prepared = geomlops(
        "package", "run", "water-mask", "preprocess", "-P", "source=source", "-P", f"output={dataset}"
    )  # a path parameter given relative to here
    assert prepared.returncode == 0, prepared.stderr
    assert f"python -m water_mask.preprocess --source {source} --output {dataset}" in prepared.stderr
    assert (dataset / "test.txt").is_file() and any((dataset / "chips").iterdir())
    said = next(line for line in prepared.stderr.splitlines() if line.startswith("environment: "))
    assert Path(said.split()[1]) != Path(sys.prefix)  # the package's own environment, not geomlops'
    added = geomlops("data", "add", str(dataset), "--as", "datasets/water")
    assert added.returncode == 0, added.stderr
    assert "-p dataset_path=datasets/water" in added.stdout

    registered = geomlops("run", "registration", "-p", f"package={package}")
    assert registered.returncode == 0, registered.stdout + registered.stderr
    trained = geomlops("run", "training", "-p", "model=water-mask", "-p", "dataset_path=datasets/water")
    assert trained.returncode == 0, trained.stdout + trained.stderr

    [run_dir] = [p for p in (home / "runs").iterdir() if p.name.startswith("geomlops-training")]
    state = json.loads((run_dir / "state.json").read_text())
    nodes = state["nodes"]
    assert nodes["evaluate"]["status"] == "Succeeded"  # geomlops' evaluation of the chips layout
    metrics = json.loads(nodes["evaluate"]["outputs"]["metrics"])
    assert metrics["test_n_pixels"] == 16 * 16  # the one held-out chip of five
    # named with the package's MLM classes; the scaffold fits its threshold to the labels
    assert metrics["test_iou_target"] > 0.9
    item = json.loads(Path(nodes["publish"]["outputs"]["item"]).read_text())
    assert item["properties"]["mlflow:run_id"] == nodes["collect-run"]["outputs"]["run_id"]
    # the catalogue points at the registered copy, under the work folder
    [copy] = (home / "packages").iterdir()
    catalogued = next((home / "catalog").rglob("water-mask.json"))
    model_item = json.loads(catalogued.read_text())
    assert str(copy) in json.dumps(model_item["assets"])

    # batch inference through the package's own entry points, in blocks of 8 px (halo 16)
    def predict(name: str) -> tuple[Any, Any, dict[str, Any]]:
        output = tmp_path / name
        ran = geomlops(
            "run", "batch-inference", "-p", "model=water-mask", "-p", "model_version=1",
            "-p", f"imagery={source / 'a.tif'}", "-p", "block_size=8", "-p", "group_size=2",
            "-p", f"area={name}", "-p", f"output={output}",
        )  # fmt: skip
        assert ran.returncode == 0, ran.stdout + ran.stderr
        published = json.loads(next((home / "catalog").rglob(f"water-mask-v1-{name}.json")).read_text())
        with rasterio.open(output / "mask.tif") as src:
            return src.read(1), pq.read_table(output / "predictions.parquet").to_pandas(), published

    own_mask, own_features, own_item = predict("own")
    with rasterio.open(source / "labels" / "a.tif") as src:  # half of this image is the target
        labels = src.read(1)
    assert 0 < labels.sum() < labels.size and (own_mask == labels).mean() > 0.95
    made_with = {k: own_item["properties"][f"geomlops:{k}"] for k in ("inference", "postprocess")}
    assert made_with == {"inference": "mlproject:inference", "postprocess": "mlproject:postprocess"}
    [batch_dir] = [p for p in (home / "runs").iterdir() if p.name.startswith("geomlops-batch-inference")]
    # the plan chose the publishing step with the model's worker beside it, and only that one ran
    published = json.loads((batch_dir / "state.json").read_text())["nodes"]
    assert published["publish-own-predictions"]["status"] == "Succeeded"
    assert published["publish-predictions"]["status"] == "Skipped"
    logs = "".join(p.read_text() for p in (batch_dir / "logs").glob("*.model.log"))
    assert "water_mask.inference" in logs and "water_mask.postprocess" in logs  # run by the workers
    assert "--model-uri ../model " in logs  # the version's files, fetched once per task
    # publishing on this machine, with no worker given, starts one in the package's environment
    republish = (
        "import json, sys; from pathlib import Path; from geomlops.settings import use_tracking;"
        "from steps.predictions import Lineage, publish_batch, read_plan;"
        "settings = use_tracking(); folder = Path(sys.argv[1]);"
        "out = publish_batch(folder, read_plan(folder), Lineage.model_validate_json(sys.argv[2]),"
        " area='own', catalog=settings.catalog_href); print(out.model_dump_json())"
    )
    lineage = {
        "model": "water-mask",
        "model_version": "1",
        "run_id": nodes["collect-run"]["outputs"]["run_id"],
    }
    (tmp_path / "own" / "predictions.parquet").unlink()
    again = subprocess.run(
        [sys.executable, "-c", republish, str(tmp_path / "own"), json.dumps(lineage)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout.splitlines()[-1])["features"] == len(own_features)
    assert pq.read_table(tmp_path / "own" / "predictions.parquet").to_pandas().equals(own_features)
    # the same model through geomlops' own prediction and tracing gives the same mask and areas:
    # the choice taken out of the version's item, which batch inference of version 1 reads
    versioned = next((home / "catalog" / "model-versions").rglob("water-mask-v1.json"))
    version_item = json.loads(versioned.read_text())
    for entry in ("mlm:input", "mlm:output"):
        version_item["properties"][entry][0].pop("geomlops:inference", None)
        version_item["properties"][entry][0].pop("post_processing_function", None)
    versioned.write_text(json.dumps(version_item))
    mask, features, item = predict("pyfunc")
    assert (item["properties"]["geomlops:inference"], item["properties"]["geomlops:postprocess"]) == (
        "pyfunc",
        "geomlops",
    )
    assert 0 < (mask == 1).sum() < mask.size and np.array_equal(own_mask, mask)
    assert len(own_features) == len(features) > 0
    assert set(own_features["class"]) == {1} and set(own_features["class_name"]) == {"target"}
    assert set(own_features["model_version"]) == {"1"}
    assert set(own_features["mlflow_run_id"]) == {nodes["collect-run"]["outputs"]["run_id"]}
    assert np.isclose(own_features["area"].sum(), features["area"].sum(), rtol=1e-6)  # m², geodesic
