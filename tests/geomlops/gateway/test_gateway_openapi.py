"""The OpenAPI document: committed as a golden file, served as is, and fuzzed by schemathesis."""

from __future__ import annotations

import json
import os
from pathlib import Path

import hypothesis
import pytest
import schemathesis

from geomlops.gateway.app import create_app
from geomlops.gateway.settings import GatewaySettings
from geomlops.settings import Settings

from .conftest import Served

GOLDEN = Path(__file__).resolve().parents[3] / "geomlops" / "gateway" / "openapi.json"


def _document(tmp_path: Path) -> str:
    app = create_app(Settings(home=tmp_path), GatewaySettings())
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


def test_openapi_document_matches_the_committed_golden_file(tmp_path: Path) -> None:
    text = _document(tmp_path)
    if os.environ.get("GEOMLOPS_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text, encoding="utf-8")
    assert GOLDEN.read_text(encoding="utf-8") == text, (
        "the API changed: review it, then rewrite the golden file with GEOMLOPS_UPDATE_GOLDEN=1"
    )


def test_the_served_document_is_the_golden_one(gateway: Served) -> None:
    with gateway.client() as client:
        assert client.get("/api/v1/openapi.json").json() == json.loads(GOLDEN.read_text(encoding="utf-8"))


schema = schemathesis.openapi.from_path(str(GOLDEN))
# an uploaded chip is sent as its bytes (image/tiff): generated as any binary body
schemathesis.serializer.alias("image/tiff", "application/octet-stream")


@pytest.fixture
def admin(gateway: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, str]]:
    """Where to send the cases, and an admin's credentials (every route reachable); the webhook
    is configured (read at each delivery), so its route checks signatures rather than answering
    503 'not configured'."""
    config = tmp_path / "webhook.yaml"
    config.write_text(
        json.dumps({"secret": "s" * 32, "repositories": {"org/model": {"model": "cloud-mask"}}}),
        encoding="utf-8",
    )
    monkeypatch.setenv("GEOMLOPS_GATEWAY_WEBHOOK_CONFIG", str(config))
    return gateway.url, {"Authorization": f"Bearer {gateway.keys['admin']}"}


@schema.parametrize()
@hypothesis.settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    database=None,
)
def test_no_server_error_for_any_generated_request(
    case: schemathesis.Case, admin: tuple[str, dict[str, str]]
) -> None:
    url, headers = admin
    answer = case.call(base_url=url, headers=headers, timeout=60)
    assert answer.status_code < 500, (
        f"{case.method} {case.formatted_path}: {answer.status_code} {answer.text}"
    )
