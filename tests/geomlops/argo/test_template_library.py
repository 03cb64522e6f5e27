"""templateRef to WorkflowTemplates and ClusterWorkflowTemplates the user points at (--templates)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from geomlops.argo.submit import plan_submission
from geomlops.argo.template_library import TemplateLibrary, template_ref_errors, workflow_spec
from geomlops.cli.main import main
from geomlops.errors import ManifestError
from geomlops.settings import Settings

API = "argoproj.io/v1alpha1"


def library_doc(kind: str, name: str, word: str) -> dict[str, Any]:
    source = f"print('{word}-' + '{{{{inputs.parameters.who}}}}')"
    return {
        "apiVersion": API,
        "kind": kind,
        "metadata": {"name": name},
        "spec": {
            "templates": [
                {
                    "name": "greet",
                    "inputs": {"parameters": [{"name": "who"}]},
                    "script": {"image": "python:3.11", "command": ["python"], "source": source},
                }
            ]
        },
    }


def caller(*refs: dict[str, Any]) -> dict[str, Any]:
    tasks = [
        {
            "name": f"t{i}",
            "templateRef": ref,
            "arguments": {"parameters": [{"name": "who", "value": f"n{i}"}]},
        }
        for i, ref in enumerate(refs)
    ]
    return {
        "apiVersion": API,
        "kind": "Workflow",
        "metadata": {"generateName": "caller-"},
        "spec": {"entrypoint": "main", "templates": [{"name": "main", "dag": {"tasks": tasks}}]},
    }


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A folder with a nested multi-document file (a ConfigMap among them) and a .yml file."""
    folder = tmp_path / "templates"
    (folder / "nested").mkdir(parents=True)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "limits"},
        "data": {"wf": "3"},
    }
    docs = [library_doc("WorkflowTemplate", "greeter", "hello"), config_map]
    (folder / "nested" / "lib.yaml").write_text(yaml.safe_dump_all(docs))
    (folder / "cluster.yml").write_text(
        yaml.safe_dump(library_doc("ClusterWorkflowTemplate", "greeter", "hi"))
    )
    (folder / "notes.txt").write_text("not read")
    return folder


def test_run_resolves_refs_from_a_folder_and_cluster_scope(templates: Path, home: Path) -> None:
    manifest = caller(
        {"name": "greeter", "template": "greet"},
        {"name": "greeter", "template": "greet", "clusterScope": True},
    )
    path = home / "wf.yaml"
    path.write_text(yaml.safe_dump(manifest))

    result = CliRunner().invoke(main, ["run", str(path), "--templates", str(templates)])

    assert result.exit_code == 0, result.output
    run_id = result.output.split("run ")[1].split()[0]
    shown = CliRunner().invoke(main, ["runs", "show", run_id, "--json"])
    nodes = yaml.safe_load(shown.output)["nodes"]
    assert (nodes["t0"]["result"], nodes["t1"]["result"]) == ("hello-n0", "hi-n1")


def test_unknown_ref_names_the_ref_and_where_it_was_looked_for(templates: Path, home: Path) -> None:
    path = home / "wf.yaml"
    path.write_text(yaml.safe_dump(caller({"name": "absent", "template": "greet"})))

    result = CliRunner().invoke(main, ["run", str(path), "--templates", str(templates)])

    assert result.exit_code != 0
    assert "WorkflowTemplate 'absent' not found" in result.output
    assert f"looked in {templates}, geomlops' pipelines" in result.output
    assert "WorkflowTemplates there: greeter" in result.output
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


def test_unknown_template_in_a_found_ref_lists_its_templates(templates: Path, tmp_path: Path) -> None:
    from geomlops.argo.runner import LocalRunner

    library = TemplateLibrary.load([templates])
    runner = LocalRunner(tmp_path / "runs", template_resolver=library, progress=False)
    with pytest.raises(
        ManifestError, match=r"'whisper' not found in WorkflowTemplate 'greeter' \(its templates: greet\)"
    ):
        runner.run(caller({"name": "greeter", "template": "whisper"}))


def test_cluster_scope_selects_the_kind_and_hints_at_the_other(tmp_path: Path) -> None:
    only = tmp_path / "only.yaml"
    only.write_text(yaml.safe_dump(library_doc("WorkflowTemplate", "solo", "x")))
    library = TemplateLibrary.load([only])

    assert library.resolve("solo")["kind"] == "WorkflowTemplate"
    with pytest.raises(ManifestError, match=r"no ClusterWorkflowTemplate named 'solo'.*drop clusterScope"):
        library.resolve("solo", cluster_scope=True)


def test_bad_template_paths_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"--templates .*missing: no such file or folder"):
        TemplateLibrary.load([tmp_path / "missing"])
    twice = tmp_path / "twice"
    twice.mkdir()
    for name in ("a.yaml", "b.yaml"):
        (twice / name).write_text(yaml.safe_dump(library_doc("WorkflowTemplate", "dup", "x")))
    with pytest.raises(
        ManifestError, match=r"WorkflowTemplate 'dup' is defined twice: in .*a.yaml and in .*b.yaml"
    ):
        TemplateLibrary.load([twice])
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [unclosed")
    with pytest.raises(ManifestError, match=r"broken\.yaml: not a YAML file"):
        TemplateLibrary.load([broken])


def test_workflow_template_ref_to_a_cluster_template(templates: Path, tmp_path: Path) -> None:
    from geomlops.argo.runner import LocalRunner

    base = library_doc("ClusterWorkflowTemplate", "whole", "wf")
    base["spec"]["entrypoint"] = "greet"
    base["spec"]["arguments"] = {"parameters": [{"name": "who", "value": "default"}]}
    base["spec"]["templates"][0]["inputs"]["parameters"][0]["value"] = "{{workflow.parameters.who}}"
    (templates / "whole.yaml").write_text(yaml.safe_dump(base))
    manifest = {
        "apiVersion": API,
        "kind": "Workflow",
        "metadata": {"name": "by-ref"},
        "spec": {
            "workflowTemplateRef": {"name": "whole", "clusterScope": True},
            "arguments": {"parameters": [{"name": "who", "value": "given"}]},
        },
    }
    runner = LocalRunner(
        tmp_path / "runs", template_resolver=TemplateLibrary.load([templates]), progress=False
    )

    summary = runner.run(manifest)

    assert summary.status == "Succeeded", summary.message
    assert runner.show(summary.run_id).nodes["greet"].result == "wf-given"


def test_lint_checks_refs_only_against_given_templates(templates: Path, home: Path) -> None:
    path = home / "wf.yaml"
    path.write_text(yaml.safe_dump(caller({"name": "absent", "template": "greet"})))
    lint = ["lint", "--semantic-only", str(path)]

    without = CliRunner().invoke(main, lint)
    given = CliRunner().invoke(main, [*lint, "--templates", str(templates)])

    assert without.exit_code == 0, without.output
    assert given.exit_code == 1
    assert "templateRef: no WorkflowTemplate named 'absent'" in given.output
    library = TemplateLibrary.load([templates])
    wrong = caller({"name": "greeter", "template": "wave", "clusterScope": True})
    assert template_ref_errors(wrong, library) == [
        "$.spec.templates[0].dag.tasks[0].templateRef: ClusterWorkflowTemplate 'greeter' has no "
        "template 'wave' (its templates: greet)"
    ]
    # a CronWorkflow's references are named under its workflowSpec
    cron = {"kind": "CronWorkflow", "spec": {"schedule": "@daily", "workflowSpec": wrong["spec"]}}
    assert template_ref_errors(cron, library)[0].startswith(
        "$.spec.workflowSpec.templates[0].dag.tasks[0].templateRef: ClusterWorkflowTemplate 'greeter'"
    )


def test_submit_leaves_refs_to_the_cluster() -> None:
    """A Workflow referencing a template installed on the cluster is planned, not refused."""
    manifest = caller({"name": "installed-on-the-cluster", "template": "greet", "clusterScope": True})
    settings = Settings(argo_server="https://argo.example.org:2746")

    requests = plan_submission(manifest, {}, settings)

    assert [r.purpose for r in requests] == ["create workflow"]
    assert requests[0].body["workflow"]["spec"]["templates"][0]["dag"]["tasks"][0]["templateRef"] == {
        "name": "installed-on-the-cluster",
        "template": "greet",
        "clusterScope": True,
    }


def test_semaphore_limits_come_from_config_maps(templates: Path) -> None:
    assert TemplateLibrary.load([templates]).semaphore_limits() == {"limits/wf": 3}


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ({"kind": "Workflow", "spec": {"entrypoint": "a"}}, {"entrypoint": "a"}),
        ({"kind": "WorkflowTemplate", "spec": {"entrypoint": "a"}}, {"entrypoint": "a"}),
        (
            {"kind": "CronWorkflow", "spec": {"schedule": "@daily", "workflowSpec": {"entrypoint": "a"}}},
            {"entrypoint": "a"},
        ),
        (
            {"kind": "CronWorkflow", "spec": {"schedule": "@daily"}},
            None,
        ),  # its own spec is not the workflow's
        ({"kind": "CronWorkflow", "spec": "x"}, None),
        ({"kind": "Workflow", "spec": ["x"]}, None),
        ({"kind": "Workflow"}, None),
    ],
)
def test_the_spec_a_manifest_runs(manifest: dict[str, Any], expected: dict[str, Any] | None) -> None:
    assert workflow_spec(manifest) == expected
