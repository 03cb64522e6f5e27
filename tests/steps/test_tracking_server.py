"""The local tracking server a package's MLflow client talks to on the embedded store."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from steps._tracking_server import tracking_server


def test_a_server_uri_is_used_as_it_is(tmp_path: Path) -> None:
    with tracking_server("https://mlflow.example.org", tmp_path.as_uri()) as url:
        assert url == "https://mlflow.example.org"


def test_the_sqlite_store_is_served_over_http_while_the_block_runs(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracking_server(store, (tmp_path / "artifacts").as_uri()) as url:
        assert url.startswith("http://127.0.0.1:")
        experiment = MlflowClient(url).create_experiment("over-http")
    # written through the server into the same store geomlops reads directly
    assert MlflowClient(store).get_experiment(experiment).name == "over-http"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=2)


def test_a_start_is_given_up_when_cancelled(tmp_path: Path) -> None:
    import threading

    from geomlops.errors import GeomlopsError

    cancel = threading.Event()
    cancel.set()
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(GeomlopsError, match="given up"):
        with tracking_server(store, (tmp_path / "artifacts").as_uri(), cancel=cancel):
            pytest.fail("a cancelled start yields no server")
