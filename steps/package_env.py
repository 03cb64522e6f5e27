"""A model package's own Python environment on one machine, built with uv from its declaration.

A package declares its environment in ``MLproject`` as MLflow defines it: ``python_env``
(``python_env.yaml``: ``python``, ``build_dependencies``, ``dependencies``), ``conda_env``
(``conda.yaml``: its ``python=`` version and its ``pip`` list) or ``docker_env``. With
``docker_env``, or no declaration, the environment is built from the package's own
``requirements.txt`` or ``pyproject.toml`` (``[project] dependencies``, ``requires-python``),
and :attr:`PackageEnvironment.note` says so in one line.

Environments are cached under ``$GEOMLOPS_ENV_CACHE/envs/<hash>`` (default
``~/.cache/geomlops/envs``), keyed by the content of the declaration (and of the files it
includes with ``-r``) and by the interpreter's version. A build happens beside its final folder
and is renamed into place when complete (``uv venv --relocatable``, so nothing in it names the
build folder); a concurrent build of the same environment waits on a file lock. An interpreter
is never downloaded: a Python version that is not on this machine is a clear error.

geomlops itself is never installed into a package's environment.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from geomlops.errors import InvalidPackageError, MissingInterpreterError, PackageEnvironmentError

#: environment variable naming the cache folder (shared with geomlops' own isolated tools)
CACHE_ENV = "GEOMLOPS_ENV_CACHE"
#: bumped when the way an environment is built changes, so old builds are not reused
#: (2: bytecode compiled when built)
LAYOUT_VERSION = 2
#: installs write the bytecode once: a worker or entry point started where bytecode is not
#: written (PYTHONDONTWRITEBYTECODE, a read-only image) would compile its imports every start
#: (mlflow and pandas: seconds)
COMPILE = ("--compile-bytecode",)
_MARKER = "geomlops-env.json"


@dataclass(frozen=True)
class EnvironmentDeclaration:
    """What a package asks for: a Python version and what to install, read from one file."""

    source: str
    """The file the declaration was read from, relative to the package (``python_env.yaml``)."""
    python: str
    """The requested version as written (``3.11``, ``>=3.10,<3.13``), empty for any."""
    build_dependencies: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    included: Mapping[str, str] = field(default_factory=dict)
    """Files named by ``-r``/``-c`` lines, by path relative to the package, with their text."""
    note: str = ""
    """One line saying what was done instead of what was declared (docker, conda packages)."""


@dataclass(frozen=True)
class PackageEnvironment:
    """A built environment of a model package."""

    root: Path
    """The virtual environment's folder."""
    python: Path
    """Its interpreter."""
    bin_dir: Path
    """Its ``bin`` folder: put first on ``PATH`` to run the package's commands."""
    hash: str
    """Content hash of the declaration and interpreter version (the cache key)."""
    python_version: str
    declaration: EnvironmentDeclaration

    @property
    def note(self) -> str:
        """One line saying what was done instead of what was declared, or empty."""
        return self.declaration.note


def cache_root() -> Path:
    """Where package environments are kept (``$GEOMLOPS_ENV_CACHE/envs``)."""
    base = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "geomlops"
    return Path(base).expanduser() / "envs"


def _load_yaml(path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InvalidPackageError(f"{path} does not exist: MLproject's {what} names it") from err
    except yaml.YAMLError as err:
        raise InvalidPackageError(f"{path} is not valid YAML: {err}") from err


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidPackageError(f"{where} must be a list of requirement strings, got {value!r}")
    return tuple(value)


def _included(package: Path, requirements: tuple[str, ...], where: str) -> dict[str, str]:
    """Text of the files ``-r FILE`` / ``-c FILE`` lines name (they count in the hash)."""
    found: dict[str, str] = {}
    for line in requirements:
        match = re.fullmatch(r"(-r|-c|--requirement|--constraint)\s*(\S+)", line.strip())
        if match:
            path = package / match.group(2)
            if not path.is_file():
                raise InvalidPackageError(f"{where}: {line!r} names {path}, which does not exist")
            found[match.group(2)] = path.read_text(encoding="utf-8")
    return found


def _from_python_env(package: Path, name: str) -> EnvironmentDeclaration:
    data = _load_yaml(package / name, "python_env")
    if not isinstance(data, dict):
        raise InvalidPackageError(f"{package / name} must be a mapping with 'python' and 'dependencies'")
    unknown = set(data) - {"python", "build_dependencies", "dependencies"}
    if unknown:
        raise InvalidPackageError(
            f"{package / name}: unknown field(s) {sorted(unknown)}; expected python, "
            "build_dependencies, dependencies"
        )
    deps = _strings(data.get("dependencies"), f"{package / name}: dependencies")
    build = _strings(data.get("build_dependencies"), f"{package / name}: build_dependencies")
    return EnvironmentDeclaration(
        source=name,
        python=str(data.get("python") or ""),
        build_dependencies=build,
        dependencies=deps,
        included=_included(package, deps, f"{package / name}: dependencies"),
    )


def _from_conda(package: Path, name: str) -> EnvironmentDeclaration:
    data = _load_yaml(package / name, "conda_env")
    entries = data.get("dependencies") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise InvalidPackageError(f"{package / name} must have a 'dependencies' list")
    python, skipped = "", []
    pip: tuple[str, ...] = ()
    for entry in entries:
        if isinstance(entry, dict) and "pip" in entry:
            pip = _strings(entry["pip"], f"{package / name}: dependencies.pip")
        elif isinstance(entry, str) and re.match(r"python\b", entry) and not entry.startswith("python-"):
            python = entry.removeprefix("python").lstrip("=") if "=" in entry else ""
        elif isinstance(entry, str) and entry.split("=")[0] != "pip":
            skipped.append(entry)
    note = (
        f"{name}: conda packages {', '.join(skipped)} are not installed (uv installs the pip list only)"
        if skipped
        else ""
    )
    return EnvironmentDeclaration(
        source=name,
        python=python,
        dependencies=pip,
        included=_included(package, pip, f"{package / name}: pip"),
        note=note,
    )


def _from_package_files(package: Path, reason: str) -> EnvironmentDeclaration:
    """The package's own ``requirements.txt`` or ``pyproject.toml`` (``docker_env`` or none)."""
    requirements = package / "requirements.txt"
    if requirements.is_file():
        return EnvironmentDeclaration(
            source="requirements.txt",
            python="",
            dependencies=("-r requirements.txt",),
            included={"requirements.txt": requirements.read_text(encoding="utf-8")},
            note=f"{reason}: building the environment from the package's requirements.txt",
        )
    pyproject = package / "pyproject.toml"
    if pyproject.is_file():
        try:
            project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project") or {}
        except tomllib.TOMLDecodeError as err:
            raise InvalidPackageError(f"{pyproject} is not valid TOML: {err}") from err
        return EnvironmentDeclaration(
            source="pyproject.toml",
            python=str(project.get("requires-python") or ""),
            dependencies=_strings(project.get("dependencies"), f"{pyproject}: [project] dependencies"),
            note=f"{reason}: building the environment from the package's pyproject.toml",
        )
    raise InvalidPackageError(
        f"{package}: {reason}, and the package has no requirements.txt or pyproject.toml to build "
        "its environment from; declare python_env: python_env.yaml in MLproject"
    )


def docker_engine_answers() -> bool:
    """Whether ``docker info`` answers within a few seconds."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def read_declaration(package_dir: str | Path) -> EnvironmentDeclaration:
    """Read what environment a package declares in its ``MLproject``.

    Raises:
        InvalidPackageError: ``MLproject`` is missing or malformed, or a file it names is.
    """
    package = Path(package_dir)
    project = _load_yaml(package / "MLproject", "package folder")
    if not isinstance(project, dict):
        raise InvalidPackageError(f"{package / 'MLproject'} must be a YAML mapping")
    if project.get("python_env"):
        return _from_python_env(package, str(project["python_env"]))
    if project.get("conda_env"):
        return _from_conda(package, str(project["conda_env"]))
    if project.get("docker_env"):
        # Running the package's image needs an engine; without one its own files say what it needs.
        engine = (
            "a Docker engine answers, but training runs in a local environment"
            if (docker_engine_answers())
            else "docker_env declared and no Docker engine answers"
        )
        return _from_package_files(package, engine)
    # no declaration: the files MLflow's conventions name, beside MLproject (the contract's)
    if (package / "python_env.yaml").is_file():
        return _from_python_env(package, "python_env.yaml")
    if (package / "conda.yaml").is_file():
        return _from_conda(package, "conda.yaml")
    return _from_package_files(package, "MLproject declares no environment")


def _specifier(request: str, where: str) -> SpecifierSet:
    text = request.strip()
    if re.fullmatch(r"\d+(\.\d+){0,2}", text):
        text = f"=={text}.*" if text.count(".") < 2 else f"=={text}"
    try:
        return SpecifierSet(text)
    except InvalidSpecifier as err:
        raise InvalidPackageError(
            f"{where}: python {request!r} is neither a version (3.11) nor a range (>=3.10,<3.13)"
        ) from err


def _version_of(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def _uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.is_file() else shutil.which("uv")
    if not found:
        raise PackageEnvironmentError("uv is not installed: it builds model package environments")
    return found


def _uv_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    return env


def find_interpreter(declaration: EnvironmentDeclaration) -> tuple[str, str]:
    """A Python on this machine that satisfies the declaration: (path, version).

    geomlops' own base interpreter is preferred when it fits; otherwise uv looks among the
    interpreters installed on this machine and never downloads one. A version given to the
    patch (``3.11.4``) is satisfied by another patch of the same minor version when that one
    is missing.

    Raises:
        MissingInterpreterError: no installed interpreter satisfies it; says which version is
            needed and how to install it.
    """
    base = str(getattr(sys, "_base_executable", None) or sys.executable)
    request = declaration.python
    if not request:
        return base, _version_of(base)
    wanted = _specifier(request, declaration.source)
    own = _version_of(base)
    if wanted.contains(own):
        return base, own
    patch = re.fullmatch(r"(\d+\.\d+)\.\d+", request.strip())
    for ask in [request.replace(" ", "")] + ([patch.group(1)] if patch else []):
        found = subprocess.run(
            [_uv(), "python", "find", "--system", "--no-project", ask],
            capture_output=True,
            text=True,
            env=_uv_env(),
        )
        if found.returncode == 0 and found.stdout.strip():
            python = found.stdout.strip().splitlines()[-1]
            return python, _version_of(python)
    minor = re.match(r"\D*(\d+\.\d+)", request)
    install = f"uv python install {minor.group(1)}" if minor else "uv python install <version>"
    raise MissingInterpreterError(
        f"the package's {declaration.source} asks for Python {request}, which is not installed on "
        f"this machine (found {own}; geomlops never downloads an interpreter). Install it, e.g. "
        f"`{install}` or your OS package (python{minor.group(1) if minor else '3.x'}), and run again"
    )


def declaration_hash(declaration: EnvironmentDeclaration, python_version: str) -> str:
    """The cache key: the declaration's content and the interpreter's version."""
    content = {
        "layout": LAYOUT_VERSION,
        "python": python_version,
        "build_dependencies": list(declaration.build_dependencies),
        "dependencies": list(declaration.dependencies),
        "included": dict(sorted(declaration.included.items())),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def ensure_environment(package_dir: str | Path) -> PackageEnvironment:
    """The package's environment, built now unless the cache holds it.

    Args:
        package_dir: the model package folder (with ``MLproject``).

    Returns:
        The environment; :attr:`PackageEnvironment.note` says when the declaration could not
        be followed as written (``docker_env`` without an engine, conda packages).

    Raises:
        InvalidPackageError: the declaration is missing or malformed.
        MissingInterpreterError: no interpreter on this machine fits.
        PackageEnvironmentError: installing the dependencies failed (uv's own last lines in
            the message); nothing is left in the cache.
    """
    package = Path(package_dir).resolve()
    return _ensure(package, read_declaration(package), package.name)


def _ensure(package: Path, declaration: EnvironmentDeclaration, label: str) -> PackageEnvironment:
    """The environment ``declaration`` (read from ``package``) asks for, built unless cached
    (``label`` names what it is for in the build's messages)."""
    python, version = find_interpreter(declaration)
    key = declaration_hash(declaration, version)
    root = cache_root() / key[:32]
    if not (root / _MARKER).is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        with open(root.parent / f".{root.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent build of the same one waits here
            if not (root / _MARKER).is_file():
                _build(package, declaration, python, version, root, label)
    return PackageEnvironment(
        root=root,
        python=root / "bin" / "python",
        bin_dir=root / "bin",
        hash=key,
        python_version=version,
        declaration=declaration,
    )


def _build(
    package: Path, declaration: EnvironmentDeclaration, python: str, version: str, root: Path, label: str
) -> None:
    print(
        f"building the environment of {label} from its {declaration.source} (Python {version}) in {root}",
        file=sys.stderr,
    )
    if declaration.note:
        print(declaration.note, file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    try:
        uv, env = _uv(), _uv_env()
        steps = [[uv, "venv", "-q", "--relocatable", "--seed", "--python", python, str(work)]]
        target = ["--python", str(work / "bin" / "python")]
        if declaration.build_dependencies:
            steps.append([uv, "pip", "install", "-q", *COMPILE, *target, *declaration.build_dependencies])
        if declaration.dependencies:
            args: list[str] = []
            for dep in declaration.dependencies:
                args += dep.split(None, 1) if dep.startswith("-") else [dep]
            steps.append([uv, "pip", "install", "-q", *COMPILE, *target, *args])
        for args in steps:
            done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=package)
            if done.returncode != 0:
                tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
                raise PackageEnvironmentError(
                    f"cannot build the environment of {label} from its {declaration.source}: "
                    f"`uv {' '.join(args[1:3])}` failed:\n{tail}"
                )
        (work / _MARKER).write_text(
            json.dumps(
                {
                    "source": declaration.source,
                    "python": version,
                    "build_dependencies": list(declaration.build_dependencies),
                    "dependencies": list(declaration.dependencies),
                },
                indent=1,
            )
            + "\n",
            encoding="utf-8",
        )
        shutil.rmtree(root, ignore_errors=True)  # an interrupted build from before the marker
        work.rename(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def writable_cache_paths() -> list[Path]:
    """Folders building a package environment writes: this cache's and uv's own.

    A sandbox that runs geomlops' steps with a read-only root must let them write these.
    """
    uv_cache = subprocess.run([_uv(), "cache", "dir"], capture_output=True, text=True, env=_uv_env())
    paths = [cache_root().parent]
    if uv_cache.returncode == 0 and uv_cache.stdout.strip():
        paths.append(Path(uv_cache.stdout.strip()))
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
    return paths


def cached_interpreter(environment_hash: str) -> Path | None:
    """The interpreter of the cached environment with this hash, or None when it is not built."""
    root = cache_root() / environment_hash[:32]
    return root / "bin" / "python" if (root / _MARKER).is_file() else None


def logged_model_python(environment_tag: str, model_dir: str | Path | None) -> str:
    """The Python to run a logged model with, always in a process of its own.

    In order: the environment its run was trained in (the run's ``geomlops.environment`` tag),
    when this machine holds it; this interpreter, when it has what the model's logged
    ``python_env.yaml`` asks for (its Python version and every requirement, at a version the
    requirement admits); else the environment that file declares, built with uv and cached by
    its content, as a package's is. So a model whose training environment is elsewhere (a
    pod of the cluster, another machine) still predicts with its own framework, which
    geomlops' environment need not have.

    Raises:
        InvalidPackageError, MissingInterpreterError, PackageEnvironmentError: the logged
            environment cannot be read or built (the file or uv's error named).
    """
    built = cached_interpreter(environment_tag or "-")
    if built is not None:
        return str(built)
    folder = Path(model_dir) if model_dir is not None else None
    if folder is None or not (folder / "python_env.yaml").is_file():
        return sys.executable  # nothing logged to build from (a model saved without MLflow's files)
    declaration = _from_python_env(folder, "python_env.yaml")
    if _satisfied_here(declaration):
        return sys.executable
    return str(_ensure(folder.resolve(), declaration, f"the model logged in {folder}").python)


def _satisfied_here(declaration: EnvironmentDeclaration) -> bool:
    """Whether this interpreter has the Python version and every requirement ``declaration``
    lists (its included requirements files too)."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    here = ".".join(map(str, sys.version_info[:3]))
    if declaration.python and not _specifier(declaration.python, "python").contains(here, prereleases=True):
        return False
    lines = [d for d in declaration.dependencies if not d.startswith("-")]
    for text in declaration.included.values():
        lines += [line.split("#", 1)[0].strip() for line in text.splitlines()]
    for line in lines:
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            return False  # a URL or a path: only uv can tell
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            return False
        if not requirement.specifier.contains(version, prereleases=True):
            return False
    return True


def command_environment(
    environment: PackageEnvironment, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Variables that make a package's commands run in ``environment``.

    ``python`` is the environment's (its ``bin`` first on ``PATH``); ``uv run python …``
    uses it too and syncs nothing (``UV_PROJECT_ENVIRONMENT``, ``VIRTUAL_ENV``,
    ``UV_NO_SYNC``, ``UV_NO_CACHE``), so it never builds a second environment nor writes
    uv's cache. ``PYTHONPATH`` and
    ``PYTHONHOME`` of the caller are dropped: nothing of geomlops' interpreter leaks in.
    """
    env = dict(os.environ if base is None else base)
    for name in ("PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX"):
        env.pop(name, None)
    uv_dir = str(Path(_uv()).parent)
    env["PATH"] = os.pathsep.join([str(environment.bin_dir), env.get("PATH", ""), uv_dir])
    env["VIRTUAL_ENV"] = str(environment.root)
    env["UV_PROJECT_ENVIRONMENT"] = str(environment.root)
    env["UV_NO_SYNC"] = "1"
    # nothing is installed, so no cache is needed: a temporary one works where uv's own is
    # read-only (a sandboxed task)
    env["UV_NO_CACHE"] = "1"
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env["UV_PYTHON"] = str(environment.python)
    return env
