"""``geomlops schemas fetch``: the schemas validation needs, downloaded once for offline use,
here from a schema folder served over real HTTP (a mirror laid out as the folder is)."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from geomlops.cli.main import main

REPO = Path(__file__).resolve().parents[3]


@contextmanager
def served(folder: Path) -> Iterator[str]:
    """``folder`` over HTTP on localhost; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_fetched_schemas_make_lint_and_validation_complete_offline(
    home: Path, schema_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    into = tmp_path / "schemas"
    with served(schema_dir) as mirror:
        result = CliRunner().invoke(main, ["schemas", "fetch", "--into", str(into), "--mirror", mirror])
    assert result.exit_code == 0, result.output
    got = files(into)
    # Argo's, and the extensions with those they refer to ($ref: MLM's to processing and raster 1.1)
    for path in (
        "argo-workflows/v4.1.2/schema.json",
        "argo-events/v1.9.11/schema.json",
        "stac-extensions.github.io/mlm/v1.5.2/schema.json",
        "stac-extensions.github.io/version/v1.2.0/schema.json",
        "stac-extensions.github.io/processing/v1.1.0/schema.json",
        "stac-extensions.github.io/raster/v1.1.0/schema.json",
    ):
        assert got[path] == (schema_dir / path).read_bytes(), path
    assert all(got[path] == (schema_dir / path).read_bytes() for path in got)
    assert "https://stac-extensions.github.io/processing/v1.1.0/schema.json → " in result.output
    assert f"export GEOMLOPS_SCHEMA_DIR={into.resolve()}" in result.output

    # with nothing but the fetched folder: lint's strict check runs, and the examples' items
    # are valid (not incomplete)
    monkeypatch.setenv("GEOMLOPS_SCHEMA_DIR", str(into))
    linted = CliRunner().invoke(main, ["lint", "training", "batch-inference-schedule"])
    assert linted.exit_code == 0 and "(semantic checks only)" not in linted.output, linted.output
    items = [
        str(REPO / "examples" / name / "stac-item.json") for name in ("cloud-mask", "building-footprints")
    ]
    validated = CliRunner().invoke(main, ["catalog", "validate", *items])
    assert validated.exit_code == 0 and validated.output.count(": valid") == 2, validated.output


def test_a_schema_that_cannot_be_fetched_changes_nothing(
    home: Path, schema_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a mirror lacking a schema that MLM's refers to, and another whose MLM schema is not JSON
    lacking, broken = tmp_path / "lacking", tmp_path / "broken"
    shutil.copytree(schema_dir, lacking)
    shutil.rmtree(lacking / "stac-extensions.github.io/processing")
    shutil.copytree(schema_dir, broken)
    (broken / "stac-extensions.github.io/mlm/v1.5.2/schema.json").write_text("<html>moved</html>")
    into = tmp_path / "schemas"
    (into / "argo-workflows/v4.1.2").mkdir(parents=True)
    (into / "argo-workflows/v4.1.2/schema.json").write_text('{"kept": true}')
    before = files(into)
    monkeypatch.setenv("GEOMLOPS_SCHEMA_DIR", str(into))  # the default folder
    for mirror_folder, said in (
        (lacking, "stac-extensions.github.io/processing/v1.1.0/schema.json (mirror of https://"),
        (broken, "stac-extensions.github.io/mlm/v1.5.2/schema.json (mirror of https://"),
    ):
        with served(mirror_folder) as mirror:
            result = CliRunner().invoke(main, ["schemas", "fetch", "--mirror", mirror])
        assert result.exit_code == 2, result.output
        assert said in result.output and "could not be fetched" in result.output, result.output
        assert "Traceback" not in result.output
        assert files(into) == before  # nothing written, nothing staged left behind
        assert [p.name for p in into.iterdir()] == ["argo-workflows"]


def test_where_and_what_to_fetch_are_checked(home: Path) -> None:
    nowhere = CliRunner().invoke(main, ["schemas", "fetch"])
    assert nowhere.exit_code == 2 and "give --into FOLDER or set GEOMLOPS_SCHEMA_DIR" in nowhere.output
    local = CliRunner().invoke(main, ["schemas", "fetch", "--into", str(home / "s"), "file:///etc/passwd"])
    assert local.exit_code == 2 and "'file:///etc/passwd' is not an http(s) URL" in local.output
    assert not (home / "s").exists()


def test_one_file_is_fetched_once_and_none_is_written_outside_the_folder(
    home: Path, schema_dir: Path, tmp_path: Path
) -> None:
    from geomlops.errors import SchemaUnavailableError
    from geomlops.schemas import fetch_schemas

    eo = "https://stac-extensions.github.io/eo/v2.0.0/schema.json"
    into = tmp_path / "new" / "schemas"
    with served(schema_dir) as mirror:
        # the same schema named with a fragment: one file, fetched once, and no failure
        result = CliRunner().invoke(
            main, ["schemas", "fetch", "--into", str(into), "--mirror", mirror, f"{eo}#"]
        )
    assert result.exit_code == 0, result.output
    assert result.output.count("eo/v2.0.0/schema.json → ") == 1, result.output

    # a schema whose reference climbs out of the folder (a host of ".."): refused, nothing written
    hostile = tmp_path / "hostile"
    (hostile / "example.org").mkdir(parents=True)
    (hostile / "example.org" / "s.json").write_text('{"$ref": "http://../../escaped.json"}')
    (hostile / "escaped.json").write_text("{}")
    target = tmp_path / "never"
    with served(hostile) as mirror, pytest.raises(SchemaUnavailableError, match="not a path inside"):
        fetch_schemas({"https://example.org/s.json": "example.org/s.json"}, target, mirror=mirror)
    assert not target.exists() and not (tmp_path / "escaped.json").exists()
    # a folder that did not exist is not made when a download fails
    (tmp_path / "empty-mirror").mkdir()
    with served(tmp_path / "empty-mirror") as mirror:
        failed = CliRunner().invoke(main, ["schemas", "fetch", "--into", str(target), "--mirror", mirror])
    assert failed.exit_code == 2 and "could not be fetched" in failed.output and not target.exists()
