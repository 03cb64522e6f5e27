"""What every route of the gateway reaches: settings, database, authenticator, backend, catalogue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from geomlops.gateway.auth import Authenticator, Permission, Principal
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


def authenticate_request(request: Request) -> Principal:
    """The caller of ``request`` by its headers (Bearer token or X-API-Key), kept on the request.

    Raises:
        AuthenticationError: no credentials, or ones that are wrong, revoked or expired.
    """
    headers = request.headers
    principal = gateway(request).auth.authenticate(headers.get("authorization"), headers.get("x-api-key"))
    request.state.principal = principal
    return principal


def required_permission(request: Request) -> Permission | None:
    """The permission the request's route requires (:func:`require`), or None for an open one."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    for dependency in getattr(dependant, "dependencies", None) or []:
        permission = getattr(dependency.call, "permission", None)
        if isinstance(permission, Permission):
            return permission
    return None


def require(permission: Permission) -> Any:
    """A dependency: the authenticated caller, who must hold ``permission``.

    The caller is kept on the request (``request.state.principal``) for the audit trail.
    """

    def dependency(
        request: Request,
        # declared for the OpenAPI document's security schemes; read from the headers below
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        api_key: Annotated[str | None, Security(_api_key)],
    ) -> Principal:
        principal = authenticate_request(request)
        if not principal.may(permission):
            raise ForbiddenError(
                f"role {principal.role.value!r} of {principal.name!r} does not allow {permission.value}"
            )
        return principal

    dependency.permission = permission  # type: ignore[attr-defined]  # read by the route table
    return Depends(dependency)
