"""Each pipeline renders to its committed golden YAML, and every committed manifest is valid Argo.

Regenerate on purpose with ``make golden`` (GEOMLOPS_UPDATE_GOLDEN=1); CI never does.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from geomlops.argo.lint import lint_manifest
from pipelines import GOLDEN_DIR, PIPELINES, golden_path, render, to_yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_render_equals_golden(name: str) -> None:
    rendered = to_yaml(render(name))
    path = golden_path(name)
    if os.environ.get("GEOMLOPS_UPDATE_GOLDEN") == "1":
        path.write_text(rendered)
    assert path.is_file(), f"{path} missing: run `make golden` and commit it"
    assert yaml.safe_load(path.read_text()) == yaml.safe_load(rendered), (
        f"{name} drifted from {path}; if intended, run `make golden` and review the diff"
    )


def committed_manifests() -> list[Path]:
    paths = sorted(GOLDEN_DIR.glob("*.yaml"))
    paths += sorted((REPO / "examples").glob("**/workflows/*.yaml"))
    return paths


def test_every_committed_manifest_is_strictly_valid(schema_dir: Path) -> None:
    paths = committed_manifests()
    assert {p.stem for p in paths} >= set(PIPELINES)
    for path in paths:
        result = lint_manifest(yaml.safe_load(path.read_text()), str(path), schema_dir)
        assert result.schema_checked, path
        assert result.ok, f"{path}: {result.errors}"


def test_templates_carry_no_secret_values() -> None:
    for name in PIPELINES:
        spec = render(name)["spec"]
        for template in spec.get("workflowSpec", spec)["templates"]:
            for env in (template.get("script") or template.get("container") or {}).get("env", []):
                if env["name"].startswith(("AWS_", "MLFLOW_TRACKING_")):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], env
