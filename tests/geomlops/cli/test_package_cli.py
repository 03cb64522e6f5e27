"""`geomlops package new/check`: exit statuses, every fault listed, and the test prediction made
with a trained model in an environment of its own (not geomlops')."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

from geomlops.cli.package import EXIT_FAULTS, package

GEOMLOPS = str(Path(sys.executable).parent / "geomlops")
UV = str(Path(sys.executable).parent / "uv")
MODEL_CODE = """
import mlflow
import numpy as np


class Answer(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        x = np.asarray(model_input)
        return (np.zeros(x[:, 0].shape) + {value}).astype("{dtype}")


mlflow.models.set_model(Answer())
"""


@pytest.fixture(autouse=True)
def _keep_the_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """`package check --model-uri` points MLflow at the configured server, in this process here."""
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)


@pytest.fixture(scope="session")
def model_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An environment of its own with only MLflow's client and numpy: no geomlops in it."""
    root = tmp_path_factory.mktemp("model-env") / "venv"
    subprocess.run([UV, "venv", "-q", "--python", sys.executable, str(root)], check=True)
    packages = [f"mlflow-skinny=={mlflow.__version__}", "numpy", "pandas", "cloudpickle"]
    subprocess.run(
        [UV, "pip", "install", "-q", "--python", str(root / "bin" / "python"), *packages], check=True
    )
    return root / "bin" / "python"


def _saved_model(folder: Path, value: int, dtype: str = "uint8") -> Path:
    code = folder / "model_code.py"
    folder.mkdir(parents=True)
    code.write_text(MODEL_CODE.format(value=value, dtype=dtype))
    mlflow.pyfunc.save_model(str(folder / "model"), python_model=str(code))
    return folder / "model"


def _invoke(schema_dir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(package, list(args), env={"GEOMLOPS_SCHEMA_DIR": str(schema_dir)})
    return result.exit_code, result.output


IMAGE = "ghcr.io/acme/roof-type:0.1.0"


def test_new_then_check(tmp_path: Path, schema_dir: Path) -> None:
    code, out = _invoke(schema_dir, "new", "roof-type", "-o", str(tmp_path / "placeholder"))
    assert code == 0 and "put your image in place of ghcr.io/OWNER/roof-type:0.1.0" in out, out
    code, out = _invoke(schema_dir, "check", "--json", str(tmp_path / "placeholder" / "roof-type"))
    assert code == EXIT_FAULTS
    assert [(f["file"], f["field"]) for f in json.loads(out)["faults"]] == [
        ("stac-item.json", "$.assets['training-runtime'].href"),
        ("stac-item.json", "$.assets['inference-runtime'].href"),
    ]
    code, out = _invoke(schema_dir, "new", "roof-type", "-o", str(tmp_path), "--image", IMAGE)
    assert code == 0 and f"created {tmp_path / 'roof-type'}" in out and "OWNER" not in out
    code, out = _invoke(schema_dir, "check", str(tmp_path / "roof-type"))
    assert code == 0, out
    assert "✓" in out and "no --model-uri: no test prediction" in out
    (tmp_path / "roof-type" / "Dockerfile").unlink()
    code, out = _invoke(schema_dir, "check", "--json", str(tmp_path / "roof-type"))
    assert code == EXIT_FAULTS
    assert [(f["file"], f["field"]) for f in json.loads(out)["faults"]] == [("Dockerfile", "-")]
    code, out = _invoke(schema_dir, "new", "roof-type", "-o", str(tmp_path), "--image", IMAGE)
    assert code == 2 and "already exists" in out
    code, out = _invoke(schema_dir, "new", "other", "-o", str(tmp_path), "--image", "other:1")
    assert code == 2 and "expected REGISTRY/REPO:TAG" in out


def test_run_refuses_by_name_before_building_anything(tmp_path: Path, schema_dir: Path) -> None:
    """An entry point the MLproject lacks, train, a parameter that is not NAME=VALUE, a missing
    one, a path that does not exist, one the entry point does not declare: each named, exit
    status 2, no environment built."""
    code, out = _invoke(schema_dir, "new", "roof-type", "-o", str(tmp_path), "--image", IMAGE)
    assert code == 0, out
    root = str(tmp_path / "roof-type")
    code, out = _invoke(schema_dir, "run", root, "prepare")
    assert code == 2 and "ENTRY_POINT 'prepare'" in out
    assert "(it has: inference, postprocess, preprocess, train)" in out
    code, out = _invoke(schema_dir, "run", root, "train")
    assert code == 2 and "geomlops run training" in out
    code, out = _invoke(schema_dir, "run", root, "preprocess", "-P", "output")
    assert code == 2 and "-P 'output': expected NAME=VALUE" in out
    code, out = _invoke(schema_dir, "run", root, "preprocess", "-P", f"output={tmp_path / 'data'}")
    assert code == 2 and "No value given for missing parameters: 'source'" in out, out
    code, out = _invoke(schema_dir, "run", root, "preprocess", "-P", "source=no-such", "-P", "output=o")
    assert code == 2 and "no-such" in out and "no such file or directory" in out, out
    # a misspelt parameter is named, not reported as the one it stood for being missing
    code, out = _invoke(schema_dir, "run", root, "preprocess", "-P", "sourc=/x", "-P", "output=o")
    assert code == 2, out
    assert (
        f"-P sourc: entry point 'preprocess' of {root}/MLproject has no parameter 'sourc' "
        "(it takes: output, source, test_share)" in out
    ), out
    # an undeclared one is refused, not passed on to the command as --test_shar 0.5
    given = ["-P", f"source={tmp_path}", "-P", "output=o", "-P", "test_shar=0.5", "-P", "seed=1"]
    code, out = _invoke(schema_dir, "run", root, "preprocess", *given)
    assert code == 2 and "-P seed, -P test_shar: " in out and "no parameters 'seed', 'test_shar' (" in out, (
        out
    )
    assert "building the environment" not in out


def test_test_prediction_in_the_models_own_environment(
    tmp_path: Path, schema_dir: Path, model_python: Path
) -> None:
    _invoke(schema_dir, "new", "roof-type", "-o", str(tmp_path), "--image", IMAGE)
    pkg = str(tmp_path / "roof-type")
    good = _saved_model(tmp_path / "good", 1)
    code, out = _invoke(schema_dir, "check", pkg, "--model-uri", str(good), "--python", str(model_python))
    assert code == 0, out
    assert "contract and test prediction" in out
    wrong = _saved_model(tmp_path / "wrong", 7)
    code, out = _invoke(schema_dir, "check", pkg, "--model-uri", str(wrong), "--python", str(model_python))
    assert code == EXIT_FAULTS, out
    assert (
        "model: $.properties['mlm:output'][0]['classification:classes']: class values among [0, 1], got [7]"
        in out
    )
    # geomlops' own interpreter cannot stand in for a model environment that lacks MLflow
    bare = tmp_path / "bare"
    subprocess.run([UV, "venv", "-q", "--python", sys.executable, str(bare)], check=True)
    code, out = _invoke(
        schema_dir, "check", pkg, "--model-uri", str(good), "--python", str(bare / "bin" / "python")
    )
    assert code == EXIT_FAULTS and "model: load: a pyfunc model loadable" in out, out


def test_the_installed_command_checks_a_source_that_does_not_exist(tmp_path: Path) -> None:
    done = subprocess.run(
        [GEOMLOPS, "package", "check", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "expected a folder, an archive" in done.stderr


def test_a_scaffolded_package_trains_a_model_that_passes_the_test_prediction(
    tmp_path: Path, schema_dir: Path, model_python: Path, labelled_source: Callable[[Path, list[str]], None]
) -> None:
    """preprocess writes the chips layout evaluation reads; train fits on the chips test.txt
    does not hold out; the model passes the test prediction and evaluation scores it."""
    from steps._eval_layout import dataset_scenes
    from steps.evaluation import mlm_classes, score_segmentation
    from steps.package_check import check_package

    _invoke(schema_dir, "new", "roof-type", "-o", str(tmp_path), "--image", IMAGE)
    pkg = tmp_path / "roof-type"
    labelled_source(tmp_path / "source", ["a.tif", "b.tif", "c.tif"])
    data = tmp_path / "data"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**dict(__import__("os").environ), "MLFLOW_TRACKING_URI": tracking, "PYTHONPATH": str(pkg)}
    source = ["--source", str(tmp_path / "source"), "--output", str(data), "--test-share", "0.3"]
    for command in (["roof_type.preprocess", *source], ["roof_type.train", "--data", str(data)]):
        done = subprocess.run(
            [sys.executable, "-m", *command], cwd=pkg, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in data.iterdir()) == ["chips", "labels", "test.txt"]
    layout, scenes = dataset_scenes(data)
    assert layout == "chips" and [(s.image.name, s.labels.name, s.test) for s in scenes] == [
        ("a.tif", "a.tif", False),
        ("b.tif", "b.tif", False),
        ("c.tif", "c.tif", True),
    ]
    run = mlflow.MlflowClient(tracking_uri=tracking).search_runs(["0"])[0]
    assert run.data.metrics["n_train_chips"] == 2  # the held-out chip is not read
    # the command downloads runs:/ID/model from the configured tracking server
    result = CliRunner().invoke(
        package,
        ["check", str(pkg), "--model-uri", f"runs:/{run.info.run_id}/model", "--python", str(model_python)],
        env={"GEOMLOPS_SCHEMA_DIR": str(schema_dir), "GEOMLOPS_MLFLOW_TRACKING_URI": tracking},
    )
    assert result.exit_code == 0, result.output
    assert "contract and test prediction" in result.output
    spec = check_package(pkg, schema_dir).spec
    assert spec is not None
    scored = score_segmentation(
        run.info.run_id,
        str(data),
        tracking_uri=tracking,
        python=str(model_python),
        model_classes=mlm_classes(spec),
    )
    assert scored.report.layout == "chips" and scored.report.n_test_scenes == 1
    assert scored.report.n_test_pixels == 16 * 16


def test_the_scaffolds_preprocess_needs_labels_and_holds_out_no_single_chip(
    tmp_path: Path, labelled_source: Callable[[Path, list[str]], None]
) -> None:
    """One chip is trained on and evaluated (no test.txt); an image without its label is refused."""
    from steps.package_scaffold import scaffold_package

    pkg = scaffold_package("roof-type", tmp_path, image=IMAGE)
    labelled_source(tmp_path / "source", ["a.tif"])
    env = {**dict(__import__("os").environ), "PYTHONPATH": str(pkg)}

    def preprocess(output: Path) -> subprocess.CompletedProcess[str]:
        args = ["--source", str(tmp_path / "source"), "--output", str(output)]
        return subprocess.run(
            [sys.executable, "-m", "roof_type.preprocess", *args], env=env, capture_output=True, text=True
        )

    assert preprocess(tmp_path / "one").returncode == 0
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["chips", "labels"]
    (tmp_path / "source" / "labels" / "a.tif").unlink()
    done = preprocess(tmp_path / "none")
    assert done.returncode != 0
    assert f"no label raster {tmp_path / 'source' / 'labels' / 'a.tif'}" in done.stderr
    assert not (tmp_path / "none").exists()
