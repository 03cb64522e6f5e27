"""GitHub's signed webhook: a push to a model repository starts its retrain run.

GitHub (or the CI workflow that ``geomlops gateway ci-workflow`` renders) posts a delivery with
``X-Hub-Signature-256: sha256=<HMAC-SHA256 of the raw body with the shared secret>``,
``X-GitHub-Event`` and ``X-GitHub-Delivery`` (a unique id). A delivery is checked in this
order, and a refused one starts nothing:

1. the body is no larger than the configured limit (413);
2. the signature matches, compared in constant time (401);
3. ``ping`` is answered (200); events other than ``push`` are acknowledged and ignored (202);
4. the repository (``repository.full_name``) is mapped to a model (403);
5. the push is to the mapped branch and not a deletion, else acknowledged and ignored (202);
6. the delivery id was never received before (409): ids are kept in the gateway's database,
   claimed before the run starts and released if it could not start, so GitHub's redelivery
   of a failed attempt is accepted once;
7. the ``retrain`` pipeline starts through the gateway's run backend with the model id, the
   repository's clone URL and the pushed commit (202). It stops at the approval gate.

Every delivery, refused or not, leaves one line in the gateway's audit trail (its audit
middleware writes it; the route says who sent it and what came of it). The gateway mounts
:data:`router`; the configuration file is named by ``GEOMLOPS_GATEWAY_WEBHOOK_CONFIG``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol

import yaml
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import DateTime, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column
from starlette.concurrency import run_in_threadpool

from geomlops.errors import ConfigurationError, GeomlopsError
from geomlops.gateway.backends.base import RunBackend
from geomlops.gateway.context import Gateway, gateway
from geomlops.gateway.db import Base, Database, utcnow
from steps.retrain import COMMIT

#: the pipeline a push starts
PIPELINE = "retrain"
#: where the gateway mounts the router (under its API prefix)
WEBHOOK_PATH = "/webhooks/github"
SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"
_DELETED = "0" * 40


class WebhookRepository(BaseModel):
    """What a push to one repository retrains."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1, description="The model id (its item in the catalogue) the repository holds."
    )
    branch: str = Field(default="main", min_length=1, description="Only pushes to this branch retrain.")
    package_dir: str = Field(default="", description="The model package's folder in the repository.")
    clone_url: str | None = Field(
        default=None, description="Where the run clones from; default: the push's repository.clone_url."
    )


class WebhookConfig(BaseModel):
    """The webhook's secret and the repositories it accepts (``owner/name`` → what to retrain)."""

    model_config = ConfigDict(extra="forbid")

    secret: SecretStr = Field(description="The secret shared with GitHub (at least 16 characters).")
    repositories: dict[str, WebhookRepository] = Field(default_factory=dict)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0, description="Largest delivery accepted (bytes).")

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("at least 16 characters expected")
        return value


def load_webhook_config(path: Path) -> WebhookConfig:
    """Read the webhook's configuration from a YAML file.

    Raises:
        ConfigurationError: the file is missing, not YAML, or a field is wrong (named).
    """
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigurationError(f"{path}: cannot read the webhook configuration ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise ConfigurationError(f"{path}: not valid YAML ({err})") from err
    try:
        return WebhookConfig.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors()
        )
        raise ConfigurationError(f"{path}: {problems}") from err


def signature(body: bytes, secret: str) -> str:
    """GitHub's ``X-Hub-Signature-256`` value for ``body``: ``sha256=`` and the hex HMAC."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_matches(body: bytes, header: str | None, secret: str) -> bool:
    """Whether ``header`` is the signature of ``body`` (compared in constant time)."""
    if not header:
        return False
    return hmac.compare_digest(header.strip().encode(), signature(body, secret).encode())


class WebhookDelivery(Base):
    """A delivery the webhook accepted; its id is never accepted again."""

    __tablename__ = "webhook_deliveries"

    delivery_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    event: Mapped[str] = mapped_column(String(50))
    repository: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[Any] = mapped_column(DateTime(timezone=True), default=utcnow)
    run_id: Mapped[str] = mapped_column(String(250), default="")


class DeliveryLog(Protocol):
    """Remembers delivery ids, so that a replayed delivery starts nothing."""

    def claim(self, delivery_id: str, *, event: str, repository: str) -> bool:
        """Record ``delivery_id``; False when it was recorded before (by any process)."""
        ...

    def started(self, delivery_id: str, run_id: str) -> None:
        """Note the run a claimed delivery started."""
        ...

    def release(self, delivery_id: str) -> None:
        """Forget a claimed delivery whose run could not start (a redelivery may try again)."""
        ...


class DatabaseDeliveryLog:
    """:class:`DeliveryLog` in the gateway's database (the primary key makes a claim atomic)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(self, delivery_id: str, *, event: str, repository: str) -> bool:
        """Insert the delivery; False when its id is already there."""
        try:
            with self.db.session() as session:
                session.add(WebhookDelivery(delivery_id=delivery_id, event=event, repository=repository))
        except IntegrityError:
            return False
        return True

    def started(self, delivery_id: str, run_id: str) -> None:
        """Record the run id on the delivery."""
        with self.db.session() as session:
            row = session.get(WebhookDelivery, delivery_id)
            if row is not None:
                row.run_id = run_id

    def release(self, delivery_id: str) -> None:
        """Delete the delivery's row."""
        with self.db.session() as session:
            row = session.get(WebhookDelivery, delivery_id)
            if row is not None:
                session.delete(row)

    def run_of(self, delivery_id: str) -> str | None:
        """The run a delivery started, or None when it is unknown."""
        with self.db.session() as session:
            return session.scalar(
                select(WebhookDelivery.run_id).where(WebhookDelivery.delivery_id == delivery_id)
            )


@dataclass
class WebhookOutcome:
    """The answer to one delivery, and what the audit line says of it."""

    status_code: int
    body: dict[str, Any]
    actor: str = "github"
    started: dict[str, str] = field(default_factory=dict)


def _refused(code: int, detail: str, actor: str = "github") -> WebhookOutcome:
    return WebhookOutcome(code, {"detail": detail}, actor)


def handle_delivery(
    headers: Mapping[str, str],
    body: bytes,
    config: WebhookConfig,
    deliveries: DeliveryLog,
    backend: RunBackend,
) -> WebhookOutcome:
    """Check one delivery and start the retrain run it asks for (the steps in the module's doc).

    Args:
        headers: the request's headers (names in any case).
        body: the raw request body, exactly as signed.
        config: the secret and the repository mapping.
        deliveries: the delivery ids already received.
        backend: where the run starts.

    Returns:
        The HTTP status and JSON body to answer with.
    """
    head = {k.lower(): v for k, v in headers.items()}
    if len(body) > config.max_body_bytes:
        return _refused(413, f"body: {len(body)} bytes, more than the {config.max_body_bytes} accepted")
    if not signature_matches(body, head.get(SIGNATURE_HEADER.lower()), config.secret.get_secret_value()):
        return _refused(
            401, f"{SIGNATURE_HEADER}: missing or not the HMAC-SHA256 of the body with the shared secret"
        )
    event = head.get(EVENT_HEADER.lower(), "")
    delivery = head.get(DELIVERY_HEADER.lower(), "")
    if not event or not delivery or len(delivery) > 100:
        return _refused(400, f"{EVENT_HEADER} and {DELIVERY_HEADER} (at most 100 characters) are required")
    try:
        payload = json.loads(body)
    except ValueError:
        return _refused(400, "body: not JSON (set the webhook's content type to application/json)")
    if not isinstance(payload, dict):
        return _refused(400, "body: expected a JSON object")
    found = payload.get("repository")
    repository: dict[str, Any] = found if isinstance(found, dict) else {}
    full_name = str(repository.get("full_name") or "")
    actor = f"github:{full_name or 'unknown'}"
    if event == "ping":
        return WebhookOutcome(
            200, {"status": "pong", "repository_known": full_name in config.repositories}, actor
        )
    if event != "push":
        return WebhookOutcome(202, {"status": "ignored", "reason": f"event '{event}' starts nothing"}, actor)
    target = config.repositories.get(full_name)
    if target is None:
        return _refused(403, f"repository.full_name: '{full_name}' is not mapped to a model here", actor)
    ref, commit = str(payload.get("ref") or ""), str(payload.get("after") or "")
    if ref != f"refs/heads/{target.branch}" or commit == _DELETED:
        why = "a deleted branch" if commit == _DELETED else f"'{ref}' is not refs/heads/{target.branch}"
        return WebhookOutcome(202, {"status": "ignored", "reason": f"ref: {why}"}, actor)
    if not COMMIT.fullmatch(commit):
        return _refused(400, f"after: {commit!r} is not a commit id", actor)
    clone_url = target.clone_url or str(repository.get("clone_url") or "")
    if not clone_url:
        return _refused(400, "repository.clone_url: missing (and no clone_url configured)", actor)
    if not deliveries.claim(delivery, event=event, repository=full_name):
        return _refused(409, f"{DELIVERY_HEADER}: delivery '{delivery}' was already received", actor)
    parameters = {
        "model": target.model,
        "repository": clone_url,
        "commit": commit,
        "package_dir": target.package_dir,
    }
    try:
        run = backend.submit(PIPELINE, parameters, submitted_by=actor)
    except GeomlopsError as err:
        deliveries.release(delivery)
        return _refused(503, f"the retrain run could not start: {err}", actor)
    deliveries.started(delivery, run.run_id)
    answer = {"status": "started", "run_id": run.run_id, "pipeline": PIPELINE} | parameters
    return WebhookOutcome(202, answer, actor, started=parameters)


class WebhookSettings(BaseSettings):
    """Where the webhook's configuration is (``GEOMLOPS_GATEWAY_WEBHOOK_CONFIG``)."""

    model_config = SettingsConfigDict(env_prefix="GEOMLOPS_GATEWAY_WEBHOOK_", extra="ignore")

    config: Path | None = Field(
        default=None, description="YAML file: the shared secret and the repositories (owner/name → model)."
    )


router = APIRouter(prefix="/api/v1", tags=["webhooks"])


@router.post(
    WEBHOOK_PATH,
    status_code=202,
    summary="GitHub push webhook: retrain the pushed model up to the approval gate",
    description=(
        "Authenticated by its X-Hub-Signature-256 (HMAC-SHA256 of the body with the shared secret), "
        "not by an API key. A push to a mapped repository's branch starts the retrain pipeline."
    ),
    responses={
        200: {"description": "ping answered"},
        202: {"description": "retrain run started, or the event ignored"},
        400: {"description": "malformed delivery"},
        401: {"description": "signature missing or wrong"},
        403: {"description": "repository not mapped to a model"},
        409: {"description": "delivery already received"},
        413: {"description": "body too large"},
        503: {"description": "webhook not configured, or the run could not start"},
    },
)
async def github_webhook(request: Request, parts: Annotated[Gateway, Depends(gateway)]) -> JSONResponse:
    """Check a GitHub delivery and start the retrain run it asks for (the module's steps)."""
    path = WebhookSettings().config
    if path is None:
        outcome = _refused(503, "the webhook is not configured (set GEOMLOPS_GATEWAY_WEBHOOK_CONFIG)")
    else:
        try:
            config = load_webhook_config(path)
        except ConfigurationError as err:
            config, outcome = None, _refused(503, f"the webhook's configuration is unusable: {err}")
        if config is not None:
            body = await request.body()
            # the database and the backend block: off the event loop, as FastAPI runs sync routes
            outcome = await run_in_threadpool(
                handle_delivery, request.headers, body, config, DatabaseDeliveryLog(parts.db), parts.backend
            )
    # the gateway's audit middleware writes the line; this is what it says of the delivery
    request.state.audit_detail = json.dumps(
        {"actor": outcome.actor, "delivery": request.headers.get(DELIVERY_HEADER, "")} | outcome.body,
        sort_keys=True,
    )
    return JSONResponse(outcome.body, status_code=outcome.status_code)
