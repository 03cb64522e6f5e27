"""The predictions item and picture get their geography right: the item's datetime comes from the
imagery's metadata (else the run's time, never 1970), and the quicklook shows RGB imagery in
colour, bands picked by the MLM item's common names (drone imagery, Banepa)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from catalog_sync.collections import MODELS, VERSIONS, version_item_id
from catalog_sync.store import StaticCatalog
from postprocessing.finalize import to_geometries
from postprocessing.kernel import mask_to_polygons
from steps._quicklook import rgb_bands
from steps.batch import plan_batch
from steps.predictions import Lineage, _imagery_datetime, _item, _Quicklook, predictions_model_item

REPO = Path(__file__).resolve().parents[2]
CHIP = "banepa/predict/oam/OAM-386697-220243-19.tif"
LINEAGE = Lineage(model="buildings", model_version="2", run_id="feedc0ffee")


def _tif(path: Path, tags: dict[str, dict[str, str]], count: int = 1) -> str:
    profile = {
        "driver": "GTiff",
        "height": 8,
        "width": 8,
        "count": count,
        "dtype": "uint8",
        "crs": "EPSG:32645",
        "transform": Affine(1, 0, 330000, 0, -1, 3060000),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.zeros((count, 8, 8), np.uint8))
        for domain, values in tags.items():
            dst.update_tags(ns=domain or None, **values)
    return str(path)


def _item_with_bands(bands: list[Any], item_bands: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {"mlm:input": [{"name": "chips", "bands": bands}]}
    if item_bands is not None:
        props["bands"] = item_bands
    return {"id": "m", "properties": props}


@pytest.mark.parametrize(
    ("tags", "expected", "source"),
    [
        (
            {"": {"TIFFTAG_DATETIME": "2019:05:03 10:22:01"}},
            "2019-05-03T10:22:01Z",
            "imagery:TIFFTAG_DATETIME",
        ),
        (
            {
                "IMAGERY": {"ACQUISITIONDATETIME": "2015-04-27T05:10:00.000+05:45"},
                "": {"TIFFTAG_DATETIME": "2020:01:01 00:00:00"},
            },
            "2015-04-26T23:25:00Z",
            "imagery:ACQUISITIONDATETIME",
        ),
        (
            {"": {"ACQUISITION_DATETIME": "2021-11-02"}},
            "2021-11-02T00:00:00Z",
            "imagery:ACQUISITION_DATETIME",
        ),
        ({"": {"TIFFTAG_DATETIME": "1970:01:01 00:00:00"}}, "2026-12-03T16:00:00Z", "run"),  # an unset clock
        ({"": {"TIFFTAG_DATETIME": "not a date"}}, "2026-12-03T16:00:00Z", "run"),
        ({}, "2026-12-03T16:00:00Z", "run"),
    ],
)
def test_datetime_from_the_imagery_else_the_run(
    tmp_path: Path, tags: dict[str, dict[str, str]], expected: str, source: str
) -> None:
    now = datetime(2026, 12, 3, 16, 0, 0, tzinfo=UTC)
    assert _imagery_datetime(_tif(tmp_path / "a.tif", tags), now) == (expected, source)


def test_drone_chip_without_a_date_is_dated_by_the_run(shared_data: Path) -> None:
    chip = str(shared_data / CHIP)
    plan = plan_batch(chip, None, block_size=256, group_size=4)
    before = datetime.now(UTC).replace(microsecond=0)
    files = {name: Path(f"/out/{name}") for name in ("geoparquet", "geojson", "quicklook", "mask")}
    item = _item(3, {1: 3}, plan, LINEAGE, area="banepa", files=files, model_item="m.json")
    props = item["properties"]
    assert props["geomlops:datetime_source"] == "run" and not props["datetime"].startswith("1970")
    assert before <= datetime.fromisoformat(props["datetime"]) <= datetime.now(UTC)
    lon, lat = item["geometry"]["coordinates"][0][0]
    assert 85.5 < lon < 85.6 and 27.6 < lat < 27.7


def test_bands_are_picked_by_common_name() -> None:
    cloud_mask = json.loads((REPO / "examples" / "cloud-mask" / "stac-item.json").read_text())
    assert rgb_bands(cloud_mask) == [4, 3, 2]  # B4 red, B3 green, B2 blue of Landsat's B1..B11
    named = _item_with_bands(
        [
            {"name": "b", "eo:common_name": "blue"},
            {"name": "g", "eo:common_name": "green"},
            {"name": "r", "eo:common_name": "red"},
            {"name": "n", "eo:common_name": "nir"},
        ]
    )
    assert rgb_bands(named) == [3, 2, 1]
    by_name = _item_with_bands(
        ["x", "y", "z"],
        [{"name": n, "eo:common_name": c} for n, c in zip("zyx", ("red", "green", "blue"), strict=True)],
    )
    assert rgb_bands(by_name) == [3, 2, 1]
    # a derived band is not in the imagery: the bands it reads follow the others (red is 3rd)
    derived = _item_with_bands(
        ["g", "b", {"name": "ndvi", "expression": "(n - r) / (n + r)"}],
        [
            {"name": n, "eo:common_name": c}
            for n, c in (("g", "green"), ("b", "blue"), ("n", "nir"), ("r", "red"))
        ],
    )
    assert rgb_bands(derived) == [4, 1, 2]
    # an item that does not say: the imagery's colour interpretation, else grey from band 1
    assert rgb_bands(_item_with_bands(["B1", "B2", "B3"]), ["red", "green", "blue"]) == [1, 2, 3]
    assert rgb_bands(None, ["blue", "green", "red"]) == [3, 2, 1]
    assert rgb_bands(_item_with_bands(["B1", "B2", "B3"]), ["gray", "undefined", "undefined"]) == [1, 1, 1]
    assert rgb_bands(None) == [1, 1, 1]


def _buildings(chip: str) -> np.ndarray:
    """Bright roofs as 'buildings': 8 x 8 pixel cells whose mean brightness is in the top tenth."""
    with rasterio.open(chip) as src:
        grey = src.read().mean(axis=0)
    cells = grey.reshape(64, 8, 64, 8).mean(axis=(1, 3))
    return np.kron(cells > np.percentile(cells, 90), np.ones((8, 8), np.uint8)).astype(np.uint8)


def test_drone_quicklook_is_in_colour(tmp_path: Path, shared_data: Path) -> None:
    chip = str(shared_data / CHIP)
    plan = plan_batch(chip, None, block_size=256, group_size=4)
    catalog = str(tmp_path / "catalog" / "catalog.json")
    # the model's version item says its input bands are blue, green, red (not the file's order)
    bgr = _item_with_bands([{"name": c, "eo:common_name": c} for c in ("blue", "green", "red")]) | {
        "type": "Feature",
        "stac_version": "1.1.0",
        "geometry": None,
        "links": [],
        "assets": {},
    }
    StaticCatalog(catalog).put_item(VERSIONS, bgr | {"id": version_item_id("buildings", "2")})
    picture = _Quicklook(plan, predictions_model_item(catalog, LINEAGE))
    assert picture.bands == [3, 2, 1]
    # without the version item, the model's base item; without either, the imagery says RGB
    other = str(tmp_path / "other" / "catalog.json")
    assert _Quicklook(plan, predictions_model_item(other, LINEAGE)).bands == [1, 2, 3]
    StaticCatalog(other).put_item(MODELS, bgr | {"id": "buildings"})
    assert _Quicklook(plan, predictions_model_item(other, LINEAGE)).bands == [3, 2, 1]
    with rasterio.open(chip) as src:
        transform = src.transform
        rgb = src.read()
    assert np.array_equal(_Quicklook(plan).bands, [1, 2, 3])
    colour = _Quicklook(plan).rgb
    # the picture's channels are the imagery's red, green and blue (512 px: not decimated),
    # stretched alike from the 2nd to the 98th percentile of all three
    lo, hi = np.percentile(rgb, [2, 98])
    expected = np.clip((np.moveaxis(rgb, 0, -1) - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(colour, expected, atol=1e-6)
    assert np.abs(colour[..., 0] - colour[..., 2]).mean() > 0.02  # not grey
    polys = mask_to_polygons(_buildings(chip), nodata=0).final
    picture.add(to_geometries(polys, transform))
    png = tmp_path / "quicklook.png"
    picture.save(png, "buildings v2 over Banepa")
    drawn = np.asarray(Image.open(png).convert("RGB")).astype(int)
    saturated = (np.abs(drawn[..., 0] - drawn[..., 1]) > 30) | (np.abs(drawn[..., 1] - drawn[..., 2]) > 30)
    assert saturated.mean() > 0.05  # colour imagery and red outlines, not a grey picture
