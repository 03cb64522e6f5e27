"""GitHub's signed webhook: a signed push retrains the pushed model up to the approval gate;
a wrong signature, a replayed delivery and an unknown repository are refused and start nothing.

The route runs mounted in the gateway's app (its audit middleware, its database on SQLite, the
local backend's detached runner processes), served by uvicorn and called over real HTTP.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from geomlops.errors import ConfigurationError
from geomlops.gateway.app import create_app
from geomlops.gateway.backends.argo import ArgoBackend
from geomlops.gateway.backends.base import Phase, RunBackend
from geomlops.gateway.backends.local import LocalBackend
from geomlops.gateway.db import AuditEntry, Database
from geomlops.gateway.settings import GatewaySettings
from geomlops.gateway.webhooks import (
    WEBHOOK_PATH,
    DatabaseDeliveryLog,
    WebhookDelivery,
    load_webhook_config,
    router,
    signature,
    signature_matches,
)
from geomlops.settings import Settings
from pipelines import render

from .conftest import serve_in_thread
from .fake_argo import fake_argo

SECRET = "a-webhook-secret-of-some-length"
REPOSITORY = "hotosm/cloud-mask"
URL = f"/api/v1{WEBHOOK_PATH}"


def test_signature_is_githubs_hmac_sha256() -> None:
    # the example in GitHub's documentation on validating webhook deliveries
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signature(b"Hello, World!", "It's a Secret to Everybody") == expected
    assert signature_matches(b"Hello, World!", expected, "It's a Secret to Everybody")
    assert not signature_matches(b"Hello, World!?", expected, "It's a Secret to Everybody")
    assert not signature_matches(b"Hello, World!", None, "It's a Secret to Everybody")


def push_body(commit: str, ref: str = "refs/heads/main", repository: str = REPOSITORY) -> bytes:
    """A push delivery's body, as GitHub sends it (the fields the webhook reads, and others)."""
    payload = {
        "ref": ref,
        "before": "0" * 39 + "1",
        "after": commit,
        "repository": {"full_name": repository, "clone_url": f"https://github.com/{repository}.git"},
        "pusher": {"name": "ada"},
        "head_commit": {"id": commit, "message": "Tune the learning rate"},
    }
    return json.dumps(payload).encode()


def headers(
    body: bytes, event: str = "push", delivery: str | None = None, secret: str = SECRET
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature(body, secret),
    }


@dataclass
class Hooked:
    """The gateway with the webhook mounted, answering on localhost."""

    url: str
    db: Database
    backend: RunBackend

    def post(self, body: bytes, sent: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{self.url}{URL}", content=body, headers=sent, timeout=60)


@contextmanager
def hooked(
    home: Path, monkeypatch: pytest.MonkeyPatch, repo: Path | None = None, backend: RunBackend | None = None
) -> Iterator[Hooked]:
    """The real gateway app (its audit middleware, its database, the local backend unless
    another is given) with the webhook route, over real HTTP; the webhook maps REPOSITORY to
    cloud-mask in ``model/``."""
    config = home / "webhook.yaml"
    mapping = {"model": "cloud-mask", "package_dir": "model", "clone_url": str(repo or home / "no-repo")}
    config.write_text(yaml.safe_dump({"secret": SECRET, "repositories": {REPOSITORY: mapping}}))
    monkeypatch.setenv("GEOMLOPS_GATEWAY_WEBHOOK_CONFIG", str(config))
    settings = Settings()
    backend = backend or LocalBackend(settings)
    app = create_app(settings, GatewaySettings(database_url=f"sqlite:///{home / 'gateway.db'}"), backend)
    if URL not in {getattr(r, "path", "") for r in app.routes}:
        app.include_router(router)
    url, server, thread = serve_in_thread(app)
    try:
        yield Hooked(url, app.state.gateway.db, backend)
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.gateway.db.dispose()


@pytest.fixture
def refusing(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hooked]:
    with hooked(home, monkeypatch) as served:
        yield served


def _audit(db: Database, count: int) -> list[AuditEntry]:
    """The audit trail once it holds ``count`` lines: the middleware writes a line just after
    the answer is sent, so the test's next read may come first (bounded wait, not a timing check)."""
    deadline = time.monotonic() + 30
    while True:
        with db.session() as session:
            lines = list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def _deliveries(db: Database) -> list[str]:
    with db.session() as session:
        return list(session.scalars(select(WebhookDelivery.delivery_id)))


COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("case", "code", "detail"),
    [
        ("wrong-secret", 401, "X-Hub-Signature-256: missing or not the HMAC-SHA256 of the body"),
        ("no-signature", 401, "X-Hub-Signature-256: missing"),
        ("body-changed", 401, "X-Hub-Signature-256: missing or not the HMAC-SHA256 of the body"),
        ("unknown-repository", 403, "repository.full_name: 'someone/else' is not mapped to a model here"),
        ("not-json", 400, "body: not JSON"),
        ("bad-commit", 400, "after: 'main' is not a commit id"),
        ("no-delivery-id", 400, "X-GitHub-Delivery"),
    ],
)
def test_refused_deliveries_start_nothing_and_leave_only_their_audit_line(
    refusing: Hooked, home: Path, case: str, code: int, detail: str
) -> None:
    body = push_body(COMMIT)
    sent = headers(body)
    if case == "wrong-secret":
        sent = headers(body, secret="another-secret-entirely")
    elif case == "no-signature":
        del sent["X-Hub-Signature-256"]
    elif case == "body-changed":
        body = push_body("f" * 40)
    elif case == "unknown-repository":
        body = push_body(COMMIT, repository="someone/else")
        sent = headers(body)
    elif case == "not-json":
        body = b"ref=refs/heads/main"
        sent = headers(body)
    elif case == "bad-commit":
        body = push_body("main")
        sent = headers(body)
    elif case == "no-delivery-id":
        sent["X-GitHub-Delivery"] = ""
    answer = refusing.post(body, sent)
    assert answer.status_code == code, answer.text
    assert detail in answer.json()["detail"]
    assert SECRET not in answer.text
    assert refusing.backend.list() == [] and not (home / "runs").exists()
    assert _deliveries(refusing.db) == []
    [line] = _audit(refusing.db, 1)
    assert (line.status, line.method, line.target) == (code, "POST", URL)
    assert json.loads(line.detail)["detail"] == answer.json()["detail"]
    assert SECRET not in line.detail


def test_ping_is_answered_and_other_events_and_branches_are_ignored(refusing: Hooked) -> None:
    ping = json.dumps({"zen": "Design for failure.", "repository": {"full_name": REPOSITORY}}).encode()
    answer = refusing.post(ping, headers(ping, event="ping"))
    assert answer.status_code == 200 and answer.json() == {"status": "pong", "repository_known": True}
    for body, event, reason in [
        (push_body(COMMIT), "pull_request", "event 'pull_request' starts nothing"),
        (push_body(COMMIT, ref="refs/heads/feature"), "push", "'refs/heads/feature' is not refs/heads/main"),
        (push_body(COMMIT, ref="refs/tags/v1"), "push", "'refs/tags/v1' is not refs/heads/main"),
        (push_body("0" * 40), "push", "a deleted branch"),
    ]:
        answer = refusing.post(body, headers(body, event=event))
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "ignored" and reason in answer.json()["reason"]
    assert refusing.backend.list() == [] and _deliveries(refusing.db) == []
    assert [a.status for a in _audit(refusing.db, 5)] == [200, 202, 202, 202, 202]


def test_a_run_that_cannot_start_releases_its_delivery_for_a_redelivery(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = ArgoBackend(
        Settings(argo_server="http://127.0.0.1:9", argo_token="never-shown")
    )  # nothing listens
    body = push_body(COMMIT)
    sent = headers(body, delivery="d-1")
    with hooked(home, monkeypatch, backend=down) as served:
        answer = served.post(body, sent)
        assert answer.status_code == 503, answer.text
        assert (
            "the retrain run could not start" in answer.json()["detail"]
            and "cannot be reached" in answer.text
        )
        assert "never-shown" not in answer.text
        assert _deliveries(served.db) == []  # released: GitHub's redelivery of d-1 may start the run
        log = DatabaseDeliveryLog(served.db)
        assert log.claim("d-1", event="push", repository=REPOSITORY) is True
        assert log.claim("d-1", event="push", repository=REPOSITORY) is False


def test_in_a_cluster_a_signed_push_submits_the_installed_retrain_template_once(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fake_argo() as argo:
        backend = ArgoBackend(Settings(argo_server=argo.url, argo_namespace="geomlops"))
        with hooked(home, monkeypatch, home / "repos" / "cloud-mask", backend) as served:
            body = push_body(COMMIT)
            sent = headers(body)
            answer = served.post(body, sent)
            assert answer.status_code == 202, answer.text
            assert served.post(body, sent).status_code == 409
    [submitted] = argo.requests
    assert submitted["path"] == "/api/v1/workflows/geomlops/submit"
    assert submitted["body"]["resourceName"] == render("retrain")["metadata"]["name"]
    assert submitted["body"]["submitOptions"] == {
        "parameters": [
            "model=cloud-mask",
            f"repository={home / 'repos' / 'cloud-mask'}",
            f"commit={COMMIT}",
            "package_dir=model",
        ],
        "labels": "geomlops.io/pipeline=retrain",
        "annotations": f"geomlops.io/submitted-by=github:{REPOSITORY}",
    }
    assert answer.json()["run_id"] in argo.workflows


def test_an_unconfigured_or_broken_webhook_answers_503_and_starts_nothing(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = push_body(COMMIT)
    with hooked(home, monkeypatch) as served:
        monkeypatch.delenv("GEOMLOPS_GATEWAY_WEBHOOK_CONFIG")
        answer = served.post(body, headers(body))
        assert answer.status_code == 503
        assert (
            answer.json()["detail"] == "the webhook is not configured (set GEOMLOPS_GATEWAY_WEBHOOK_CONFIG)"
        )
        broken = home / "broken.yaml"
        broken.write_text(f"secret: {SECRET}\nrepositories: [a, b]\n")
        monkeypatch.setenv("GEOMLOPS_GATEWAY_WEBHOOK_CONFIG", str(broken))
        answer = served.post(body, headers(body))
        assert answer.status_code == 503 and "repositories: Input should be a valid dictionary" in answer.text
        assert SECRET not in answer.text
        assert served.backend.list() == [] and _deliveries(served.db) == []


def test_configuration_errors_name_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "webhook.yaml"
    path.write_text("secret: short\nrepositories:\n  a/b: {model: m, branch: main, colour: red}\n")
    with pytest.raises(ConfigurationError) as caught:
        load_webhook_config(path)
    text = str(caught.value)
    assert str(path) in text and "secret: Value error, at least 16 characters expected" in text
    assert "repositories.a/b.colour: Extra inputs are not permitted" in text
    with pytest.raises(ConfigurationError, match="cannot read the webhook configuration"):
        load_webhook_config(tmp_path / "absent.yaml")
    path.write_text(f"secret: {SECRET}\nrepositories:\n  a/b: {{model: m}}\n")
    config = load_webhook_config(path)
    assert config.repositories["a/b"].branch == "main" and SECRET not in repr(config)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # with the retrain_work fixture's demo when it runs first
def test_a_signed_push_retrains_up_to_the_gate_and_a_replay_starts_nothing(
    retrain_work: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("GEOMLOPS_HOME", "GEOMLOPS_SCHEMA_DIR"):
        monkeypatch.setenv(key, retrain_work["env"][key])
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home, commit = retrain_work["home"], retrain_work["commit"]
    with hooked(home, monkeypatch, retrain_work["repo"]) as served:
        _retrains_up_to_the_gate(served, home, commit)


def _retrains_up_to_the_gate(served: Hooked, home: Path, commit: str) -> None:
    db, backend = served.db, served.backend
    body = push_body(commit)
    sent = headers(body, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    answer = served.post(body, sent)
    assert answer.status_code == 202, answer.text
    started = answer.json()
    assert started["status"] == "started" and started["pipeline"] == "retrain"
    assert (started["model"], started["commit"], started["package_dir"]) == ("cloud-mask", commit, "model")

    replay = served.post(body, sent)
    assert replay.status_code == 409 and "was already received" in replay.json()["detail"]
    assert DatabaseDeliveryLog(db).run_of(sent["X-GitHub-Delivery"]) == started["run_id"]

    run = backend.get(started["run_id"])
    deadline = time.monotonic() + 900  # training on 2 cores takes minutes; this only bounds a hang
    while run.phase not in (Phase.SUSPENDED, Phase.FAILED, Phase.ERROR, Phase.INTERRUPTED):
        assert time.monotonic() < deadline, f"run still {run.phase} after 15 minutes"
        time.sleep(3)
        run = backend.get(started["run_id"])
    assert run.phase == Phase.SUSPENDED, run.message
    assert run.waiting_gate == "approval"
    assert run.submitted_by == f"github:{REPOSITORY}"
    assert run.outputs["checkout"]["package"].endswith(f"/{commit}/model")
    assert "promote" not in run.outputs  # nothing is promoted without a person
    assert started["run_id"] in [r.run_id for r in backend.list()]
    assert [a.status for a in _audit(db, 2)] == [202, 409]
