"""MLflow unreachable: commands answer in seconds with "unreachable", the setting and the address
(never "not found", never the credentials)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from geomlops.cli.main import main
from geomlops.tracking import unreachable_error, without_credentials


@pytest.fixture
def dead_tracking(home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("GEOMLOPS_MLFLOW_TRACKING_URI", f"http://ops:s3cr3t@127.0.0.1:{port}")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"127.0.0.1:{port}"


@pytest.fixture
def catalogued(dead_tracking: str, home: Path) -> str:
    """The demo's model item in the static catalogue, so that a run's preflight reaches MLflow."""
    from geomlops.cli.demo import default_package
    from steps.catalog import publish_base_item

    publish_base_item(default_package(), str(home / "catalog" / "catalog.json"))
    return dead_tracking


@pytest.mark.parametrize(
    "args",
    [
        ["run", "batch-inference", "-p", "model=cloud-mask", "-p", "imagery=/nowhere.tif"],
        ["run", "promotion", "-p", "model=cloud-mask", "-p", "candidate=1"],
    ],
)
def test_runs_refuse_before_starting_when_tracking_is_unreachable(catalogued: str, args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    [line] = [x for x in result.output.splitlines() if x.strip() and not x.startswith("! ")]
    assert line.startswith(f"error: MLflow tracking server unreachable at http://{catalogued}")
    assert "GEOMLOPS_MLFLOW_TRACKING_URI" in line and "s3cr3t" not in result.output


@pytest.mark.parametrize(
    ("setting", "value", "args", "expected"),
    [
        (
            "GEOMLOPS_PGSTAC_DSN",
            "postgresql://postgres:s3cr3t@127.0.0.1:{port}/catalog",
            ["catalog", "sync"],
            "error: PostgreSQL unreachable at 127.0.0.1:{port}/catalog (setting GEOMLOPS_PGSTAC_DSN)",
        ),
        (
            "GEOMLOPS_STAC_API_URL",
            "http://127.0.0.1:{port}",
            ["catalog", "search", "--text", "flood"],
            "error: STAC API unreachable at http://127.0.0.1:{port} (setting GEOMLOPS_STAC_API_URL",
        ),
    ],
)
def test_catalogue_services_say_unreachable_with_their_setting(
    home: Path, monkeypatch: pytest.MonkeyPatch, setting: str, value: str, args: list[str], expected: str
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(setting, value.format(port=port))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("error:")]  # (MLflow logs its new DB)
    assert line.startswith(expected.format(port=port)), line
    assert "s3cr3t" not in result.output and "not found" not in result.output.lower()


@pytest.mark.parametrize(
    "args",
    [
        ["promote", "status", "cloud-mask"],
        ["promote", "rollback", "cloud-mask", "--approver", "ana@example.org", "--reason", "drill"],
        ["catalog", "sync", "--dry-run"],
        ["catalog", "sync"],
    ],
)
def test_commands_say_unreachable_with_setting_and_address(dead_tracking: str, args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    progress = [x for x in lines if x.startswith("! ")]
    assert progress and progress[0] == f"! no answer from {dead_tracking}; retrying (2 left)", lines
    [line] = [x for x in lines if not x.startswith("! ")]
    assert line.startswith("error: MLflow tracking server unreachable at http://" + dead_tracking)
    assert "GEOMLOPS_MLFLOW_TRACKING_URI" in line
    assert "s3cr3t" not in result.output and "not found" not in result.output.lower()
    assert "no production version" not in result.output


def test_not_found_stays_not_found(home: Path) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as caught:
        MlflowClient(f"sqlite:///{home / 'mlflow.db'}").get_registered_model("nobody")
    assert unreachable_error(caught.value, "sqlite:///x") is None


def test_credentials_are_removed_but_the_host_stays() -> None:
    assert without_credentials("http://u:p@mlflow.internal:5000/x") == "http://mlflow.internal:5000/x"
    assert without_credentials("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
