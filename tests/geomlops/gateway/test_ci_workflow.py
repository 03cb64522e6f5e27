"""The GitHub Actions workflow a model repository copies: valid YAML of the workflow syntax's
shape, and its webhook call, run with bash against the real gateway route, is accepted: the
signature it computes with openssl is the gateway's, and the run it starts clones that commit."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from geomlops import __version__
from geomlops.cli.demo import default_package
from geomlops.cli.main import main
from geomlops.gateway.backends.base import FINISHED_PHASES
from geomlops.gateway.ci_workflow import NOTIFY_ENV, ci_workflow_yaml, render_ci_workflow

from .test_webhooks import REPOSITORY, SECRET, hooked

#: the contexts a workflow may read here (GitHub's: github, secrets, vars; no inputs, no env)
_EXPRESSION = re.compile(r"\$\{\{\s*(github|secrets|vars)\.[A-Za-z_]+\s*\}\}")


def _expressions(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [e for v in node.values() for e in _expressions(v)]
    if isinstance(node, list):
        return [e for v in node for e in _expressions(v)]
    return re.findall(r"\$\{\{.*?\}\}", node) if isinstance(node, str) else []


def test_the_workflow_is_valid_yaml_of_githubs_shape(home: Path) -> None:
    text = ci_workflow_yaml(branch="release", package_dir="model/")
    workflow = yaml.safe_load(text)
    assert workflow == render_ci_workflow("release", "model")
    assert workflow["on"] == {"push": {"branches": ["release"]}}  # the key is the string 'on'
    assert workflow["permissions"] == {"contents": "read"}
    jobs = workflow["jobs"]
    assert list(jobs) == ["check", "retrain"] and jobs["retrain"]["needs"] == "check"
    for job in jobs.values():
        assert job["runs-on"] == "ubuntu-latest" and job["timeout-minutes"] > 0
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), step
            assert set(step) <= {"name", "uses", "run", "env", "with"}
    assert f'"geomlops=={__version__}"' in jobs["check"]["steps"][-1]["run"]
    assert jobs["check"]["steps"][-1]["run"].endswith('"model"')
    found = _expressions(workflow)
    assert found and all(_EXPRESSION.fullmatch(e) for e in found), found
    assert "${{ secrets.GEOMLOPS_WEBHOOK_SECRET }}" in found and SECRET not in text
    result = CliRunner().invoke(
        main, ["gateway", "ci-workflow", "--branch", "release", "--package-dir", "model/"]
    )
    assert result.exit_code == 0 and result.stdout == text


def _github_env(gateway_url: str, commit: str, delivery: str) -> dict[str, str]:
    """What GitHub's expressions in the step's env resolve to on a push to main."""
    context = {
        "vars.GEOMLOPS_GATEWAY_URL": gateway_url + "/",
        "secrets.GEOMLOPS_WEBHOOK_SECRET": SECRET,
        "github.repository": REPOSITORY,
        "github.ref": "refs/heads/main",
        "github.sha": commit,
        "github.server_url": "https://github.com",
        "github.repository_id": "123456",
        "github.run_id": delivery,
        "github.run_attempt": "1",
    }
    resolved = {
        name: re.sub(r"\$\{\{\s*([a-z_.A-Z]+)\s*\}\}", lambda m: context[m.group(1)], value)
        for name, value in NOTIFY_ENV.items()
    }
    return {"PATH": os.environ["PATH"]} | resolved


@pytest.mark.slow
def test_its_webhook_call_is_accepted_and_starts_the_retrain_run_of_that_commit(
    home: Path, tmp_path: Path, commit_package: Any, schema_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOMLOPS_SCHEMA_DIR", str(schema_dir))
    repo = home / "repos" / "cloud-mask"  # inside the work folder: tasks see no host /tmp
    commit = commit_package(repo, default_package())
    step = render_ci_workflow()["jobs"]["retrain"]["steps"][0]
    with hooked(home, monkeypatch, repo) as served:
        env = _github_env(served.url, commit, "4242")
        done = subprocess.run(
            ["bash", "-c", step["run"]], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        started = yaml.safe_load(done.stdout)
        assert started["status"] == "started" and started["commit"] == commit, started
        assert started["model"] == "cloud-mask" and started["repository"] == str(repo)

        again = subprocess.run(
            ["bash", "-c", step["run"]], env=env, capture_output=True, text=True, timeout=120
        )
        assert again.returncode != 0 and "was already received" in again.stdout  # --fail-with-body

        run = served.backend.get(started["run_id"])
        deadline = time.monotonic() + 600  # bounds a hang only
        while run.phase not in FINISHED_PHASES:
            assert time.monotonic() < deadline, f"run still {run.phase}"
            time.sleep(2)
            run = served.backend.get(started["run_id"])
    # this work folder has no trained version: the run cloned the commit, validated the package,
    # and stopped where the registered dataset is looked up
    assert run.outputs["checkout"]["package"].endswith(f"/{commit}/model")
    assert run.outputs["validate-package"]["model_id"] == "cloud-mask"
    assert "has no registered version to take its dataset from" in run.message, run.message
