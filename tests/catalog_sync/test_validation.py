"""Offline STAC + MLM validation on the published examples and broken copies of them; the cached
validator against a fresh one; the validation benchmark on a few items."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from catalog_sync.validation import StacValidator, stac_validator, validate_stac
from geomlops.schemas import schema_path


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


# --- the cached validator: the same results as a fresh one, and a benchmark of both ---

REPO = Path(__file__).resolve().parents[2]
BENCHMARK = REPO / "benchmarks" / "catalog_validate.py"
EXT = "https://example.org/stac-ext/v1.0.0/schema.json"
NEEDED = "https://example.org/stac-ext/v1.0.0/needed.json"
ABSENT = "https://example.org/absent/v1.0.0/schema.json"


def _examples(shared_data: Path) -> list[tuple[str, dict, Path | None]]:
    """Every shared item, valid or incomplete, broken copies (invalid), and core-only (incomplete)."""
    paths = sorted((shared_data / "mlm-examples").glob("item_*.json"))
    paths += sorted((shared_data / "fair-model-items").glob("*.json"))
    cases: list[tuple[str, dict, Path | None]] = [(p.name, _load(p), None) for p in paths]
    basic = _load(shared_data / "mlm-examples" / "item_basic.json")
    no_name = copy.deepcopy(basic)
    no_name["properties"].pop("mlm:name")
    bad_task = copy.deepcopy(basic)
    bad_task["properties"]["mlm:tasks"] = ["flood-guessing"]
    bad_geometry = copy.deepcopy(basic)
    bad_geometry["geometry"]["type"] = "Triangle"
    cases += [("no-name", no_name, None), ("bad-task", bad_task, None), ("bad-geometry", bad_geometry, None)]
    cases.append(("core-only", basic, Path("-")))  # "-": validated without the schema folder
    return cases


def _folder(marker: Path | None, schema_dir: Path) -> Path | None:
    return None if marker == Path("-") else schema_dir


def test_cached_validation_gives_a_fresh_validators_results(shared_data: Path, schema_dir: Path) -> None:
    cases = _examples(shared_data)
    # the reference: jsonschema alone, nothing kept (the validation before any cache or shortcut)
    fresh = {
        name: StacValidator(_folder(m, schema_dir), fast=False).validate(item) for name, item, m in cases
    }
    assert {r.status for r in fresh.values()} == {"valid", "invalid", "incomplete"}
    shared = StacValidator(schema_dir)
    for _ in range(3):  # first pass reads the schemas, later ones use what is kept
        for name, item, marker in cases:
            if marker is None:
                assert shared.validate(item) == fresh[name], name
            assert validate_stac(item, _folder(marker, schema_dir)) == fresh[name], name


def test_one_shared_validator_per_schema_folder(schema_dir: Path) -> None:
    assert stac_validator(schema_dir) is stac_validator(Path(str(schema_dir)))
    assert stac_validator(schema_dir) is not stac_validator(None)


def test_concurrent_validation_gives_the_same_results(shared_data: Path, schema_dir: Path) -> None:
    cases = [(name, item) for name, item, marker in _examples(shared_data) if marker is None]
    fresh = {name: StacValidator(schema_dir, fast=False).validate(item) for name, item in cases}
    shared = StacValidator(schema_dir)  # starts empty: threads fill it at the same time
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda case: (case[0], shared.validate(case[1])), cases * 4))
    assert all(result == fresh[name] for name, result in results)


def _minimal_item(extensions: list[str]) -> dict:
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": extensions,
        "id": "minimal",
        "geometry": {"type": "Point", "coordinates": [85.5, 27.6]},
        "bbox": [85.5, 27.6, 85.5, 27.6],
        "properties": {"datetime": "2026-01-01T00:00:00Z", "ext:size": 3},
        "links": [],
        "assets": {},
    }


def _write_schema(folder: Path, uri: str, schema: dict) -> None:
    path = schema_path(folder, uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema))


def test_an_unavailable_schema_stays_unavailable_and_is_not_remembered(tmp_path: Path) -> None:
    # EXT is stored but refers to NEEDED, which is not; ABSENT is not stored at all
    _write_schema(
        tmp_path,
        EXT,
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "$id": EXT,
            "type": "object",
            "properties": {"properties": {"$ref": "needed.json"}},
        },
    )
    item = _minimal_item([EXT, ABSENT])
    validator = StacValidator(tmp_path)
    for _ in range(3):
        for result in (validator.validate(item), validate_stac(item, tmp_path)):
            assert result.status == "incomplete", result.summary()
            assert result.unavailable == [f"{EXT} (needs needed.json)", ABSENT]
            assert result.checked == ["https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json"]
    # once stored, both are read and checked on the next item: missing was never kept as missing
    draft7 = "http://json-schema.org/draft-07/schema#"
    needed = {"$schema": draft7, "type": "object", "properties": {"ext:size": {"type": "integer"}}}
    _write_schema(tmp_path, NEEDED, needed)
    _write_schema(tmp_path, ABSENT, {"$schema": draft7, "type": "object"})
    for result in (validator.validate(item), validate_stac(item, tmp_path)):
        assert result.status == "valid", result.summary()
        assert result.checked[1:] == [EXT, ABSENT]
    item["properties"]["ext:size"] = "three"
    result = validator.validate(item)
    assert result.status == "invalid"
    assert [(i.schema_uri, i.path) for i in result.issues] == [(EXT, "$.properties['ext:size']")]


def test_benchmark_reports_both_ways_and_their_ratio(shared_data: Path, schema_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["--items", "3", "--schema-dir", str(schema_dir), "--data-dir", str(shared_data)]
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        label, _, figures = line.partition("  ")
        rows[label.strip()] = figures.split()
    for way in ("fresh per item (old)", "cached (validate_stac)"):
        items, *figures = rows[way]
        assert items == "3" and len(figures) == 4 and all(float(f) > 0 for f in figures), result.stdout
    ratios = rows["ratio fresh/cached"]
    assert len(ratios) == 4 and all(r.endswith("x") and float(r[:-1]) > 0 for r in ratios), result.stdout
    assert "goal: cached <= 20 ms per item" in result.stdout
    assert "same result both ways: 3/3 items" in result.stdout


def test_the_jsonschema_rs_shortcut_agrees_with_jsonschema_on_many_broken_items(
    shared_data: Path, schema_dir: Path
) -> None:
    reference = StacValidator(schema_dir, fast=False)
    fast = StacValidator(schema_dir)
    valid = [
        item
        for _, item, marker in _examples(shared_data)
        if marker is None and reference.validate(item).status == "valid"
    ]
    assert len(valid) >= 5
    fast.validate(valid[0])
    fast.validate(valid[0])  # schemas absorbed: compiled shortcuts exist for what it declares
    assert any(v is not None for v in fast._fast.values())
    compared = statuses = 0
    for item in valid:
        for key in sorted(item["properties"]):
            for wrong in (None, 12345, "x", [], {}):
                broken = copy.deepcopy(item)
                broken["properties"][key] = wrong
                expected = reference.validate(broken)
                assert fast.validate(broken) == expected, (key, wrong)
                compared += 1
                statuses += expected.status == "invalid"
    assert compared > 200 and statuses > 50  # both verdicts were exercised
