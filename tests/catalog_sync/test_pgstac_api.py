"""Items ingested into PgSTAC are found again with pystac-client through the running STAC API
(stac-fastapi-pgstac under uvicorn): by bbox, datetime, free text and CQL2 filters on MLM fields."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from catalog_sync.api import StacApiServer, mlm_filter, search
from geomlops.errors import CatalogUnavailableError, ItemNotFoundError

FAIR = {"resnet18-classification", "unet-segmentation", "yolo11n-detection"}
#: MLM examples over Europe whose validity runs from 1900 to 9999
TIMELESS = {
    "item_bands_expression",
    "item_basic",
    "item_eo_and_raster_bands",
    "item_eo_bands",
    "item_eo_bands_summarized",
    "item_multi_io",
    "item_raster_bands",
}
CUDA_PYTORCH = TIMELESS - {"item_basic"} | {"item_datacube_variables"}


def _ids(items: list[dict[str, Any]]) -> set[str]:
    return {item["id"] for item in items}


def test_every_ingested_item_is_found_as_written(stac_api: str, example_items: dict[str, dict]) -> None:
    found = {item["id"]: item for item in search(stac_api, collections=["models"], limit=5)}
    assert set(found) == set(example_items)  # paged: 5 at a time
    for item_id, item in example_items.items():
        assert found[item_id]["properties"] == item["properties"]  # nulls included
        assert found[item_id]["geometry"] == item["geometry"]
    assert search(stac_api, collections=["model-versions"]) == []


def test_bbox(stac_api: str) -> None:
    # fAIr's models cover the world, the MLM examples Europe (one of them ERA5's grid)
    assert _ids(search(stac_api, bbox=[30.0, -5.0, 40.0, 5.0])) == FAIR
    assert _ids(search(stac_api, bbox=[0.0, 40.0, 10.0, 50.0])) == FAIR | TIMELESS | {"item_pytorch_geo_unet"}
    # west > east: across the antimeridian, over the Pacific only (not -170° to 170°)
    assert _ids(search(stac_api, bbox=[170.0, 40.0, -170.0, 50.0])) == FAIR
    # and from 170°E eastwards round to 10°E: Europe's west too
    round_to_europe = search(stac_api, bbox=[170.0, 40.0, 10.0, 50.0])
    assert _ids(round_to_europe) == FAIR | TIMELESS | {"item_pytorch_geo_unet"}


def test_datetime(stac_api: str) -> None:
    assert _ids(search(stac_api, datetime="1920-01-01T00:00:00Z/1930-01-01T00:00:00Z")) == TIMELESS
    assert _ids(search(stac_api, datetime="2024-01-01T00:00:00Z")) == FAIR | TIMELESS | {
        "item_datacube_variables",
        "item_pytorch_geo_unet",
    }
    assert _ids(search(stac_api, datetime="2025-01-01T00:00:00Z/..")) == TIMELESS | {
        "item_datacube_variables"
    }


def test_free_text(stac_api: str) -> None:
    assert _ids(search(stac_api, q="building")) == FAIR
    detection = {"yolo11n-detection", "resnet18-classification"}  # "building presence detection"
    assert _ids(search(stac_api, q="detection")) == detection
    assert _ids(search(stac_api, q="detection OR downscaling")) == detection | {"item_datacube_variables"}
    assert _ids(search(stac_api, q="bounding")) == {"yolo11n-detection"}
    assert _ids(search(stac_api, q='"building footprints"')) == {"unet-segmentation"}  # stemmed
    assert search(stac_api, q="hydrology") == []


def test_cql2_filters_on_mlm_fields(stac_api: str) -> None:
    tasks = {"op": "a_contains", "args": [{"property": "mlm:tasks"}, ["object-detection"]]}
    assert _ids(search(stac_api, filter=tasks)) == {"yolo11n-detection"}
    assert _ids(search(stac_api, filter=mlm_filter(tasks=["semantic-segmentation"]))) == {
        "unet-segmentation",
        "item_pytorch_geo_unet",
    }
    assert _ids(search(stac_api, filter=mlm_filter(tasks=["downscaling", "object-detection"]))) == {
        "item_datacube_variables",
        "yolo11n-detection",
    }
    framework = {"op": "=", "args": [{"property": "mlm:framework"}, "PyTorch"]}
    assert _ids(search(stac_api, filter=framework)) == FAIR
    assert _ids(search(stac_api, filter=mlm_filter(framework="pytorch"))) == FAIR | CUDA_PYTORCH
    accelerator = {"op": "=", "args": [{"property": "mlm:accelerator"}, "cuda"]}
    assert _ids(search(stac_api, filter=accelerator)) == CUDA_PYTORCH
    assert _ids(search(stac_api, filter=mlm_filter(accelerator="amd64"))) == FAIR


def test_everything_together(stac_api: str) -> None:
    found = search(
        stac_api,
        bbox=[30.0, -5.0, 40.0, 5.0],
        datetime="2023-01-01T00:00:00Z/2025-01-01T00:00:00Z",
        q="building",
        filter=mlm_filter(tasks=["semantic-segmentation"], framework="PyTorch", accelerator="amd64"),
        collections=["models"],
    )
    assert _ids(found) == {"unet-segmentation"}


def test_bad_searches_are_explained(stac_api: str) -> None:
    with pytest.raises(ItemNotFoundError, match="no collection 'nope' in the STAC API"):
        search(stac_api, collections=["nope"])
    with pytest.raises(
        CatalogUnavailableError,
        match=r"STAC API unreachable at http://127\.0\.0\.1:1 \(setting GEOMLOPS_STAC_API_URL",
    ):
        search("http://127.0.0.1:1", q="building")


def test_server_stops_cleanly_and_refuses_an_unreachable_database(pgstac_dsn: str) -> None:
    server = StacApiServer(pgstac_dsn)
    url = server.start()
    assert requests.get(f"{url}/_mgmt/ping", timeout=5).ok
    conformance = requests.get(f"{url}/conformance", timeout=5).json()["conformsTo"]
    assert any(c.endswith("item-search#advanced-free-text") for c in conformance)
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/_mgmt/ping", timeout=5)
    with pytest.raises(CatalogUnavailableError) as caught:
        StacApiServer("postgresql://postgres@127.0.0.1:1/catalog").start()
    assert (
        str(caught.value)
        == "PostgreSQL unreachable at 127.0.0.1:1/catalog (setting GEOMLOPS_PGSTAC_DSN): Connection refused"
    )
