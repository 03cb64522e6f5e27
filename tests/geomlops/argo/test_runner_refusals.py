"""What the local runner refuses before running anything: unsupported features, bad input."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from runner_fixtures.build import dag, script, task, workflow

from geomlops.argo.runner import LocalRunner, check_supported
from geomlops.errors import ManifestError, ParameterError, UnsupportedFeatureError

Manifest = dict[str, Any]


def base() -> Manifest:
    hello = script("hello", "print('{{inputs.parameters.who}}')", inputs=["who"])
    main = dag("main", [task("greet", "hello", args={"who": "{{workflow.parameters.who}}"})])
    return workflow([main, hello], parameters={"who": "world", "mode": "fast"})


def template(manifest: Manifest, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(t for t in manifest["spec"]["templates"] if t["name"] == name)
    return found


def with_output_artifact(m: Manifest) -> None:
    zipped = {"name": "model", "path": "/tmp/model", "archive": {"zip": {}}}
    template(m, "hello")["outputs"] = {"artifacts": [zipped]}


def with_input_artifact(m: Manifest) -> None:
    template(m, "hello")["inputs"]["artifacts"] = [
        {"name": "data", "path": "/tmp/data", "http": {"url": "x"}}
    ]


def with_workflow_artifact(m: Manifest) -> None:
    m["spec"]["arguments"] = {"artifacts": [{"name": "data", "raw": {"data": "x"}}]}


def with_resource_template(m: Manifest) -> None:
    m["spec"]["templates"].append({"name": "apply", "resource": {"action": "create", "manifest": "{}"}})


def with_container(m: Manifest) -> None:
    m["spec"]["templates"].append({"name": "cowsay", "container": {"image": "x", "command": ["echo"]}})


def with_expression(m: Manifest) -> None:
    template(m, "main")["dag"]["tasks"][0]["arguments"]["parameters"][0]["value"] = "{{=sprig.env('HOME')}}"


def with_volumes(m: Manifest) -> None:
    m["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]


def with_sidecar(m: Manifest) -> None:
    template(m, "hello")["sidecars"] = [{"name": "db", "image": "postgres"}]


def with_memoize(m: Manifest) -> None:
    template(m, "hello")["memoize"] = {"key": "x", "cache": {"configMap": {"name": "c"}}}


def with_daemoned(m: Manifest) -> None:
    tasks = template(m, "main")["dag"]["tasks"]
    tasks.append(task("after", "hello", args={"who": "x"}, depends="greet.Daemoned"))


def with_http(m: Manifest) -> None:
    m["spec"]["templates"].append({"name": "call", "http": {"url": "http://example.org"}})


def with_volume_mount(m: Manifest) -> None:
    template(m, "hello")["script"]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]


def with_host_path_volume(m: Manifest) -> None:
    template(m, "hello")["volumes"] = [{"name": "data", "hostPath": {"path": "/srv"}}]


def with_mount_outside_tmp(m: Manifest) -> None:
    template(m, "hello")["volumes"] = [{"name": "data", "emptyDir": {}}]
    template(m, "hello")["script"]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]


def with_sub_path(m: Manifest) -> None:
    template(m, "hello")["volumes"] = [{"name": "data", "emptyDir": {}}]
    template(m, "hello")["script"]["volumeMounts"] = [{"name": "data", "mountPath": "/tmp/d", "subPath": "x"}]


def with_hooks(m: Manifest) -> None:
    m["spec"]["hooks"] = {"exit": {"template": "hello"}}


def with_retry_expression(m: Manifest) -> None:
    template(m, "hello")["retryStrategy"] = {"limit": 2, "expression": "lastRetry.status | len()"}


@pytest.mark.parametrize(
    ("change", "feature", "where"),
    [
        (with_output_artifact, "output artifact archive zip", "template 'hello'"),
        (with_input_artifact, "input artifacts read from http", "template 'hello'"),
        (with_workflow_artifact, "workflow input artifacts", "spec"),
        (with_resource_template, "resource templates", "template 'apply'"),
        (with_container, "container templates", "template 'cowsay'"),
        (with_expression, "function sprig.env is not supported", "template 'main'"),
        (with_volumes, "volumes", "spec"),
        (with_sidecar, "sidecars", "template 'hello'"),
        (with_memoize, "memoization", "template 'hello'"),
        (with_daemoned, "'.Daemoned'", "task 'after'"),
        (with_http, "http templates", "template 'call'"),
        (with_volume_mount, "a volume mount of 'data', which is not an emptyDir volume", "template 'hello'"),
        (with_host_path_volume, "volumes other than emptyDir (hostPath)", "template 'hello'"),
        (
            with_mount_outside_tmp,
            "a volume mounted at '/data' (mount volumes under /tmp)",
            "template 'hello'",
        ),
        (with_sub_path, "volume subPath", "template 'hello'"),
        (with_hooks, "lifecycle hooks", "spec"),
        (with_retry_expression, "the pipe operator '|' is not supported", "retryStrategy.expression"),
    ],
)
def test_unsupported_features_are_refused_by_name(
    tmp_path: Path, change: Callable[[Manifest], None], feature: str, where: str
) -> None:
    manifest = base()
    change(manifest)
    runs = tmp_path / "runs"

    with pytest.raises(UnsupportedFeatureError) as caught:
        LocalRunner(runs, progress=False).run(manifest, {})

    assert feature in str(caught.value) and where in str(caught.value)
    assert not runs.exists(), "nothing may run (or be written) before the refusal"
    with pytest.raises(UnsupportedFeatureError, match=re.escape(feature)):
        check_supported(manifest)


def test_the_base_manifest_runs_and_containers_pass_with_the_flag(tmp_path: Path) -> None:
    manifest = base()
    assert LocalRunner(tmp_path, progress=False).run(manifest, {}).status == "Succeeded"
    with_container(manifest)
    check_supported(manifest, allow_host_containers=True)


def test_undeclared_parameter_lists_the_declared_ones(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=r"does not declare parameter\(s\) colour; declared: mode, who"):
        LocalRunner(tmp_path, progress=False).run(base(), {"colour": "red"})


def test_required_parameter_and_enum(tmp_path: Path) -> None:
    manifest = base()
    manifest["spec"]["arguments"]["parameters"][0] = {"name": "who"}
    manifest["spec"]["arguments"]["parameters"][1]["enum"] = ["fast", "slow"]
    runner = LocalRunner(tmp_path, progress=False)

    with pytest.raises(ParameterError, match=r"'who'.*required"):
        runner.run(manifest, {})
    with pytest.raises(ParameterError, match="'mode' is 'medium', not one of its allowed values: fast, slow"):
        runner.run(manifest, {"who": "me", "mode": "medium"})
    assert runner.run(manifest, {"who": "me", "mode": "slow"}).status == "Succeeded"


def cycle(m: Manifest) -> None:
    tasks = template(m, "main")["dag"]["tasks"]
    tasks[0]["depends"] = "b"
    tasks.append(task("b", "hello", args={"who": "x"}, depends="greet"))


def missing_task_template(m: Manifest) -> None:
    template(m, "main")["dag"]["tasks"][0]["template"] = "nowhere"


def missing_entrypoint(m: Manifest) -> None:
    del m["spec"]["entrypoint"]


def unknown_entrypoint(m: Manifest) -> None:
    m["spec"]["entrypoint"] = "start"


def unknown_dependency(m: Manifest) -> None:
    template(m, "main")["dag"]["tasks"][0]["dependencies"] = ["ghost"]


def unknown_variable(m: Manifest) -> None:
    template(m, "hello")["script"]["source"] = "print('{{workflow.parameters.colour}}')"


def non_ancestor_reference(m: Manifest) -> None:
    tasks = template(m, "main")["dag"]["tasks"]
    tasks.append(task("b", "hello", args={"who": "{{tasks.greet.outputs.result}}"}))


def missing_input(m: Manifest) -> None:
    del template(m, "main")["dag"]["tasks"][0]["arguments"]


def wrong_api_version(m: Manifest) -> None:
    m["apiVersion"] = "v1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (cycle, "dependency cycle in DAG 'main': (greet -> b -> greet|b -> greet -> b)"),
        (missing_task_template, "task 'greet' of template 'main': template 'nowhere' not found"),
        (missing_entrypoint, "spec.entrypoint is missing"),
        (unknown_entrypoint, "template 'start' not found"),
        (unknown_dependency, "depends on unknown task 'ghost'"),
        (unknown_variable, r"unknown variable '\{\{workflow.parameters.colour\}\}'"),
        (non_ancestor_reference, r"task 'b' of template 'main': unknown variable '\{\{tasks.greet"),
        (missing_input, "does not pass input parameter 'who'"),
        (wrong_api_version, "apiVersion 'v1'"),
    ],
)
def test_malformed_manifests_name_the_problem(
    tmp_path: Path, change: Callable[[Manifest], None], message: str
) -> None:
    manifest = copy.deepcopy(base())
    change(manifest)
    with pytest.raises(ManifestError, match=message):
        LocalRunner(tmp_path / "runs", progress=False).run(manifest, {})
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (["not", "a", "mapping"], "must be a mapping, not list"),
        ({"apiVersion": "argoproj.io/v1alpha1", "kind": "Pod", "spec": {}}, "kind 'Pod' is not one of"),
        ({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow"}, r"^\$\.spec: expected a mapping$"),
        (
            {"apiVersion": "argoproj.io/v1alpha1", "kind": "CronWorkflow", "spec": {"schedule": "@daily"}},
            r"^\$\.spec\.workflowSpec: missing \(a CronWorkflow runs the workflow its workflowSpec",
        ),
    ],
)
def test_not_a_workflow_is_refused(tmp_path: Path, manifest: Any, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        LocalRunner(tmp_path, progress=False).run(manifest, {})
