"""STAC catalogue: MLM items, stores, offline validation."""

from __future__ import annotations

from catalog_sync.store import CatalogStore, StaticCatalog


def open_store(href: str) -> CatalogStore:
    """Open the catalogue at ``href`` (a ``catalog.json`` path or ``file://`` URI)."""
    return StaticCatalog(href)


__all__ = ["CatalogStore", "StaticCatalog", "open_store"]
