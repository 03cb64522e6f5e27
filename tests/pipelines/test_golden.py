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
#: the only geomlops variable a container in the model's image gets: its workflow run's uid
#: (no configuration or secret of geomlops)
RUN_UID = {"name": "GEOMLOPS_WORKFLOW_UID", "value": "{{workflow.uid}}"}


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


@pytest.mark.parametrize("name", ["training", "retrain"])
def test_the_models_image_runs_only_the_packages_own_commands(name: str) -> None:
    """Tasks in the model's image (the item's training runtime) run the package's entry point
    command and nothing of geomlops; every other task runs geomlops' image."""
    from templates.common import IMAGE

    manifest = render(name)
    templates = {t["name"]: t for t in manifest["spec"]["templates"]}
    model_image = "{{inputs.parameters.training_image}}"
    in_model_image = {
        n: t for n, t in templates.items() if (t.get("container") or {}).get("image") == model_image
    }
    if name == "training":
        assert set(in_model_image) == {"train", "evaluate-in-image"}
    for template in in_model_image.values():
        container = template["container"]
        assert container["command"] == ["bash", "-c", "{{inputs.parameters.command}}"]
        assert "args" not in container and "source" not in container
        # nothing of geomlops' configuration; the run's uid, by which one machine finds the
        # package standing in for the image in this run
        assert [e for e in container.get("env") or [] if e["name"].startswith("GEOMLOPS_")] == [RUN_UID]
        assert {a["name"] for a in template["inputs"]["artifacts"]} == {"package", "dataset"}
    for template_name, template in templates.items():
        if template_name in in_model_image:
            continue
        for kind in ("script", "container"):
            if kind in template:
                assert template[kind]["image"] == IMAGE, template_name
    if name == "retrain":  # it reuses the training workflow's templates, the model's image with them
        refs = [
            t.get("templateRef", {}).get("template") for t in manifest["spec"]["templates"][0]["dag"]["tasks"]
        ]
        assert {"plan-training", "train", "collect-run", "evaluate-in-image", "evaluate"} <= set(refs)


def test_batch_inference_predicts_in_the_models_image_beside_geomlops_step() -> None:
    """The predict task's pod: geomlops' step in geomlops' image, the model's worker as a sidecar
    in the model's image running only the worker, which imports nothing of geomlops; both mount
    the pod's emptyDir, where the worker tells its port. Every other task runs geomlops' image."""
    import ast

    from templates.common import IMAGE

    manifest = render("batch-inference")
    templates = {t["name"]: t for t in manifest["spec"]["templates"]}
    predict = templates["predict-blocks"]
    [sidecar] = predict["sidecars"]
    assert sidecar["image"] == "{{inputs.parameters.model_image}}"
    # the plan says whether it loads the model or runs the package's own inference entry point
    assert sidecar["args"][-2:] == ["--mode", "{{inputs.parameters.worker_mode}}"]
    # publishing: geomlops traces the mask with no model beside it, or the package's own
    # postprocess runs in the model's image; the plan says which, and only that one runs
    assert "sidecars" not in templates["publish-predictions"]
    [publisher] = templates["publish-own-predictions"]["sidecars"]
    assert publisher["image"] == sidecar["image"] and publisher["command"] == sidecar["command"]
    assert publisher["args"][-2:] == ["--mode", "commands"]  # loads nothing; runs postprocess
    dag = next(t for t in manifest["spec"]["templates"] if "dag" in t)["dag"]["tasks"]
    tasks = {t["name"]: t for t in dag}
    chosen = "{{tasks.plan-blocks.outputs.parameters.postprocess}}"
    assert tasks["publish-predictions"]["when"] == f"{chosen} == geomlops"
    assert tasks["publish-own-predictions"]["when"] == f"{chosen} == mlproject"
    assert (
        tasks["publish-predictions"]["depends"]
        == tasks["publish-own-predictions"]["depends"]
        == "predict-blocks"
    )
    given = {p["name"]: p["value"] for p in tasks["predict-blocks"]["arguments"]["parameters"]}
    assert given["worker_mode"] == "{{tasks.plan-blocks.outputs.parameters.worker_mode}}"
    assert sidecar["command"][:2] == ["python", "-c"]
    source = sidecar["command"][2]
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert imported <= {
        "argparse",
        "json",
        "os",
        "struct",
        "sys",
        "traceback",
        "typing",
        "socket",
        "collections",
        "contextlib",
        "signal",
        "subprocess",
        "threading",
        "numpy",
        "mlflow",
        "torch",
    }
    assert "{{" not in source  # Argo would substitute it
    assert [
        e
        for e in sidecar["env"]
        if e["name"].startswith("GEOMLOPS_") and e["name"] != "GEOMLOPS_WORKER_PORT_FILE"
    ] == [RUN_UID]
    assert predict["volumes"] == [{"name": "worker", "emptyDir": {}}]
    mounts = [{"name": "worker", "mountPath": "/tmp/geomlops-worker"}]
    assert predict["script"]["volumeMounts"] == mounts and sidecar["volumeMounts"] == mounts
    for name, template in templates.items():
        if "script" in template:
            assert template["script"]["image"] == IMAGE, name


def test_every_template_keeping_records_per_run_knows_its_run() -> None:
    """A step that reads or writes what is kept per run on one machine (``this_workflow()``:
    which package stands in for the model's image) has the run's uid in every pipeline."""
    import ast

    defined = [
        node
        for source in sorted((REPO / "templates").glob("*.py"))
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.FunctionDef)
    ]
    # the templates calling it, themselves or through a helper of their module
    helpers = {f.name for f in defined if f.name.startswith("_") and "this_workflow()" in ast.unparse(f)}
    functions = {
        f.name.replace("_", "-")
        for f in defined
        if f.decorator_list
        and ("this_workflow()" in ast.unparse(f) or any(f"{h}(" in ast.unparse(f) for h in helpers))
    }
    assert {"plan-training", "collect-run", "plan-blocks", "predict-blocks", "publish-own-predictions"} <= (
        functions
    )
    seen = set()
    for name in PIPELINES:
        spec = render(name)["spec"]
        for template in spec.get("templates") or spec["workflowSpec"].get("templates") or []:
            if template["name"] in functions:
                seen.add(template["name"])
                assert RUN_UID in template["script"]["env"], (name, template["name"])
    assert seen == functions
