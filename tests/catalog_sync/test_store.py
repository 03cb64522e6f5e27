"""The static catalogue: upserts, links readable by pystac, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pystac
import pytest

from catalog_sync.store import StaticCatalog
from geomlops.errors import CatalogError, ItemNotFoundError


def _item(shared_data: Path) -> dict:
    return json.loads((shared_data / "mlm-examples" / "item_basic.json").read_text())


def test_put_get_upsert_and_pystac_reads_it(tmp_path: Path, shared_data: Path) -> None:
    store = StaticCatalog(tmp_path / "catalog" / "catalog.json")
    item = _item(shared_data)
    href = store.put_item("models", item)
    assert Path(href).is_file()
    item["properties"]["description"] = "changed"
    assert store.put_item("models", item) == href  # upsert: same place, no second copy
    assert [i["id"] for i in store.list_items("models")] == [item["id"]]
    assert store.get_item("models", item["id"])["properties"]["description"] == "changed"

    catalog = pystac.Catalog.from_file(str(tmp_path / "catalog" / "catalog.json"))
    items = list(catalog.get_items(recursive=True))
    assert [i.id for i in items] == [item["id"]]
    collection = catalog.get_child("models")
    assert collection is not None
    assert collection.extent.spatial.bboxes[0] == pytest.approx(item["bbox"])


def test_delete_and_missing(tmp_path: Path, shared_data: Path) -> None:
    store = StaticCatalog(tmp_path / "catalog.json")
    item = _item(shared_data)
    store.put_item("models", item)
    assert store.delete_item("models", item["id"]) is True
    assert store.delete_item("models", item["id"]) is False
    with pytest.raises(ItemNotFoundError, match=item["id"]):
        store.get_item("models", item["id"])
    with pytest.raises(ItemNotFoundError, match="collection 'nope' does not exist"):
        store.get_item("nope", "x")


def test_reading_a_catalogue_that_is_not_there_makes_nothing(tmp_path: Path) -> None:
    store = StaticCatalog(tmp_path / "work" / "catalog" / "catalog.json")
    assert store.list_items("models") == []
    with pytest.raises(ItemNotFoundError, match="no item 'x' in collection 'models'"):
        store.get_item("models", "x")
    with pytest.raises(ItemNotFoundError, match="collection 'nope' does not exist"):
        store.get_item("nope", "x")
    assert list(tmp_path.iterdir()) == []  # a refused request leaves no work folder behind


def test_bad_item_id_writes_nothing(tmp_path: Path) -> None:
    store = StaticCatalog(tmp_path / "catalog.json")
    with pytest.raises(CatalogError, match="item 'id'"):
        store.put_item("models", {"id": "../escape", "type": "Feature"})
    assert store.list_items("models") == []


def test_batch_with_one_bad_id_writes_nothing(tmp_path: Path, shared_data: Path) -> None:
    store = StaticCatalog(tmp_path / "catalog.json")
    good = _item(shared_data)
    with pytest.raises(CatalogError, match="item 'id'"):
        store.put_items("models", [good, {"id": "", "type": "Feature"}])
    assert store.list_items("models") == []
    hrefs = store.put_items("models", [good, {**good, "id": "second"}])
    assert [Path(h).parent.name for h in hrefs] == [good["id"], "second"]
    assert sorted(i["id"] for i in store.list_items("models")) == sorted([good["id"], "second"])
