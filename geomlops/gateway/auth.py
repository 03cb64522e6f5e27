"""Who is calling and what they may do: API keys, OIDC bearer tokens, roles.

An API key is ``gmk_<id>_<secret>``: the id finds the key, the SHA-256 of the whole token is
compared in constant time with the stored one; the token itself is shown once, when created,
and stored nowhere. A bearer token that is not an API key is an OIDC JWT, checked against the
configured issuer's JWKS (signature, ``exp``, ``iss``, ``aud``), its role read from a claim.

Roles grant permissions: viewer reads; operator starts and stops runs; approver decides gates;
admin does everything, keys and rollbacks included.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any

import jwt
from sqlalchemy import select

from geomlops.errors import GeomlopsError
from geomlops.gateway.db import ApiKey, Database, utcnow
from geomlops.gateway.settings import GatewaySettings

KEY_PREFIX = "gmk_"


class Role(StrEnum):
    """A caller's role."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


class Permission(StrEnum):
    """What a route needs."""

    READ = "read"
    RUN = "run"
    DECIDE = "decide"
    MANAGE_KEYS = "manage-keys"
    ROLLBACK = "rollback"


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.OPERATOR: frozenset({Permission.READ, Permission.RUN}),
    Role.APPROVER: frozenset({Permission.READ, Permission.DECIDE}),
    Role.ADMIN: frozenset(Permission),
}


class AuthenticationError(GeomlopsError):
    """Raised when a request carries no credentials, or ones that are wrong, revoked or expired."""


class KeyManagementError(GeomlopsError):
    """Raised when a key cannot be created or revoked (bad name or role, unknown id)."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the name recorded as approver and in the audit trail."""

    name: str
    role: Role
    via: str  # "api-key" or "oidc"
    key_id: str = ""

    def may(self, permission: Permission) -> bool:
        """Whether the caller's role grants ``permission``."""
        return permission in GRANTS[self.role]


@dataclass(frozen=True)
class CreatedKey:
    """A new key: the token is in this object only, never stored."""

    key_id: str
    name: str
    role: Role
    token: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_role(value: str, where: str = "role") -> Role:
    """Return the role named ``value``.

    Raises:
        KeyManagementError: no such role (the message lists them).
    """
    try:
        return Role(value)
    except ValueError as err:
        roles = ", ".join(r.value for r in Role)
        raise KeyManagementError(f"{where}: {value!r} is not a role (expected one of {roles})") from err


def create_key(db: Database, name: str, role: str, *, created_by: str = "") -> CreatedKey:
    """Create an API key named ``name`` with ``role``; the returned token is shown once.

    Raises:
        KeyManagementError: the name is empty or too long, or the role unknown.
    """
    name = name.strip()
    if not 1 <= len(name) <= 100 or not name.isprintable():
        raise KeyManagementError(f"name {name!r}: expected 1 to 100 printable characters")
    checked = parse_role(role)
    key_id = secrets.token_hex(6)
    token = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    with db.session() as session:
        session.add(
            ApiKey(
                key_id=key_id,
                name=name,
                role=checked.value,
                token_sha256=_digest(token),
                created_by=created_by,
            )
        )
    return CreatedKey(key_id, name, checked, token)


def list_keys(db: Database) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first (hashes stay in the database)."""
    with db.session() as session:
        return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_key(db: Database, key_id: str) -> ApiKey:
    """Revoke key ``key_id`` (idempotent: a revoked key stays revoked).

    Raises:
        KeyManagementError: no key has that id.
    """
    with db.session() as session:
        key = session.get(ApiKey, key_id)
        if key is None:
            raise KeyManagementError(f"key_id {key_id!r}: no such API key")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
        return key


def verify_key(db: Database, token: str) -> Principal:
    """Return the caller an API key names.

    Raises:
        AuthenticationError: malformed, unknown, wrong or revoked key.
    """
    key_id, _, secret = token.removeprefix(KEY_PREFIX).partition("_")
    with db.session() as session:
        key = session.get(ApiKey, key_id) if key_id and secret else None
        # compare even when no key was found, so timing says nothing about which ids exist
        expected = key.token_sha256 if key is not None else _digest("")
        matches = hmac.compare_digest(expected, _digest(token))
        if key is None or not matches:
            raise AuthenticationError("invalid API key")
        if key.revoked_at is not None:
            raise AuthenticationError("API key revoked")
        return Principal(key.name, Role(key.role), "api-key", key.key_id)


class OidcVerifier:
    """Checks OIDC bearer JWTs against the issuer's JWKS (fetched lazily, cached)."""

    def __init__(self, settings: GatewaySettings) -> None:
        if not settings.oidc_issuer:
            raise ValueError("OidcVerifier needs GEOMLOPS_GATEWAY_OIDC_ISSUER")
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.jwks_url = settings.oidc_jwks_url or f"{self.issuer.rstrip('/')}/.well-known/jwks.json"
        self.role_claim = settings.oidc_role_claim
        self.subject_claim = settings.oidc_subject_claim

    @cached_property
    def _keys(self) -> jwt.PyJWKClient:
        return jwt.PyJWKClient(self.jwks_url, cache_keys=True, lifespan=300, timeout=10)

    def verify(self, token: str) -> Principal:
        """Return the caller a token names.

        Raises:
            AuthenticationError: bad signature, expired, wrong issuer or audience, no role.
        """
        try:
            key = self._keys.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp", "iss", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError as err:
            raise AuthenticationError("bearer token expired") from err
        except jwt.PyJWKClientConnectionError as err:
            raise AuthenticationError(
                "bearer token cannot be checked: the issuer's JWKS is unreachable"
            ) from err
        except jwt.PyJWTError as err:
            raise AuthenticationError(f"invalid bearer token: {err}") from err
        return Principal(self._name(claims), self._role(claims), "oidc")

    def _name(self, claims: dict[str, Any]) -> str:
        name = claims.get(self.subject_claim) or claims.get("sub")
        return str(name)

    def _role(self, claims: dict[str, Any]) -> Role:
        value = claims.get(self.role_claim)
        values = value if isinstance(value, list) else [value]
        roles = [Role(v) for v in values if v in {r.value for r in Role}]
        if not roles:
            raise AuthenticationError(f"bearer token: claim {self.role_claim!r} names no geomlops role")
        order = list(Role)
        return max(roles, key=order.index)


class Authenticator:
    """Turns a request's ``Authorization`` (or ``X-API-Key``) header into a :class:`Principal`."""

    def __init__(self, db: Database, settings: GatewaySettings) -> None:
        self.db = db
        self.oidc = OidcVerifier(settings) if settings.oidc_issuer else None

    def authenticate(self, authorization: str | None, api_key: str | None) -> Principal:
        """Return the caller.

        Raises:
            AuthenticationError: no credentials, or wrong, revoked or expired ones.
        """
        token = api_key
        if token is None and authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise AuthenticationError("Authorization: expected 'Bearer TOKEN'")
            token = value.strip()
        if not token:
            raise AuthenticationError("no credentials: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
        if token.startswith(KEY_PREFIX):
            return verify_key(self.db, token)
        if self.oidc is None:
            raise AuthenticationError(
                "invalid API key (bearer tokens are not accepted: no OIDC issuer is set)"
            )
        return self.oidc.verify(token)
