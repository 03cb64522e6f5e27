"""Alembic environment of the gateway's database: runs on the connection the gateway hands in."""

from __future__ import annotations

from alembic import context

from geomlops.gateway.db import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
