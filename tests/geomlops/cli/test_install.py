"""The cluster install: structure of every object, strict Argo validity, no secret value anywhere."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from geomlops.argo.lint import lint_manifest
from geomlops.cli.install import SECRETS, install_manifests
from geomlops.cli.main import main
from pipelines import PIPELINES
from pipelines._naming import SERVICE_ACCOUNT

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def _by_kind(groups: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for docs in groups.values():
        for doc in docs:
            out.setdefault(doc["kind"], []).append(doc)
    return out


def test_objects_and_least_rbac() -> None:
    kinds = _by_kind(install_manifests("mapping"))
    assert [sa["metadata"]["name"] for sa in kinds["ServiceAccount"]] == [SERVICE_ACCOUNT]
    [role] = kinds["Role"]
    assert role["rules"] == [
        {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}
    ]
    [binding] = kinds["RoleBinding"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": "mapping"}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    for docs in kinds.values():
        assert all(d["metadata"]["namespace"] == "mapping" for d in docs)


def test_secret_templates_hold_keys_and_no_values() -> None:
    secrets = _by_kind(install_manifests("mapping"))["Secret"]
    assert {s["metadata"]["name"]: sorted(s["stringData"]) for s in secrets} == {
        name: sorted(keys) for name, keys in SECRETS.items()
    }
    assert all(value == "" for s in secrets for value in s["stringData"].values())


def test_every_referenced_secret_key_is_templated() -> None:
    groups = install_manifests("mapping")
    templated = {(s["metadata"]["name"], k) for s in _by_kind(groups)["Secret"] for k in s["stringData"]}
    referenced = set()
    for wf in groups["40-workflows.yaml"]:
        for template in wf["spec"].get("workflowSpec", wf["spec"])["templates"]:
            for env in (template.get("script") or {}).get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    referenced.add((ref["name"], ref["key"]))
    repo = yaml.safe_load(_by_kind(groups)["ConfigMap"][0]["data"]["geomlops"])["s3"]
    referenced |= {(repo[k]["name"], repo[k]["key"]) for k in ("accessKeySecret", "secretKeySecret")}
    assert referenced and referenced <= templated


def test_workflows_are_namespaced_strictly_valid_and_run_as_the_account(schema_dir: Path) -> None:
    workflows = install_manifests("mapping")["40-workflows.yaml"]
    assert len(workflows) == len(PIPELINES)
    for wf in workflows:
        assert wf["spec"].get("workflowSpec", wf["spec"])["serviceAccountName"] == SERVICE_ACCOUNT
        result = lint_manifest(wf, wf["metadata"]["name"], schema_dir)
        assert result.schema_checked and result.ok, result.errors


def test_no_secret_value_reaches_any_manifest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secrets = {
        "AWS_SECRET_ACCESS_KEY": "aws-Secret-9f8e7d",
        "AWS_ACCESS_KEY_ID": "AKIA-key-1234",
        "MLFLOW_TRACKING_PASSWORD": "mlflow-pass-5678",
        "GEOMLOPS_ARGO_TOKEN": "argo-token-abcd",
        "GEOMLOPS_MLFLOW_TRACKING_URI": "postgresql://u:db-pass-0000@h/mlflow",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(main, ["install", "-n", "mapping", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "out").glob("*.yaml"))
    assert [f.name for f in files] == [
        "10-rbac.yaml",
        "20-secrets.yaml",
        "30-artifact-repository.yaml",
        "40-workflows.yaml",
    ]
    text = (
        "".join(f.read_text() for f in files) + CliRunner().invoke(main, ["install", "-n", "mapping"]).output
    )
    for value in secrets.values():
        assert value not in text
    assert "db-pass" not in text


def test_install_through_the_argo_api(
    argo_server: str, argo_requests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOMLOPS_ARGO_SERVER", argo_server)
    result = CliRunner().invoke(main, ["install", "-n", "mapping", "--argo"])
    assert result.exit_code == 0, result.output
    created = [r for r in argo_requests if r["method"] in ("POST", "PUT")]
    posted = [r["body"] for r in created if r["method"] == "POST"]
    names = sorted(b.get("template", b.get("cronWorkflow", {}))["metadata"]["name"] for b in posted)
    assert names == sorted(wf["metadata"]["name"] for wf in install_manifests("mapping")["40-workflows.yaml"])
    assert {r["path"].split("/")[3] for r in created} == {"workflow-templates", "cron-workflows"}
    assert all(r["path"].split("/")[4] == "mapping" for r in created)


def test_values_files_parse_and_hold_no_credentials() -> None:
    files = sorted((DEPLOY / "values").glob("*.yaml"))
    assert {f.stem for f in files} >= {"minio", "postgresql", "mlflow", "eoapi", "kserve"}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if re.fullmatch(r"existing\w*secret", str(key).lower()):
                    continue  # names a Secret and its keys: references, not values
                if any(word in str(key).lower() for word in ("password", "secretkey", "token", "rootuser")):
                    assert not isinstance(value, str) or value == "", f"{path}.{key} holds a value"
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    for path in files:
        walk(yaml.safe_load(path.read_text()), path.name)


def test_the_installed_secrets_hold_every_key_the_templates_reference() -> None:
    from geomlops.cli.install import SECRETS
    from templates.common import SECRET_KEYS

    referenced = {(secret, key) for secret, key in SECRET_KEYS.values()}
    # the model servers' secret is read by Seldon/KServe, not by the step templates
    installed = {(s, key) for s, keys in SECRETS.items() if s != "geomlops-serving-s3" for key in keys}
    assert referenced == installed


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--namespace", "Mapping"),
        ("--namespace", "geo_mlops"),
        ("--namespace", "-mapping"),
        ("--namespace", "a" * 64),
        ("--artifact-bucket", "Argo_Artifacts"),
    ],
)
def test_install_refuses_names_kubernetes_or_s3_would_refuse(option: str, value: str, tmp_path: Path) -> None:
    given = {"--namespace": "mapping", "--artifact-bucket": "argo-artifacts", option: value}
    args = [word for pair in given.items() for word in pair]
    result = CliRunner().invoke(main, ["install", "-o", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    assert f"{option} {value!r}" in result.output and "expected" in result.output
    assert not (tmp_path / "out").exists()
