"""The local service stack behind ``geomlops dev``: the services profile on one machine.

- ``s3``: moto's S3 server (the MinIO stand-in: same API) holding the MLflow-artifacts and
  DVC-data buckets;
- ``mlflow``: ``mlflow server`` on PostgreSQL (its database created if absent), artifacts under
  ``s3://<artifacts bucket>`` read and written by the clients themselves (``--no-serve-artifacts``),
  so a model's URI is a real ``s3://`` URI.

Every service is a background process on 127.0.0.1, tracked by a PID file in
``$GEOMLOPS_HOME/dev/`` with its log beside it; ``stack.json`` there records the ports and
database, so ``status`` and ``down`` act on exactly what ``up`` started. ``up`` is idempotent.

Adding a service (PgSTAC + stac-fastapi-pgstac, from ``catalog_sync``): write a function
``DevConfig -> Service`` (``prepare`` creates the database and runs ``pypgstac migrate``;
``argv`` runs the API under uvicorn on ``HOST``; ``exports`` names ``GEOMLOPS_PGSTAC_DSN`` and
``GEOMLOPS_STAC_API_URL``) and append it to :data:`EXTRA_SERVICES`, adding its port and DSN to
:class:`DevConfig`. Services start in list order and stop in reverse.
"""

from __future__ import annotations

import os
import shlex
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from geomlops.errors import DevStackError
from geomlops.settings import Settings
from pipelines import _processes as procs
from pipelines import _s3store

HOST = "127.0.0.1"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


class DevConfig(BaseModel):
    """Where the dev stack's services listen and keep their state."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dev_dir: Path = Field(description="Folder of PID files, logs, stack.json and the S3 snapshot.")
    s3_port: int = Field(default=9000, ge=0, le=65535, description="S3 server port (0: any free one).")
    mlflow_port: int = Field(default=5000, ge=0, le=65535, description="MLflow port (0: any free one).")
    mlflow_db: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/geomlops_mlflow",
        description="PostgreSQL URL of MLflow's backend store; the database is created if absent.",
    )
    artifacts_bucket: str = Field(default="mlflow-artifacts", description="Bucket of MLflow artifacts.")
    data_bucket: str = Field(default="dvc-data", description="Bucket of the DVC remote.")
    start_timeout: float = Field(default=120.0, gt=0, description="Seconds a service may take to answer.")

    @field_validator("mlflow_db")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if not value.startswith(_POSTGRES_SCHEMES):
            raise ValueError(f"expected a postgresql://user@host:port/database URL, not {value!r}")
        return value

    @classmethod
    def from_settings(cls, settings: Settings) -> DevConfig:
        """The default config for ``$GEOMLOPS_HOME/dev``, with the configured buckets."""
        return cls(
            dev_dir=settings.home_dir / "dev",
            artifacts_bucket=settings.mlflow_artifacts_bucket,
            data_bucket=settings.dvc_data_bucket,
        )

    @property
    def s3_url(self) -> str:
        """The S3 endpoint."""
        return f"http://{HOST}:{self.s3_port}"

    @property
    def mlflow_url(self) -> str:
        """The MLflow tracking URI."""
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def mlflow_store_uri(self) -> str:
        """``mlflow_db`` as SQLAlchemy reads it (driver: psycopg 3)."""
        return "postgresql+psycopg://" + self.mlflow_db.split("://", 1)[1]

    @property
    def mlflow_libpq_dsn(self) -> str:
        """``mlflow_db`` as libpq (psycopg) reads it."""
        return "postgresql://" + self.mlflow_db.split("://", 1)[1]


def _no_note() -> str:
    return ""


def _no_say(_: str) -> None:
    return None


@dataclass(frozen=True)
class Service:
    """One background service of the stack and how to start, check and stop it."""

    name: str
    url: str
    port: int
    argv: Sequence[str]
    env: Mapping[str, str]
    ready: Callable[[], bool]
    #: before the process starts (e.g. create its database); each hook returns a note or ""
    prepare: Callable[[], str] = _no_note
    #: once it answers, after a fresh start (e.g. create buckets)
    after_start: Callable[[], str] = _no_note
    #: before a stop, while it still answers (e.g. save what it holds in memory)
    before_stop: Callable[[], str] = _no_note
    #: the variables a shell exports to use it
    exports: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceStatus:
    """What ``status`` (and ``up``) says about one service."""

    name: str
    url: str
    state: str  # "running", "started", "stopped" or "not answering"
    pid: int | None = None
    note: str = ""


def s3_environment(config: DevConfig) -> dict[str, str]:
    """The variables that point boto3, DVC and MLflow at the dev S3 store."""
    return {
        "AWS_ACCESS_KEY_ID": _s3store.DEV_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": _s3store.DEV_SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": _s3store.DEV_REGION,
        "AWS_ENDPOINT_URL": config.s3_url,
        "MLFLOW_S3_ENDPOINT_URL": config.s3_url,
    }


def _s3_service(config: DevConfig) -> Service:
    snapshot = config.dev_dir / "s3-snapshot"

    def after_start() -> str:
        restored = _s3store.restore(config.s3_url, snapshot)
        _s3store.ensure_buckets(config.s3_url, [config.artifacts_bucket, config.data_bucket])
        note = f"buckets {config.artifacts_bucket}, {config.data_bucket}"
        return note + (f"; {restored} object(s) restored from {snapshot}" if restored else "")

    def before_stop() -> str:
        return f"{_s3store.save(config.s3_url, snapshot)} object(s) saved to {snapshot}"

    return Service(
        name="s3",
        url=config.s3_url,
        port=config.s3_port,
        argv=[procs.python(), "-m", "moto.server", "-H", HOST, "-p", str(config.s3_port)],
        env={**os.environ, **s3_environment(config)},
        ready=lambda: _s3store.answers(config.s3_url),
        after_start=after_start,
        before_stop=before_stop,
        exports={
            **s3_environment(config),
            "GEOMLOPS_S3_ENDPOINT_URL": config.s3_url,
            "GEOMLOPS_MLFLOW_ARTIFACTS_BUCKET": config.artifacts_bucket,
            "GEOMLOPS_DVC_DATA_BUCKET": config.data_bucket,
        },
    )


def ensure_database(dsn: str) -> bool:
    """Create the database that ``dsn`` names when it does not exist; True when created.

    Raises:
        DevStackError: PostgreSQL cannot be reached or refuses.
    """
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = str(conninfo_to_dict(dsn).get("dbname") or "")
    if not name:
        raise DevStackError(f"MLflow database URL names no database: {_redact(dsn)}")
    try:
        with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True, connect_timeout=5) as db:
            if db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return False
            db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as err:
        raise DevStackError(f"PostgreSQL at {_redact(dsn)}: {err}".strip()) from err
    return True


def _redact(dsn: str) -> str:
    scheme, _, rest = dsn.partition("://")
    credentials, at, host = rest.rpartition("@")
    if at and ":" in credentials:
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return dsn


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _mlflow_service(config: DevConfig) -> Service:
    argv = [procs.python(), "-m", "mlflow", "server", "--host", HOST, "--port", str(config.mlflow_port)]
    argv += ["--workers", "1", "--default-artifact-root", f"s3://{config.artifacts_bucket}"]
    argv += ["--no-serve-artifacts"]
    env = {
        **os.environ,
        **s3_environment(config),
        # the store URI (it may hold a password) goes by environment, not on the command line
        "MLFLOW_BACKEND_STORE_URI": config.mlflow_store_uri,
        # the server's background job runner serves GenAI features geomlops does not use
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    return Service(
        name="mlflow",
        url=config.mlflow_url,
        port=config.mlflow_port,
        argv=argv,
        env=env,
        ready=lambda: _http_ok(f"{config.mlflow_url}/health"),
        prepare=lambda: "database created" if ensure_database(config.mlflow_libpq_dsn) else "",
        exports={
            "GEOMLOPS_PROFILE": "services",
            "GEOMLOPS_MLFLOW_TRACKING_URI": config.mlflow_url,
            "MLFLOW_TRACKING_URI": config.mlflow_url,
        },
    )


#: builders of further services (the PgSTAC catalogue and its STAC API plug in here)
EXTRA_SERVICES: list[Callable[[DevConfig], Service]] = []


def services(config: DevConfig) -> list[Service]:
    """Every service of the stack, in start order."""
    return [_s3_service(config), _mlflow_service(config), *(build(config) for build in EXTRA_SERVICES)]


def environment(config: DevConfig) -> dict[str, str]:
    """Everything a shell needs to use the stack: the services profile's settings and S3 access."""
    env = {"GEOMLOPS_HOME": str(config.dev_dir.parent)}
    for service in services(config):
        env.update(service.exports)
    return env


def export_lines(env: Mapping[str, str]) -> list[str]:
    """``export NAME=VALUE`` lines, quoted for a POSIX shell."""
    return [f"export {name}={shlex.quote(value)}" for name, value in env.items()]


def _state_file(dev_dir: Path) -> Path:
    return dev_dir / "stack.json"


def load_config(dev_dir: Path) -> DevConfig | None:
    """The config ``up`` last started the stack with, if any."""
    try:
        return DevConfig.model_validate_json(_state_file(dev_dir).read_text())
    except (OSError, ValueError):
        return None


def configure(settings: Settings, **overrides: object) -> DevConfig:
    """The stack's config: what ``up`` recorded last (else the defaults), with the ``overrides``
    that are not None (``s3_port=0``...).

    Raises:
        DevStackError: an override is invalid, or differs from a stack that runs now.
    """
    recorded = load_config(settings.home_dir / "dev")
    base = recorded or DevConfig.from_settings(settings)
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        config = DevConfig.model_validate({**base.model_dump(), **given})
    except ValidationError as err:
        raise DevStackError(f"dev stack settings: {err}") from err
    _refuse_change_while_running(recorded, config)
    return config


def _running(config: DevConfig) -> bool:
    return any(procs.read_tracked(config.dev_dir, s.name) for s in services(config))


def _refuse_change_while_running(recorded: DevConfig | None, config: DevConfig) -> None:
    if recorded is None or not _running(recorded):
        return
    changed = {k for k, v in config.model_dump().items() if v != getattr(recorded, k)}
    changed = {k for k in changed if not (k.endswith("_port") and getattr(config, k) == 0)}
    if changed:
        raise DevStackError(
            f"the dev stack in {recorded.dev_dir} runs with other {', '.join(sorted(changed))}: "
            "stop it (`geomlops dev down`) to change them"
        )


def _select(config: DevConfig, names: Sequence[str]) -> list[Service]:
    every = services(config)
    unknown = sorted(set(names) - {s.name for s in every})
    if unknown:
        raise DevStackError(
            f"unknown service {', '.join(unknown)}: the stack has {', '.join(s.name for s in every)}"
        )
    return [s for s in every if not names or s.name in names]


def _with_ports(config: DevConfig) -> DevConfig:
    ports = {k: procs.free_port(HOST) for k in ("s3_port", "mlflow_port") if getattr(config, k) == 0}
    return config.model_copy(update=ports) if ports else config


def up(
    config: DevConfig, names: Sequence[str] = (), say: Callable[[str], None] = _no_say
) -> tuple[DevConfig, list[ServiceStatus]]:
    """Start the services (all, or ``names``) that are not running; wait until each answers.

    ``config`` comes from :func:`configure`; ports 0 become free ports, unless the stack
    already runs (it keeps the ports it has).

    Returns:
        The config in force (ports resolved) and what became of each service.

    Raises:
        DevStackError: a port is taken by another program, PostgreSQL cannot be reached, or a
            service exits or does not answer in time (the end of its log is in the message).
    """
    recorded = load_config(config.dev_dir)
    _refuse_change_while_running(recorded, config)
    if recorded is not None and _running(recorded):
        config = recorded
    else:
        config = _with_ports(config)
        config.dev_dir.mkdir(parents=True, exist_ok=True)
        _state_file(config.dev_dir).write_text(config.model_dump_json(indent=1))
    return config, [_start(config, service, say) for service in _select(config, names)]


def _start(config: DevConfig, service: Service, say: Callable[[str], None]) -> ServiceStatus:
    tracked = procs.read_tracked(config.dev_dir, service.name)
    notes = []
    fresh = tracked is None
    if tracked is None:
        if procs.port_in_use(HOST, service.port):
            raise DevStackError(
                f"{service.name}: port {service.port} on {HOST} is taken by a program the dev stack "
                "did not start; stop it or choose another port"
            )
        notes.append(service.prepare())
        say(f"starting {service.name} on {service.url}")
        tracked = procs.spawn(config.dev_dir, service.name, service.argv, service.env)
    why = procs.wait_until(service.ready, tracked, config.start_timeout)
    if why:
        if fresh:
            procs.stop(config.dev_dir, tracked)
        log = procs.log_file(config.dev_dir, service.name)
        raise DevStackError(
            f"{service.name} {why} before answering on {service.url} (log {log}):\n"
            + procs.log_tail(config.dev_dir, service.name)
        )
    if fresh:
        notes.append(service.after_start())
    note = "; ".join(n for n in notes if n)
    return ServiceStatus(service.name, service.url, "started" if fresh else "running", tracked.pid, note)


def down(dev_dir: Path, names: Sequence[str] = (), say: Callable[[str], None] = _no_say) -> list[str]:
    """Stop the services (all, or ``names``) the stack started; others are never touched.

    The S3 store saves its objects first (see :mod:`pipelines._s3store`).

    Returns:
        The names of the services stopped.
    """
    config = load_config(dev_dir)
    if config is None:
        return []
    stopped = []
    for service in reversed(_select(config, names)):
        tracked = procs.read_tracked(dev_dir, service.name)
        if tracked is None:
            procs.pid_file(dev_dir, service.name).unlink(missing_ok=True)
            continue
        if service.ready():
            note = service.before_stop()
            if note:
                say(f"{service.name}: {note}")
        else:
            say(f"{service.name} does not answer: stopping it without saving its state")
        procs.stop(dev_dir, tracked)
        stopped.append(service.name)
    return stopped


def status(dev_dir: Path) -> list[ServiceStatus]:
    """Say, for each service, whether its process runs and answers."""
    config = load_config(dev_dir)
    if config is None:
        config = DevConfig(dev_dir=dev_dir)
    result = []
    for service in services(config):
        tracked = procs.read_tracked(dev_dir, service.name)
        if tracked is None:
            result.append(ServiceStatus(service.name, service.url, "stopped"))
        else:
            state = "running" if service.ready() else "not answering"
            result.append(ServiceStatus(service.name, service.url, state, tracked.pid))
    return result
