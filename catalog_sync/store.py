"""The catalogue store interface and the static (pystac JSON) store, the embedded default.

Layout of the static store, readable by pystac and any STAC browser::

    catalog.json
    <collection>/collection.json
    <collection>/<item id>/<item id>.json
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from catalog_sync.collections import COLLECTIONS
from geomlops.errors import CatalogError, InvalidItemError, ItemNotFoundError
from geomlops.files import write_atomic


class CatalogStore(Protocol):
    """What the steps need of a STAC catalogue."""

    def get_item(self, collection: str, item_id: str) -> dict[str, Any]:
        """Return an item; raise ItemNotFoundError if absent."""

    def put_item(self, collection: str, item: dict[str, Any]) -> str:
        """Insert or replace an item (idempotent); return its href."""

    def delete_item(self, collection: str, item_id: str) -> bool:
        """Remove an item; return whether it existed."""

    def list_items(self, collection: str) -> list[dict[str, Any]]:
        """Every item of a collection."""

    def item_href(self, collection: str, item_id: str) -> str:
        """Where an item is (or would be) stored."""


def json_document(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``item`` as JSON holds it: what a store writes and serves back (tuples become lists).

    Raises:
        InvalidItemError: the item holds a value JSON cannot (a datetime object, NaN …).
    """
    try:
        document: dict[str, Any] = json.loads(json.dumps(dict(item), allow_nan=False))
    except (TypeError, ValueError) as err:
        raise InvalidItemError(
            f"refused item {item.get('id')!r} for {where}, nothing was written: it is not a JSON "
            f"document ({err})"
        ) from err
    return document


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically: readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CatalogError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: expected a JSON object")
    return data


class StaticCatalog:
    """A static STAC catalogue on the local file system.

    Args:
        root: path of ``catalog.json`` (created with the standard collections if absent).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(str(root).removeprefix("file://")).resolve()
        self.dir = self.root.parent

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _ensure_root(self) -> None:
        if self.root.exists():
            return
        links: list[dict[str, Any]] = [{"rel": "root", "href": "./catalog.json", "type": "application/json"}]
        for cid, description in COLLECTIONS.items():
            links.append(
                {"rel": "child", "href": f"./{cid}/collection.json", "type": "application/json", "title": cid}
            )
            _write_json(self.dir / cid / "collection.json", _collection(cid, description))
        _write_json(
            self.root,
            {
                "type": "Catalog",
                "stac_version": "1.1.0",
                "id": "geomlops",
                "description": "Models, model versions and predictions of geomlops.",
                "links": links,
            },
        )

    def _collection_path(self, collection: str) -> Path:
        path = self.dir / collection / "collection.json"
        if not path.exists():
            raise ItemNotFoundError(
                f"collection '{collection}' does not exist in {self.root} "
                f"(collections: {', '.join(sorted(COLLECTIONS))})"
            )
        return path

    def item_href(self, collection: str, item_id: str) -> str:
        """Where an item is (or would be) stored."""
        return str(self.dir / collection / item_id / f"{item_id}.json")

    def get_item(self, collection: str, item_id: str) -> dict[str, Any]:
        """Return an item as a dict.

        Raises:
            ItemNotFoundError: the collection or the item does not exist.
        """
        if not self.root.exists() and collection in COLLECTIONS:  # read only: nothing made here
            raise ItemNotFoundError(f"no item '{item_id}' in collection '{collection}' ({self.root})")
        self._collection_path(collection)
        path = Path(self.item_href(collection, item_id))
        if not path.exists():
            raise ItemNotFoundError(f"no item '{item_id}' in collection '{collection}' ({self.root})")
        return _read_json(path)

    def put_item(self, collection: str, item: dict[str, Any]) -> str:
        """Insert or replace an item; the collection's links and extent follow.

        Returns:
            The item's path.
        """
        return self.put_items(collection, [item])[0]

    def put_items(self, collection: str, items: Iterable[dict[str, Any]]) -> list[str]:
        """Insert or replace items, rewriting the collection once (ids checked before any write).

        Returns:
            The items' paths.

        Raises:
            CatalogError: an item id is missing or holds '/'; InvalidItemError: an item holds a
                value JSON cannot (NaN, infinity, an object). Nothing is written.
        """
        batch = list(items)
        for item in batch:
            item_id = item.get("id")
            if not isinstance(item_id, str) or not item_id or "/" in item_id:
                raise CatalogError(f"item 'id': expected a non-empty string without '/', got {item_id!r}")
            json_document(item, f"collection '{collection}' ({self.root})")
        hrefs = []
        own = {"root", "parent", "collection", "self"}
        with self._locked():
            self._ensure_root()
            cpath = self._collection_path(collection)
            coll = _read_json(cpath)
            linked = {link.get("href") for link in coll["links"]}
            for item in batch:
                item_id = item["id"]
                stored = dict(item)
                stored["collection"] = collection
                stored["links"] = [link for link in item.get("links", []) if link.get("rel") not in own] + [
                    {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
                    {"rel": "parent", "href": "../collection.json", "type": "application/json"},
                    {"rel": "collection", "href": "../collection.json", "type": "application/json"},
                ]
                href = self.item_href(collection, item_id)
                _write_json(Path(href), stored)
                hrefs.append(href)
                rel = f"./{item_id}/{item_id}.json"
                if rel not in linked:
                    coll["links"].append({"rel": "item", "href": rel, "type": "application/geo+json"})
                    linked.add(rel)
                _grow_extent(coll, stored)
            _write_json(cpath, coll)
        return hrefs

    def delete_item(self, collection: str, item_id: str) -> bool:
        """Remove an item and its link; return whether it existed."""
        with self._locked():
            self._ensure_root()
            cpath = self._collection_path(collection)
            path = Path(self.item_href(collection, item_id))
            if not path.exists():
                return False
            coll = _read_json(cpath)
            rel = f"./{item_id}/{item_id}.json"
            coll["links"] = [link for link in coll["links"] if link.get("href") != rel]
            _write_json(cpath, coll)
            path.unlink()
            with contextlib.suppress(OSError):
                path.parent.rmdir()
            return True

    def list_items(self, collection: str) -> list[dict[str, Any]]:
        """Every item of a collection, in link order.

        A link whose file is gone (deleted by hand, a copy that lost files) lists nothing: the
        item is absent, as :meth:`get_item` says, and ``catalog sync`` writes it again.
        """
        if not self.root.exists() and collection in COLLECTIONS:  # read only: nothing made here
            return []
        cpath = self._collection_path(collection)
        coll = _read_json(cpath)
        paths = [
            (cpath.parent / link["href"]).resolve() for link in coll["links"] if link.get("rel") == "item"
        ]
        return [_read_json(path) for path in paths if path.is_file()]


def collection_document(collection_id: str, description: str) -> dict[str, Any]:
    """A minimal STAC collection with a world extent; stores add the links they own."""
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": collection_id,
        "title": collection_id,
        "description": description,
        "license": "other",
        "extent": {
            "spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
            "temporal": {"interval": [[None, None]]},
        },
        "links": [],
    }


def _collection(cid: str, description: str) -> dict[str, Any]:
    document = collection_document(cid, description)
    document["links"] = [
        {"rel": "root", "href": "../catalog.json", "type": "application/json"},
        {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
    ]
    return document


def _grow_extent(collection: dict[str, Any], item: dict[str, Any]) -> None:
    bbox = item.get("bbox")
    if not bbox or len(bbox) != 4:
        return
    items = [link for link in collection["links"] if link.get("rel") == "item"]
    current = collection["extent"]["spatial"]["bbox"][0]
    if len(items) <= 1 and current == [-180.0, -90.0, 180.0, 90.0]:
        collection["extent"]["spatial"]["bbox"] = [list(map(float, bbox))]
        return
    collection["extent"]["spatial"]["bbox"] = [
        [
            min(current[0], bbox[0]),
            min(current[1], bbox[1]),
            max(current[2], bbox[2]),
            max(current[3], bbox[3]),
        ]
    ]
