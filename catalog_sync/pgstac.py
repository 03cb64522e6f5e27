"""The PgSTAC store: STAC items in PostgreSQL + PostGIS, the production catalogue.

Items are written with pypgstac's :class:`~pypgstac.load.Loader` in upsert mode (writing an
item twice leaves one item), a whole batch in one transaction after every item of it has
been checked offline (schemas, geometry), so a batch is written completely or not at all.
Reads use PgSTAC's own SQL functions; searching is the STAC API's job (:mod:`catalog_sync.api`).

One store holds one database connection: use it from one thread, and :meth:`PgStacStore.close`
it (or use it as a context manager) when done.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import psycopg
from pypgstac.db import PgstacDB
from pypgstac.load import Loader, Methods

from catalog_sync._item_checks import check_batch
from catalog_sync._pgstac_db import close_db, describe, migrate, open_db, reason, unreachable
from catalog_sync.collections import COLLECTIONS
from catalog_sync.store import collection_document, json_document
from geomlops.errors import CatalogError, InvalidItemError, ItemNotFoundError

#: collections the PgSTAC catalogue holds, with their descriptions
PGSTAC_COLLECTIONS: dict[str, str] = dict(COLLECTIONS)

#: links the store owns: the API writes its own, pointing where the item is served
_OWN_LINKS = {"root", "parent", "collection", "self"}

__all__ = ["PGSTAC_COLLECTIONS", "PgStacStore", "migrate"]


class PgStacStore:
    """A STAC catalogue in a PgSTAC database, behind the :class:`~catalog_sync.store.CatalogStore`
    interface.

    Args:
        dsn: PostgreSQL DSN of a database with the PgSTAC schema (see :func:`migrate`).
        schema_dir: folder of extension schemas stored by URL; items are validated against
            them offline before they are written. None: the core STAC schema only.
        api_url: the STAC API serving this database; item hrefs point there when set.
    """

    def __init__(self, dsn: str, *, schema_dir: Path | None = None, api_url: str | None = None) -> None:
        self.dsn = dsn
        self.schema_dir = schema_dir
        self.api_url = api_url.rstrip("/") if api_url else None
        self.location = describe(dsn)
        self._db: PgstacDB | None = None
        self._created: list[str] = []

    def __repr__(self) -> str:
        return f"PgStacStore({self.location!r})"

    def __enter__(self) -> PgStacStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection (the next call opens a new one)."""
        if self._db is not None:
            close_db(self._db)
            self._db = None

    def _connect(self) -> PgstacDB:
        if self._db is None:
            db = open_db(self.dsn)
            try:
                self._created = self._create_collections(db)
            except BaseException:
                close_db(db)
                raise
            self._db = db
        return self._db

    def _fetch(self, query: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self._connect().connect()
        try:
            with conn.cursor() as cur:
                cur.execute(query, args)
                return cur.fetchall() if cur.description else []
        except psycopg.OperationalError as err:
            self.close()
            raise unreachable(self.dsn, err) from err
        except psycopg.Error as err:
            raise CatalogError(f"PgSTAC at {self.location}: {reason(err)}") from err

    def ensure_collections(self) -> list[str]:
        """Create the standard collections that do not exist yet; existing ones are left as they are.

        The store does this on its first connection too, as the static store does.

        Returns:
            The ids of the collections created (by this call, or by the first connection
            when this call made it).
        """
        if self._db is None:
            self._connect()
            return list(self._created)
        return self._create_collections(self._db)

    def _create_collections(self, db: PgstacDB) -> list[str]:
        try:
            with db.connect().cursor() as cur:
                cur.execute("SELECT id FROM collections WHERE id = ANY(%s)", (list(PGSTAC_COLLECTIONS),))
                present = {row[0] for row in cur.fetchall()}
            missing = [cid for cid in PGSTAC_COLLECTIONS if cid not in present]
            if missing:
                # insert_ignore: another process creating them at the same time is no error
                Loader(db).load_collections(
                    iter([collection_document(cid, PGSTAC_COLLECTIONS[cid]) for cid in missing]),
                    insert_mode=Methods.insert_ignore,
                )
        except psycopg.OperationalError as err:
            raise unreachable(self.dsn, err) from err
        except psycopg.Error as err:
            raise CatalogError(f"creating collections in PgSTAC at {self.location}: {reason(err)}") from err
        return missing

    def collections(self) -> list[str]:
        """Ids of every collection in the database."""
        return [row[0] for row in self._fetch("SELECT id FROM collections ORDER BY id")]

    def _require_collection(self, collection: str) -> None:
        if not self._fetch("SELECT 1 FROM collections WHERE id = %s", (collection,)):
            raise ItemNotFoundError(
                f"collection '{collection}' does not exist in PgSTAC at {self.location} "
                f"(collections: {', '.join(self.collections())})"
            )

    def collection_href(self, collection: str) -> str:
        """Where a collection is served: the STAC API when one is set, else a
        ``pgstac://host:port/db/collections/…`` reference without credentials."""
        path = f"collections/{quote(collection, safe='')}"
        return f"{self.api_url}/{path}" if self.api_url else f"pgstac://{self.location}/{path}"

    def item_href(self, collection: str, item_id: str) -> str:
        """Where an item is (or would be) served, as :meth:`collection_href` says."""
        return f"{self.collection_href(collection)}/items/{quote(item_id, safe='')}"

    def get_item(self, collection: str, item_id: str) -> dict[str, Any]:
        """Return an item as a dict (hydrated: as it was written).

        Raises:
            ItemNotFoundError: the collection or the item does not exist.
        """
        self._require_collection(collection)
        rows = self._fetch(
            "SELECT content_hydrate(items), content FROM items WHERE collection = %s AND id = %s",
            (collection, item_id),
        )
        if not rows:
            raise ItemNotFoundError(f"no item '{item_id}' in collection '{collection}' ({self.location})")
        return self._as_served(*rows[0])

    def put_item(self, collection: str, item: Mapping[str, Any]) -> str:
        """Insert or replace an item (idempotent).

        Returns:
            The item's href.

        Raises:
            InvalidItemError: the item fails its schemas or has an invalid geometry.
            ItemNotFoundError: the collection does not exist.
        """
        return self.put_items(collection, [item])[0]

    def put_items(self, collection: str, items: Iterable[Mapping[str, Any]]) -> list[str]:
        """Insert or replace a batch of items: all of them, or none if one is refused.

        Items are taken as JSON holds them, as the static store writes them (tuples, such as
        shapely's ``mapping`` gives, become arrays). Every item is then checked (schemas
        offline, id, datetime, geometry); the batch is then loaded with pypgstac's loader in
        upsert mode inside one transaction. An id that appears twice in the batch is written
        once, as its last occurrence.

        Returns:
            The items' hrefs, in the order given.

        Raises:
            InvalidItemError: one or more items are refused (each named with its JSON paths),
                or an item holds a value JSON cannot (nothing was written).
            ItemNotFoundError: the collection does not exist.
            CatalogError: the database refused the batch (nothing was written).
        """
        where = f"collection '{collection}' ({self.location})"
        batch = [json_document(item, where) for item in items]
        check_batch(batch, self.schema_dir, where=where)
        self._require_collection(collection)
        stored: dict[str, dict[str, Any]] = {}
        for item in batch:
            copy = dict(item)
            copy["collection"] = collection
            copy["links"] = [link for link in item.get("links", []) if link.get("rel") not in _OWN_LINKS]
            stored.pop(copy["id"], None)  # the last occurrence wins, as with one upsert after another
            stored[copy["id"]] = copy
        db = self._connect()
        conn = db.connect()
        try:
            with conn.transaction():
                Loader(db).load_items(iter(stored.values()), insert_mode=Methods.upsert)
        except psycopg.OperationalError as err:
            self.close()
            raise unreachable(self.dsn, err) from err
        except psycopg.Error as err:
            raise CatalogError(
                f"PgSTAC refused the batch for {where}, nothing written: {reason(err)}"
            ) from err
        except Exception as err:  # pypgstac's loader raises bare Exceptions for bad items
            raise InvalidItemError(
                f"pypgstac cannot load the batch for {where}, nothing written: {err}"
            ) from err
        return [self.item_href(collection, item["id"]) for item in batch]

    def delete_item(self, collection: str, item_id: str) -> bool:
        """Remove an item; return whether it existed.

        Raises:
            ItemNotFoundError: the collection does not exist.
        """
        self._require_collection(collection)
        rows = self._fetch(
            "DELETE FROM items WHERE collection = %s AND id = %s RETURNING id", (collection, item_id)
        )
        return bool(rows)

    def list_items(self, collection: str) -> list[dict[str, Any]]:
        """Every item of a collection, hydrated, in (datetime, id) order.

        Raises:
            ItemNotFoundError: the collection does not exist.
        """
        self._require_collection(collection)
        rows = self._fetch(
            "SELECT content_hydrate(items), content FROM items WHERE collection = %s ORDER BY datetime, id",
            (collection,),
        )
        return [self._as_served(*row) for row in rows]

    def _as_served(self, hydrated: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
        """An item as written, with the links the STAC API would give it.

        PgSTAC's SQL hydration drops every null (``"datetime": null``, which STAC requires,
        MLM's ``"value_scaling": null`` …); the stored content keeps them.
        """
        item: dict[str, Any] = _restore_nulls(hydrated, stored)
        collection_href = self.collection_href(item["collection"])
        item["links"] = [
            {
                "rel": "self",
                "href": self.item_href(item["collection"], item["id"]),
                "type": "application/geo+json",
            },
            {"rel": "parent", "href": collection_href, "type": "application/json"},
            {"rel": "collection", "href": collection_href, "type": "application/json"},
            *item.get("links", []),
        ]
        return item


def _restore_nulls(hydrated: Any, stored: Any) -> Any:
    """Put back into ``hydrated`` the nulls of ``stored`` (dicts by key, lists index by index)."""
    if isinstance(hydrated, dict) and isinstance(stored, dict):
        for key, value in stored.items():
            if value is None and key not in hydrated:
                hydrated[key] = None
            elif key in hydrated:
                _restore_nulls(hydrated[key], value)
    elif isinstance(hydrated, list) and isinstance(stored, list) and len(hydrated) == len(stored):
        for h, s in zip(hydrated, stored, strict=True):
            _restore_nulls(h, s)
    return hydrated
