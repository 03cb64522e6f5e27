"""``geomlops catalog validate | search | serve``: offline validation, the STAC API, PgSTAC."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from geomlops.cli.main import main
from geomlops.ports import free_port

CLASSIFICATION_V2 = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"


@pytest.fixture
def cli(home: Path, schema_dir: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The command line, with the shared schemas as GEOMLOPS_SCHEMA_DIR."""
    monkeypatch.setenv("GEOMLOPS_SCHEMA_DIR", str(schema_dir))
    return CliRunner()


def _broken_copies(shared_data: Path, folder: Path) -> dict[str, Path]:
    item = json.loads((shared_data / "mlm-examples" / "item_basic.json").read_text())
    no_name = json.loads(json.dumps(item))
    del no_name["properties"]["mlm:name"]
    wrong_task = json.loads(json.dumps(item))
    wrong_task["properties"]["mlm:tasks"] = ["flood-guessing"]
    paths = {"no_name": folder / "no_name.json", "wrong_task": folder / "wrong_task.json"}
    paths["no_name"].write_text(json.dumps(no_name))
    paths["wrong_task"].write_text(json.dumps(wrong_task))
    paths["not_json"] = folder / "not_json.json"
    paths["not_json"].write_text("{ nope")
    return paths


def test_validate_examples_valid_and_fair_items_incomplete(cli: CliRunner, shared_data: Path) -> None:
    examples = sorted(str(p) for p in (shared_data / "mlm-examples").glob("item_*.json"))
    result = cli.invoke(main, ["catalog", "validate", *examples])
    assert result.exit_code == 0, result.output
    assert result.output.count(": valid") == len(examples)

    fair = sorted(str(p) for p in (shared_data / "fair-model-items").glob("*.json"))
    result = cli.invoke(main, ["catalog", "validate", examples[0], *fair])
    assert result.exit_code == 3, result.output
    assert result.output.count(": incomplete") == 3
    assert result.output.count(f"schema not available offline: {CLASSIFICATION_V2}") == 3


def test_validate_broken_copies_name_the_json_path(cli: CliRunner, shared_data: Path, tmp_path: Path) -> None:
    broken = _broken_copies(shared_data, tmp_path)
    fair = shared_data / "fair-model-items" / "unet_segmentation.json"
    result = cli.invoke(main, ["catalog", "validate", str(fair), *(str(p) for p in broken.values())])
    assert result.exit_code == 1, result.output  # invalid wins over incomplete
    assert f"{broken['no_name']}: invalid" in result.output
    assert "$.properties: 'mlm:name' is a required property" in result.output
    assert "$.properties['mlm:tasks'][0]: 'flood-guessing' is not one of" in result.output
    assert f"{broken['not_json']}: invalid" in result.output and "$: not valid JSON" in result.output


def test_validate_without_schema_folder_is_incomplete_never_valid(
    home: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GEOMLOPS_SCHEMA_DIR", raising=False)
    result = CliRunner().invoke(
        main, ["catalog", "validate", str(shared_data / "mlm-examples" / "item_basic.json")]
    )
    assert result.exit_code == 3, result.output
    assert "GEOMLOPS_SCHEMA_DIR is not set" in result.output
    assert (
        "schema not available offline: https://stac-extensions.github.io/mlm/v1.5.2/schema.json"
        in result.output
    )


def test_validate_help_documents_exit_statuses(cli: CliRunner) -> None:
    result = cli.invoke(main, ["catalog", "validate", "--help"])
    assert result.exit_code == 0
    for line in ("0  every file is valid", "1  at least one file is invalid", "3  none is invalid"):
        assert line in result.output


def test_search_through_the_running_api(
    cli: CliRunner, stac_api: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GEOMLOPS_STAC_API_URL", stac_api)
    result = cli.invoke(main, ["catalog", "search", "--task", "object-detection"])
    assert result.exit_code == 0, result.output
    assert "yolo11n-detection\tYOLOv11n Building Detection\tobject-detection\n" in result.output
    assert "1 item\n" in result.output

    result = cli.invoke(
        main,
        [
            *("catalog", "search", "--text", "building", "--bbox", "30,-5,40,5", "--framework", "pytorch"),
            *("--datetime", "2024-01-01T00:00:00Z", "--collection", "models"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(line.split("\t")[0] for line in result.output.splitlines() if "\t" in line) == [
        "resnet18-classification",
        "unet-segmentation",
        "yolo11n-detection",
    ]

    cuda = tmp_path / "cuda.json"
    cuda.write_text(json.dumps({"op": "=", "args": [{"property": "mlm:accelerator"}, "cuda"]}))
    result = cli.invoke(
        main, ["catalog", "search", "--filter", f"@{cuda}", "--task", "downscaling", "--json"]
    )
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("{")]
    assert json.loads(line)["id"] == "item_datacube_variables"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bbox", "1,2,3"], "--bbox '1,2,3': expected four numbers"),
        (["--filter", "{not json"], "--filter: not CQL2-JSON"),
        (["--collection", "nope"], "no collection 'nope' in the STAC API"),
    ],
)
def test_search_bad_input(
    cli: CliRunner, stac_api: str, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.setenv("GEOMLOPS_STAC_API_URL", stac_api)
    result = cli.invoke(main, ["catalog", "search", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_search_needs_an_api(cli: CliRunner) -> None:
    result = cli.invoke(main, ["catalog", "search", "--task", "classification"])
    assert result.exit_code == 2
    assert "no STAC API: set GEOMLOPS_STAC_API_URL" in result.output
    result = cli.invoke(main, ["catalog", "search", "--api-url", "http://127.0.0.1:1"])
    assert result.exit_code == 2
    expected = "STAC API unreachable at http://127.0.0.1:1 (setting GEOMLOPS_STAC_API_URL or --api-url): "
    assert expected + "Connection refused" in result.output


def test_serve_migrates_an_empty_database_and_serves_it(empty_dsn: str, home: Path) -> None:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "geomlops.cli.main",
        "catalog",
        "serve",
        "--dsn",
        empty_dsn,
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/collections", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        else:
            pytest.fail(f"catalog serve did not answer: {proc.communicate(timeout=10)[0].decode()}")
        ids = {c["id"] for c in response.json()["collections"]}
        assert ids == {"models", "model-versions", "predictions", "datasets"}
    finally:
        proc.terminate()
        output = proc.communicate(timeout=15)[0].decode()
    assert "serving on http://127.0.0.1:" in output


def test_serve_unreachable_database(cli: CliRunner) -> None:
    result = cli.invoke(main, ["catalog", "serve", "--dsn", "postgresql://postgres@127.0.0.1:1/catalog"])
    assert result.exit_code == 2
    assert (
        "PostgreSQL unreachable at 127.0.0.1:1/catalog (setting GEOMLOPS_PGSTAC_DSN): Connection refused"
        in result.output
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yesterday", "--datetime 'yesterday': 'yesterday' is not an RFC 3339 date or time"),
        ("2024-13-01", "'2024-13-01' is not an RFC 3339"),
        ("../..", "expected RFC3339 or RFC3339/RFC3339"),
        ("2024/2025/2026", "expected RFC3339 or RFC3339/RFC3339"),
    ],
)
def test_search_bad_datetime_is_named_before_anything_is_asked(
    cli: CliRunner, value: str, message: str
) -> None:
    result = cli.invoke(main, ["catalog", "search", "--api-url", "http://127.0.0.1:1", "--datetime", value])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and "cannot reach" not in result.output


def test_search_datetime_forms_stac_accepts_pass_the_check() -> None:
    from geomlops.cli.catalog import _datetime

    for value in ("2024", "2024-05", "2024-05-01", "2024-05-01T10:00:00Z", "2024-01-01/..", "../2024-01-01"):
        assert _datetime(value) == value
