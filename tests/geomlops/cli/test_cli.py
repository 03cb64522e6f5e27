"""The command line: help on every command, render, lint, and submit to a real HTTP server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from geomlops.cli.main import main
from pipelines import golden_path

COMMANDS = [
    [],
    ["demo"],
    ["render"],
    ["lint"],
    ["run"],
    ["runs"],
    ["runs", "list"],
    ["runs", "show"],
    ["submit"],
    ["install"],
    ["vectorize"],
    ["serve"],
    ["catalog"],
    ["catalog", "validate"],
    ["catalog", "search"],
    ["catalog", "sync"],
    ["catalog", "serve"],
    ["dev"],
    ["dev", "up"],
    ["dev", "down"],
    ["dev", "status"],
    ["promote"],
    ["promote", "status"],
    ["promote", "rollback"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "geomlops")
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    assert len(result.output.splitlines()) > 3


def test_top_level_help_names_every_pipeline() -> None:
    from pipelines import PIPELINES

    output = " ".join(CliRunner().invoke(main, ["--help"]).output.split())
    for name in PIPELINES:
        assert f" {name}," in output or f" {name}." in output, name


@pytest.mark.parametrize("pipeline", ["batch-inference", "batch-inference-schedule"])
def test_run_help_lists_the_pipelines_parameters(pipeline: str) -> None:
    """Each parameter of the rendered manifest, with its description and default or '(required)'."""
    from geomlops.cli._manifests import manifest_parameters

    result = CliRunner().invoke(main, ["run", pipeline, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    _, section = result.output.split(f"Parameters of {pipeline} (-p NAME=VALUE):\n")
    # a row starts at the section's indent; a long one wraps onto deeper-indented lines
    rows = {line.split()[0]: line for line in section.splitlines() if re.match(r"  \S", line)}
    declared = manifest_parameters(yaml.safe_load(golden_path(pipeline).read_text()))
    assert list(rows) == [p["name"] for p in declared]
    assert rows["model"].split(None, 1)[1] == "Registered model name. (required)"
    assert rows["block_size"].split(None, 1)[1] == "Block side in pixels. [default: '512']"


def test_run_help_names_a_pipeline_that_is_not_one() -> None:
    result = CliRunner().invoke(main, ["run", "no-such-pipeline", "--help"], terminal_width=200)
    assert result.exit_code == 0 and "Usage: " in result.output
    assert "PIPELINE 'no-such-pipeline': 'no-such-pipeline' is neither a pipeline" in result.output
    assert "Parameters of" not in result.output


def test_console_script_renders_the_golden_yaml(home: Path) -> None:
    geomlops = Path(sys.executable).parent / "geomlops"
    out = subprocess.run([str(geomlops), "render", "training"], capture_output=True, text=True, check=True)
    assert yaml.safe_load(out.stdout) == yaml.safe_load(golden_path("training").read_text())


def test_lint_reports_each_file(
    home: Path, tmp_path: Path, schema_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOMLOPS_SCHEMA_DIR", str(schema_dir))
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kind: Workflow\napiVersion: argoproj.io/v1alpha1\nmetadata: {name: x}\nspec:\n  entrypnt: a\n"
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    result = CliRunner().invoke(main, ["lint", "training", str(bad), str(broken)])
    assert result.exit_code == 1
    assert "✓ training" in result.output
    assert "$.spec: unknown field(s) entrypnt" in result.output
    assert "$.spec.entrypoint: missing" in result.output
    assert f"✗ {broken}" in result.output and "not valid YAML" in result.output


def test_unknown_pipeline_is_named(home: Path) -> None:
    result = CliRunner().invoke(main, ["render", "no-such"])
    assert result.exit_code == 2
    expected = "unknown pipeline 'no-such' (pipelines: batch-inference, batch-inference-schedule,"
    assert expected in result.output


def test_submit_installs_or_updates_the_template_then_submits(
    home: Path, argo_server: str, argo_requests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOMLOPS_ARGO_SERVER", argo_server)
    monkeypatch.setenv("GEOMLOPS_ARGO_NAMESPACE", "mapping")
    monkeypatch.setenv("GEOMLOPS_ARGO_TOKEN", "s3cr3t-token")
    result = CliRunner().invoke(
        main, ["submit", "training", "-p", "model=cloud-mask", "-p", "dataset_path=d"]
    )
    assert result.exit_code == 0, result.output
    methods = [(s["method"], s["path"]) for s in argo_requests]
    assert methods == [
        ("POST", "/api/v1/workflow-templates/mapping"),
        ("GET", "/api/v1/workflow-templates/mapping/geomlops-training-0-2-0"),
        ("PUT", "/api/v1/workflow-templates/mapping/geomlops-training-0-2-0"),
        ("POST", "/api/v1/workflows/mapping/submit"),
    ]
    assert all(s["auth"] == "Bearer s3cr3t-token" for s in argo_requests)
    assert argo_requests[2]["body"]["template"]["metadata"]["resourceVersion"] == "41"
    submitted = argo_requests[3]["body"]
    assert submitted["resourceName"] == "geomlops-training-0-2-0"
    assert submitted["submitOptions"]["parameters"] == ["model=cloud-mask", "dataset_path=d"]
    assert "geomlops-training-abcde" in result.output


def test_submit_dry_run_prints_requests_without_the_token(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOMLOPS_ARGO_SERVER", "http://127.0.0.1:9")
    monkeypatch.setenv("GEOMLOPS_ARGO_TOKEN", "s3cr3t-token")
    result = CliRunner().invoke(
        main, ["submit", "training", "--dry-run", "-p", "model=m", "-p", "dataset_path=d"]
    )
    assert result.exit_code == 0, result.output
    assert "s3cr3t-token" not in result.output
    requests_ = json.loads(result.output)
    assert [r["method"] for r in requests_] == ["POST", "POST"]
    assert requests_[0]["body"]["template"]["kind"] == "WorkflowTemplate"
    assert requests_[0]["headers"]["Authorization"] == "Bearer ***"


def test_submit_errors_are_clear(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given = ["-p", "model=m", "-p", "dataset_path=d"]
    result = CliRunner().invoke(main, ["submit", "training", *given])
    assert result.exit_code == 2 and "GEOMLOPS_ARGO_SERVER" in result.output
    result = CliRunner().invoke(main, ["submit", "training", "--dry-run", "-p", "epochs=3", *given])
    assert result.exit_code == 2 and "parameter(s) epochs not declared" in result.output
    result = CliRunner().invoke(main, ["submit", "training", "--dry-run", "-p", "model=m"])
    assert result.exit_code == 2, result.output
    assert "parameter(s) dataset_path required by the workflow" in result.output
    assert "-p dataset_path=VALUE" in result.output
    monkeypatch.setenv("GEOMLOPS_ARGO_SERVER", "http://127.0.0.1:9")
    result = CliRunner().invoke(main, ["submit", "training", *given])
    assert result.exit_code == 2 and "cannot reach the Argo server" in result.output


def test_submit_dry_run_needs_no_server(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEOMLOPS_ARGO_SERVER", raising=False)
    result = CliRunner().invoke(
        main, ["submit", "training", "--dry-run", "-p", "model=m", "-p", "dataset_path=d"]
    )
    assert result.exit_code == 0, result.output
    requests_ = json.loads(result.output)
    assert [r["url"].split("/api/v1")[0] for r in requests_] == ["$GEOMLOPS_ARGO_SERVER"] * 2
    assert requests_[1]["body"]["submitOptions"]["parameters"] == ["model=m", "dataset_path=d"]


def test_lint_without_schema_fails_unless_semantic_only(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOMLOPS_SCHEMA_DIR", str(tmp_path / "no-schemas-here"))
    result = CliRunner().invoke(main, ["lint", "training"])
    assert result.exit_code == 1, result.output
    assert "the schema check did not run" in result.output
    assert "--semantic-only" in result.output
    result = CliRunner().invoke(main, ["lint", "--semantic-only", "training"])
    assert result.exit_code == 0, result.output
    assert "(semantic checks only)" in result.output


def test_lint_without_schema_says_so_once(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The schema is missing for every document alike: one warning, not one per document."""
    monkeypatch.setenv("GEOMLOPS_SCHEMA_DIR", str(tmp_path / "no-schemas-here"))
    both = tmp_path / "bi.yaml"
    both.write_text(
        "\n---\n".join(golden_path(p).read_text() for p in ("batch-inference", "batch-inference-schedule"))
    )
    result = CliRunner().invoke(main, ["lint", "--semantic-only", str(both), "training"])
    assert result.exit_code == 0, result.output
    assert result.output.count("✓ ") == 3, result.output
    assert result.output.count("schema not available offline") == 1, result.output


def test_relative_paths_in_parameters_are_pointed_out(tmp_path: Path) -> None:
    from geomlops.cli.run import relative_path_params

    (tmp_path / "aoi.geojson").write_text("{}")
    (tmp_path / "scenes").mkdir()
    (tmp_path / "cloud-mask").mkdir()  # the model's package, named as the model: not a path parameter
    params = {
        "aoi": "aoi.geojson",
        "imagery": str(tmp_path / "aoi.geojson"),
        "output": "scenes",
        "model": "cloud-mask",
        "data": "s3://bucket/aoi.geojson",
        "area": "",
        "labels": "file://scenes",  # a file URL of a relative path is one too
    }
    warnings = relative_path_params(params, tmp_path)
    assert len(warnings) == 3
    assert warnings[0].startswith("-p aoi=aoi.geojson is a relative path")
    assert str(tmp_path / "aoi.geojson") in warnings[0]
    assert warnings[1].startswith("-p output=scenes is a relative path")
    assert warnings[2].startswith("-p labels=file://scenes is a relative path")
    assert warnings[2].endswith(f"pass {tmp_path / 'scenes'} instead")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("scene.tif", "here it is "),
        ("file://scene.tif", "here it is "),
        ("~/aoi.geojson", f"here it is {Path.home() / 'aoi.geojson'}"),
    ],
)
def test_a_file_tasks_read_is_given_by_an_absolute_path_or_a_url(value: str, expected: str) -> None:
    from geomlops.errors import ParameterError
    from geomlops.names import check_absolute_location

    field = "parameter 'imagery'"
    refusal = re.escape(f"{field} {value!r}: expected an absolute path or a URL")
    with pytest.raises(ParameterError, match=refusal) as refused:
        check_absolute_location(value, field)
    assert expected in str(refused.value)
    for good in (
        "/data/scene.tif",
        "file:///data/scene.tif",
        "/vsis3/bucket/scene.tif",
        "s3://bucket/scene.tif",
    ):
        assert check_absolute_location(good, field) == good


def test_run_warns_of_a_relative_path_parameter_and_the_task_cannot_see_it(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "here"
    here.mkdir()
    (here / "aoi.geojson").write_text("{}")
    manifest = here / "exists.yaml"
    manifest.write_text(
        """
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: exists}
spec:
  entrypoint: check
  arguments: {parameters: [{name: path}]}
  templates:
  - name: check
    script:
      image: python:3.11
      command: [python]
      source: |
        import os
        print(os.path.exists("{{workflow.parameters.path}}"))
"""
    )
    monkeypatch.chdir(here)
    result = CliRunner().invoke(main, ["run", str(manifest), "-p", "path=aoi.geojson", "--no-interactive"])
    assert result.exit_code == 0, result.output
    assert "-p path=aoi.geojson is a relative path" in result.stderr
    assert str(here / "aoi.geojson") in result.stderr
    [run_dir] = (home / "runs").iterdir()
    state = json.loads((run_dir / "state.json").read_text())
    assert [node["result"] for node in state["nodes"].values()] == ["False"]


def test_a_manifest_file_of_a_pipeline_gets_the_pipelines_checks_before_its_run(
    home: Path, tmp_path: Path
) -> None:
    from pipelines._naming import manifest_pipeline

    # a rendered WorkflowTemplate, its arguments edited in the file: a relative imagery path
    rendered = CliRunner().invoke(main, ["render", "batch-inference"])
    assert rendered.exit_code == 0, rendered.output
    template = yaml.safe_load(rendered.output)
    for parameter in template["spec"]["arguments"]["parameters"]:
        parameter["value"] = {"model": "cloud-mask", "imagery": "scenes/scene.tif"}.get(
            parameter["name"], parameter.get("value")
        )
    bi = tmp_path / "bi.yaml"
    bi.write_text(yaml.safe_dump(template))
    # a Workflow referring to an earlier version's template, its values in the file
    workflow = tmp_path / "register.yaml"
    workflow.write_text(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {generateName: register-}\n"
        "spec:\n  workflowTemplateRef: {name: geomlops-registration-0-1-0}\n"
        "  arguments: {parameters: [{name: package, value: water-mask}]}\n"
    )
    for manifest, extra, message in (
        (bi, [], "parameter 'imagery' 'scenes/scene.tif': expected an absolute path or a URL"),
        # -p wins over the file's value, as in the run
        (bi, ["-p", "imagery=other.tif"], "parameter 'imagery' 'other.tif': expected an absolute path"),
        (workflow, [], "parameter 'package' 'water-mask': expected an absolute path or a URL"),
    ):
        result = CliRunner().invoke(main, ["run", str(manifest), *extra, "--no-interactive"])
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert result.output.rstrip().endswith("(no run was started)"), result.output
        assert not (home / "runs").exists() or not any((home / "runs").iterdir())

    assert manifest_pipeline(template) == "batch-inference"
    from geomlops.cli._manifests import manifest_arguments

    # an Argo expression is resolved in the run, not checked before it
    given = {
        "spec": {"arguments": {"parameters": [{"name": "area", "value": "{{workflow.name}}"}, {"name": "m"}]}}
    }
    assert manifest_arguments(given) == {}
    assert (
        manifest_pipeline({"spec": {"workflowTemplateRef": {"name": "geomlops-promotion-0-2-0"}}})
        == "promotion"
    )
    assert manifest_pipeline(
        yaml.safe_load(CliRunner().invoke(main, ["render", "batch-inference-schedule"]).output)
    ) == ("batch-inference-schedule")
    # another pipeline's name as a prefix, another project's template, no labels: none of ours
    assert (
        manifest_pipeline({"spec": {"workflowTemplateRef": {"name": "geomlops-batch-inference-x"}}}) is None
    )
    assert manifest_pipeline({"spec": {"workflowTemplateRef": {"name": "mapping-training-0-1-0"}}}) is None
    assert manifest_pipeline({"metadata": {"labels": {"geomlops.io/pipeline": "other"}}}) is None


def test_lint_checks_every_argo_document_of_the_install_output(
    home: Path, tmp_path: Path, schema_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOMLOPS_SCHEMA_DIR", str(schema_dir))
    out = tmp_path / "install"
    assert CliRunner().invoke(main, ["install", "-n", "mapping", "-o", str(out)]).exit_code == 0
    workflows = out / "40-workflows.yaml"
    result = CliRunner().invoke(main, ["lint", str(workflows)])
    assert result.exit_code == 0, result.output
    checked = [line for line in result.output.splitlines() if line.startswith(f"✓ {workflows} [")]
    assert len(checked) == 6, result.output
    assert any("[CronWorkflow geomlops-batch-inference-schedule" in line for line in checked)

    rbac = out / "10-rbac.yaml"
    result = CliRunner().invoke(main, ["lint", str(rbac)])
    assert result.exit_code == 1
    assert (
        f"✗ {rbac}: no Argo document (apiVersion argoproj.io/…) among its 3 YAML document(s)" in result.output
    )

    broken = tmp_path / "two.yaml"
    broken.write_text(
        workflows.read_text().split("\n---\n")[0]
        + "\n---\nkind: Workflow\napiVersion: argoproj.io/v1alpha1\nmetadata: {name: bad}\nspec: {}\n"
    )
    result = CliRunner().invoke(main, ["lint", str(broken)])
    assert result.exit_code == 1
    assert f"✗ {broken} [Workflow bad]" in result.output
    assert "$.spec.entrypoint: missing" in result.output


def test_at_latest_names_the_newest_run(home: Path, tmp_path: Path) -> None:
    flow = tmp_path / "echo.yaml"
    flow.write_text(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {generateName: echo-}\n"
        "spec:\n  entrypoint: say\n  arguments: {parameters: [{name: word, value: a}]}\n"
        "  templates:\n  - name: say\n    inputs: {parameters: [{name: word}]}\n"
        "    script: {image: python:3.11, command: [python],\n"
        "             source: 'print(\"{{inputs.parameters.word}}\")'}\n"
    )
    result = CliRunner().invoke(main, ["runs", "show", "@latest"])
    assert result.exit_code == 2 and "@latest: no run in" in result.output
    first = CliRunner().invoke(main, ["run", str(flow), "-p", "word=first"])
    second = CliRunner().invoke(main, ["run", str(flow), "-p", "word=second"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    newest = re.search(r"Succeeded: run (\S+)", second.output).group(1)  # type: ignore[union-attr]
    shown = CliRunner().invoke(main, ["runs", "show", "@latest"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith(f"run {newest}: Succeeded")
    [log] = re.findall(r"      log: (\S+)", shown.output)
    sidecar = home / "runs" / newest / log.removesuffix(".log")  # a sidecar's log is beside its task's
    sidecar.with_name(f"{sidecar.name}.model.log").write_text("model loaded\n")
    shown = CliRunner().invoke(main, ["runs", "show", "@latest"])
    assert f"      log of 'model': {log.removesuffix('.log')}.model.log" in shown.output
    resumed = CliRunner().invoke(main, ["run", "--resume", "@latest"])
    assert newest in resumed.output

    # a run of a long name: the list's columns stay in line
    long = tmp_path / "long.yaml"
    long.write_text(flow.read_text().replace("generateName: echo-", f"generateName: {'echo-' * 10}"))
    assert CliRunner().invoke(main, ["run", str(long)]).exit_code == 0
    listing = CliRunner().invoke(main, ["runs", "list"]).output.splitlines()
    assert len(listing) == 3 and max(len(line.split()[0]) for line in listing) > 50, listing
    assert len({line.index(" Succeeded ") for line in listing}) == 1, listing


def test_a_resumed_run_warms_the_tracking_server_as_its_manifest_asks(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from steps.local_images import LocalImages

    warmed: list[bool] = []
    monkeypatch.setattr(LocalImages, "warm", lambda self: warmed.append(True))
    flow = tmp_path / "chosen.yaml"
    # the image is a parameter's, as a model's image is: known only when the run starts
    flow.write_text(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {generateName: chosen-}\n"
        "spec:\n  entrypoint: say\n  arguments: {parameters: [{name: image, value: 'python:3.11'}]}\n"
        "  templates:\n  - name: say\n"
        "    script: {image: '{{workflow.parameters.image}}', command: [python], source: 'print(1)'}\n"
    )
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(flow.read_text().replace("{{workflow.parameters.image}}", "python:3.11"))
    for manifest, warms in ((flow, [True]), (fixed, [])):
        warmed.clear()
        ran = CliRunner().invoke(main, ["run", str(manifest)])
        assert ran.exit_code == 0 and warmed == warms, ran.output
        warmed.clear()
        # a resumed run is given no manifest: the one it kept says whether to warm
        resumed = CliRunner().invoke(main, ["run", "--resume", "@latest"])
        assert resumed.exit_code == 0 and warmed == warms, resumed.output


def test_a_command_started_where_no_work_folder_is_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GEOMLOPS_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["runs", "list"])
    assert result.exit_code == 0, result.output
    assert (
        f"! no work folder in this folder: {tmp_path.resolve() / '.geomlops'} is made when needed"
        in result.output
    )
    assert "no runs yet in " in result.output
    # a refused request makes no work folder: a mistyped pipeline, an unknown model
    for refused in (
        ["run", "trainig"],
        ["run", "training", "-p", "model=x", "-p", "dataset_path=d"],
        ["promote", "status", "x"],
    ):
        result = CliRunner().invoke(main, refused)
        assert result.exit_code == 2, result.output
        assert list(tmp_path.iterdir()) == [], (refused, result.output)
        if refused[1] == "trainig":
            assert "did you mean 'training'?" in result.output
    (tmp_path / ".geomlops").mkdir()
    assert "no work folder" not in CliRunner().invoke(main, ["runs", "list"]).output


@pytest.mark.parametrize(("code", "attempts"), [(3, 1), (1, 2)])
def test_a_permanent_failure_is_not_retried_and_gets_no_resume_hint(
    home: Path, tmp_path: Path, code: int, attempts: int
) -> None:
    flow = tmp_path / "fails.yaml"
    flow.write_text(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {generateName: fails-}\n"
        "spec:\n  entrypoint: step\n  templates:\n  - name: step\n"
        "    retryStrategy: {limit: 1, expression: 'asInt(lastRetry.exitCode) != 3'}\n"
        "    script: {image: python:3.11, command: [python],\n"
        '             source: \'import sys; print("no band named nir", file=sys.stderr);'
        f" sys.exit({code})'}}\n"
    )
    result = CliRunner().invoke(main, ["run", str(flow)])
    assert result.exit_code == 1, result.output
    state = json.loads(next((home / "runs").glob("*/state.json")).read_text())
    [step] = [n for n in state["nodes"].values() if n.get("attempts")]
    assert len(step["attempts"]) == attempts
    permanent = "a permanent error (exit code 3" in result.output
    assert permanent == (code == 3), result.output
    assert ("resume with:" in result.output) == (code != 3), result.output
    # the run, shown later, says why: the task's exit code and the end of its log
    shown = CliRunner().invoke(main, ["runs", "show", "@latest"])
    assert shown.exit_code == 0, shown.output
    assert f"  Failed     step\n      message: exit code {code}" in shown.output
    assert "task 'step' (template 'step') failed" in shown.output
    assert shown.output.rstrip().endswith("no band named nir")


def test_debug_shows_the_traceback_of_an_error_and_only_then(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOMLOPS_DEBUG", "")  # recorded, so that --debug's setting is undone after
    plain = CliRunner().invoke(main, ["runs", "show", "nope"])
    assert plain.exit_code == 2 and "Traceback" not in plain.output
    debug = CliRunner().invoke(main, ["--debug", "runs", "show", "nope"])
    assert debug.exit_code == 2
    assert "Traceback (most recent call last)" in debug.output
    assert debug.output.rstrip().endswith(
        "error: unknown run id 'nope' (no state.json under " + str(home / "runs") + ")"
    )


def test_runs_whose_model_image_is_chosen_when_they_run_warm_the_tracking_server() -> None:
    from geomlops.cli._manifests import template_library
    from geomlops.cli.run import _images_chosen_when_run
    from pipelines import render

    # training and batch inference run the model's image (its package's environment here),
    # whose MLflow client needs a tracking server; the others never start one
    chosen = {name: _images_chosen_when_run(render(name)) for name in ("training", "batch-inference")}
    assert chosen == {"training": True, "batch-inference": True}
    assert not _images_chosen_when_run(render("registration"))
    assert not _images_chosen_when_run({"spec": {"templates": [{"container": {"image": "python:3.11"}}]}})
    sidecar = {"sidecars": [{"name": "model", "image": "{{inputs.parameters.image}}"}]}
    assert _images_chosen_when_run({"spec": {"templates": [sidecar]}})
    # retraining and the schedule reach training and batch inference through templateRef (the
    # schedule's templates under its workflowSpec): followed where the templates are known
    library = template_library(())
    for name in ("retrain", "batch-inference-schedule"):
        assert not _images_chosen_when_run(render(name)), name
        assert _images_chosen_when_run(render(name), library), name
    assert not _images_chosen_when_run(render("promotion"), library)
    by_ref = {"spec": {"workflowTemplateRef": {"name": "geomlops-training-0-2-0"}}}
    assert _images_chosen_when_run(by_ref, library)
    unknown = {"spec": {"workflowTemplateRef": {"name": "nowhere"}}}
    assert not _images_chosen_when_run(unknown, library)
