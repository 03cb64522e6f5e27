"""The KServe transformer's entry point refuses missing arguments and variables by name (the
working path runs in tests/geomlops/serving/test_serve.py, in the MLServer environment)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geomlops.errors import ConfigurationError
from geomlops.serving.kserve_transformer import transformer_settings

ARGS = ["--model_name", "cloud-mask", "--predictor_host", "cloud-mask-predictor.ns", "--http_port", "8080"]
ENV = {"GEOMLOPS_TRANSFORMER_INPUT": json.dumps({"name": "x", "bands": ["B1"]})}


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--model_name", "m"], ENV, "expected --model_name and --predictor_host"),
        (ARGS, {}, "GEOMLOPS_TRANSFORMER_INPUT: not JSON"),
        (ARGS, {"GEOMLOPS_TRANSFORMER_INPUT": "[]"}, "expected the MLM input as a JSON object"),
        (ARGS, {**ENV, "GEOMLOPS_TRANSFORMER_OUTPUT": "{oops"}, "GEOMLOPS_TRANSFORMER_OUTPUT: not JSON"),
        (ARGS, {**ENV, "GEOMLOPS_TRANSFORMER_OUTPUT": "[1]"}, "expected the MLM output as a JSON object"),
    ],
)
def test_missing_arguments_or_variables_are_named(
    argv: list[str], environ: dict[str, str], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        transformer_settings(argv, environ, tmp_path, 1000)
    assert not list(tmp_path.iterdir())


def test_settings_point_at_the_predictor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "mlserver"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    env = {**ENV, "GEOMLOPS_TRANSFORMER_RUN_ID": "r1", "GEOMLOPS_TRANSFORMER_MODEL_VERSION": "3"}
    env["GEOMLOPS_TRANSFORMER_OUTPUT"] = json.dumps({"name": "mask", "geomlops:threshold": 0.4})
    command = transformer_settings([*ARGS, "--unknown_flag", "x"], env, tmp_path / "s", 1000)
    assert command[1:] == ["start", str(tmp_path / "s")]
    model = json.loads((tmp_path / "s" / "cloud-mask" / "model-settings.json").read_text())
    extra = model["parameters"]["extra"]
    assert extra["predictor_url"] == "http://cloud-mask-predictor.ns/v2/models/cloud-mask/infer"
    assert extra["transformer"]["run_id"] == "r1" and model["parameters"]["version"] == "3"
    assert extra["max_bytes"] == 1000 and extra["input"]["bands"] == ["B1"]
    assert extra["output"] == {"name": "mask", "geomlops:threshold": 0.4}
    assert json.loads((tmp_path / "s" / "settings.json").read_text())["http_port"] == 8080
