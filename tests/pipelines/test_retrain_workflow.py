"""The retrain workflow on one machine: a commit of a model repository is checked out,
validated, built (recorded as skipped here), trained on the model's registered dataset,
evaluated and compared with production, and the run stops at the approval gate; only a
person's approval promotes. Bad commits and foreign packages stop it before training.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from geomlops.argo.runner import LocalRunner
from geomlops.cli.demo import MODEL, default_package
from geomlops.settings import get_settings
from pipelines import render, template_resolver
from steps.local_images import LocalImages

# the retrain_work fixture runs the demo first; training on 2 busy cores takes minutes
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _client(home: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")


def _alias(home: Path, alias: str) -> str | None:
    try:
        return str(_client(home).get_model_version_by_alias(MODEL, alias).version)
    except MlflowException:
        return None


def _versions(home: Path) -> list[str]:
    return sorted(str(v.version) for v in _client(home).search_model_versions(f"name='{MODEL}'"))


def test_a_commit_is_retrained_up_to_the_gate_and_only_an_approval_promotes(
    retrain_work: dict[str, Any],
) -> None:
    home, commit = retrain_work["home"], retrain_work["commit"]
    before = _versions(home)  # the demo's version 1, and one per earlier retrain test in this folder
    new = str(len(before) + 1)
    out = retrain_work["cli"](
        "run", "retrain", "-p", f"model={MODEL}", "-p", f"repository={retrain_work['repo']}",
        "-p", f"commit={commit}", "-p", "package_dir=model", "-p", "push=false", "--no-interactive",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Suspended" in out.stdout, out.stdout
    run_id = re.search(r"Suspended: run (\S+)", out.stdout).group(1)  # type: ignore[union-attr]
    state = json.loads((home / "runs" / run_id / "state.json").read_text())
    nodes = state["nodes"]
    assert nodes["approval"]["status"] == "Suspended"
    assert not {"promote", "update-catalogue", "serve"} & set(nodes)
    assert all(
        nodes[n]["status"] == "Succeeded"
        for n in ("checkout", "validate-package", "build-image", "dataset", "train", "evaluate")
    )
    package = Path(nodes["checkout"]["outputs"]["package"])
    assert package.parent.name == commit and package.name == "model"
    assert package.is_relative_to(home / "sources") and (package / "MLproject").is_file()
    build = json.loads(nodes["build-image"]["outputs"]["build"])
    assert build["built"] is False and "no image builder" in build["reason"]

    # a new version, trained from the commit on exactly version 1's dataset, not promoted
    assert _versions(home) == sorted([*before, new])
    client = _client(home)
    v1, v2 = client.get_model_version(MODEL, "1"), client.get_model_version(MODEL, new)
    assert v2.tags["geomlops.dataset"] == v1.tags["geomlops.dataset"]
    assert client.get_run(str(v2.run_id)).data.tags["geomlops.code.git_commit"] == commit
    assert nodes["register"]["outputs"]["version"] == new
    assert _alias(home, "production") is None
    assert "compared with nothing" in nodes["report"]["outputs"]["summary"]
    item = home / "catalog" / "model-versions" / f"{MODEL}-v{new}" / f"{MODEL}-v{new}.json"
    assert json.loads(item.read_text())["properties"]["mlflow:aliases"] == []

    resumed = retrain_work["cli"](
        "run", "--resume", run_id, "--approve", "Ada Lovelace", "--reason", "CI retrain checked"
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert _alias(home, "production") == new
    decision = json.loads(client.get_model_version(MODEL, new).tags["geomlops.promotion"])
    assert decision["approver"] == "Ada Lovelace" and decision["reason"] == "CI retrain checked"
    assert json.loads(item.read_text())["properties"]["geomlops:promotion"] == decision


def _retrain(home: Path, repo: Path, commit: str, package_dir: str = "model") -> Any:
    runner = LocalRunner(
        home / "runs",
        progress=False,
        template_resolver=template_resolver,
        image_environment=LocalImages(get_settings()),  # the model's image, as `geomlops run` has it
    )
    params = {"model": MODEL, "repository": str(repo), "commit": commit, "package_dir": package_dir}
    return runner.run(render("retrain"), params | {"push": "false"})


@pytest.mark.parametrize(
    ("commit", "package_dir", "message"),
    [
        ("main", "model", "commit 'main': expected a commit id of 7 to 40 lowercase hexadecimal digits"),
        ("0123456789abcdef", "model", "commit 0123456789abcdef of"),
        (
            None,
            "../elsewhere",
            "package_dir '../elsewhere': expected a relative folder inside the repository",
        ),
        (None, "no-such", "package_dir 'no-such': no such folder at commit"),
    ],
)
def test_a_bad_commit_or_folder_stops_at_the_checkout_and_leaves_nothing(
    home: Path,
    tmp_path: Path,
    commit_package: Any,
    schema_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    commit: str | None,
    package_dir: str,
    message: str,
) -> None:
    monkeypatch.setenv("GEOMLOPS_SCHEMA_DIR", str(schema_dir))
    repo = home / "repos" / "cloud-mask"  # inside the work folder: tasks see no host /tmp
    head = commit_package(repo, default_package())
    summary = _retrain(home, repo, commit or head, package_dir)
    assert summary.status == "Failed"
    assert message in summary.message and "checkout" in summary.message
    assert set(summary.outputs) == {"onExit.retract-unpublished"}  # nothing but the exit handler ran
    sources = home / "sources"
    leftovers = (
        [p for p in sources.rglob("*") if p.is_dir() and ".partial-" in p.name] if sources.exists() else []
    )
    assert leftovers == []
    assert not (home / "mlflow.db").exists() or _client(home).search_registered_models() == []


def test_a_package_of_another_model_is_refused_before_training(
    home: Path, tmp_path: Path, commit_package: Any, schema_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOMLOPS_SCHEMA_DIR", str(schema_dir))
    package = tmp_path / "other"
    import shutil

    shutil.copytree(default_package(), package, ignore=shutil.ignore_patterns("__pycache__"))
    item = json.loads((package / "stac-item.json").read_text())
    item["id"] = "building-footprints"
    (package / "stac-item.json").write_text(json.dumps(item))
    repo = home / "repos" / "cloud-mask"  # inside the work folder: tasks see no host /tmp
    commit = commit_package(repo, package)
    summary = _retrain(home, repo, commit)
    assert summary.status == "Failed"
    assert (
        "the package declares model 'building-footprints', but this run retrains 'cloud-mask'"
        in summary.message
    )
    assert "train" not in summary.outputs and "register" not in summary.outputs
