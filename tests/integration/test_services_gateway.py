"""The gateway in the services profile: ``geomlops dev up`` starts it on its own PostgreSQL
database, beside the STAC API it searches."""

from __future__ import annotations

import os
import subprocess
import sys
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
