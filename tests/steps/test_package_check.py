"""`package check`: every fault at once, each naming file, field and expectation; sources of
every kind; the scaffold passes; the test prediction checks the MLM output."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from numpy.typing import NDArray

from geomlops.cli.demo import default_package
from geomlops.cli.package import EXIT_FAULTS, package
from geomlops.errors import InvalidPackageError
from steps.package_check import check_package, prediction_faults, tiny_input
from steps.package_scaffold import scaffold_package
from steps.package_source import open_package_source

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]


IMAGE = "ghcr.io/acme/flood-extent:0.1.0"


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scaffold_package("flood-extent", tmp_path_factory.mktemp("new"), image=IMAGE)


def test_the_example_and_a_scaffolded_package_pass(scaffolded: Path, schema_dir: Path) -> None:
    for root in (default_package(), scaffolded):
        result = check_package(root, schema_dir)
        assert result.faults == [], [str(f) for f in result.faults]
        assert result.notes == [] and result.spec is not None
    assert (scaffolded / "flood_extent" / "train.py").is_file()
    assert json.loads((scaffolded / "stac-item.json").read_text())["id"] == "flood-extent"
    assert "__MODULE__" not in (scaffolded / "MLproject").read_text()
    assets = json.loads((scaffolded / "stac-item.json").read_text())["assets"]
    assert assets["training-runtime"]["href"] == assets["inference-runtime"]["href"] == IMAGE


def test_the_scaffolds_placeholder_image_is_a_fault_until_replaced(tmp_path: Path, schema_dir: Path) -> None:
    root = scaffold_package("flood-extent", tmp_path)
    faults = check_package(root, schema_dir).faults
    assert [(f.file, f.field) for f in faults] == [
        ("stac-item.json", "$.assets['training-runtime'].href"),
        ("stac-item.json", "$.assets['inference-runtime'].href"),
    ], [str(f) for f in faults]
    assert faults[0].expected.startswith(
        "the mlm:training-runtime image (REGISTRY/REPO:TAG, e.g. ghcr.io/your-org/flood-extent:0.1.0), "
        "got ghcr.io/OWNER/flood-extent:0.1.0: replace the scaffold's placeholder owner OWNER"
    )
    assert "--image REGISTRY/REPO:TAG" in faults[1].expected
    with pytest.raises(
        InvalidPackageError, match=r"image 'flood-extent:0\.1\.0': expected REGISTRY/REPO:TAG"
    ):
        scaffold_package("other", tmp_path, image="flood-extent:0.1.0")
    for bad in ("ghcr.io/OWNER/other:0.1.0", "ghcr.io/acme/other"):
        with pytest.raises(InvalidPackageError, match="expected REGISTRY/REPO:TAG in lower case"):
            scaffold_package("other", tmp_path, image=bad)
    assert not (tmp_path / "other").exists()
    digest = f"registry.example.com:5000/team/other@sha256:{'a' * 64}"
    assert check_package(scaffold_package("other", tmp_path, image=digest), schema_dir).faults == []


def test_the_scaffolds_dockerfile_installs_what_python_env_yaml_declares(
    scaffolded: Path, tmp_path: Path
) -> None:
    """Plain Python at the version python_env.yaml asks for, then exactly its requirements."""
    text = (scaffolded / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    declared = yaml.safe_load((scaffolded / "python_env.yaml").read_text())
    assert lines[0] == f"FROM python:{declared['python']}-slim"
    assert "geomlops" not in " ".join(lines)  # nothing of geomlops in the image
    assert "COPY python_env.yaml ." in lines
    assert lines.index("COPY python_env.yaml .") < lines.index("COPY . .")
    for dep in declared["dependencies"]:  # no list of its own that could drift from the file
        assert dep not in text, dep
    # the command that reads the requirements, run on python_env.yaml as the build would
    reader = re.search(r'python -c "(import yaml;[^"]*)"', text)
    assert reader is not None, text
    shutil.copy(scaffolded / "python_env.yaml", tmp_path)
    subprocess.run([sys.executable, "-c", reader.group(1)], cwd=tmp_path, check=True)
    for key in ("build_dependencies", "dependencies"):
        assert (tmp_path / f"{key}.txt").read_text().splitlines() == declared[key]
        assert f"pip install --no-cache-dir -r {key}.txt" in text


def test_scaffold_refuses_a_bad_name_or_an_existing_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidPackageError, match="lower-case letters, digits and dashes"):
        scaffold_package("Flood Extent", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    scaffold_package("a1", tmp_path)
    with pytest.raises(InvalidPackageError, match="already exists"):
        scaffold_package("a1", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a1"]


def break_six_ways(root: Path) -> None:
    """Six faults, one of each kind: entry point, parameter, environment, Dockerfile, schema, code asset."""
    project = yaml.safe_load((root / "MLproject").read_text())
    del project["entry_points"]["postprocess"]  # 1: an entry point missing
    del project["entry_points"]["train"]["parameters"]["data"]  # 2: 'data' not declared
    (root / "MLproject").write_text(yaml.safe_dump(project))
    (root / "python_env.yaml").write_text("python: [3.11\n")  # 3: not YAML
    (root / "Dockerfile").unlink()  # 4: no Dockerfile
    item = json.loads((root / "stac-item.json").read_text())
    item["properties"]["mlm:tasks"] = ["guessing"]  # 5: not an MLM task
    item["properties"]["mlm:output"][0]["tasks"] = ["semantic-segmentation"]
    item["assets"]["source-code"]["href"] = "https://github.com/org/model"  # 6: code not the package
    (root / "stac-item.json").write_text(json.dumps(item))


def test_six_faults_are_reported_in_one_run(scaffolded: Path, tmp_path: Path, schema_dir: Path) -> None:
    root = tmp_path / "broken"
    shutil.copytree(scaffolded, root)
    break_six_ways(root)
    faults = check_package(root, schema_dir).faults
    found = {(f.file, f.field) for f in faults}
    assert found == {
        ("MLproject", "entry_points"),
        ("MLproject", "entry_points.train.parameters"),
        ("python_env.yaml", "-"),
        ("Dockerfile", "-"),
        ("stac-item.json", "$.properties['mlm:tasks'][0]"),
        ("stac-item.json", "$.assets['source-code'].href"),
    }, [str(f) for f in faults]
    assert len(faults) == 6
    # the command line: the same faults, and an exit status of its own
    run = CliRunner().invoke(package, ["check", str(root)], env={"GEOMLOPS_SCHEMA_DIR": str(schema_dir)})
    assert run.exit_code == EXIT_FAULTS, run.output
    assert run.output.count("✗ ") == 6 and "6 fault(s)" in run.output
    text = "\n".join(map(str, faults))
    for expected in (
        "MLproject: entry_points: entry_points lacks 'postprocess'",
        "entry_points.train.parameters: a parameter 'data' (geomlops passes data)",
        "python_env.yaml: valid YAML",
        "Dockerfile: file not found",
        "'guessing'",
        "'./' (the package folder) or git+URL@COMMIT, got https://github.com/org/model",
    ):
        assert expected in text, text


def test_missing_files_and_an_alternative_item_name(
    scaffolded: Path, tmp_path: Path, schema_dir: Path
) -> None:
    root = tmp_path / "pkg"
    shutil.copytree(scaffolded, root)
    (root / "stac-item.json").rename(root / "stac_item.json")
    assert check_package(root, schema_dir).faults == []
    (root / "stac_item.json").unlink()
    (root / "MLproject").unlink()
    assert [str(f) for f in check_package(root, schema_dir).faults] == [
        "MLproject: file not found (a model package needs an MLproject)",
        "stac-item.json: file not found "
        "(a model package needs its MLM item: stac-item.json or stac_item.json)",
    ]


def test_a_package_as_archive_or_git_commit(scaffolded: Path, tmp_path: Path, schema_dir: Path) -> None:
    tgz, zipped = tmp_path / "pkg.tar.gz", tmp_path / "pkg.zip"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(scaffolded, arcname="flood-extent")
    with zipfile.ZipFile(zipped, "w") as zf:
        for path in scaffolded.rglob("*"):
            zf.write(path, path.relative_to(scaffolded))
    repo = tmp_path / "repo"
    shutil.copytree(scaffolded, repo)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "v1"]):
        subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    (repo / "Dockerfile").unlink()  # later work does not change what the commit holds
    subprocess.run([*GIT, "commit", "-qam", "v2"], cwd=repo, check=True, capture_output=True)
    for i, source in enumerate([str(tgz), str(zipped), f"git+file://{repo}@{commit}"]):
        root = open_package_source(source, tmp_path / f"work{i}")
        assert (root / "MLproject").is_file(), source
        assert check_package(root, schema_dir).faults == [], source
    with pytest.raises(InvalidPackageError, match=r"git could not fetch revision 0{40}"):
        open_package_source(f"git+file://{repo}@{'0' * 40}", tmp_path / "bad")
    assert not (tmp_path / "bad" / "package").exists()
    with pytest.raises(InvalidPackageError, match="expected a folder, an archive"):
        open_package_source(str(tmp_path / "missing"), tmp_path / "w")


def test_an_archive_member_outside_the_archive_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(InvalidPackageError, match="lies outside the archive"):
        open_package_source(str(bad), tmp_path / "w")
    assert not (tmp_path / "escape.txt").exists()


def _spec(scaffolded: Path, schema_dir: Path) -> Any:
    spec = check_package(scaffolded, schema_dir).spec
    assert spec is not None
    return spec


def test_prediction_is_checked_against_the_mlm_output(scaffolded: Path, schema_dir: Path) -> None:
    spec = _spec(scaffolded, schema_dir)
    array = tiny_input(spec)
    assert array.shape == (1, 3, 32, 32) and array.dtype == np.float32

    def good(x: NDArray[Any]) -> NDArray[Any]:
        classes: NDArray[Any] = (x.mean(axis=1) > 3).astype("uint8")
        return classes

    assert prediction_faults(spec, good) == []
    wrong_shape = prediction_faults(spec, lambda x: good(x)[:, :16])
    assert [f.field for f in wrong_shape] == ["$.properties['mlm:output'][0].result.shape[1]"]
    assert "'height' of size 32, got 16" in wrong_shape[0].expected
    wrong_class = prediction_faults(spec, lambda x: good(x) * 7)
    assert [f.field for f in wrong_class] == ["$.properties['mlm:output'][0]['classification:classes']"]
    assert "class values among [0, 1], got [7]" in wrong_class[0].expected
    scores = prediction_faults(spec, lambda x: x)
    assert "3 dimensions ('batch', 'height', 'width'), got shape (1, 3, 32, 32)" in scores[0].expected

    def broken(x: NDArray[Any]) -> NDArray[Any]:
        raise RuntimeError("CUDA not available")

    assert "CUDA not available" in prediction_faults(spec, broken)[0].expected


def _with_project(scaffolded: Path, root: Path, **changes: Any) -> Path:
    shutil.copytree(scaffolded, root)
    project = yaml.safe_load((root / "MLproject").read_text())
    for key, value in changes.items():
        if value is None:
            project.pop(key, None)
        else:
            project[key] = value
    (root / "MLproject").write_text(yaml.safe_dump(project))
    return root


@pytest.mark.parametrize(
    ("changes", "files", "faults"),
    [
        (
            {"python_env": None, "conda_env": "conda.yaml"},
            {"conda.yaml": "dependencies: [python=3.11, pip]\n"},
            [],
        ),
        ({"python_env": None, "docker_env": {"image": "ghcr.io/org/model:1"}}, {}, []),
        ({"python_env": None}, {}, []),  # python_env.yaml beside MLproject, as MLflow reads it
        (
            {"python_env": None, "docker_env": {"volumes": []}},
            {},
            ["MLproject: docker_env.image: the image to run"],
        ),
        (
            {"conda_env": "conda.yaml"},
            {"conda.yaml": "dependencies: []\n"},
            ["MLproject: python_env, conda_env: one environment declaration, not several"],
        ),
        ({"python_env": "env/python.yaml"}, {}, ["MLproject: python_env: names env/python.yaml"]),
        ({}, {"python_env.yaml": "dependencies: [numpy]\n"}, ["python_env.yaml: python: the Python version"]),
    ],
)
def test_environment_declarations(
    scaffolded: Path,
    tmp_path: Path,
    schema_dir: Path,
    changes: dict[str, Any],
    files: dict[str, str],
    faults: list[str],
) -> None:
    root = _with_project(scaffolded, tmp_path / "pkg", **changes)
    for name, text in files.items():
        (root / name).write_text(text)
    found = [str(f) for f in check_package(root, schema_dir).faults]
    assert len(found) == len(faults) and all(f.startswith(e) for f, e in zip(found, faults, strict=True)), (
        found
    )


def test_an_item_without_the_mlm_extension_is_named(
    scaffolded: Path, tmp_path: Path, schema_dir: Path
) -> None:
    root = _with_project(scaffolded, tmp_path / "pkg")
    item = json.loads((root / "stac-item.json").read_text())
    item["stac_extensions"] = [uri for uri in item["stac_extensions"] if "/mlm/" not in uri]
    (root / "stac-item.json").write_text(json.dumps(item))
    faults = [str(f) for f in check_package(root, schema_dir).faults]
    assert faults == [
        "stac-item.json: $.stac_extensions: the MLM extension's schema, "
        "e.g. https://stac-extensions.github.io/mlm/v1.5.2/schema.json"
    ]


def test_commands_parameters_and_uv_run(scaffolded: Path, tmp_path: Path, schema_dir: Path) -> None:
    root = _with_project(scaffolded, tmp_path / "pkg")
    project = yaml.safe_load((root / "MLproject").read_text())
    project["entry_points"]["train"]["command"] = "uv run python -m flood_extent.train --data {data}"
    assert check_package(root, schema_dir).faults == []
    project["entry_points"]["train"]["parameters"]["epochs"] = {"type": "int"}  # geomlops never passes it
    project["entry_points"]["inference"]["command"] = ""
    project["entry_points"]["evaluate"] = {"parameters": {"data": {"type": "path"}}, "command": "python -m e"}
    (root / "MLproject").write_text(yaml.safe_dump(project))
    assert sorted(str(f) for f in check_package(root, schema_dir).faults) == [
        "MLproject: entry_points.evaluate.parameters: "
        "a parameter 'model_uri' (geomlops passes model_uri, data)",
        "MLproject: entry_points.inference.command: a non-empty command string",
        "MLproject: entry_points.train.parameters.epochs: a default (geomlops passes only data to train)",
    ]


@pytest.mark.parametrize("bad_id", ["team/flood", "../flood", "flood model", "flood;rm"])
def test_an_id_that_would_break_the_catalogue_is_a_fault(
    scaffolded: Path, tmp_path: Path, bad_id: str
) -> None:
    root = tmp_path / "pkg"
    shutil.copytree(scaffolded, root)
    item = json.loads((root / "stac-item.json").read_text())
    item["id"] = bad_id
    (root / "stac-item.json").write_text(json.dumps(item))
    faults = [f for f in check_package(root).faults if f.field == "$.id"]
    assert len(faults) == 1, [str(f) for f in check_package(root).faults]
    assert f"{bad_id!r}: expected a letter or digit" in faults[0].expected


def test_a_python_not_on_this_machine_is_a_warning_not_a_fault(
    scaffolded: Path, tmp_path: Path, schema_dir: Path
) -> None:
    root = _with_project(scaffolded, tmp_path / "pkg")
    assert check_package(root, schema_dir).warnings == []
    declared = yaml.safe_load((root / "python_env.yaml").read_text())
    (root / "python_env.yaml").write_text(yaml.safe_dump({**declared, "python": "3.99"}))
    result = check_package(root, schema_dir)
    assert result.faults == [] and result.notes == []
    assert len(result.warnings) == 1, result.warnings
    warning = result.warnings[0]
    assert "python_env.yaml asks for Python 3.99, which is not installed on this machine" in warning
    assert "`uv python install 3.99`" in warning and "on a cluster the package's image" in warning
    run = CliRunner().invoke(package, ["check", str(root)], env={"GEOMLOPS_SCHEMA_DIR": str(schema_dir)})
    assert run.exit_code == 0 and f"! {warning}" in run.output, run.output
    run = CliRunner().invoke(
        package, ["check", "--json", str(root)], env={"GEOMLOPS_SCHEMA_DIR": str(schema_dir)}
    )
    assert json.loads(run.stdout)["warnings"] == [warning]


def test_a_missing_mlm_field_is_reported_once(scaffolded: Path, tmp_path: Path, schema_dir: Path) -> None:
    root = _with_project(scaffolded, tmp_path / "pkg")
    item = json.loads((root / "stac-item.json").read_text())
    del item["properties"]["mlm:architecture"]
    (root / "stac-item.json").write_text(json.dumps(item))
    faults = [str(f) for f in check_package(root, schema_dir).faults]
    assert faults == [
        "stac-item.json: $.properties['mlm:architecture']: required by the MLM extension, missing or empty"
    ]
    # a required field geomlops does not check itself still comes from the schema
    del item["properties"]["mlm:output"][0]["tasks"]
    (root / "stac-item.json").write_text(json.dumps(item))
    faults = [str(f) for f in check_package(root, schema_dir).faults]
    assert len(faults) == 2 and any("'tasks' is a required property" in f for f in faults), faults


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        (
            {"value_scaling": [{"type": "scale", "value": 255}] * 2},  # for 3 bands
            "$.properties['mlm:input'][0].value_scaling",
            "2 objects for 3 bands; expected one for all bands or one per band",
        ),
        (
            {"resize_type": "crop"},
            "$.properties['mlm:input'][0].resize_type",
            "'crop' is not applied by geomlops",
        ),
        (
            {"bands": ["red", "green", "nir"]},  # the item declares red, green and blue
            "$.properties['mlm:input'][0].bands[2]",
            "'nir' is not among the bands the item declares (blue, green, red)",
        ),
        (
            {"output_data_type": "other"},  # allowed by the MLM schema; named once, not raised
            "$.properties['mlm:output'][0].result.data_type",
            "'other'",
        ),
    ],
)
def test_an_item_batch_inference_could_not_read_is_a_fault_of_the_check(
    scaffolded: Path, tmp_path: Path, schema_dir: Path, change: dict[str, Any], field: str, expected: str
) -> None:
    """Caught before registration, not when training's evaluation first prepares an input."""
    root = _with_project(scaffolded, tmp_path / "pkg")
    item = json.loads((root / "stac-item.json").read_text())
    if "output_data_type" in change:
        item["properties"]["mlm:output"][0]["result"]["data_type"] = change["output_data_type"]
    else:
        item["properties"]["mlm:input"][0].update(change)
    (root / "stac-item.json").write_text(json.dumps(item))
    faults = check_package(root, schema_dir).faults
    assert [f.field for f in faults] == [field], [str(f) for f in faults]
    assert faults[0].file == "stac-item.json" and expected in faults[0].expected


def test_a_command_placeholder_that_is_no_parameter_is_a_fault(tmp_path: Path, schema_dir: Path) -> None:
    """Caught by the check, not by a KeyError when the entry point is run; named again, with
    what is declared, where a package that was not checked is run."""
    from steps.package import describe_package
    from steps.training import entry_point_command

    root = scaffold_package("flood-extent", tmp_path, image=IMAGE)
    project = yaml.safe_load((root / "MLproject").read_text())
    project["entry_points"]["train"]["command"] += " --epochs {epochs} --size {chip.size} --literal {{x}}"
    project["entry_points"]["postprocess"]["command"] += " --bad {brace"
    (root / "MLproject").write_text(yaml.safe_dump(project))
    faults = [(f.field, f.expected) for f in check_package(root, schema_dir).faults]
    assert faults == [  # in the MLproject's order (safe_dump sorts the entry points)
        (
            "entry_points.postprocess.command",
            "a command whose braces pair (expected '}' before end of string; a literal brace is "
            "written twice)",
        ),
        ("entry_points.train.command", "{epochs} to be one of its parameters (declared: data, threshold)"),
        ("entry_points.train.command", "{chip} to be one of its parameters (declared: data, threshold)"),
    ]
    with pytest.raises(
        InvalidPackageError,
        match=r"MLproject entry point 'train': its command names \{epochs\}, which is not one of its "
        r"parameters \(declared: data, threshold\)",
    ):
        entry_point_command(describe_package(root), "train", {"data": str(tmp_path)}, root)


def test_registration_names_the_users_folder_not_the_copy_it_checks(tmp_path: Path, schema_dir: Path) -> None:
    from steps.package_check import validate_package
    from steps.package_source import materialize_package

    root = scaffold_package("flood-extent", tmp_path / "mine", image=IMAGE)
    (root / "Dockerfile").unlink()
    copy = materialize_package(root, tmp_path / "home" / "packages")
    assert copy != root
    with pytest.raises(InvalidPackageError) as caught:
        validate_package(copy, schema_dir, source=root)
    message = str(caught.value)
    assert message.startswith(f"model package {root} (checked as its copy {copy}): 1 fault(s):")
    assert f"  {root / 'Dockerfile'}: file not found" in message


def test_parameters_as_mlflow_reads_them(tmp_path: Path, schema_dir: Path) -> None:
    """A type alone or a null default is no default (MLflow requires the parameter); null
    parameters make MLflow fail to read the whole project."""
    root = scaffold_package("flood-extent", tmp_path, image=IMAGE)
    project = yaml.safe_load((root / "MLproject").read_text())
    train = project["entry_points"]["train"]
    train["parameters"]["epochs"] = "float"
    train["parameters"]["rate"] = {"type": "float", "default": None}
    project["entry_points"]["preprocess"]["parameters"] = None
    (root / "MLproject").write_text(yaml.safe_dump(project))
    faults = [(f.field, f.expected) for f in check_package(root, schema_dir).faults]
    assert faults == [
        (
            "entry_points.preprocess.parameters",
            "a mapping of parameters, not null (leave 'parameters' out for none)",
        ),
        ("entry_points.train.parameters.epochs", "a default (geomlops passes only data to train)"),
        ("entry_points.train.parameters.rate", "a default (geomlops passes only data to train)"),
    ]
