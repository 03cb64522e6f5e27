"""Shared fixtures: the shared schemas and data, an isolated work folder, MLflow on SQLite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GEOMLOPS_TEST_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def schema_dir() -> Path:
    """Published JSON schemas stored by URL (CI reads them from ../shared/schemas)."""
    path = Path(os.environ.get("GEOMLOPS_TEST_SCHEMA_DIR", SHARED / "schemas"))
    assert (path / "stac-extensions.github.io").is_dir(), f"schemas not found at {path}"
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real data for tests (../shared/data)."""
    path = SHARED / "data"
    assert path.is_dir(), f"shared data not found at {path}"
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty work folder; MLflow and every GEOMLOPS_* setting point into it."""
    work = tmp_path / "home"
    work.mkdir()
    for key in list(os.environ):
        if key.startswith("GEOMLOPS_") and key not in ("GEOMLOPS_TEST_SCHEMA_DIR", "GEOMLOPS_TEST_SHARED"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("GEOMLOPS_HOME", str(work))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield work
