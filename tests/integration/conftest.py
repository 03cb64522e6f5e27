"""The services profile for real: the dev stack (moto's S3 server, MLflow on PostgreSQL,
stac-fastapi-pgstac on PgSTAC).

``services_stack`` starts the stack with the code behind ``geomlops dev up`` in a fresh work
folder, on free ports and in databases of its own, points the environment at it exactly as
``geomlops dev env`` says, and stops it (and drops the databases) at the end of the module.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from geomlops.devstack import stack

#: a PostgreSQL server the tests may create and drop databases on
POSTGRES = os.environ.get("GEOMLOPS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


@dataclass
class Stack:
    """A running dev stack and the environment that points at it."""

    home: Path
    config: stack.DevConfig
    database: str
    pgstac_database: str
    env: pytest.MonkeyPatch

    def s3(self) -> Any:
        """A boto3 client of the stack's S3 store."""
        from geomlops.devstack.s3store import client

        return client(self.config.s3_url)

    def sql(self, query: str, *args: object) -> list[tuple[Any, ...]]:
        """Rows of a query on MLflow's PostgreSQL database."""
        import psycopg

        with psycopg.connect(self.config.mlflow_libpq_dsn) as db:
            return list(db.execute(query, args).fetchall())

    def stac_item(self, collection: str, item_id: str) -> dict[str, Any]:
        """An item as the stack's STAC API serves it (read with pystac-client)."""
        from pystac_client import Client

        found = Client.open(self.config.stac_url).search(collections=[collection], ids=[item_id])
        items = list(found.items_as_dicts())
        assert [i["id"] for i in items] == [item_id], f"{collection}/{item_id} in {self.config.stac_url}"
        return items[0]


def _drop_database(name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as db:
        db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def services_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The dev stack, started as ``geomlops dev up`` starts it, stopped at the end."""
    import psycopg

    try:
        psycopg.connect(f"{POSTGRES}/postgres", connect_timeout=5).close()
    except psycopg.Error as err:
        pytest.fail(f"the services tests need PostgreSQL at {POSTGRES} (GEOMLOPS_TEST_POSTGRES): {err}")
    home = tmp_path_factory.mktemp("services-home")
    database = f"geomlops_mlflow_test_{secrets.token_hex(4)}"
    pgstac_database = f"geomlops_pgstac_test_{secrets.token_hex(4)}"
    gateway_database = f"geomlops_gateway_test_{secrets.token_hex(4)}"
    config = stack.DevConfig(
        dev_dir=home / "dev",
        s3_port=0,
        mlflow_port=0,
        stac_port=0,
        mlflow_db=f"{POSTGRES}/{database}",
        pgstac_db=f"{POSTGRES}/{pgstac_database}",
        gateway_port=0,
        gateway_db=f"{POSTGRES}/{gateway_database}",
    )
    with pytest.MonkeyPatch.context() as env:
        for key in list(os.environ):
            if key.startswith(("GEOMLOPS_", "MLFLOW_", "AWS_")) and not key.startswith("GEOMLOPS_TEST_"):
                env.delenv(key)
        env.setenv("GEOMLOPS_HOME", str(home))
        try:
            config, _ = stack.up(config)
            for key, value in stack.environment(config).items():
                env.setenv(key, value)
            # clients give up fast while a service is away (the fault tests): the retries
            # under test are the workflow's, not the HTTP clients' own
            env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            env.setenv("AWS_MAX_ATTEMPTS", "2")
            yield Stack(home, config, database, pgstac_database, env)
        finally:
            stack.down(config.dev_dir)
            _drop_database(database)
            _drop_database(pgstac_database)
            _drop_database(gateway_database)
    assert not list((home / "dev").glob("*.pid")), "dev down left PID files behind"
