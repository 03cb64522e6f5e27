"""A model package's own environment: read from its declaration, built with uv, cached."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from geomlops.errors import InvalidPackageError, MissingInterpreterError, PermanentError
from steps.package_env import (
    PackageEnvironment,
    _from_python_env,
    _satisfied_here,
    cache_root,
    command_environment,
    declaration_hash,
    ensure_environment,
    find_interpreter,
    read_declaration,
)


@pytest.fixture
def env_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty environment cache (uv's own cache stays shared, so builds are quick)."""
    monkeypatch.setenv("GEOMLOPS_ENV_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "envs"


def _package(root: Path, project: dict[str, object], files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "MLproject").write_text(yaml.safe_dump({"name": root.name, **project}))
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_python_env_declaration_is_read_with_included_files(tmp_path: Path) -> None:
    package = _package(
        tmp_path / "p",
        {"python_env": "python_env.yaml"},
        {
            "python_env.yaml": (
                "python: '3.11'\nbuild_dependencies: [pip]\ndependencies: [six, -r extra.txt]\n"
            ),
            "extra.txt": "idna\n",
        },
    )
    found = read_declaration(package)
    assert (found.source, found.python) == ("python_env.yaml", "3.11")
    assert found.build_dependencies == ("pip",) and found.dependencies == ("six", "-r extra.txt")
    assert found.included == {"extra.txt": "idna\n"}
    before = declaration_hash(found, "3.11.7")
    (package / "extra.txt").write_text("idna==3.10\n")
    assert declaration_hash(read_declaration(package), "3.11.7") != before


def test_conda_declaration_keeps_python_and_pip_list_and_says_what_it_skips(tmp_path: Path) -> None:
    conda = "dependencies:\n  - python=3.11\n  - pip\n  - gdal\n  - pip: [six]\n"
    package = _package(tmp_path / "c", {"conda_env": "conda.yaml"}, {"conda.yaml": conda})
    found = read_declaration(package)
    assert (found.python, found.dependencies) == ("3.11", ("six",))
    assert "gdal" in found.note and "pip list only" in found.note


@pytest.mark.parametrize("file", ["python_env.yaml", "conda.yaml"])
def test_an_undeclared_environment_file_beside_mlproject_is_followed(tmp_path: Path, file: str) -> None:
    """The contract: without a declaration, a python_env.yaml or conda.yaml beside MLproject."""
    text = {
        "python_env.yaml": "python: '3.11'\ndependencies: [six]\n",
        "conda.yaml": "dependencies:\n  - python=3.11\n  - pip: [six]\n",
    }[file]
    package = _package(tmp_path / "u", {}, {file: text, "requirements.txt": "idna\n"})
    found = read_declaration(package)
    assert (found.source, found.python, found.dependencies) == (file, "3.11", ("six",))


def test_docker_env_without_an_engine_builds_from_requirements_and_says_so(tmp_path: Path) -> None:
    package = _package(tmp_path / "d", {"docker_env": {"image": "model:1"}}, {"requirements.txt": "six\n"})
    found = read_declaration(package)
    assert found.source == "requirements.txt" and found.included == {"requirements.txt": "six\n"}
    assert found.note == (
        "docker_env declared and no Docker engine answers: building the environment from the "
        "package's requirements.txt"
    )
    (package / "requirements.txt").unlink()
    (package / "pyproject.toml").write_text(
        "[project]\nname = 'd'\nrequires-python = '>=3.10'\ndependencies = ['six']\n"
    )
    found = read_declaration(package)
    assert (found.source, found.python, found.dependencies) == ("pyproject.toml", ">=3.10", ("six",))
    (package / "pyproject.toml").unlink()
    with pytest.raises(InvalidPackageError, match=r"no requirements\.txt or pyproject\.toml"):
        read_declaration(package)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("python: '3.11'\ndependencies: six\n", "dependencies must be a list"),
        ("python: '3.11'\npackages: [six]\n", r"unknown field\(s\) \['packages'\]"),
        ("python: '3.11'\ndependencies: [-r missing.txt]\n", "missing.txt, which does not exist"),
        ("python: 'three'\n", "neither a version"),
    ],
)
def test_bad_declarations_name_the_file_and_field(
    tmp_path: Path, env_cache: Path, text: str, match: str
) -> None:
    package = _package(tmp_path / "bad", {"python_env": "python_env.yaml"}, {"python_env.yaml": text})
    with pytest.raises(InvalidPackageError, match=match) as err:
        ensure_environment(package)
    assert "python_env.yaml" in str(err.value)
    assert not env_cache.exists() or not [p for p in env_cache.iterdir() if not p.name.startswith(".")]


def test_a_missing_python_version_is_a_permanent_error_saying_how_to_get_it(tmp_path: Path) -> None:
    package = _package(
        tmp_path / "p", {"python_env": "python_env.yaml"}, {"python_env.yaml": "python: '3.99'\n"}
    )
    with pytest.raises(MissingInterpreterError) as err:
        find_interpreter(read_declaration(package))
    assert isinstance(err.value, PermanentError)
    assert "asks for Python 3.99" in str(err.value) and "uv python install 3.99" in str(err.value)


def test_local_311_satisfies_a_version_a_patch_and_a_range(tmp_path: Path) -> None:
    for request in ("3.11", "3.11.0", ">=3.10,<3.13"):
        package = _package(
            tmp_path / "p", {"python_env": "python_env.yaml"}, {"python_env.yaml": f"python: '{request}'\n"}
        )
        _, version = find_interpreter(read_declaration(package))
        assert version.startswith("3.11."), request


def test_environment_is_built_once_shared_and_runs_uv_run_commands(tmp_path: Path, env_cache: Path) -> None:
    package = _package(
        tmp_path / "p",
        {"python_env": "python_env.yaml"},
        {"python_env.yaml": "python: '3.11'\ndependencies: [six==1.17.0]\n"},
    )
    built: list[PackageEnvironment] = []
    threads = [threading.Thread(target=lambda: built.append(ensure_environment(package))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first, second = built
    assert first == second and first.root.parent == env_cache == cache_root()
    assert [p.name for p in env_cache.iterdir() if not p.name.startswith(".")] == [first.root.name]
    env = command_environment(first)
    for command in (
        "python -c 'import six, sys; print(sys.prefix)'",
        "uv run python -c 'import six, sys; print(sys.prefix)'",
    ):
        out = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, cwd=package)
        assert out.returncode == 0, out.stderr
        assert Path(out.stdout.strip()) == first.root, command
    # nothing of geomlops is in the package's environment
    out = subprocess.run(
        [str(first.python), "-c", "import geomlops"],
        env=env,
        capture_output=True,
        text=True,
        cwd=package,
    )
    assert out.returncode != 0 and "No module named 'geomlops'" in out.stderr


def test_a_failed_install_leaves_nothing_in_the_cache(tmp_path: Path, env_cache: Path) -> None:
    package = _package(
        tmp_path / "p",
        {"python_env": "python_env.yaml"},
        {"python_env.yaml": "python: '3.11'\ndependencies: [no-such-distribution-geomlops-test==0.0.1]\n"},
    )
    from geomlops.errors import PackageEnvironmentError

    with pytest.raises(PackageEnvironmentError, match="no-such-distribution-geomlops-test"):
        ensure_environment(package)
    assert [p.name for p in env_cache.iterdir() if not p.name.startswith(".")] == []
    assert not [p for p in env_cache.iterdir() if ".building-" in p.name]


def _logged_model(folder: Path, python: str, requirements: str) -> Path:
    """A model's files as MLflow logs them: ``python_env.yaml`` naming ``requirements.txt``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLmodel").write_text("flavors: {}\n")
    (folder / "python_env.yaml").write_text(
        f"python: {python}\nbuild_dependencies:\n- pip\ndependencies:\n- -r requirements.txt\n"
    )
    (folder / "requirements.txt").write_text(requirements)
    return folder


def test_a_logged_model_runs_where_its_requirements_are(tmp_path: Path, env_cache: Path) -> None:
    """Without its training environment here, a model runs with this interpreter when it has
    what the model's logged declaration asks for, else in an environment built from it."""
    import sys
    from importlib import metadata

    from steps.package_env import logged_model_python

    here = ".".join(map(str, sys.version_info[:3]))
    numpy = metadata.version("numpy")
    satisfied = _logged_model(tmp_path / "a", here, f"numpy=={numpy}\nmlflow>=2 # a comment\n")
    assert logged_model_python("", satisfied) == sys.executable
    assert not env_cache.exists()  # nothing built
    # a requirement this interpreter lacks (cowsay), or a version it does not have: built
    lacking = _logged_model(tmp_path / "b", here, "cowsay==6.1\n")
    python = logged_model_python("", lacking)
    assert Path(python).is_relative_to(env_cache)
    done = subprocess.run([python, "-c", "import cowsay"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert logged_model_python("", lacking) == python  # cached by the declaration's content
    older = _logged_model(tmp_path / "c", here, "numpy<1\n")
    assert not _satisfied_here(_from_python_env(older, "python_env.yaml"))
    other_python = _logged_model(tmp_path / "d", "3.9.1", f"numpy=={numpy}\n")
    assert not _satisfied_here(_from_python_env(other_python, "python_env.yaml"))
    # a run whose training environment is here runs in it, whatever was logged
    assert logged_model_python(Path(python).parents[1].name, satisfied) == python
    # a model saved without MLflow's files: this interpreter (nothing to build from)
    (tmp_path / "bare").mkdir()
    assert logged_model_python("", tmp_path / "bare") == sys.executable
