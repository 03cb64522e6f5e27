"""What every route of the gateway reaches: settings, database, authenticator, backend, catalogue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from geomlops.gateway.auth import AuthenticationError, Authenticator, Permission, Principal
from geomlops.gateway.backends.base import RunBackend
from geomlops.gateway.catalogue import Catalogue
from geomlops.gateway.db import Database
from geomlops.gateway.settings import GatewaySettings
from geomlops.settings import Settings


@dataclass
class Gateway:
    """The gateway's parts, built once per app."""

    settings: Settings
    config: GatewaySettings
    db: Database
    auth: Authenticator
    backend: RunBackend
    catalogue: Catalogue


class ForbiddenError(Exception):
    """Raised when an authenticated caller's role does not grant what a route needs."""


def gateway(request: Request) -> Gateway:
    """The app's :class:`Gateway`."""
    found: Gateway = request.app.state.gateway
    return found


_bearer = HTTPBearer(auto_error=False, description="An API key (gmk_…) or an OIDC access token.")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (gmk_…).")


def require(permission: Permission) -> Any:
    """A dependency: the authenticated caller, who must hold ``permission``.

    The caller is kept on the request (``request.state.principal``) for the audit trail.
    """

    def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        api_key: Annotated[str | None, Security(_api_key)],
        parts: Annotated[Gateway, Depends(gateway)],
    ) -> Principal:
        authorization = f"{bearer.scheme} {bearer.credentials}" if bearer is not None else None
        if bearer is None and request.headers.get("authorization"):
            raise AuthenticationError("Authorization: expected 'Bearer TOKEN'")
        principal = parts.auth.authenticate(authorization, api_key)
        request.state.principal = principal
        if not principal.may(permission):
            raise ForbiddenError(
                f"role {principal.role.value!r} of {principal.name!r} does not allow {permission.value}"
            )
        return principal

    dependency.permission = permission  # type: ignore[attr-defined]  # read by the route table
    return Depends(dependency)
