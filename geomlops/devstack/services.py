"""The services of the dev stack: their config, and how each starts, answers and stops.

:mod:`geomlops.devstack.stack` runs them; see there how to add one.
"""

from __future__ import annotations

import importlib.util
import os
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from geomlops.devstack import processes as procs
from geomlops.devstack import s3store
from geomlops.errors import DevStackError
from geomlops.settings import ARGO_ARTIFACTS_BUCKET, Settings

HOST = "127.0.0.1"
#: how to install what the dev stack runs that geomlops itself does not need (moto's S3 server)
DEV_STACK_INSTALL = "pip install 'geomlops[dev-stack]' (in a checkout: uv sync --extra dev-stack)"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


class DevConfig(BaseModel):
    """Where the dev stack's services listen and keep their state."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dev_dir: Path = Field(description="Folder of PID files, logs, stack.json and the S3 snapshot.")
    s3_port: int = Field(default=9000, ge=0, le=65535, description="S3 server port (0: any free one).")
    mlflow_port: int = Field(default=5000, ge=0, le=65535, description="MLflow port (0: any free one).")
    stac_port: int = Field(default=8081, ge=0, le=65535, description="STAC API port (0: any free one).")
    mlflow_db: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/geomlops_mlflow",
        description="PostgreSQL URL of MLflow's backend store; the database is created if absent.",
    )
    pgstac_db: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/geomlops_pgstac",
        description="PostgreSQL URL of the PgSTAC catalogue; created and migrated if needed (PostGIS).",
    )
    gateway_port: int = Field(default=8090, ge=0, le=65535, description="Gateway port (0: any free one).")
    gateway_db: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/geomlops_gateway",
        description="PostgreSQL URL of the gateway's database (keys, audit, runs); created if absent.",
    )
    artifacts_bucket: str = Field(default="mlflow-artifacts", description="Bucket of MLflow artifacts.")
    data_bucket: str = Field(default="dvc-data", description="Bucket of the DVC remote.")
    workflow_bucket: str = Field(
        default=ARGO_ARTIFACTS_BUCKET, description="Bucket of workflow artifacts (Argo's artifacts)."
    )
    start_timeout: float = Field(default=120.0, gt=0, description="Seconds a service may take to answer.")

    @field_validator("mlflow_db", "pgstac_db", "gateway_db")
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
    def stac_url(self) -> str:
        """The STAC API's root URL."""
        return f"http://{HOST}:{self.stac_port}"

    @property
    def pgstac_dsn(self) -> str:
        """``pgstac_db`` as libpq (psycopg, pypgstac) reads it."""
        return "postgresql://" + self.pgstac_db.split("://", 1)[1]

    @property
    def gateway_url(self) -> str:
        """The gateway's root URL."""
        return f"http://{HOST}:{self.gateway_port}"

    @property
    def gateway_store_uri(self) -> str:
        """``gateway_db`` as SQLAlchemy reads it (driver: psycopg 3)."""
        return "postgresql+psycopg://" + self.gateway_db.split("://", 1)[1]

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


def s3_environment(config: DevConfig) -> dict[str, str]:
    """The variables that point boto3, DVC and MLflow at the dev S3 store."""
    return {
        "AWS_ACCESS_KEY_ID": s3store.DEV_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": s3store.DEV_SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": s3store.DEV_REGION,
        "AWS_ENDPOINT_URL": config.s3_url,
        "MLFLOW_S3_ENDPOINT_URL": config.s3_url,
    }


def s3_service(config: DevConfig) -> Service:
    """moto's S3 server with its buckets (MLflow's, DVC's, workflow artifacts'); its objects
    outlive restarts (see geomlops.devstack.s3store)."""
    snapshot = config.dev_dir / "s3-snapshot"

    def after_start() -> str:
        restored = s3store.restore(config.s3_url, snapshot)
        buckets = [config.artifacts_bucket, config.data_bucket, config.workflow_bucket]
        s3store.ensure_buckets(config.s3_url, buckets)
        note = f"buckets {', '.join(buckets)}"
        return note + (f"; {restored} object(s) restored from {snapshot}" if restored else "")

    def before_stop() -> str:
        return f"{s3store.save(config.s3_url, snapshot)} object(s) saved to {snapshot}"

    def prepare() -> str:
        missing = [name for name in ("moto", "flask", "flask_cors") if importlib.util.find_spec(name) is None]
        if missing:
            raise DevStackError(
                f"the dev S3 store is moto's server, and {', '.join(missing)} is not installed: "
                f"{DEV_STACK_INSTALL}"
            )
        return ""

    return Service(
        name="s3",
        url=config.s3_url,
        port=config.s3_port,
        argv=[procs.python(), "-m", "moto.server", "-H", HOST, "-p", str(config.s3_port)],
        env={**os.environ, **s3_environment(config)},
        ready=lambda: s3store.answers(config.s3_url),
        prepare=prepare,
        after_start=after_start,
        before_stop=before_stop,
        exports={
            **s3_environment(config),
            "GEOMLOPS_S3_ENDPOINT_URL": config.s3_url,
            "GEOMLOPS_MLFLOW_ARTIFACTS_BUCKET": config.artifacts_bucket,
            "GEOMLOPS_DVC_DATA_BUCKET": config.data_bucket,
        },
    )


def ensure_database(dsn: str, purpose: str = "MLflow") -> bool:
    """Create the database that ``dsn`` names when it does not exist; True when created.

    ``purpose`` (whose database it is) goes into the error messages.

    Raises:
        DevStackError: PostgreSQL cannot be reached or refuses.
    """
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = str(conninfo_to_dict(dsn).get("dbname") or "")
    if not name:
        raise DevStackError(f"{purpose} database URL names no database: {redact(dsn)}")
    try:
        with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True, connect_timeout=5) as db:
            if db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return False
            db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as err:
        from catalog_sync._pgstac_db import reason

        raise DevStackError(
            f"{purpose} database: cannot connect to PostgreSQL at {redact(dsn)}: {reason(err)}. "
            f"Start PostgreSQL there, or name another server with --{purpose.lower()}-db"
        ) from err
    except psycopg.Error as err:
        raise DevStackError(f"{purpose} database: PostgreSQL at {redact(dsn)}: {err}".strip()) from err
    return True


def _drop_database(dsn: str) -> None:
    """Drop the database that ``dsn`` names (one :func:`ensure_database` created)."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = str(conninfo_to_dict(dsn)["dbname"])
    with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True, connect_timeout=5) as db:
        db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def redact(dsn: str) -> str:
    """``dsn`` with its password hidden."""
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


def mlflow_service(config: DevConfig) -> Service:
    """``mlflow server`` on PostgreSQL, artifacts under s3://BUCKET read and written by clients."""
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


def stac_service(config: DevConfig) -> Service:
    """stac-fastapi-pgstac under uvicorn, on a PgSTAC database that ``prepare`` creates (if absent)
    and migrates (``pypgstac migrate``: PostGIS, btree_gist and unaccent, then PgSTAC's schema)."""
    from catalog_sync.api import APP, api_environment

    argv = [procs.python(), "-m", "uvicorn", APP, "--factory"]
    argv += ["--host", HOST, "--port", str(config.stac_port), "--log-level", "warning"]

    def prepare() -> str:
        from catalog_sync._pgstac_db import migrate
        from geomlops.errors import CatalogError

        created = ensure_database(config.pgstac_dsn, "PgSTAC")
        try:
            version = migrate(config.pgstac_dsn)
        except CatalogError as err:
            if created:  # leave nothing half-made behind
                _drop_database(config.pgstac_dsn)
            raise DevStackError(f"cannot install PgSTAC for the dev stack's STAC API: {err}") from err
        return ("database created, " if created else "") + f"PgSTAC {version}"

    return Service(
        name="stac",
        url=config.stac_url,
        port=config.stac_port,
        argv=argv,
        # the database goes by PG* variables (a password too), not on the command line
        env={**os.environ, **api_environment(config.pgstac_dsn)},
        ready=lambda: _http_ok(f"{config.stac_url}/_mgmt/ping"),
        prepare=prepare,
        exports={"GEOMLOPS_PGSTAC_DSN": config.pgstac_dsn, "GEOMLOPS_STAC_API_URL": config.stac_url},
    )


def gateway_service(config: DevConfig) -> Service:
    """The gateway (``geomlops gateway serve``) on the services profile: the stack's MLflow, STAC
    API and S3, its own database on PostgreSQL (created by ``prepare``, migrated at start)."""
    argv = [procs.python(), "-m", "uvicorn", "geomlops.gateway.app:create_app", "--factory"]
    argv += ["--host", HOST, "--port", str(config.gateway_port), "--log-level", "warning"]
    database = {"GEOMLOPS_GATEWAY_DATABASE_URL": config.gateway_store_uri}
    env = {
        **os.environ,
        **s3_environment(config),
        **mlflow_service(config).exports,
        **stac_service(config).exports,
        "GEOMLOPS_HOME": str(config.dev_dir.parent),
        # the database URL (it may hold a password) goes by environment, not on the command line
        **database,
    }
    return Service(
        name="gateway",
        url=config.gateway_url,
        port=config.gateway_port,
        argv=argv,
        env=env,
        ready=lambda: _http_ok(f"{config.gateway_url}/api/v1/health"),
        prepare=lambda: "database created" if ensure_database(config.gateway_db, "gateway") else "",
        exports={**database, "GEOMLOPS_GATEWAY_URL": config.gateway_url},
    )
