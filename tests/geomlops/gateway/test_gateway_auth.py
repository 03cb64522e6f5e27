"""Every route of the gateway × every role × bad credentials, over real HTTP; keys; audit; OIDC."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from geomlops.gateway.auth import GRANTS, Permission, Role
from geomlops.gateway.routes_admin import PUBLIC_PATHS

from .conftest import ROLES, Issuer, Served

GEOMLOPS = str(Path(sys.executable).parent / "geomlops")
#: a value for each path parameter: names nothing that exists, so no call changes anything
PATH_VALUES = {
    "run_id": "no-such-run",
    "model_id": "no-such-model",
    "key_id": "nokey",
    "imagery_id": "no-such-imagery",
    "collection": "models",
    "item_id": "no-such-item",
    "z": "0",
    "x": "0",
    "y": "0",
}


def _permission(dependant: Any) -> Permission | None:
    """The permission a route's ``require`` dependency asks for (searched through sub-dependencies)."""
    for sub in dependant.dependencies:
        found = getattr(sub.call, "permission", None) or _permission(sub)
        if found is not None:
            return Permission(found)
    return None


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):  # an included router (FastAPI keeps it whole)
            found += _api_routes(route.original_router.routes)
    return found


def routes(app: Any) -> list[tuple[str, str, Permission | None]]:
    """(method, path, permission) of every route of the app: a new route cannot be missed, and
    the list is checked equal to the operations of the app's OpenAPI document."""
    table = []
    for route in _api_routes(app.routes):
        for method in sorted(route.methods or ()):
            table.append((method, route.path, _permission(route.dependant)))
    operations = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    assert {(m, p) for m, p, _ in table} == operations
    return table


def _url(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)


def test_every_route_needs_a_permission_except_the_public_ones(gateway: Served) -> None:
    table = routes(gateway.app)
    assert len(table) >= 15
    public = {path for _method, path, permission in table if permission is None}
    assert public == PUBLIC_PATHS - {"/api/v1/openapi.json"}  # the document is served by FastAPI itself
    with gateway.client() as client:
        assert client.get("/api/v1/health").status_code == 200
        assert client.get("/api/v1/openapi.json").status_code == 200


def test_auth_matrix_every_route_every_role_and_bad_credentials(gateway: Served, issuer: Issuer) -> None:
    forged = issuer.token("admin")
    header, payload, _signature = forged.split(".")
    bad: dict[str, dict[str, str]] = {
        "no credentials": {},
        "wrong key": {"Authorization": "Bearer gmk_000000000000_" + "x" * 43},
        "wrong key header": {"X-API-Key": gateway.keys["admin"][:-2] + "zz"},
        "not bearer": {"Authorization": f"Basic {gateway.keys['admin']}"},
        "expired token": {"Authorization": f"Bearer {issuer.token('admin', expires_in=-60)}"},
        "forged token": {"Authorization": f"Bearer {header}.{payload}.{'A' * 342}"},
        "wrong audience": {"Authorization": f"Bearer {issuer.token('admin', aud='someone-else')}"},
    }
    good = {f"{role} key": ({"Authorization": f"Bearer {gateway.keys[role]}"}, role) for role in ROLES}
    good |= {f"{role} token": ({"Authorization": f"Bearer {issuer.token(role)}"}, role) for role in ROLES}
    checked = 0
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        for method, path, permission in routes(gateway.app):
            if permission is None:
                continue
            for label, headers in bad.items():
                answer = client.request(method, _url(path), headers=headers)
                assert answer.status_code == 401, (method, path, label, answer.text)
                assert answer.headers["www-authenticate"] == "Bearer"
                checked += 1
            for label, (headers, role) in good.items():
                answer = client.request(method, _url(path), headers=headers)
                if permission in GRANTS[Role(role)]:
                    assert answer.status_code not in (401, 403), (method, path, label, answer.text)
                else:
                    assert answer.status_code == 403, (method, path, label, answer.text)
                    assert role in answer.json()["detail"]
                checked += 1
    assert checked >= 15 * (len(bad) + len(good))


def test_a_token_role_comes_from_its_claim(gateway: Served, issuer: Issuer) -> None:
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        many = {"Authorization": f"Bearer {issuer.token(['viewer', 'approver'])}"}
        assert client.get("/api/v1/runs", headers=many).status_code == 200
        none = {"Authorization": f"Bearer {issuer.token('superuser')}"}
        answer = client.get("/api/v1/runs", headers=none)
        assert answer.status_code == 401 and "geomlops_role" in answer.json()["detail"]
        wrong_issuer = {"Authorization": f"Bearer {issuer.token('admin', iss='http://elsewhere')}"}
        assert client.get("/api/v1/runs", headers=wrong_issuer).status_code == 401


def test_keys_created_listed_revoked_over_the_api_and_never_shown_again(gateway: Served) -> None:
    with gateway.client("admin") as admin:
        created = admin.post("/api/v1/keys", json={"name": "ci-bot", "role": "operator"})
        assert created.status_code == 201, created.text
        token, key_id = created.json()["token"], created.json()["key_id"]
        assert token.startswith(f"gmk_{key_id}_")
        listed = admin.get("/api/v1/keys")
        assert key_id in listed.text and token not in listed.text
        assert "token" not in listed.json()[0] and "token_sha256" not in listed.json()[0]
        with gateway.client(Authorization=f"Bearer {token}") as bot:
            assert bot.get("/api/v1/runs").status_code == 200
            assert bot.get("/api/v1/keys").status_code == 403
            revoked = admin.delete(f"/api/v1/keys/{key_id}")
            assert revoked.status_code == 200 and revoked.json()["revoked_at"]
            answer = bot.get("/api/v1/runs")
            assert answer.status_code == 401 and "revoked" in answer.json()["detail"]
        bad_role = admin.post("/api/v1/keys", json={"name": "x", "role": "root"})
        assert bad_role.status_code == 422 and bad_role.json()["detail"][0]["loc"] == ["body", "role"]
        audit = admin.get("/api/v1/audit").json()
    assert token not in str(audit)
    lines = [a for a in audit if a["target"] in ("/api/v1/keys", f"/api/v1/keys/{key_id}")]
    assert {(a["method"], a["status"], a["actor"]) for a in lines} >= {
        ("POST", 201, "admin-key"),
        ("DELETE", 200, "admin-key"),
        ("POST", 422, "admin-key"),
    }
    assert any(a["detail"] == f"created key {key_id} (ci-bot, operator)" for a in lines)


def test_every_write_is_audited_even_refused_ones_and_reads_are_not(gateway: Served) -> None:
    with gateway.client(Authorization="Bearer gmk_nope_nope") as stranger:
        assert stranger.post("/api/v1/runs/no-such-run/stop").status_code == 401
        assert stranger.get("/api/v1/runs").status_code == 401
    with gateway.client("viewer") as viewer:
        assert viewer.post("/api/v1/runs/no-such-run/approve", json={"reason": "x"}).status_code == 403
    with gateway.client("admin") as admin:
        audit = admin.get("/api/v1/audit", params={"limit": 10}).json()
    assert audit[0]["method"] == "POST" and audit[0]["actor"] == "viewer-key" and audit[0]["status"] == 403
    assert audit[0]["action"] == "POST /api/v1/runs/{run_id}/approve"
    assert audit[0]["client"] == "127.0.0.1" and audit[0]["at"]
    assert audit[1]["actor"] == "anonymous" and audit[1]["status"] == 401
    assert all(a["method"] != "GET" for a in audit)


def test_no_secret_in_responses_or_logs(gateway: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    secret = gateway.keys["operator"]
    with gateway.client("operator") as operator:
        answers = [operator.get("/api/v1/runs"), operator.post("/api/v1/runs/training", json={"model": "x"})]
    assert all(secret not in a.text for a in answers)
    assert secret not in caplog.text
    with gateway.client("admin") as admin:
        assert secret not in admin.get("/api/v1/audit", params={"limit": 1000}).text
        assert secret not in admin.get("/api/v1/keys").text


def test_cors_is_closed_by_default(gateway: Served) -> None:
    with gateway.client() as client:
        answer = client.options(
            "/api/v1/models",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in answer.headers


def test_cli_creates_lists_and_revokes_keys(tmp_path: Path) -> None:
    env = {"GEOMLOPS_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    created = subprocess.run(
        [GEOMLOPS, "gateway", "keys", "create", "alice", "--role", "approver"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    token = created.stdout.strip()
    key_id = token.split("_")[1]
    assert re.fullmatch(r"gmk_[0-9a-f]{12}_[\w-]{43}", token) and "not shown again" in created.stderr
    assert "cannot approve" not in created.stderr
    # a key that may decide, under a name no decision can record: created, with a warning
    for role, warned in (("approver", True), ("admin", True), ("operator", False)):
        bot = subprocess.run(
            [GEOMLOPS, "gateway", "keys", "create", "ci_bot2", "--role", role],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert ("! this key cannot approve or refuse" in bot.stderr) is warned, bot.stderr
        assert "approver 'ci_bot2': expected a person's name" in bot.stderr or not warned
    listed = subprocess.run([GEOMLOPS, "gateway", "keys", "list"], env=env, capture_output=True, text=True)
    assert f"{key_id}\talice\tapprover" in listed.stdout and token not in listed.stdout
    secret = token.split("_", 2)[2]  # URL-safe base64: it may hold "_" itself
    assert len(secret) == 43 and secret not in (tmp_path / "gateway.db").read_bytes().decode("latin-1")
    subprocess.run([GEOMLOPS, "gateway", "keys", "revoke", key_id], env=env, check=True, capture_output=True)
    listed = subprocess.run([GEOMLOPS, "gateway", "keys", "list"], env=env, capture_output=True, text=True)
    assert "revoked" in listed.stdout
    bad = subprocess.run(
        [GEOMLOPS, "gateway", "keys", "revoke", "nokey"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "key_id 'nokey'" in bad.stderr
