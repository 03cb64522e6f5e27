"""STAC catalogue: MLM items, stores, offline validation."""

from __future__ import annotations

from pathlib import Path

from catalog_sync.store import CatalogStore, StaticCatalog


def open_store(href: str, *, schema_dir: Path | None = None, api_url: str | None = None) -> CatalogStore:
    """Open the catalogue at ``href``.

    Args:
        href: a PostgreSQL DSN (``postgresql://…``: the PgSTAC store), or a ``catalog.json``
            path or ``file://`` URI (the static store).
        schema_dir: extension schemas for the PgSTAC store's offline validation; default
            ``GEOMLOPS_SCHEMA_DIR``.
        api_url: STAC API serving the PgSTAC database, for item hrefs; default
            ``GEOMLOPS_STAC_API_URL``.
    """
    from catalog_sync._pgstac_db import is_postgres_dsn

    if is_postgres_dsn(href):
        from catalog_sync.pgstac import PgStacStore
        from geomlops.settings import get_settings

        settings = get_settings()
        return PgStacStore(
            href,
            schema_dir=schema_dir if schema_dir is not None else settings.schema_dir,
            api_url=api_url if api_url is not None else settings.stac_api_url,
        )
    return StaticCatalog(href)


__all__ = ["CatalogStore", "StaticCatalog", "open_store"]
