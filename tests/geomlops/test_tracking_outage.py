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
