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
NAME, MODULE, IMAGE = "__NAME__", "__MODULE__", "__IMAGE__"
#: the owner in the image a package is scaffolded with when no image is given: ``package
#: check`` refuses it until it is replaced (repository paths are lower-case, so no registry
#: accepts it either)
PLACEHOLDER_OWNER = "OWNER"
#: an image reference with its registry and a tag or digest: ``registry[:port]/repo[/...]:tag``
IMAGE_PATTERN = re.compile(
    r"^[a-z0-9]+(?:[.-][a-z0-9]+)*(?::[0-9]+)?"  # the registry host
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+"  # the repository path, lower-case
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})$"  # the tag or digest
)


def placeholder_image(name: str) -> str:
    """The image a package ``name`` is scaffolded with when none is given (to be replaced)."""
    return f"ghcr.io/{PLACEHOLDER_OWNER}/{name}:0.1.0"


def check_image(image: str) -> None:
    """Refuse an image reference that is not ``REGISTRY/REPO:TAG`` (or ``@sha256:DIGEST``).

    Raises:
        InvalidPackageError: the reference lacks its registry or tag, or is not lower-case.
    """
    if not IMAGE_PATTERN.match(image):
        raise InvalidPackageError(
            f"image {image!r}: expected REGISTRY/REPO:TAG in lower case, e.g. "
            "ghcr.io/your-org/flood-extent:0.1.0 (the image registration builds and training runs in)"
        )


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


def scaffold_package(name: str, parent: str | Path, image: str | None = None) -> Path:
    """Write a new package ``parent/name``.

    With ``image`` the package passes ``geomlops package check`` as written; without it its
    runtime assets name :func:`placeholder_image`, which the check reports until it is replaced.

    Args:
        name: the package's name, model id and image name (``^[a-z][a-z0-9-]*[a-z0-9]$``); its
            Python module is the name with dashes as underscores.
        parent: the folder to create the package in.
        image: the image to build and run the package in (``REGISTRY/REPO:TAG``): the item's
            ``mlm:training-runtime`` and ``mlm:inference-runtime`` assets.

    Returns:
        The new package folder.

    Raises:
        InvalidPackageError: the name or the image is not allowed, or ``parent/name`` already
            exists (nothing is written then).
    """
    if not NAME_PATTERN.match(name):
        raise InvalidPackageError(
            f"package name {name!r}: expected lower-case letters, digits and dashes, starting with a "
            "letter (it becomes the model id and the image name)"
        )
    if image is not None:
        check_image(image)
    image = image or placeholder_image(name)
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
            text = path.read_text().replace(IMAGE, image)
            target.write_text(text.replace(MODULE, module).replace(NAME, name))
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
