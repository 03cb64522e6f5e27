"""The static store and the PgSTAC store behave the same behind the CatalogStore interface."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from catalog_sync import CatalogStore, open_store
from catalog_sync.pgstac import PgStacStore
from geomlops.errors import CatalogError, ItemNotFoundError


@pytest.fixture(params=["static", "pgstac"])
def store(request: pytest.FixtureRequest, tmp_path: Path, schema_dir: Path) -> Iterator[CatalogStore]:
    """Each store, empty, opened through ``open_store`` as the steps open it."""
    if request.param == "static":
        yield open_store(str(tmp_path / "catalog" / "catalog.json"))
        return
    dsn: str = request.getfixturevalue("pgstac_dsn")
    opened = open_store(dsn, schema_dir=schema_dir)
    assert isinstance(opened, PgStacStore)
    with opened:
        yield opened


def _essentials(item: dict[str, Any]) -> dict[str, Any]:
    """What every store keeps exactly as written (links are each store's own business)."""
    return {key: value for key, value in item.items() if key != "links"}


def test_put_get_list_delete(store: CatalogStore, example_items: dict[str, dict[str, Any]]) -> None:
    first, second = example_items["unet-segmentation"], example_items["item_basic"]
    assert store.list_items("models") == []
    href = store.put_item("models", first)
    assert href == store.item_href("models", first["id"])
    assert store.put_item("models", second) == store.item_href("models", second["id"])
    assert _essentials(store.get_item("models", first["id"])) == {
        **_essentials(first),
        "collection": "models",
    }
    assert sorted(i["id"] for i in store.list_items("models")) == sorted([first["id"], second["id"]])
    assert store.list_items("model-versions") == []

    assert store.delete_item("models", first["id"]) is True
    assert store.delete_item("models", first["id"]) is False
    with pytest.raises(ItemNotFoundError, match=first["id"]):
        store.get_item("models", first["id"])
    assert [i["id"] for i in store.list_items("models")] == [second["id"]]


def test_upsert_is_idempotent(store: CatalogStore, example_items: dict[str, dict[str, Any]]) -> None:
    item = copy.deepcopy(example_items["yolo11n-detection"])
    href = store.put_item("models", item)
    item["properties"]["description"] = "changed"
    assert store.put_item("models", item) == href
    assert store.put_item("models", item) == href
    assert [i["id"] for i in store.list_items("models")] == [item["id"]]
    assert store.get_item("models", item["id"])["properties"]["description"] == "changed"


def test_unknown_collection_and_bad_id(store: CatalogStore, example_items: dict[str, dict[str, Any]]) -> None:
    with pytest.raises(ItemNotFoundError, match="collection 'nope' does not exist"):
        store.get_item("nope", "x")
    with pytest.raises(ItemNotFoundError, match="collection 'nope' does not exist"):
        store.put_item("nope", example_items["item_basic"])
    with pytest.raises(ItemNotFoundError, match="collection 'nope' does not exist"):
        store.list_items("nope")
    with pytest.raises(ItemNotFoundError, match="collection 'nope' does not exist"):
        store.delete_item("nope", "x")
    with pytest.raises(CatalogError, match="id"):
        store.put_item("models", {**example_items["item_basic"], "id": "../escape"})
    assert store.list_items("models") == []
