"""Health, version, API keys and the audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, status
from sqlalchemy import select, text

from geomlops import __version__
from geomlops.gateway.auth import Permission, Principal, create_key, list_keys, revoke_key
from geomlops.gateway.context import Gateway, gateway, require
from geomlops.gateway.db import AuditEntry
from geomlops.gateway.schemas import (
    AuditRecord,
    Health,
    KeyInfo,
    KeyRequest,
    NewKey,
    Version,
    WebConfig,
    WhoAmI,
)

router = APIRouter(prefix="/api/v1")
Parts = Annotated[Gateway, Depends(gateway)]
Reader = Annotated[Principal, require(Permission.READ)]
Admin = Annotated[Principal, require(Permission.MANAGE_KEYS)]

#: routes anyone may call: liveness for probes and load balancers, the API's description, and
#: GitHub's webhook (its body's signature authenticates it; see :mod:`geomlops.gateway.webhooks`)
#: and what the web app needs before its user signs in (the basemap setting, the release)
PUBLIC_PATHS = frozenset(
    {"/api/v1/health", "/api/v1/openapi.json", "/api/v1/webhooks/github", "/api/v1/config"}
)


@router.get("/health", tags=["system"], summary="Liveness and database")
def health(parts: Parts) -> Health:
    """Whether the gateway answers and reaches its database (no credentials needed)."""
    with parts.db.session() as session:
        session.execute(text("SELECT 1"))
    return Health(status="ok", database=parts.db.engine.dialect.name, backend=parts.backend.name)


@router.get("/version", tags=["system"], summary="The gateway's release")
def version(caller: Reader) -> Version:
    """The geomlops release serving this API."""
    return Version(version=__version__, api="v1")


@router.get("/config", tags=["system"], summary="The web app's settings")
def config(parts: Parts) -> WebConfig:
    """The basemap URL (null: none, the app works offline) and the release (no credentials needed)."""
    return WebConfig(basemap_url=parts.config.basemap_url, version=__version__)


@router.get("/whoami", tags=["system"], summary="The caller")
def whoami(caller: Reader) -> WhoAmI:
    """The key id, name and role of the caller's credentials."""
    return WhoAmI(key_id=caller.key_id, name=caller.name, role=caller.role)


def _info(key: object) -> KeyInfo:
    return KeyInfo.model_validate(key, from_attributes=True)


@router.get("/keys", tags=["keys"], summary="List API keys")
def keys(parts: Parts, caller: Admin) -> list[KeyInfo]:
    """Every key with its role and whether it is revoked; never a token or a hash."""
    return [_info(k) for k in list_keys(parts.db)]


@router.post("/keys", tags=["keys"], status_code=status.HTTP_201_CREATED, summary="Create an API key")
def new_key(body: KeyRequest, request: Request, parts: Parts, caller: Admin) -> NewKey:
    """Create a key; its token is in this answer only (it is stored hashed)."""
    created = create_key(parts.db, body.name, body.role.value, created_by=caller.name)
    request.state.audit_detail = f"created key {created.key_id} ({created.name}, {created.role.value})"
    info = next(k for k in list_keys(parts.db) if k.key_id == created.key_id)
    return NewKey(**_info(info).model_dump(), token=created.token)


@router.delete("/keys/{key_id}", tags=["keys"], summary="Revoke an API key")
def delete_key(
    key_id: Annotated[str, Path(max_length=32)], request: Request, parts: Parts, caller: Admin
) -> KeyInfo:
    """Revoke a key: it authenticates nothing from now on."""
    key = revoke_key(parts.db, key_id)
    request.state.audit_detail = f"revoked key {key_id}"
    return _info(key)


@router.get("/audit", tags=["keys"], summary="The audit trail")
def audit(
    parts: Parts, caller: Admin, limit: Annotated[int, Query(ge=1, le=10000)] = 100
) -> list[AuditRecord]:
    """The latest audited writes, newest first."""
    with parts.db.session() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit))
        return [AuditRecord.model_validate(r, from_attributes=True) for r in rows]
