"""What ``geomlops demo`` tells a user to run next."""

from __future__ import annotations

import pytest

from geomlops.cli.demo import browse_hint


def test_a_local_store_is_browsed_with_mlflow_ui() -> None:
    uri = "sqlite:////data/geomlops/mlflow.db"
    assert browse_hint(uri) == f"mlflow ui --backend-store-uri {uri}"


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000", "https://mlflow.example.org"])
def test_a_tracking_server_is_opened_not_passed_to_mlflow_ui(uri: str) -> None:
    # mlflow ui refuses a server URL as its backend store (no model registry on http://)
    hint = browse_hint(uri)
    assert "mlflow ui" not in hint
    assert hint.startswith(f"open {uri}")
