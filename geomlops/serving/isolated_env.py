"""Virtual environments for tools whose dependencies cannot join the library's own.

MLServer pins an older FastAPI than stac-fastapi-pgstac needs; seldon-core pins numpy < 2,
which DVC's stack refuses. Each gets its own environment, built once and cached under a path
keyed by what it holds (``$GEOMLOPS_ENV_CACHE``, default ``~/.cache/geomlops``), so CI and
repeated runs reuse it. Building takes a lock, so two processes never build the same one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

from geomlops.errors import ConfigurationError
from geomlops.files import atomic_path

#: environment variable naming the cache folder
CACHE_ENV = "GEOMLOPS_ENV_CACHE"
#: written last: an environment without it was interrupted and is rebuilt
COMPLETE = ".geomlops-complete"


def cache_root() -> Path:
    """Where isolated environments are kept."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "geomlops").expanduser()


#: geomlops' own top-level packages (what a runtime loaded by another interpreter may import)
OWN_PACKAGES = ("geomlops", "catalog_sync", "postprocessing", "steps", "templates", "pipelines")


def own_packages_path() -> Path:
    """A folder holding only geomlops' own packages, for another interpreter's ``PYTHONPATH``.

    The packages are linked from wherever this interpreter imports them (a wheel's
    site-packages or an editable checkout); nothing else of this environment is exposed, so
    the other environment keeps its own versions of everything geomlops depends on.
    """
    import importlib.util

    folder = cache_root() / "own-packages"
    folder.mkdir(parents=True, exist_ok=True)
    for name in OWN_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigurationError(f"geomlops' package '{name}' is not importable here")
        source = Path(next(iter(spec.submodule_search_locations))).resolve()
        link = folder / name
        if link.is_symlink() and link.resolve() == source:
            continue
        with atomic_path(link) as tmp:  # another process may be reading the old link
            tmp.symlink_to(source, target_is_directory=True)
    return folder


def installed_versions(exclude: Iterable[str] = ()) -> list[str]:
    """``name==version`` of every distribution in this environment, as constraints for another.

    Args:
        exclude: names (any case, ``-`` or ``_``) left out: the ones the other environment
            must resolve differently.
    """

    def norm(name: str) -> str:
        return name.lower().replace("_", "-")

    skip = {norm(n) for n in exclude}
    pins = {
        norm(d.metadata["Name"]): f"{norm(d.metadata['Name'])}=={d.version}"
        for d in metadata.distributions()
        if d.metadata["Name"] and norm(d.metadata["Name"]) not in skip
    }
    return [pins[k] for k in sorted(pins)]


def _uv() -> str | None:
    beside = Path(sys.executable).parent / "uv"
    return str(beside) if beside.is_file() else shutil.which("uv")


def _base_python() -> str:
    return str(getattr(sys, "_base_executable", None) or sys.executable)


def isolated_env(name: str, requirements: Sequence[str], constraints: Sequence[str] = ()) -> Path:
    """The cached environment holding ``requirements`` (built now if absent), keyed by them.

    Args:
        name: a short name for the folder (``mlserver``, ``seldon``).
        requirements: what to install (pip requirement strings).
        constraints: versions to respect where a requirement pulls the package in.

    Returns:
        The environment's folder (``bin/python`` inside).

    Raises:
        ConfigurationError: the environment cannot be built (the installer's output kept).
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    layout = 2  # bumped when the way it is built changes (2: bytecode compiled when built)
    key = hashlib.sha256(
        json.dumps([version, list(requirements), list(constraints), layout]).encode()
    ).hexdigest()
    root = cache_root() / f"{name}-{key[:16]}"
    if (root / COMPLETE).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (root / COMPLETE).is_file():
                return root
            shutil.rmtree(root, ignore_errors=True)
            _build(root, requirements, constraints)
            (root / COMPLETE).write_text(json.dumps({"requirements": list(requirements)}, indent=1))
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return root


def _build(root: Path, requirements: Sequence[str], constraints: Sequence[str]) -> None:
    print(f"building the {root.name.rsplit('-', 1)[0]} environment in {root} (once)", file=sys.stderr)
    constraint_file = root.parent / f".{root.name}.constraints.txt"
    constraint_file.write_text("\n".join(constraints) + "\n")
    uv = _uv()
    python = str(root / "bin" / "python")
    install = ["-c", str(constraint_file), *requirements]
    env = dict(os.environ)
    if uv:
        env["UV_PYTHON_DOWNLOADS"] = "never"
        env.pop("VIRTUAL_ENV", None)
        steps = [
            [uv, "venv", "-q", "--python", _base_python(), str(root)],
            # bytecode written once: a server started where it is not written compiles no imports
            [uv, "pip", "install", "-q", "--compile-bytecode", "--python", python, *install],
        ]
    else:
        steps = [[_base_python(), "-m", "venv", str(root)], [python, "-m", "pip", "install", "-q", *install]]
    try:
        for args in steps:
            done = subprocess.run(args, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise ConfigurationError(
                    f"cannot build the environment {root}: {' '.join(args[:3])} … failed:\n"
                    f"{(done.stderr or done.stdout)[-2000:]}"
                )
    finally:
        with contextlib.suppress(OSError):
            constraint_file.unlink()
