"""The PgSTAC store on a real PostgreSQL + PostGIS: ingest, upsert, atomic batches, bad input."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from catalog_sync import StaticCatalog, open_store
from catalog_sync.pgstac import PGSTAC_COLLECTIONS, PgStacStore, migrate
from catalog_sync.validation import validate_stac
from geomlops.errors import CatalogError, CatalogUnavailableError, InvalidItemError, ItemNotFoundError

FAIR = ("resnet18-classification", "unet-segmentation", "yolo11n-detection")
BOWTIE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}


def _stored(store: PgStacStore, item: dict[str, Any], collection: str) -> dict[str, Any]:
    """What the store gives back for ``item``: in its collection, with the API's own links."""
    own = {"root", "parent", "collection", "self"}
    links = [
        {"rel": "self", "href": store.item_href(collection, item["id"]), "type": "application/geo+json"},
        {"rel": "parent", "href": store.collection_href(collection), "type": "application/json"},
        {"rel": "collection", "href": store.collection_href(collection), "type": "application/json"},
    ] + [link for link in item.get("links", []) if link.get("rel") not in own]
    return {**item, "collection": collection, "links": links}


def test_fair_items_and_mlm_examples_are_ingested_as_written(
    pgstac_dsn: str, schema_dir: Path, example_items: dict[str, dict[str, Any]]
) -> None:
    with PgStacStore(pgstac_dsn, schema_dir=schema_dir) as store:
        # fAIr's items are "incomplete" offline (classification v2.0.0 is not stored): accepted
        hrefs = store.put_items("models", example_items.values())
        assert hrefs == [store.item_href("models", item_id) for item_id in example_items]
        assert sorted(i["id"] for i in store.list_items("models")) == sorted(example_items)
        for item_id, item in example_items.items():
            got = store.get_item("models", item_id)
            assert got == _stored(store, item, "models")  # nulls included ("datetime": null …)
            assert validate_stac(got, schema_dir).status == validate_stac(item, schema_dir).status
        assert store.list_items("model-versions") == []
        assert store.collections() == sorted(PGSTAC_COLLECTIONS)


def test_upsert_twice_leaves_one_item(pgstac_dsn: str, schema_dir: Path, example_items: dict) -> None:
    item = copy.deepcopy(example_items["unet-segmentation"])
    with PgStacStore(pgstac_dsn, schema_dir=schema_dir) as store:
        first = store.put_item("models", item)
        item["properties"]["description"] = "changed"
        assert store.put_item("models", item) == first
        assert store.put_item("models", item) == first
        assert [i["id"] for i in store.list_items("models")] == ["unet-segmentation"]
        assert store.get_item("models", "unet-segmentation")["properties"]["description"] == "changed"
        # one id twice in one batch: written once, as its last occurrence
        again = copy.deepcopy(item)
        again["properties"]["description"] = "last"
        store.put_items("models", [item, again])
        assert [i["properties"]["description"] for i in store.list_items("models")] == ["last"]


def _drop_mlm_name(item: dict) -> None:
    del item["properties"]["mlm:name"]


def _wrong_task(item: dict) -> None:
    item["properties"]["mlm:tasks"] = ["flood-guessing"]


def _bowtie(item: dict) -> None:
    item["geometry"] = BOWTIE
    item["bbox"] = [0, 0, 1, 1]


def _bad_datetime(item: dict) -> None:
    item["properties"]["datetime"] = "yesterday"


@pytest.mark.parametrize(
    ("break_item", "path", "text"),
    [
        (_drop_mlm_name, "$.properties", "'mlm:name' is a required property"),
        (_wrong_task, "$.properties['mlm:tasks'][0]", "'flood-guessing' is not one of"),
        (_bowtie, "$.geometry", "invalid geometry: Self-intersection"),
        (_bad_datetime, "$.properties.datetime", "not an RFC 3339 date-time"),
    ],
    ids=["missing-mlm-field", "wrong-mlm-task", "self-intersecting-geometry", "bad-datetime"],
)
def test_a_batch_with_one_invalid_item_writes_nothing(
    pgstac_dsn: str,
    schema_dir: Path,
    example_items: dict,
    break_item: Callable[[dict], None],
    path: str,
    text: str,
) -> None:
    with PgStacStore(pgstac_dsn, schema_dir=schema_dir) as store:
        store.put_item("models", example_items["item_basic"])
        changed = copy.deepcopy(example_items["item_basic"])
        changed["properties"]["description"] = "must not be written"
        broken = copy.deepcopy(example_items["yolo11n-detection"])
        break_item(broken)
        batch = [changed, example_items["unet-segmentation"], broken, example_items["item_multi_io"]]
        with pytest.raises(InvalidItemError) as caught:
            store.put_items("models", batch)
        message = str(caught.value)
        assert "nothing was written" in message
        assert "item 'yolo11n-detection'" in message
        assert f"{path}: " in message and text in message
        assert "unet-segmentation" not in message  # only the refused item is named
        assert [i["id"] for i in store.list_items("models")] == ["item_basic"]
        assert store.get_item("models", "item_basic") == _stored(store, example_items["item_basic"], "models")


def test_items_are_taken_as_json_holds_them(pgstac_dsn: str, schema_dir: Path, example_items: dict) -> None:
    from datetime import UTC, datetime

    from shapely.geometry import box, mapping

    item = copy.deepcopy(example_items["unet-segmentation"])
    item["geometry"] = mapping(box(10.0, 20.0, 11.0, 21.0))  # tuples, as shapely gives them
    item["bbox"] = (10.0, 20.0, 11.0, 21.0)
    assert isinstance(item["geometry"]["coordinates"], tuple)
    with PgStacStore(pgstac_dsn, schema_dir=schema_dir) as store:
        store.put_item("models", item)
        got = store.get_item("models", "unet-segmentation")
        ring = [[11.0, 20.0], [11.0, 21.0], [10.0, 21.0], [10.0, 20.0], [11.0, 20.0]]
        assert got["geometry"] == {"type": "Polygon", "coordinates": [ring]}
        assert got["bbox"] == [10.0, 20.0, 11.0, 21.0]
        not_json = copy.deepcopy(example_items["yolo11n-detection"])
        not_json["properties"]["created"] = datetime(2024, 1, 1, tzinfo=UTC)
        with pytest.raises(InvalidItemError, match=r"item 'yolo11n-detection' .* not a JSON document"):
            store.put_items("models", [example_items["item_basic"], not_json])
        assert [i["id"] for i in store.list_items("models")] == ["unet-segmentation"]  # nothing written


def test_single_invalid_item_is_refused_with_its_json_path(pgstac_dsn: str, schema_dir: Path) -> None:
    with PgStacStore(pgstac_dsn, schema_dir=schema_dir) as store:
        with pytest.raises(InvalidItemError, match=r"\$\.id: expected a non-empty string"):
            store.put_item("models", {"id": "../escape", "type": "Feature"})
        assert store.list_items("models") == []


def test_unknown_collection_is_named(pgstac_dsn: str, example_items: dict) -> None:
    with PgStacStore(pgstac_dsn) as store:
        expected = "collection 'nope' does not exist in PgSTAC"
        with pytest.raises(ItemNotFoundError, match=expected):
            store.get_item("nope", "x")
        with pytest.raises(ItemNotFoundError, match=expected):
            store.put_item("nope", example_items["item_basic"])
        with pytest.raises(ItemNotFoundError, match=expected):
            store.list_items("nope")
        with pytest.raises(ItemNotFoundError, match=expected):
            store.delete_item("nope", "x")
        with pytest.raises(ItemNotFoundError, match="no item 'absent' in collection 'models'"):
            store.get_item("models", "absent")


def test_unreachable_database_gives_one_clear_line() -> None:
    dsn = "postgresql://postgres:secret@127.0.0.1:1/catalog"
    for action in (
        lambda: PgStacStore(dsn).list_items("models"),
        lambda: open_store(dsn).get_item("models", "x"),
        lambda: migrate(dsn),
    ):
        with pytest.raises(CatalogUnavailableError) as caught:
            action()
        assert str(caught.value) == (
            "PostgreSQL unreachable at 127.0.0.1:1/catalog (setting GEOMLOPS_PGSTAC_DSN): Connection refused"
        )


def test_missing_database_and_missing_schema_are_explained(empty_dsn: str) -> None:
    missing = empty_dsn.rsplit("/", 1)[0] + "/geomlops_no_such_db"
    with pytest.raises(CatalogUnavailableError, match='database "geomlops_no_such_db" does not exist'):
        PgStacStore(missing).list_items("models")
    with pytest.raises(CatalogUnavailableError, match="no PgSTAC schema in the database"):
        PgStacStore(empty_dsn).list_items("models")


def test_migrate_installs_postgis_and_is_idempotent(empty_dsn: str) -> None:
    assert migrate(empty_dsn) == migrate(empty_dsn)
    with psycopg.connect(empty_dsn) as conn:
        extensions = {row[0] for row in conn.execute("SELECT extname FROM pg_extension")}
    assert "postgis" in extensions
    with PgStacStore(empty_dsn) as store:
        assert sorted(store.ensure_collections()) == sorted(PGSTAC_COLLECTIONS)
        assert store.ensure_collections() == []
        assert store.collections() == sorted(PGSTAC_COLLECTIONS)


def test_open_store_chooses_the_store_by_href(tmp_path: Path) -> None:
    pg = open_store("postgresql://postgres@127.0.0.1:5432/somewhere", api_url="http://api.example/")
    assert isinstance(pg, PgStacStore)
    assert pg.item_href("models", "m 1") == "http://api.example/collections/models/items/m%201"
    assert PgStacStore("postgresql://u:pw@db:6543/cat").item_href("models", "m") == (
        "pgstac://db:6543/cat/collections/models/items/m"  # never the password
    )
    assert isinstance(open_store(str(tmp_path / "catalog.json")), StaticCatalog)
    with pytest.raises(CatalogError, match="not a PostgreSQL DSN"):
        open_store("postgresql://[broken")
