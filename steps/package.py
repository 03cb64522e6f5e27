"""Read and check a model package: MLproject entry points, Dockerfile, MLM item."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from catalog_sync.validation import ValidationResult
from geomlops.errors import InvalidPackageError

#: entry points every model package has, and what each is for
ENTRY_POINTS = {
    "train": "fit the model and log it to MLflow",
    "preprocess": "turn source imagery and labels into the training dataset",
    "postprocess": "turn a predicted mask into vector features",
    "inference": "predict a mask for an image",
}


#: file names a package's MLM item may have, the first preferred
ITEM_FILES = ("stac-item.json", "stac_item.json")


def find_item_file(root: Path) -> Path | None:
    """The package's MLM item file (the first of :data:`ITEM_FILES` present), or None."""
    return next((root / name for name in ITEM_FILES if (root / name).is_file()), None)


class PackageInfo(BaseModel):
    """What a model package declares."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    name: str
    entry_points: dict[str, dict[str, Any]]
    git_commit: str | None
    content_sha256: str


def read_mlproject(package: Path) -> dict[str, Any]:
    """Parse ``package/MLproject``.

    Raises:
        InvalidPackageError: the file is absent, not YAML, or has no ``entry_points`` mapping.
    """
    path = package / "MLproject"
    if not path.is_file():
        raise InvalidPackageError(f"{path}: file not found (a model package needs an MLproject)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InvalidPackageError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("entry_points"), dict):
        raise InvalidPackageError(f"{path}: field 'entry_points' missing or not a mapping")
    return data


def describe_package(package: str | Path, required: tuple[str, ...] = ("train",)) -> PackageInfo:
    """Check that a package has the ``required`` entry points and say what it is.

    Args:
        package: folder of the model package.
        required: entry points that must exist.

    Raises:
        InvalidPackageError: naming the file and the missing entry point.
    """
    root = Path(package).resolve()
    if not root.is_dir():
        raise InvalidPackageError(f"model package {root}: folder not found")
    project = read_mlproject(root)
    entry_points = project["entry_points"]
    missing = [name for name in required if name not in entry_points]
    if missing:
        raise InvalidPackageError(
            f"{root / 'MLproject'}: entry_points lacks {', '.join(repr(m) for m in missing)} "
            f"(has: {', '.join(sorted(entry_points)) or 'none'})"
        )
    return PackageInfo(
        path=str(root),
        name=str(project.get("name", root.name)),
        entry_points={k: dict(v or {}) for k, v in entry_points.items()},
        git_commit=_git_commit(root),
        content_sha256=content_hash(root),
    )


def _git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


#: folders never part of a package's content: environments, caches, VCS and run outputs
SKIPPED_FOLDERS = frozenset(
    {
        ".venv",
        "venv",
        "__pycache__",
        ".git",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "mlruns",
        ".ipynb_checkpoints",
        "node_modules",
    }
)


def _skipped(name: str) -> bool:
    return name in SKIPPED_FOLDERS or name.endswith(".egg-info")


def package_files(root: Path) -> list[Path]:
    """The package's own files, sorted, relative to ``root``: skipped folders are not entered.

    Virtual environments, caches, VCS folders, ``mlruns`` and ``*.egg-info`` are pruned while
    walking, so a ``.venv`` of thousands of files costs nothing.
    """
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not _skipped(d)]
        base = Path(folder).relative_to(root)
        found += [base / f for f in files if not f.endswith(".pyc")]
    return sorted(found)


def content_hash(root: Path) -> str:
    """SHA-256 over the package's files (paths and bytes); see :func:`package_files`."""
    digest = hashlib.sha256()
    for rel in package_files(root):
        path = root / rel
        if not path.is_file():  # a dangling link
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def stage_package(path: str | Path, dest: str | Path) -> Path:
    """Copy a package's own files into ``dest`` (a run's work folder), for a run to write into.

    Training runs the copy, so the registered package folder is never written to. The copy
    holds exactly the files :func:`content_hash` covers, so both have the same hash. An
    existing ``dest`` is replaced.

    Args:
        path: the package folder.
        dest: folder to create.

    Returns:
        ``dest``, resolved.

    Raises:
        InvalidPackageError: ``path`` is not a folder, or ``dest`` lies inside it.
    """
    root = Path(path).resolve()
    target = Path(dest).resolve()
    if not root.is_dir():
        raise InvalidPackageError(f"model package {root}: folder not found")
    if target == root or root in target.parents:
        raise InvalidPackageError(f"{target}: cannot stage model package {root} inside itself")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for rel in package_files(root):
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target / rel)
    return target


def read_package_item(
    package: str | Path, schema_dir: Path | None = None
) -> tuple[dict[str, Any], ValidationResult]:
    """Read the package's MLM item (``stac-item.json`` or ``stac_item.json``), validated offline.

    Returns:
        The item and its validation result (``incomplete`` when a schema is not available).

    Raises:
        InvalidPackageError: the file is missing or not JSON.
        InvalidModelItemError: the item is invalid (each fault's JSON path named).
    """
    import json

    from catalog_sync.validation import validate_stac
    from geomlops.errors import InvalidModelItemError

    root = Path(package).resolve()
    path = find_item_file(root)
    if path is None:
        raise InvalidPackageError(
            f"{root / ITEM_FILES[0]}: file not found (a model package needs its MLM item: "
            f"{' or '.join(ITEM_FILES)})"
        )
    try:
        item: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InvalidPackageError(f"{path}: not valid JSON ({err})") from err
    result = validate_stac(item, schema_dir)
    if result.status == "invalid":
        raise InvalidModelItemError(f"{path}:\n{result.summary()}")
    return item, result
