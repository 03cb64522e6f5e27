"""Gateway fixtures: a small catalogue and registry, the gateway over real HTTP, a local JWKS.

``catalogued`` is a work folder holding the example model's base item and a registered model
with version 1 at alias ``production`` (its weights are not needed: nothing here predicts), so
routes that check a model, version or alias answer without training anything.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa

from geomlops.gateway.app import create_app
from geomlops.gateway.auth import create_key
from geomlops.gateway.settings import GatewaySettings
from geomlops.ports import free_port
from geomlops.settings import Settings

REPO = Path(__file__).resolve().parents[3]
ROLES = ("viewer", "operator", "approver", "admin")
MODEL = "cloud-mask"
ISSUER_AUDIENCE = "geomlops-gateway"


@dataclass
class Served:
    """A gateway answering on localhost, with one API key per role."""

    url: str
    app: Any
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, role: str | None = None, **headers: str) -> httpx.Client:
        """An HTTP client, with the key of ``role`` when given."""
        if role is not None:
            headers["Authorization"] = f"Bearer {self.keys[role]}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


def serve_in_thread(app: Any) -> tuple[str, uvicorn.Server, threading.Thread]:
    """Start uvicorn with ``app`` on a free port in a thread; return its URL once it answers."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the gateway did not start within 30 s"
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


class Issuer:
    """An OIDC issuer on localhost: an RSA key, its JWKS served over HTTP, tokens signed with it."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwks = json.dumps({"keys": [{**jwk, "kid": "test-key", "use": "sig", "alg": "RS256"}]}).encode()

        class Handler(BaseHTTPRequestHandler):
            body: ClassVar[bytes] = jwks

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(self.body)))
                self.end_headers()
                self.wfile.write(self.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, role: str | list[str], *, expires_in: int = 600, **claims: Any) -> str:
        """A token for ``alice-<role>@example.org`` with ``role``; negative ``expires_in``: expired."""
        now = int(time.time())
        name = role if isinstance(role, str) else "-".join(role)
        payload = {
            "iss": self.url,
            "aud": ISSUER_AUDIENCE,
            "sub": f"user-{name}",
            "email": f"alice-{name}@example.org",
            "iat": now - 30,
            "exp": now + expires_in,
            "geomlops_role": role,
            **claims,
        }
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": "test-key"})

    def close(self) -> None:
        """Stop serving the JWKS."""
        self.server.shutdown()


@pytest.fixture(scope="session")
def issuer() -> Iterator[Issuer]:
    """A local OIDC issuer (RSA key, JWKS over HTTP)."""
    found = Issuer()
    yield found
    found.close()


def _clean_env(monkeypatch: pytest.MonkeyPatch, home: Path, schema_dir: Path) -> None:
    for key in list(os.environ):
        if key.startswith(("GEOMLOPS_", "MLFLOW_")) and key not in (
            "GEOMLOPS_TEST_SCHEMA_DIR",
            "GEOMLOPS_TEST_SHARED",
        ):
            monkeypatch.delenv(key)
    monkeypatch.setenv("GEOMLOPS_HOME", str(home))
    monkeypatch.setenv("GEOMLOPS_SCHEMA_DIR", str(schema_dir))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")


@pytest.fixture(scope="module")
def catalogued(tmp_path_factory: pytest.TempPathFactory, schema_dir: Path) -> Iterator[Path]:
    """A work folder with the example model catalogued and version 1 registered at 'production'."""
    from mlflow import MlflowClient

    from steps.catalog import publish_base_item

    home = tmp_path_factory.mktemp("gateway-home")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _clean_env(monkeypatch, home, schema_dir)
        settings = Settings()
        publish_base_item(REPO / "examples" / MODEL, settings.catalog_href, schema_dir)
        client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
        client.create_registered_model(MODEL)
        version = client.create_model_version(MODEL, source=str(home / "no-weights"))
        client.set_registered_model_alias(MODEL, "production", version.version)
        yield home


@pytest.fixture(scope="module")
def gateway(catalogued: Path, issuer: Issuer, schema_dir: Path) -> Iterator[Served]:
    """The gateway on ``catalogued`` over real HTTP (uvicorn in a thread), OIDC from ``issuer``,
    one API key per role."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _clean_env(monkeypatch, catalogued, schema_dir)
        config = GatewaySettings(
            oidc_issuer=issuer.url,
            oidc_audience=ISSUER_AUDIENCE,
            oidc_jwks_url=f"{issuer.url}/jwks",
            max_body_bytes=64 * 1024,
        )
        app = create_app(Settings(), config)
        keys = {role: create_key(app.state.gateway.db, f"{role}-key", role).token for role in ROLES}
        url, server, thread = serve_in_thread(app)
        yield Served(url, app, keys)
        server.should_exit = True
        thread.join(10)
