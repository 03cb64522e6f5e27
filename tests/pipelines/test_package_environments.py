"""Packages whose dependencies conflict with geomlops' own train through the training workflow.

Each package (``tests/pipelines/packages``) trains on the demo's dataset, in its own environment
(built once per machine: the environment cache and uv's cache are shared), talking to a local
tracking server; nothing is installed into geomlops' environment.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from geomlops.cli.demo import DATASET, default_package

# one training (and, for the first test, the demo) sits in each test's setup
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
PACKAGES = Path(__file__).parent / "packages"


def _register(work: dict[str, Any], name: str, edit: Any = None) -> Path:
    """Copy a test package into the work folder with an MLM item (the example's, renamed)."""
    from steps.catalog import publish_base_item

    package: Path = work["home"] / "packages" / name
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(PACKAGES / name.removesuffix("-broken"), package)
    item = json.loads((default_package() / "stac-item.json").read_text())
    item["id"] = name
    item["properties"]["mlm:name"] = name
    (package / "stac-item.json").write_text(json.dumps(item))
    if edit is not None:
        edit(package)
    publish_base_item(package, str(work["home"] / "catalog" / "catalog.json"))
    return package


def _client(work: dict[str, Any]) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{work['home'] / 'mlflow.db'}")


def _train(work: dict[str, Any], model: str) -> tuple[Any, dict[str, Any]]:
    out = work["cli"]("run", "training", "-p", f"model={model}", "-p", f"dataset_path={DATASET}")
    runs = sorted((work["home"] / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return out, json.loads((runs[-1] / "state.json").read_text())


def _trained(work: dict[str, Any], name: str) -> tuple[Any, dict[str, Any]]:
    from steps.package_env import ensure_environment

    assert work["first"].returncode == 0, work["first"].stdout + work["first"].stderr
    # built here once (cached by declaration, shared with every later run and test session),
    # as a sandboxed task may not write the environment cache
    ensure_environment(PACKAGES / name)
    _register(work, name)
    return _train(work, name)


@pytest.fixture(scope="module")
def legacy(work: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The numpy 1 / MLflow 2 package, trained through the workflow."""
    return _trained(work, "legacy-centroid")


@pytest.fixture(scope="module")
def lightgbm(work: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The LightGBM package, trained through the workflow."""
    return _trained(work, "lightgbm-pixels")


def _run_of(state: dict[str, Any]) -> str:
    return str(state["nodes"]["collect-run"]["outputs"]["run_id"])


def test_numpy_1_and_an_mlflow_2_client_train_in_their_own_experiment(
    work: dict[str, Any], legacy: tuple[Any, dict[str, Any]]
) -> None:
    out, state = legacy
    assert out.returncode == 0, out.stdout + out.stderr
    assert state["status"] == "Succeeded"
    client = _client(work)
    run = client.get_run(_run_of(state))
    assert run.data.params["numpy"].startswith("1.")
    # the package names its own experiment: followed, not refused
    assert client.get_experiment(run.info.experiment_id).name == "legacy-centroid-own-experiment"
    assert run.data.tags["geomlops.model"] == "legacy-centroid"
    mlmodel = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, "model/MLmodel")).read_text())
    assert mlmodel["mlflow_version"].startswith("2.22.")
    # evaluated by the package's own evaluate entry point, into the training run
    assert run.data.metrics["package_test_accuracy"] > 0.5
    assert run.data.metrics["package_test_pixels"] > 1000
    assert "test_iou" not in run.data.metrics
    # in the model's image (here its environment): evaluate-in-image, not geomlops' evaluate
    assert state["nodes"]["evaluate-in-image"]["status"] == "Succeeded"
    assert state["nodes"]["evaluate"]["status"] == "Skipped"
    versions = client.search_model_versions("name='legacy-centroid'")
    assert [v.run_id for v in versions] == [run.info.run_id]


def test_a_framework_geomlops_does_not_install_trains_and_is_evaluated(
    work: dict[str, Any], lightgbm: tuple[Any, dict[str, Any]]
) -> None:
    out, state = lightgbm
    assert out.returncode == 0, out.stdout + out.stderr
    run = _client(work).get_run(_run_of(state))
    assert run.data.params["lightgbm"] == "4.6.0"
    # geomlops' evaluation, predicting in the package's environment (LightGBM is not here)
    assert run.data.metrics["test_iou"] > 0.5
    item = json.loads(Path(state["nodes"]["publish"]["outputs"]["item"]).read_text())
    assert item["properties"]["mlflow:run_id"] == run.info.run_id


def test_a_failed_training_shows_the_entry_points_own_last_lines(
    work: dict[str, Any], lightgbm: tuple[Any, dict[str, Any]]
) -> None:
    def break_training(package: Path) -> None:
        train = package / "lgb_pixels" / "train.py"
        train.write_text(
            "import mlflow\nmlflow.start_run()\n"
            "raise RuntimeError('the booster cannot read band 11 of this scene')\n"
        )

    _register(work, "lightgbm-pixels-broken", break_training)
    out, state = _train(work, "lightgbm-pixels-broken")
    assert out.returncode == 1 and state["nodes"]["train"]["status"] == "Failed"
    summary = out.stdout + out.stderr
    assert "train: exit code 1" in summary or "exit code 1" in summary.split("Failed", 1)[1]
    own_lines = summary.split("--- last lines of logs/train.log ---")[1]
    assert "RuntimeError: the booster cannot read band 11 of this scene" in own_lines
    # the run the package had started is not left running: the exit handler marked it FAILED
    failed = _client(work).search_runs(
        [e.experiment_id for e in _client(work).search_experiments()],
        filter_string="tags.`geomlops.model` = 'lightgbm-pixels-broken'",
    )
    assert [r.info.status for r in failed] == ["FAILED"]


def test_nothing_is_installed_into_geomlops_environment(legacy: Any, lightgbm: Any) -> None:
    assert importlib.util.find_spec("lightgbm") is None
    assert importlib.metadata.version("numpy").split(".")[0] != "1"
    assert importlib.metadata.version("mlflow").split(".")[0] == "3"
