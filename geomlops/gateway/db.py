"""The gateway's database: API keys, the audit trail and the runs it started (SQLAlchemy 2).

SQLite under ``$GEOMLOPS_HOME/gateway.db`` by default, PostgreSQL in the services profile. The
schema is created and upgraded by alembic (``migrations/``) when the gateway starts, never by
``create_all``, so a database written by an older release is upgraded in place.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Integer, String, Text, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from geomlops.errors import ConfigurationError

MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Base of the gateway's tables."""


class ApiKey(Base):
    """An API key: its public id, the SHA-256 of the whole token (never the token), its role."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    role: Mapped[str] = mapped_column(String(20))
    token_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditEntry(Base):
    """One write request: who, what, when, from where, and its outcome (HTTP status)."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20), default="")
    method: Mapped[str] = mapped_column(String(10))
    action: Mapped[str] = mapped_column(String(300))
    target: Mapped[str] = mapped_column(String(500), default="")
    client: Mapped[str] = mapped_column(String(100), default="")
    status: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, default="")


class RunRecord(Base):
    """A run the gateway started: who started it, with what, and its launcher's process."""

    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(100))
    backend: Mapped[str] = mapped_column(String(20))
    submitted_by: Mapped[str] = mapped_column(String(200))
    parameters: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    pid: Mapped[int] = mapped_column(Integer, default=0)

    def parameter_values(self) -> dict[str, str]:
        """The run's parameters as a dict."""
        values: dict[str, Any] = json.loads(self.parameters or "{}")
        return {str(k): str(v) for k, v in values.items()}


def make_engine(url: str) -> Engine:
    """Create the database engine (SQLite: the folder is created, writers wait for each other).

    Raises:
        ConfigurationError: the URL is not one SQLAlchemy can use.
    """
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = create_engine(url, future=True, pool_pre_ping=True)
    except Exception as err:  # SQLAlchemy raises several kinds for a bad URL
        raise ConfigurationError(f"GEOMLOPS_GATEWAY_DATABASE_URL: not a usable database URL ({err})") from err
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 10000")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the newest migration (alembic ``upgrade head``)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class Database:
    """The gateway's database: an engine and sessions over it, migrated when opened."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed when the block ends without error, rolled back otherwise."""
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
