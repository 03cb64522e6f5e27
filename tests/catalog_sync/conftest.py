"""Real services for the catalogue tests: PgSTAC databases on the local PostgreSQL server (with
PostGIS: ``.ci/install-postgis.sh``) and stac-fastapi-pgstac under uvicorn.

Every database is created here under a unique name and dropped afterwards. PgSTAC is migrated
once into a template; each test that writes gets a copy of it (``CREATE DATABASE … TEMPLATE``
takes a fraction of a second, a migration about one).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from catalog_sync.api import StacApiServer
from catalog_sync.pgstac import PgStacStore, migrate

#: a superuser DSN on the test server; the tests create and drop their own databases through it
ADMIN_DSN = os.environ.get("GEOMLOPS_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def dsn_for(dbname: str) -> str:
    """The admin DSN pointed at another database."""
    return urlsplit(ADMIN_DSN)._replace(path=f"/{dbname}").geturl()


def create_database(template: str | None = None) -> str:
    """Create an empty database (or a copy of ``template``) under a unique name; return its name."""
    name = f"geomlops_test_{uuid.uuid4().hex[:12]}"
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(query)
    return name


def drop_database(name: str) -> None:
    """Drop a database, closing whatever connections are left on it."""
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pgstac_template() -> Iterator[str]:
    """Name of a database with PgSTAC migrated into it (pypgstac migrate, PostGIS included)."""
    name = create_database()
    try:
        migrate(dsn_for(name))
        yield name
    finally:
        drop_database(name)


@pytest.fixture
def pgstac_dsn(pgstac_template: str) -> Iterator[str]:
    """DSN of a fresh PgSTAC database for one test."""
    name = create_database(template=pgstac_template)
    try:
        yield dsn_for(name)
    finally:
        drop_database(name)


@pytest.fixture
def empty_dsn() -> Iterator[str]:
    """DSN of an empty database: no PgSTAC, no PostGIS."""
    name = create_database()
    try:
        yield dsn_for(name)
    finally:
        drop_database(name)


def load_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture(scope="session")
def example_items(shared_data: Path) -> dict[str, dict[str, Any]]:
    """fAIr's three base-model items and the MLM examples, by id.

    Several MLM examples share one id (variants of one model card): each is given its file
    name as id, so that every one of them can be found again.
    """
    items = {}
    for path in sorted((shared_data / "fair-model-items").glob("*.json")):
        item = load_json(path)
        items[item["id"]] = item
    for path in sorted((shared_data / "mlm-examples").glob("item_*.json")):
        item = load_json(path)
        item["id"] = path.stem
        items[item["id"]] = item
    return items


@pytest.fixture(scope="session")
def stac_api(
    pgstac_template: str, schema_dir: Path, example_items: dict[str, dict[str, Any]]
) -> Iterator[str]:
    """URL of a running STAC API (stac-fastapi-pgstac under uvicorn) on a database holding
    fAIr's items and the MLM examples in the ``models`` collection."""
    name = create_database(template=pgstac_template)
    try:
        dsn = dsn_for(name)
        with PgStacStore(dsn, schema_dir=schema_dir) as store:
            store.put_items("models", example_items.values())
        with StacApiServer(dsn) as server:
            yield server.url
    finally:
        drop_database(name)
