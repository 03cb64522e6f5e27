"""The gateway in the services profile: ``geomlops dev up`` starts it on its own PostgreSQL
database, beside the STAC API it searches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

pytestmark = pytest.mark.services
GEOMLOPS = str(Path(sys.executable).parent / "geomlops")
PACKAGE = Path(__file__).resolve().parents[2] / "examples" / "cloud-mask"


def test_dev_up_starts_the_gateway_on_postgresql_searching_the_stac_api(services_stack: Any) -> None:
    from geomlops.settings import Settings
    from steps.catalog import publish_base_item

    url = services_stack.config.gateway_url
    health = httpx.get(f"{url}/api/v1/health", timeout=30).json()
    assert health == {"status": "ok", "database": "postgresql", "backend": "local"}

    created = subprocess.run(  # the key goes to the gateway's database the stack exports
        [GEOMLOPS, "gateway", "keys", "create", "ops", "--role", "operator"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=True,
    )
    headers = {"Authorization": f"Bearer {created.stdout.strip()}"}
    publish_base_item(PACKAGE, Settings().catalog_href)
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        found = client.get("/api/v1/models", params={"q": "cloud", "framework": "scikit-learn"})
        assert found.status_code == 200, found.text
        assert [m["id"] for m in found.json()] == ["cloud-mask"]
        assert client.get("/api/v1/models", params={"task": "object-detection"}).json() == []
        refused = client.post("/api/v1/runs/training", json={"model": "nowhere", "dataset_path": "d"})
        assert refused.status_code == 404, refused.text

    with psycopg.connect(services_stack.config.gateway_db) as db:
        rows = db.execute("SELECT actor, action, status FROM audit ORDER BY id").fetchall()
        hashes = db.execute("SELECT name, role, token_sha256 FROM api_keys").fetchall()
    assert rows == [("ops", "POST /api/v1/runs/training", 404)]
    assert hashes[0][:2] == ("ops", "operator") and created.stdout.strip() not in str(hashes)


APPROVER = "ada@example.org"
#: a quick, poor model: the flow is under test here, not the model
WORSE = '{"max_iter": 2, "max_samples": 300, "learning_rate": 0.05}'
AOI = {
    "type": "Polygon",
    "coordinates": [[[-87.45, 30.70], [-87.40, 30.70], [-87.40, 30.75], [-87.45, 30.75], [-87.45, 30.70]]],
}


def _run_until_settled(client: httpx.Client, run_id: str, settled: Any, limit: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while True:
        run: dict[str, Any] = client.get(f"/api/v1/runs/{run_id}").json()
        if settled(run) or time.monotonic() > deadline:
            return run
        time.sleep(1)


def _stopped(run: dict[str, Any]) -> bool:
    return run["phase"] in ("Succeeded", "Failed", "Error", "Interrupted", "Suspended")


@pytest.mark.slow
def test_train_batch_inference_promotion_and_approval_through_the_gateway(services_stack: Any) -> None:
    """The embedded flow (``tests/geomlops/gateway/test_gateway_flow.py``) on the services
    profile, through the gateway ``dev up`` started: the dataset on the S3 remote, the model
    through the MLflow server into S3, the items in PgSTAC, the gateway's state in PostgreSQL;
    the approver is the caller of the approving key."""
    from mlflow import MlflowClient

    from geomlops.cli.demo import DATASET, MODEL, default_package, ensure_data_repo, prepare_dataset
    from geomlops.settings import get_settings
    from steps.catalog import publish_base_item

    settings = get_settings()
    repo = Path(settings.data_repo_url)
    ensure_data_repo(repo, settings.dvc_remote_url)
    prepare_dataset(repo, default_package(), settings)  # dvc push to the S3 remote
    publish_base_item(PACKAGE, settings.catalog_href)
    keys = {}
    for name, role in (("ops-flow", "operator"), (APPROVER, "approver")):
        created = subprocess.run(
            [GEOMLOPS, "gateway", "keys", "create", name, "--role", role],
            env=dict(os.environ),
            capture_output=True,
            text=True,
            check=True,
        )
        keys[role] = {"Authorization": f"Bearer {created.stdout.strip()}"}
    url = services_stack.config.gateway_url
    with httpx.Client(base_url=url, headers=keys["operator"], timeout=120) as operator:
        started = operator.post(
            "/api/v1/runs/training",
            json={"model": MODEL, "dataset_path": DATASET, "parameters": {"train_params": WORSE}},
        )
        assert started.status_code == 202, started.text
        trained = _run_until_settled(operator, started.json()["run_id"], _stopped)
        assert trained["phase"] == "Succeeded", trained["message"]
        version = trained["outputs"]["register"]["version"]
        assert trained["outputs"]["collect-run"]["run_id"]

        body = {
            "model": MODEL,
            "version": version,
            "imagery": str(repo / DATASET / "image.tif"),
            "aoi": AOI,
            "parameters": {"area": "gateway-flow", "block_size": "160", "group_size": "4"},
        }
        started = operator.post("/api/v1/runs/batch-inference", json=body)
        assert started.status_code == 202, started.text
        batch = _run_until_settled(operator, started.json()["run_id"], _stopped)
        assert batch["phase"] == "Succeeded", batch["message"]
        found = operator.get(f"/api/v1/runs/{batch['run_id']}/predictions").json()
        item_id = f"{MODEL}-v{version}-gateway-flow"
        assert (
            found["item_href"] == f"{services_stack.config.stac_url}/collections/predictions/items/{item_id}"
        )
        assert found["item"]["id"] == item_id and found["features"] is not None
        assert {"geoparquet", "geojson", "quicklook"} <= set(found["assets"])

        started = operator.post("/api/v1/runs/promotion", json={"model": MODEL, "candidate": version})
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        waiting = _run_until_settled(operator, run_id, _stopped)
        assert waiting["phase"] == "Suspended" and waiting["waiting_gate"] == "approval", waiting
        approved = operator.post(
            f"/api/v1/runs/{run_id}/approve", json={"reason": "checked"}, headers=keys["approver"]
        )
        assert approved.status_code == 200, approved.text
        done = _run_until_settled(operator, run_id, lambda r: r["phase"] != "Suspended" and _stopped(r))
        assert done["phase"] == "Succeeded", done["message"]

    client = MlflowClient(services_stack.config.mlflow_url)
    assert str(client.get_model_version_by_alias(MODEL, "production").version) == version
    decision = json.loads(client.get_model_version(MODEL, version).tags["geomlops.promotion"])
    assert decision["approver"] == APPROVER and decision["reason"] == "checked"
    item = services_stack.stac_item("model-versions", f"{MODEL}-v{version}")
    assert item["properties"]["geomlops:promotion"] == decision
    with psycopg.connect(services_stack.config.gateway_db) as db:
        rows = db.execute("SELECT actor, action, status FROM audit WHERE status < 300 ORDER BY id").fetchall()
    assert rows == [
        ("ops-flow", "POST /api/v1/runs/training", 202),
        ("ops-flow", "POST /api/v1/runs/batch-inference", 202),
        ("ops-flow", "POST /api/v1/runs/promotion", 202),
        (APPROVER, "POST /api/v1/runs/{run_id}/approve", 200),
    ]
