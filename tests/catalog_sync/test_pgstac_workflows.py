"""The workflows with the catalogue on PgSTAC: same steps and manifests, only settings differ."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from catalog_sync.pgstac import PgStacStore
from geomlops.argo.runner import LocalRunner
from geomlops.cli.demo import default_package
from pipelines import render, template_resolver

GEOMLOPS = str(Path(sys.executable).parent / "geomlops")


def test_registration_into_pgstac_twice_gives_one_result(
    home: Path, pgstac_dsn: str, schema_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOMLOPS_PGSTAC_DSN", pgstac_dsn)
    monkeypatch.setenv("GEOMLOPS_SCHEMA_DIR", str(schema_dir))
    runner = LocalRunner(home / "runs", progress=False, template_resolver=template_resolver)
    outputs = []
    for _ in range(2):
        summary = runner.run(render("registration"), {"package": str(default_package())})
        assert summary.status == "Succeeded", summary.message
        outputs.append(summary.outputs["register-model"]["created"])
    assert outputs == ["true", "false"]
    with PgStacStore(pgstac_dsn) as store:
        items = store.list_items("models")
    assert [i["id"] for i in items] == ["cloud-mask"]
    assert items[0]["properties"]["mlm:tasks"] == ["semantic-segmentation"]
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    assert [m.name for m in client.search_registered_models()] == ["cloud-mask"]


@pytest.mark.slow
def test_training_on_pgstac_then_sync_has_nothing_to_do(tmp_path: Path, pgstac_dsn: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOMLOPS_", "MLFLOW_"))}
    env.update(GEOMLOPS_HOME=str(tmp_path / "home"), GEOMLOPS_PGSTAC_DSN=pgstac_dsn)
    demo = subprocess.run([GEOMLOPS, "demo"], env=env, capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "model version  models:/cloud-mask/1" in demo.stdout
    with PgStacStore(pgstac_dsn) as store:
        [version] = store.list_items("model-versions")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    [mv] = client.search_model_versions("name='cloud-mask'")
    assert version["id"] == "cloud-mask-v1"
    assert version["properties"]["mlflow:run_id"] == mv.run_id
    sync = subprocess.run([GEOMLOPS, "catalog", "sync"], env=env, capture_output=True, text=True, timeout=300)
    assert sync.returncode == 0, sync.stderr
    assert "nothing to do: 1 version item(s) match MLflow" in sync.stdout
    assert "created" not in sync.stdout and "updated" not in sync.stdout
