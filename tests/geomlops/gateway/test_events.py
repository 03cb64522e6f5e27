"""Argo Events manifests: rendered by code, equal to their golden file, strictly valid against
Argo Events v1.9.11; the Sensor submits the retrain WorkflowTemplate with the push's values."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from geomlops.argo.lint import lint_manifest
from geomlops.cli.main import main
from geomlops.gateway.events import events_errors, render_event_manifests
from geomlops.gateway.webhooks import WebhookRepository
from pipelines import render

REPO = Path(__file__).resolve().parents[3]
GOLDEN = REPO / "deploy" / "argo-events" / "github-retrain.example.yaml"
EXAMPLE = {
    "hotosm/cloud-mask": WebhookRepository(model="cloud-mask", package_dir="model"),
    "hotosm/building-footprints": WebhookRepository(
        model="buildings", branch="release", clone_url="https://git.example.org/hotosm/buildings.git"
    ),
}
NAMESPACE, URL = "geomlops", "https://events.example.org"


def _rendered() -> list[dict[str, Any]]:
    return render_event_manifests(EXAMPLE, namespace=NAMESPACE, url=URL)


def test_rendered_manifests_equal_the_golden_file() -> None:
    text = yaml.safe_dump_all(_rendered(), sort_keys=False, width=120)
    if os.environ.get("GEOMLOPS_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert list(yaml.safe_load_all(GOLDEN.read_text())) == list(yaml.safe_load_all(text)), (
        f"{GOLDEN} drifted; if intended, regenerate with GEOMLOPS_UPDATE_GOLDEN=1 and review the diff"
    )


def test_event_source_and_sensor_are_strictly_valid(schema_dir: Path) -> None:
    docs = list(yaml.safe_load_all(GOLDEN.read_text()))
    checked = [d for d in docs if d["kind"] in ("EventSource", "Sensor")]
    assert [d["kind"] for d in checked] == ["EventSource", "Sensor"]
    for doc in checked:
        assert events_errors(doc, schema_dir) == [], doc["kind"]
    source, sensor = checked
    assert sorted(source["spec"]["github"]) == ["hotosm-building-footprints", "hotosm-cloud-mask"]
    hook = source["spec"]["github"]["hotosm-cloud-mask"]
    assert hook["repositories"] == [{"owner": "hotosm", "names": ["cloud-mask"]}]
    assert hook["webhookSecret"] == {"name": "geomlops-github", "key": "webhook-secret"}
    assert hook["webhook"]["url"] == URL and hook["events"] == ["push"]
    assert sensor["spec"]["template"]["serviceAccountName"] == docs[0]["metadata"]["name"]
    rules = docs[1]["rules"]
    assert {"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["create", "get"]} in rules


def test_unknown_fields_and_a_bad_submitted_workflow_are_errors(schema_dir: Path) -> None:
    source, sensor = _rendered()[3:]
    misspelt = copy.deepcopy(source)
    misspelt["spec"]["github"]["hotosm-cloud-mask"]["webhok"] = misspelt["spec"]["github"][
        "hotosm-cloud-mask"
    ].pop("webhook")
    errors = events_errors(misspelt, schema_dir)
    assert any("$.spec.github['hotosm-cloud-mask']" in e and "webhok" in e for e in errors), errors
    broken = copy.deepcopy(sensor)
    broken["spec"]["triggers"][0]["template"]["argoWorkflow"]["source"]["resource"]["spec"]["entrypont"] = "x"
    errors = events_errors(broken, schema_dir)
    assert any(
        e.startswith("$.spec.triggers[0].template.argoWorkflow.source.resource") and "entrypont" in e
        for e in errors
    )
    assert events_errors({"kind": "Workflow"}, schema_dir) == [
        "$.kind: expected EventSource or Sensor, not 'Workflow'"
    ]


def _apply(
    resource: dict[str, Any], parameters: list[dict[str, Any]], event: dict[str, Any]
) -> dict[str, Any]:
    """Argo Events' trigger parameters applied to the resource for one event (dataKey → dest)."""
    out = copy.deepcopy(resource)
    for parameter in parameters:
        value: Any = event
        for key in parameter["src"]["dataKey"].split("."):
            value = value[int(key)] if isinstance(value, list) else value[key]
        *path, last = parameter["dest"].split(".")
        node: Any = out
        for key in path:
            node = node[int(key)] if isinstance(node, list) else node[key]
        current = node[last] if parameter.get("operation") == "append" else ""
        node[last] = f"{current}{value}"
    return out


@pytest.mark.parametrize("repository", sorted(EXAMPLE))
def test_the_sensor_submits_the_retrain_template_with_the_push(repository: str, schema_dir: Path) -> None:
    sensor = _rendered()[-1]
    [dependency] = [d for d in sensor["spec"]["dependencies"] if d["name"] == repository.replace("/", "-")]
    filters = {f["path"]: f["value"] for f in dependency["filters"]["data"]}
    assert filters["body.ref"] == [f"refs/heads/{EXAMPLE[repository].branch}"]
    assert filters["headers.X-Github-Event"] == ["push"] and filters["body.deleted"] == ["false"]
    [trigger] = [t for t in sensor["spec"]["triggers"] if t["template"]["conditions"] == dependency["name"]]
    argo = trigger["template"]["argoWorkflow"]
    assert argo["operation"] == "submit"
    commit = "0123456789abcdef0123456789abcdef01234567"
    event = {
        "headers": {
            "X-Github-Delivery": ["72d3162e-cc78-11e3-81ab-4c9367dc0958"],
            "X-Github-Event": ["push"],
        },
        "body": {"after": commit, "repository": {"clone_url": f"https://github.com/{repository}.git"}},
    }
    workflow = _apply(argo["source"]["resource"], argo["parameters"], event)
    assert workflow["metadata"]["name"] == "geomlops-retrain-72d3162e-cc78-11e3-81ab-4c9367dc0958"
    template = render("retrain")
    assert workflow["spec"]["workflowTemplateRef"] == {"name": template["metadata"]["name"]}
    values = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    target = EXAMPLE[repository]
    assert values == {
        "model": target.model,
        "repository": target.clone_url or f"https://github.com/{repository}.git",
        "commit": commit,
        "package_dir": target.package_dir,
    }
    assert set(values) <= {p["name"] for p in template["spec"]["arguments"]["parameters"]}
    result = lint_manifest(workflow, "submitted", schema_dir)
    assert result.schema_checked and result.ok, result.errors


def test_the_command_renders_them_and_names_bad_input(tmp_path: Path, home: Path) -> None:
    args = ["gateway", "events", "-n", NAMESPACE, "--url", URL]
    result = CliRunner().invoke(main, [*args, "-r", "hotosm/cloud-mask=cloud-mask"])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == ["ServiceAccount", "Role", "RoleBinding", "EventSource", "Sensor"]
    config = tmp_path / "webhook.yaml"
    config.write_text(
        yaml.safe_dump(
            {"secret": "not-rendered-anywhere-42", "repositories": {"hotosm/cloud-mask": {"model": "m"}}}
        )
    )
    out = tmp_path / "events.yaml"
    result = CliRunner().invoke(main, [*args, "--config", str(config), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "not-rendered-anywhere-42" not in out.read_text()
    for bad, message in [
        (["-r", "cloud-mask"], "--repository 'cloud-mask': expected OWNER/NAME=MODEL"),
        (["-r", "not a repo=m"], "repositories: 'not a repo' is not 'owner/name'"),
        ([], "no repository: give --config FILE or --repository OWNER/NAME=MODEL"),
    ]:
        result = CliRunner().invoke(main, [*args, *bad])
        assert result.exit_code == 2 and message in result.output, result.output
