"""The training workflow end to end on the embedded defaults, as ``make demo`` runs it.

One work folder is shared by the module: the demo runs twice (a new version, no duplicate
item), then bad inputs run against the same data repository and catalogue and must leave
nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from geomlops.cli.demo import DATASET, MODEL, default_package

pytestmark = pytest.mark.slow
GEOMLOPS = str(Path(sys.executable).parent / "geomlops")


def _geomlops(work: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = work["cli"](*args)
    return result


def _versions(work: dict[str, Any], model: str) -> list[dict[str, Any]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work['home'] / 'mlflow.db'}")
    return [
        {"version": str(mv.version), "run_id": mv.run_id}
        for mv in client.search_model_versions(f"name='{model}'")
    ]


def _version_items(work: dict[str, Any], model: str = "") -> list[str]:
    """The version items in the shared work folder (of ``model`` only, when given: other tests
    train other models there)."""
    folder = work["home"] / "catalog" / "model-versions"
    return sorted(p.parent.name for p in folder.glob(f"{model}*/*.json"))


def test_demo_trains_registers_and_publishes(work: dict[str, Any], schema_dir: Path) -> None:
    out = work["first"]
    assert out.returncode == 0, out.stdout + out.stderr
    assert "model version  models:/cloud-mask/1" in out.stdout
    item_path = Path(re.search(r"STAC item\s+(\S+)", out.stdout).group(1))  # type: ignore[union-attr]
    assert item_path.is_file() and item_path.is_relative_to(work["home"])
    item = json.loads(item_path.read_text())
    props = item["properties"]
    [version] = _versions(work, MODEL)
    assert props["mlflow:run_id"] == version["run_id"] and props["mlflow:model_version"] == "1"

    from steps.dataset import resolve_dataset

    # the data repository's commit the demo trained at (other tests add datasets after it)
    recorded = props["geomlops:dataset"]["commit"]
    dataset = resolve_dataset(str(work["home"] / "data"), DATASET, rev=recorded)
    assert props["geomlops:dataset"]["md5"] == dataset.md5 and dataset.commit == recorded
    first = subprocess.run(
        ["git", "log", "--reverse", "--format=%H", "--", f"{DATASET}.dvc"],
        capture_output=True,
        text=True,
        cwd=work["home"] / "data",
        check=True,
    )
    assert recorded == first.stdout.split()[0]  # the commit that added the demo's dataset
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=default_package())
    assert props["geomlops:code"]["git_commit"] == head.stdout.strip()
    assert props["geomlops:metrics"]["test_iou"] > 0.5
    assert any(link["rel"] == "derived_from" for link in item["links"])
    from catalog_sync.validation import validate_stac

    validation = validate_stac(item, schema_dir)
    assert validation.status == "valid", validation.summary()
    assert (work["home"] / "mlflow.db").is_file()
    assert (work["home"] / "dvc-remote").is_dir()


def test_second_demo_makes_a_new_version_and_no_duplicate_item(work: dict[str, Any]) -> None:
    before = json.loads(
        (work["home"] / "catalog" / "model-versions" / "cloud-mask-v1" / "cloud-mask-v1.json").read_text()
    )
    again = _geomlops(work, "demo")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "models:/cloud-mask/2" in again.stdout
    assert sorted(v["version"] for v in _versions(work, MODEL)) == ["1", "2"]
    assert _version_items(work, f"{MODEL}-v") == ["cloud-mask-v1", "cloud-mask-v2"]
    after = json.loads(
        (work["home"] / "catalog" / "model-versions" / "cloud-mask-v1" / "cloud-mask-v1.json").read_text()
    )
    assert after == before


def _run(work: dict[str, Any], *params: str) -> subprocess.CompletedProcess[str]:
    args = ["run", "training"]
    for p in params:
        args += ["-p", p]
    return _geomlops(work, *args)


def _run_manifest(work: dict[str, Any], *params: str) -> subprocess.CompletedProcess[str]:
    """The training manifest run as a file that does not say which pipeline it is (its label
    removed): no preflight, the workflow's own steps check (as on Argo, where nothing runs
    before them)."""
    manifest = work["home"] / "training-manifest.yaml"
    if not manifest.exists():
        assert _geomlops(work, "render", "training", "-o", str(manifest)).returncode == 0
        unlabelled = yaml.safe_load(manifest.read_text())
        del unlabelled["metadata"]["labels"]["geomlops.io/pipeline"]
        manifest.write_text(yaml.safe_dump(unlabelled))
    args = ["run", str(manifest)]
    for p in params:
        args += ["-p", p]
    return _geomlops(work, *args)


def test_unknown_model_fails_naming_it(work: dict[str, Any]) -> None:
    runs_before = sorted((work["home"] / "runs").iterdir())
    out = _run(work, "model=no-such-model", f"dataset_path={DATASET}")
    assert out.returncode == 2  # refused before the run starts
    assert "model 'no-such-model' is not in the catalogue" in out.stderr and "cloud-mask" in out.stderr
    assert sorted((work["home"] / "runs").iterdir()) == runs_before
    out = _run_manifest(work, "model=no-such-model", f"dataset_path={DATASET}")
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert "model 'no-such-model' is not in the catalogue" in text and "cloud-mask" in text
    assert "a permanent error (exit code 3" in text and "resume with" not in text  # not retried
    assert _versions(work, "no-such-model") == []


def test_unknown_dataset_path_and_revision(work: dict[str, Any]) -> None:
    # refused before a run starts (the data repository is on this machine) …
    runs_before = sorted((work["home"] / "runs").iterdir())
    out = _run(work, f"model={MODEL}", "dataset_path=datasets/none")
    assert out.returncode == 2 and "'datasets/none' does not exist" in out.stderr, out.stderr
    assert "(no run was started)" in out.stderr
    out = _run(work, f"model={MODEL}", f"dataset_path={DATASET}", "dataset_rev=v9")
    assert out.returncode == 2 and "revision 'v9'" in out.stderr and "(no run was started)" in out.stderr
    # the repository looked in is the one the run would read: dataset_repo where given
    other = work["home"] / "no-repo-here"
    out = _run(work, f"model={MODEL}", f"dataset_path={DATASET}", f"dataset_repo={other}")
    assert (
        out.returncode == 2 and f"cannot open DVC repository {other}: no git repository there" in out.stderr
    )
    assert sorted((work["home"] / "runs").iterdir()) == runs_before
    # … and by the workflow's own step where nothing runs before it (on Argo)
    out = _run_manifest(work, f"model={MODEL}", "dataset_path=datasets/none")
    assert out.returncode == 1 and "'datasets/none' does not exist" in out.stdout + out.stderr
    out = _run_manifest(work, f"model={MODEL}", f"dataset_path={DATASET}", "dataset_rev=v9")
    assert out.returncode == 1 and "revision 'v9'" in out.stdout + out.stderr


def test_undeclared_parameter_is_refused_before_anything_runs(work: dict[str, Any]) -> None:
    runs_before = sorted((work["home"] / "runs").iterdir())
    out = _run(work, f"model={MODEL}", f"dataset_path={DATASET}", "epochs=3")
    assert out.returncode == 2
    assert "epochs" in out.stderr and "dataset_path" in out.stderr
    assert sorted((work["home"] / "runs").iterdir()) == runs_before


def _register_copy(work: dict[str, Any], model_id: str, edit: Any) -> None:
    from steps.catalog import publish_base_item

    package = work["home"] / "packages" / model_id
    shutil.copytree(default_package(), package, ignore=shutil.ignore_patterns("__pycache__"))
    item = json.loads((package / "stac-item.json").read_text())
    item["id"] = model_id
    item["properties"]["mlm:name"] = model_id
    (package / "stac-item.json").write_text(json.dumps(item))
    edit(package)
    publish_base_item(package, str(work["home"] / "catalog" / "catalog.json"))


def test_failing_training_leaves_no_version_and_no_item(work: dict[str, Any]) -> None:
    def break_training(package: Path) -> None:
        train = package / "cloud_mask" / "train.py"
        train.write_text("import sys\nsys.exit('simulated training failure')\n")

    _register_copy(work, "broken-model", break_training)
    out = _run(work, "model=broken-model", f"dataset_path={DATASET}")
    assert out.returncode == 1
    assert "train" in out.stdout + out.stderr
    assert _versions(work, "broken-model") == []
    assert not [i for i in _version_items(work) if i.startswith("broken-model")]


def test_package_without_train_entry_point(work: dict[str, Any]) -> None:
    def drop_train(package: Path) -> None:
        import yaml

        project = yaml.safe_load((package / "MLproject").read_text())
        del project["entry_points"]["train"]
        (package / "MLproject").write_text(yaml.safe_dump(project))

    _register_copy(work, "no-train-model", drop_train)
    out = _run(work, "model=no-train-model", f"dataset_path={DATASET}")
    assert out.returncode == 1
    assert "entry_points lacks 'train'" in out.stdout + out.stderr
    assert _versions(work, "no-train-model") == []


def test_malformed_manifest_is_refused(work: dict[str, Any], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: x}\nspec: {entrypoint: main}\n"
    )
    out = _geomlops(work, "run", str(bad))
    assert out.returncode == 2 and "main" in out.stderr
    bad.write_text(": : :\n")
    out = _geomlops(work, "run", str(bad))
    assert out.returncode == 2 and "not valid YAML" in out.stderr


def test_run_killed_during_training_resumes_without_redoing_finished_tasks(work: dict[str, Any]) -> None:
    import signal
    import time

    before = {v["version"] for v in _versions(work, MODEL)}
    runs_dir = work["home"] / "runs"
    known = set(runs_dir.iterdir())
    proc = subprocess.Popen(
        [GEOMLOPS, "run", "training", "-p", f"model={MODEL}", "-p", f"dataset_path={DATASET}"],
        env=work["env"],
        cwd=work["home"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    state_file: Path | None = None
    try:
        while time.monotonic() < deadline:
            new = set(runs_dir.iterdir()) - known
            if new:
                state_file = next(iter(new)) / "state.json"
                nodes = json.loads(state_file.read_text())["nodes"] if state_file.exists() else {}
                if nodes.get("train", {}).get("status") == "Running":
                    break
            time.sleep(0.2)
        else:
            pytest.fail("the train task never started")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and the training process with it
        proc.wait()
    assert state_file is not None
    run_id = state_file.parent.name
    killed = json.loads(state_file.read_text())
    assert killed["nodes"]["fetch-model"]["status"] == "Succeeded"
    assert killed["nodes"]["resolve-dataset"]["status"] == "Succeeded"

    resumed = _geomlops(work, "run", "--resume", run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    final = json.loads(state_file.read_text())
    assert final["status"] == "Succeeded"
    for task in ("fetch-model", "resolve-dataset"):
        assert final["nodes"][task]["attempts"] == killed["nodes"][task]["attempts"], task
        assert len(final["nodes"][task]["attempts"]) == 1
    after = {v["version"] for v in _versions(work, MODEL)}
    assert len(after - before) == 1  # one new version, from the resumed training only


def test_runs_list_and_show(work: dict[str, Any]) -> None:
    listed = _geomlops(work, "runs", "list")
    assert listed.returncode == 0
    run_ids = [line.split()[0] for line in listed.stdout.splitlines()]
    assert sorted(run_ids) == sorted(p.name for p in (work["home"] / "runs").iterdir())
    succeeded = [line.split()[0] for line in listed.stdout.splitlines() if " Succeeded " in line]
    shown = _geomlops(work, "runs", "show", succeeded[-1])
    assert shown.returncode == 0
    for task in ("fetch-model", "resolve-dataset", "train", "evaluate", "register", "publish"):
        assert re.search(rf"Succeeded\s+{task}\b", shown.stdout), task
    assert "version = " in shown.stdout and "log: logs/train.log" in shown.stdout
    missing = _geomlops(work, "runs", "show", "no-such-run")
    assert missing.returncode == 2 and "no-such-run" in missing.stderr


def test_catalogued_item_missing_an_mlm_field_is_named(work: dict[str, Any]) -> None:
    from catalog_sync.store import StaticCatalog

    store = StaticCatalog(work["home"] / "catalog" / "catalog.json")
    item = json.loads((default_package() / "stac-item.json").read_text())
    item["id"] = "half-described"
    del item["properties"]["mlm:architecture"]
    store.put_item("models", item)
    out = _run(work, "model=half-described", f"dataset_path={DATASET}")
    assert out.returncode == 2  # refused before the run starts
    assert "required field 'mlm:architecture' is missing" in out.stderr
    out = _run_manifest(work, "model=half-described", f"dataset_path={DATASET}")
    assert out.returncode == 1
    assert "required field 'mlm:architecture' is missing" in out.stdout + out.stderr
    assert _versions(work, "half-described") == []


def test_after_training_sync_has_nothing_to_do(work: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from catalog_sync.store import StaticCatalog
    from steps.registry_sync import sync_registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work['home'] / 'mlflow.db'}")
    report = sync_registry(StaticCatalog(work["home"] / "catalog" / "catalog.json"))
    assert report.nothing_to_do, report.lines()
    assert "cloud-mask-v1" in report.unchanged and report.only_in_catalog == []
