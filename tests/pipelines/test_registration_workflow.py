"""The registration workflow on one machine: twice gives one result; bad packages leave nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from catalog_sync.store import StaticCatalog
from geomlops.argo.runner import LocalRunner
from geomlops.cli.demo import default_package
from pipelines import render, template_resolver


def _register(home: Path, package: Path | str) -> Any:
    runner = LocalRunner(home / "runs", progress=False, template_resolver=template_resolver)
    return runner.run(render("registration"), {"package": str(package)})


def _models(home: Path) -> list[str]:
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    return [m.name for m in client.search_registered_models()]


def test_registering_twice_gives_one_result(
    home: Path, schema_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOMLOPS_SCHEMA_DIR", str(schema_dir))
    first = _register(home, default_package())
    assert first.status == "Succeeded", first.message
    build = json.loads(first.outputs["build-image"]["build"])
    assert build["destination"] == "ghcr.io/geomlops/cloud-mask:0.1.0"
    assert build["built"] is False and "no image builder on this machine" in build["reason"]
    assert first.outputs["register-model"]["created"] == "true"
    # the run's last words say the image was not built, and why
    said = first.outputs["register-model"]["image"]
    assert said.startswith("ghcr.io/geomlops/cloud-mask:0.1.0 not built: no image builder on this machine")
    catalog = StaticCatalog(home / "catalog" / "catalog.json")
    item_before = catalog.get_item("models", "cloud-mask")
    # the catalogue points at the registered copy under the work folder, not at the source
    registered = Path(first.outputs["validate-package"]["package_dir"])
    assert registered.parent == home / "packages" and (registered / "MLproject").is_file()
    assert item_before["assets"]["source-code"]["href"] == str(registered)
    assert not (registered / "__pycache__").exists()

    second = _register(home, default_package())
    assert second.status == "Succeeded", second.message
    assert second.outputs["register-model"]["created"] == "false"
    assert [i["id"] for i in catalog.list_items("models")] == ["cloud-mask"]
    assert catalog.get_item("models", "cloud-mask") == item_before
    assert _models(home) == ["cloud-mask"]
    model = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}").get_registered_model("cloud-mask")
    assert model.tags["geomlops.stac_item"].endswith("models/cloud-mask/cloud-mask.json")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no-dockerfile", "Dockerfile: file not found"),
        ("no-postprocess", "entry_points lacks 'postprocess'"),
        ("bad-task", "$.properties['mlm:tasks'][0]"),
        ("no-item", "stac-item.json: file not found"),
    ],
)
def test_bad_package_leaves_nothing(
    home: Path, tmp_path: Path, schema_dir: Path, monkeypatch: pytest.MonkeyPatch, breakage: str, message: str
) -> None:
    monkeypatch.setenv("GEOMLOPS_SCHEMA_DIR", str(schema_dir))
    package = tmp_path / "pkg"
    shutil.copytree(default_package(), package, ignore=shutil.ignore_patterns("__pycache__"))
    if breakage == "no-dockerfile":
        (package / "Dockerfile").unlink()
    elif breakage == "no-postprocess":
        project = yaml.safe_load((package / "MLproject").read_text())
        del project["entry_points"]["postprocess"]
        (package / "MLproject").write_text(yaml.safe_dump(project))
    elif breakage == "bad-task":
        item = json.loads((package / "stac-item.json").read_text())
        item["properties"]["mlm:tasks"] = ["guessing"]
        (package / "stac-item.json").write_text(json.dumps(item))
    else:
        (package / "stac-item.json").unlink()
    summary = _register(home, package)
    assert summary.status == "Failed"
    assert message in summary.message
    assert "validate-package" in summary.message
    assert StaticCatalog(home / "catalog" / "catalog.json").list_items("models") == []
    assert _models(home) == []


def test_registering_a_package_from_git_at_a_commit(
    home: Path, tmp_path: Path, schema_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOMLOPS_SCHEMA_DIR", str(schema_dir))
    repo = tmp_path / "repo"
    shutil.copytree(default_package(), repo, ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "v1"]):
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    summary = _register(home, f"git+file://{repo}@{commit}")
    assert summary.status == "Succeeded", summary.message
    package_dir = Path(summary.outputs["validate-package"]["package_dir"])
    assert package_dir.parent == home / "packages" and (package_dir / "MLproject").is_file()
    item = StaticCatalog(home / "catalog" / "catalog.json").get_item("models", "cloud-mask")
    assert item["assets"]["source-code"]["href"] == str(package_dir)
    report = json.loads(summary.outputs["validate-package"]["report"])
    assert report["package"]["git_commit"] == commit
    assert [p.name for p in (home / "packages").iterdir()] == [package_dir.name]  # nothing half-made left


def test_a_registered_package_is_a_copy_that_later_edits_do_not_change(
    home: Path, tmp_path: Path, schema_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package folder anywhere (here under /tmp, which a sandboxed task does not see) is
    registered as a copy under $GEOMLOPS_HOME/packages, keyed by content."""
    monkeypatch.setenv("GEOMLOPS_SCHEMA_DIR", str(schema_dir))
    source = tmp_path / "my-package"
    shutil.copytree(default_package(), source, ignore=shutil.ignore_patterns("__pycache__", ".venv"))
    summary = _register(home, source)
    assert summary.status == "Succeeded", summary.message
    registered = Path(summary.outputs["validate-package"]["package_dir"])
    assert registered.parent == home / "packages"
    (source / "MLproject").write_text((source / "MLproject").read_text() + "# edited after registration\n")
    assert "edited after registration" not in (registered / "MLproject").read_text()
    again = _register(home, default_package())  # the same content: the same registered copy
    assert Path(again.outputs["validate-package"]["package_dir"]) == registered
