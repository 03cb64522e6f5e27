"""The services profile of the settings: defaults, S3 endpoint, early refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from geomlops.errors import ConfigurationError
from geomlops.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("GEOMLOPS_", "MLFLOW_", "AWS_")):
            monkeypatch.delenv(key)


def test_local_profile_is_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOMLOPS_HOME", str(tmp_path))
    settings = Settings()
    assert settings.profile == "local"
    assert settings.tracking_uri.startswith("sqlite:///")
    assert settings.artifact_root.startswith("file://")
    assert settings.s3_endpoint is None and settings.s3_environment() == {}
    assert settings.dask_scheduler_address is None


def test_services_profile_defaults_to_the_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOMLOPS_PROFILE", "services")
    monkeypatch.setenv("GEOMLOPS_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("GEOMLOPS_DVC_DATA_BUCKET", "data")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://minio:9000")
    settings = Settings()
    assert settings.artifact_root == "s3://mlflow-artifacts"
    assert settings.dvc_remote_url == "s3://data/geomlops"
    assert settings.s3_endpoint == "http://minio:9000"
    assert settings.s3_environment() == {
        "AWS_ENDPOINT_URL_S3": "http://minio:9000",
        "MLFLOW_S3_ENDPOINT_URL": "http://minio:9000",
    }
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://store:9000")  # the more specific name wins
    assert Settings().s3_endpoint == "http://store:9000"
    monkeypatch.setenv("GEOMLOPS_S3_ENDPOINT_URL", "http://set:9000")
    assert Settings().s3_endpoint == "http://set:9000"


def test_services_profile_needs_a_tracking_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOMLOPS_PROFILE", "services")
    with pytest.raises(ConfigurationError, match="GEOMLOPS_MLFLOW_TRACKING_URI"):
        Settings()
    monkeypatch.setenv("GEOMLOPS_MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    with pytest.raises(ConfigurationError, match="sqlite"):
        Settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [("GEOMLOPS_MLFLOW_ARTIFACT_ROOT", "mlflow-artifacts:/"), ("GEOMLOPS_DVC_REMOTE", "/tmp/remote")],
)
def test_services_profile_keeps_artifacts_and_data_in_s3(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("GEOMLOPS_PROFILE", "services")
    monkeypatch.setenv("GEOMLOPS_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable):
        Settings()
