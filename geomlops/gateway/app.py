"""The gateway's FastAPI application: routes, authentication, audit, errors, CORS, body limit."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from geomlops import __version__
from geomlops.errors import (
    AoiError,
    CatalogUnavailableError,
    ChipError,
    GeomlopsError,
    ItemNotFoundError,
    ModelNotFoundError,
    ParameterError,
    PromotionError,
)
from geomlops.gateway.auth import AuthenticationError, Authenticator, KeyManagementError
from geomlops.gateway.backends import make_backend
from geomlops.gateway.backends.base import (
    BackendUnavailableError,
    GateNotWaitingError,
    RunBackend,
    RunNotFoundError,
    RunStateError,
)
from geomlops.gateway.catalogue import Catalogue
from geomlops.gateway.context import ForbiddenError, Gateway
from geomlops.gateway.db import Database
from geomlops.gateway.inference import TooLargeError, UnsupportedMediaTypeError
from geomlops.gateway.middleware import Audit, BodyLimit
from geomlops.gateway.settings import GatewaySettings
from geomlops.settings import Settings, get_settings

_log = logging.getLogger("geomlops.gateway")

#: HTTP status of each error the gateway answers with (the first match of the error's classes)
_STATUS: list[tuple[type[Exception], int]] = [
    (AuthenticationError, 401),
    (ForbiddenError, 403),
    (ModelNotFoundError, 404),
    (ItemNotFoundError, 404),
    (RunNotFoundError, 404),
    (GateNotWaitingError, 409),
    (RunStateError, 409),
    (ParameterError, 422),
    (AoiError, 422),
    (ChipError, 422),
    (TooLargeError, 413),
    (UnsupportedMediaTypeError, 415),
    (PromotionError, 422),
    (KeyManagementError, 422),
    (CatalogUnavailableError, 503),
    (BackendUnavailableError, 503),
    (GeomlopsError, 400),
]


async def _error(request: Request, err: Exception) -> JSONResponse:
    code = next(c for kind, c in _STATUS if isinstance(err, kind))
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
    _refused_for_audit(request, str(err))
    return JSONResponse({"detail": str(err)}, status_code=code, headers=headers)


def _refused_for_audit(request: Request, why: str) -> None:
    """A refused write's reason in its audit line (the messages never echo a secret)."""
    if not getattr(request.state, "audit_detail", None):
        request.state.audit_detail = f"refused: {why}"


async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, naming each field, without echoing the input (it may hold a secret).

    A body that cannot be read is found before the route's authentication runs: the caller is
    authenticated first, so that an unknown one gets 401 and a known one is named in the audit
    trail."""
    from geomlops.gateway.context import authenticate_request, required_permission

    if required_permission(request) is not None and getattr(request.state, "principal", None) is None:
        try:
            authenticate_request(request)
        except AuthenticationError as refused:
            return await _error(request, refused)
    fields = _body_fields(request)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": _hint(e, fields), "type": e.get("type", "")}
        for e in err.errors()
    ]
    _refused_for_audit(request, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
    return JSONResponse({"detail": errors}, status_code=422)


def _body_fields(request: Request) -> set[str]:
    """The fields of the body the request's route takes (none known: empty)."""
    body = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(body, "field_info", None), "annotation", None)
    return set(getattr(model, "model_fields", None) or {})


def _hint(error: Mapping[str, Any], fields: set[str]) -> str:
    """The validation message; for a field a request does not take, what to give instead: the
    CLI's ``model_version`` is ``version``; where the body has ``parameters``, a pipeline's
    parameter goes there; else the fields it takes."""
    msg = str(error.get("msg", ""))
    loc = list(error.get("loc", ()))
    if error.get("type") != "extra_forbidden" or loc[:1] != ["body"] or len(loc) != 2:
        return msg
    field = str(loc[1])
    if field == "model_version" and "version" in fields:
        return f"{msg}: here it is 'version' (a number) or 'alias'"
    if field == "approver":
        return f"{msg}: the approver is the caller (the key's name, or the token's email)"
    if "parameters" in fields:
        return f"{msg}: a pipeline's parameter goes in 'parameters' ({{\"{field}\": …}})"
    return f"{msg}: this request takes {', '.join(sorted(fields))}" if fields else msg


def create_app(
    settings: Settings | None = None,
    config: GatewaySettings | None = None,
    backend: RunBackend | None = None,
) -> FastAPI:
    """Build the gateway (its database migrated to the newest schema first).

    Args:
        settings: the core settings; default: from the environment.
        config: the gateway's settings; default: from the environment (``GEOMLOPS_GATEWAY_*``).
        backend: where runs go; default: the one ``config.backend`` names.
    """
    from geomlops.gateway import (
        routes_admin,
        routes_imagery,
        routes_inference,
        routes_models,
        routes_runs,
        webhooks,
    )
    from geomlops.gateway.webapp import mount_web_app

    settings = settings or get_settings()
    config = config or GatewaySettings()
    db = Database(config.database(settings.home_dir))
    parts = Gateway(
        settings=settings,
        config=config,
        db=db,
        auth=Authenticator(db, config),
        backend=backend or make_backend(settings, config),
        catalogue=Catalogue(settings),
    )
    app = FastAPI(
        title="geomlops gateway",
        version=__version__,
        description=(
            "One authenticated API over the model catalogue, the workflows (training, batch "
            "inference, promotion behind a person's approval) and their outputs. Authenticate "
            "with 'Authorization: Bearer KEY' (an API key or an OIDC token) or 'X-API-Key: KEY'."
        ),
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = parts
    app.include_router(routes_admin.router)
    app.include_router(routes_models.router)
    app.include_router(routes_models.stac)
    app.include_router(routes_runs.router)
    app.include_router(routes_inference.router)
    app.include_router(routes_imagery.router)
    app.include_router(webhooks.router)  # authenticated by its signature, not by a key
    mount_web_app(app)
    for kind, _code in _STATUS:
        app.add_exception_handler(kind, _error)
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    # outermost first: the audit line sees every answer, the body limit's 413 included
    chip_limit = max(config.max_body_bytes, settings.serving_max_image_bytes)
    app.add_middleware(
        BodyLimit, max_bytes=config.max_body_bytes, larger={routes_inference.CHIP_PATH: (chip_limit, "chip")}
    )
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(Audit, db=db)
    return app
