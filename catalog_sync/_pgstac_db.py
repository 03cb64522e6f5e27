"""Connections to a PgSTAC database: open, close, migrate, and one clear error for each failure.

Driver errors are multi-line and name libpq internals; what a person needs is which server
could not be reached and why, in one line. Everything here turns psycopg's errors into
:class:`~geomlops.errors.CatalogUnavailableError` or :class:`~geomlops.errors.CatalogError`.
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pypgstac import __version__ as PYPGSTAC_VERSION
from pypgstac.db import PgstacDB
from pypgstac.migrate import Migrate

from geomlops.errors import CatalogError, CatalogUnavailableError

#: seconds to wait for the server before giving up (unless the DSN sets connect_timeout)
CONNECT_TIMEOUT = 5


def is_postgres_dsn(href: str) -> bool:
    """Whether ``href`` is a PostgreSQL URI (``postgresql://`` or ``postgres://``)."""
    return href.startswith(("postgresql://", "postgres://"))


def dsn_params(dsn: str) -> dict[str, str]:
    """The DSN's connection parameters (host, port, dbname, user, password …) as strings.

    Raises:
        CatalogError: the DSN cannot be parsed.
    """
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as err:
        raise CatalogError(f"not a PostgreSQL DSN: {_first_line(err)}") from err
    return {key: str(value) for key, value in params.items() if value is not None}


def describe(dsn: str) -> str:
    """``host:port/dbname`` of a DSN, without credentials: safe to print and log."""
    params = dsn_params(dsn)
    host = params.get("host") or "localhost"
    return f"{host}:{params.get('port') or '5432'}/{params.get('dbname') or params.get('user') or '?'}"


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0].strip()


def reason(err: BaseException) -> str:
    """The one line of a driver error that says what went wrong.

    ``connection to server at "127.0.0.1", port 1 failed: Connection refused`` becomes
    ``Connection refused``; ``FATAL:  database "x" does not exist`` becomes
    ``database "x" does not exist``.
    """
    line = _first_line(err)
    if "failed: " in line:
        line = line.rsplit("failed: ", 1)[1]
    for prefix in ("FATAL:", "ERROR:"):
        line = line.removeprefix(prefix).strip()
    return line or type(err).__name__


def unreachable(dsn: str, err: BaseException) -> CatalogUnavailableError:
    """The error to raise when the server at ``dsn`` cannot be reached: "unreachable", the
    address (no password) and the setting that names it."""
    return CatalogUnavailableError(
        f"PostgreSQL unreachable at {describe(dsn)} (setting GEOMLOPS_PGSTAC_DSN): {reason(err)}"
    )


def open_db(dsn: str, *, require_pgstac: bool = True) -> PgstacDB:
    """Connect to a PgSTAC database.

    A direct connection is tried first, with a short timeout, so that an unreachable
    server fails fast with one line instead of a pool timeout.

    Args:
        dsn: PostgreSQL DSN.
        require_pgstac: also check that the PgSTAC schema is installed at a version this
            pypgstac can load into.

    Returns:
        A connected :class:`PgstacDB`; give it back with :func:`close_db`.

    Raises:
        CatalogUnavailableError: the server cannot be reached, or PgSTAC is missing or too old.
    """
    kwargs = {} if "connect_timeout" in dsn_params(dsn) else {"connect_timeout": CONNECT_TIMEOUT}
    try:
        psycopg.connect(dsn, **kwargs).close()  # type: ignore[arg-type]
    except psycopg.Error as err:
        raise unreachable(dsn, err) from err
    db = PgstacDB(dsn)
    try:
        db.connect()
        if require_pgstac:
            _check_version(dsn, db.version)
    except psycopg.OperationalError as err:
        close_db(db)
        raise unreachable(dsn, err) from err
    except BaseException:
        close_db(db)
        raise
    return db


def _check_version(dsn: str, version: str | None) -> None:
    if version is None:
        raise CatalogUnavailableError(
            f"no PgSTAC schema in the database at {describe(dsn)}: install it with "
            "`geomlops catalog serve` or catalog_sync.pgstac.migrate(dsn)"
        )
    if version != "unreleased" and version.split(".")[:2] != PYPGSTAC_VERSION.split(".")[:2]:
        raise CatalogUnavailableError(
            f"PgSTAC {version} in the database at {describe(dsn)}, but pypgstac {PYPGSTAC_VERSION} "
            "loads items: migrate it with catalog_sync.pgstac.migrate(dsn)"
        )


def close_db(db: PgstacDB) -> None:
    """Give back a database opened with :func:`open_db`, closing its pool and connection."""
    pool = db.pool
    db.disconnect()  # returns the connection to the pool and forgets the pool
    if pool is not None:
        pool.close()


def migrate(dsn: str) -> str:
    """Install or upgrade the PgSTAC schema (``pypgstac migrate``) in the database at ``dsn``.

    The migration creates the PostGIS, btree_gist and unaccent extensions if missing,
    which needs PostGIS installed on the server (``.ci/install-postgis.sh``).

    Returns:
        The PgSTAC version now installed.

    Raises:
        CatalogUnavailableError: the server cannot be reached or the migration failed.
    """
    db = open_db(dsn, require_pgstac=False)
    try:
        return str(Migrate(db).run_migration())
    except psycopg.OperationalError as err:
        raise unreachable(dsn, err) from err
    except psycopg.Error as err:
        why = reason(err)
        if "permission denied" in why.lower():
            why += (
                " (the role may not create the postgis, btree_gist and unaccent extensions: "
                "migrate as a superuser, or have a superuser create them in the database first)"
            )
        elif "postgis" in why.lower():
            why += " (PostGIS is not installed on the server: run .ci/install-postgis.sh)"
        raise CatalogUnavailableError(f"migrating PgSTAC at {describe(dsn)} failed: {why}") from err
    finally:
        close_db(db)
