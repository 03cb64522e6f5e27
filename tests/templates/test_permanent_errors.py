"""A permanent error ends a step with its own exit code, and the retry strategy stops there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from geomlops.argo.runner import LocalRunner
from geomlops.errors import PERMANENT_EXIT_CODE, DatasetNotFoundError, GeomlopsError
from templates.common import NETWORK_RETRY, NOT_PERMANENT, exit_code_for_permanent_errors


def test_a_permanent_error_exits_with_its_code_and_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    def step(path: str) -> str:
        raise DatasetNotFoundError(f"dataset path {path!r} does not exist")

    with pytest.raises(SystemExit) as stop:
        exit_code_for_permanent_errors(step)("datasets/none")
    assert stop.value.code == PERMANENT_EXIT_CODE == 3
    assert "DatasetNotFoundError: dataset path 'datasets/none' does not exist" in capsys.readouterr().err


def test_other_errors_pass_through_unchanged() -> None:
    def step() -> None:
        raise GeomlopsError("the tracking server did not answer")

    with pytest.raises(GeomlopsError, match="did not answer"):
        exit_code_for_permanent_errors(step)()
    assert exit_code_for_permanent_errors(lambda: 7)() == 7


def _manifest(exit_code: int) -> dict[str, Any]:
    retry = NETWORK_RETRY.build().model_dump(
        exclude_none=True, by_alias=True, mode="json"
    )  # as the templates render it
    retry["backoff"] = {"duration": "0s"}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "permanent"},
        "spec": {
            "entrypoint": "step",
            "templates": [
                {
                    "name": "step",
                    "retryStrategy": retry,
                    "script": {
                        "image": "python:3.11",
                        "command": ["python"],
                        "source": f"import sys\nsys.exit({exit_code})\n",
                    },
                }
            ],
        },
    }


@pytest.mark.parametrize(("exit_code", "attempts"), [(PERMANENT_EXIT_CODE, 1), (1, 3)])
def test_the_runner_retries_only_what_is_not_permanent(tmp_path: Path, exit_code: int, attempts: int) -> None:
    assert NETWORK_RETRY.expression == NOT_PERMANENT == "asInt(lastRetry.exitCode) != 3"
    summary = LocalRunner(tmp_path / "runs").run(_manifest(exit_code))
    assert summary.status == "Failed"
    state = json.loads((Path(summary.run_dir) / "state.json").read_text())
    [node] = [n for n in state["nodes"].values() if n.get("attempts")]
    assert [a["exit_code"] for a in node["attempts"]] == [exit_code] * attempts
