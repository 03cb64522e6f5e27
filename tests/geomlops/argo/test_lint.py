"""The linter: strict Argo schema plus references and cycles."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from geomlops.argo.lint import lint_manifest
from pipelines import render


@pytest.fixture
def manifest() -> dict[str, Any]:
    return copy.deepcopy(render("training"))


def test_rendered_training_is_clean(manifest: dict[str, Any], schema_dir: Path) -> None:
    result = lint_manifest(manifest, "training", schema_dir)
    assert result.schema_checked and result.ok, result.errors


def test_misspelt_field_is_an_error(manifest: dict[str, Any], schema_dir: Path) -> None:
    manifest["spec"]["templates"][1]["retryStrategie"] = {"limit": 1}
    result = lint_manifest(manifest, "training", schema_dir)
    assert result.errors == ["$.spec.templates[1]: unknown field(s) retryStrategie"]


def test_v3_cron_schedule_field_is_refused(schema_dir: Path) -> None:
    cron = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "CronWorkflow",
        "metadata": {"name": "c"},
        "spec": {
            "schedule": "0 * * * *",
            "workflowSpec": {"entrypoint": "a", "templates": [{"name": "a", "suspend": {}}]},
        },
    }
    result = lint_manifest(cron, "cron", schema_dir)
    assert any("unknown field(s) schedule" in e for e in result.errors), result.errors


def test_missing_template_and_cycle(manifest: dict[str, Any], schema_dir: Path) -> None:
    tasks = manifest["spec"]["templates"][0]["dag"]["tasks"]
    tasks[0]["template"] = "no-such-template"
    tasks[0]["depends"] = "publish"
    manifest["spec"]["entrypoint"] = "nowhere"
    errors = lint_manifest(manifest, "training", schema_dir).errors
    assert "$.spec.entrypoint: template 'nowhere' does not exist" in errors
    assert any("uses template 'no-such-template', which does not exist" in e for e in errors)
    assert any("dependency cycle" in e and "fetch-model" in e for e in errors)


def test_not_a_workflow(schema_dir: Path) -> None:
    assert lint_manifest(["a"], "x.yaml", schema_dir).errors == ["x.yaml: expected a YAML mapping, got list"]
    assert "expected one of" in lint_manifest({"kind": "Pod"}, "x", schema_dir).errors[0]


def test_without_schema_the_note_says_so(manifest: dict[str, Any], tmp_path: Path) -> None:
    result = lint_manifest(manifest, "training", tmp_path)
    assert not result.schema_checked
    assert result.schema_note and "not available offline" in result.schema_note
    assert result.ok  # the semantic checks still ran and found nothing


def test_a_cron_workflow_s_errors_name_its_workflow_spec(tmp_path: Path) -> None:
    from geomlops.argo.lint import semantic_errors

    schedule = render("batch-inference-schedule")
    assert schedule["kind"] == "CronWorkflow" and semantic_errors(schedule) == []
    spec = schedule["spec"]["workflowSpec"]
    spec["entrypoint"] = "mian"
    spec["templates"][0]["dag"]["tasks"].append({"name": "b", "template": "nope"})
    spec["templates"][0]["script"] = {"image": "x", "resources": {"requests": {"cpu": "lots"}}}
    errors = semantic_errors(schedule)
    assert "$.spec.workflowSpec.entrypoint: template 'mian' does not exist" in errors, errors
    assert any(
        e.startswith("$.spec.workflowSpec.templates[0].dag.tasks: ") and "'nope'" in e for e in errors
    ), errors
    assert any(e.startswith("$.spec.workflowSpec.templates[0].script.resources.requests.cpu") for e in errors)
    assert all(e.startswith("$.spec.workflowSpec.") for e in errors), errors
    # without a workflowSpec, the note says what is missing (also where the schema is not at hand)
    del schedule["spec"]["workflowSpec"]
    result = lint_manifest(schedule, "schedule", tmp_path)
    assert result.errors == [
        "$.spec.workflowSpec: missing (a CronWorkflow runs the workflow its workflowSpec describes)"
    ]
    schedule["spec"] = {"workflowSpec": "daily"}
    assert semantic_errors(schedule) == ["$.spec.workflowSpec: expected a mapping"]
    schedule["spec"] = "daily"  # the fault is the spec's own
    assert semantic_errors(schedule) == ["$.spec: expected a mapping"]
