"""Scaffold a new model package from the template shipped with geomlops (``examples``)."""

from __future__ import annotations

import re
import shutil
from importlib import resources
from pathlib import Path

from geomlops.errors import ConfigurationError, InvalidPackageError

#: a package name: lower-case letters, digits and dashes (it becomes the model id and image name)
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")
#: placeholders in the template's file names and contents
NAME, MODULE = "__NAME__", "__MODULE__"


def template_dir() -> Path:
    """The package template, found as package data of ``examples``.

    Raises:
        ConfigurationError: the template is not installed with geomlops.
    """
    try:
        path = Path(str(resources.files("examples") / "package-template"))
    except ModuleNotFoundError as err:
        raise ConfigurationError(
            "examples/package-template not found: geomlops is incompletely installed"
        ) from err
    if not (path / "MLproject").is_file():
        raise ConfigurationError(f"{path / 'MLproject'} not found: geomlops is incompletely installed")
    return path


def scaffold_package(name: str, parent: str | Path) -> Path:
    """Write a new package ``parent/name`` that passes ``geomlops package check``.

    Args:
        name: the package's name, model id and image name (``^[a-z][a-z0-9-]*[a-z0-9]$``); its
            Python module is the name with dashes as underscores.
        parent: the folder to create the package in.

    Returns:
        The new package folder.

    Raises:
        InvalidPackageError: the name is not allowed, or ``parent/name`` already exists (nothing
            is written then).
    """
    if not NAME_PATTERN.match(name):
        raise InvalidPackageError(
            f"package name {name!r}: expected lower-case letters, digits and dashes, starting with a "
            "letter (it becomes the model id and the image name)"
        )
    module = name.replace("-", "_")
    Path(parent).mkdir(parents=True, exist_ok=True)
    dest = Path(parent).resolve() / name
    if dest.exists():
        raise InvalidPackageError(f"{dest}: already exists (choose another name or folder)")
    source = template_dir()
    staging = dest.with_name(f".{name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source)
            if "__pycache__" in rel.parts or path.suffix == ".pyc":
                continue
            target = staging / str(rel).replace(MODULE, module)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text().replace(MODULE, module).replace(NAME, name))
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
