"""The gateway's FastAPI application: routes, authentication, audit, errors, CORS, body limit."""

from __future__ import annotations

import logging

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
    return JSONResponse({"detail": str(err)}, status_code=code, headers=headers)


async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, naming each field, without echoing the input (it may hold a secret)."""
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in err.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


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
