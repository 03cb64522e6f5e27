"""Offline STAC + MLM validation on the published examples and broken copies of them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from catalog_sync.validation import validate_stac


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_every_mlm_example_validates(shared_data: Path, schema_dir: Path) -> None:
    files = sorted((shared_data / "mlm-examples").glob("item_*.json"))
    assert len(files) >= 9
    for path in files:
        result = validate_stac(_load(path), schema_dir)
        assert result.status == "valid", f"{path.name}: {result.summary()}"
        assert any("mlm" in uri for uri in result.checked)


def test_fair_items_report_the_schema_that_is_not_offline(shared_data: Path, schema_dir: Path) -> None:
    for path in sorted((shared_data / "fair-model-items").glob("*.json")):
        result = validate_stac(_load(path), schema_dir)
        # classification v2.0.0 is not published offline: never passed as valid, never a crash
        assert result.status == "incomplete", path.name
        assert result.unavailable == ["https://stac-extensions.github.io/classification/v2.0.0/schema.json"]
        assert "https://stac-extensions.github.io/mlm/v1.5.1/schema.json" in result.checked


def test_without_schema_folder_extensions_are_unavailable(shared_data: Path) -> None:
    item = _load(shared_data / "mlm-examples" / "item_basic.json")
    result = validate_stac(item, None)
    assert result.status == "incomplete"
    assert "https://stac-extensions.github.io/mlm/v1.5.2/schema.json" in result.unavailable


@pytest.mark.parametrize(
    ("mutate", "expected_path", "expected_text"),
    [
        (lambda d: d["properties"].pop("mlm:name"), "$.properties", "'mlm:name' is a required property"),
        (
            lambda d: d["properties"].__setitem__("mlm:tasks", ["flood-guessing"]),
            "$.properties['mlm:tasks'][0]",
            "flood-guessing",
        ),
        (lambda d: d["geometry"].__setitem__("type", "Triangle"), "$.geometry", ""),
    ],
)
def test_broken_copies_fail_with_the_json_path(
    shared_data: Path, schema_dir: Path, mutate: object, expected_path: str, expected_text: str
) -> None:
    item = copy.deepcopy(_load(shared_data / "mlm-examples" / "item_basic.json"))
    mutate(item)  # type: ignore[operator]
    result = validate_stac(item, schema_dir)
    assert result.status == "invalid"
    assert any(i.path.startswith(expected_path) and expected_text in i.message for i in result.issues), (
        result.summary()
    )
