"""Package hashing skips environments and caches; staging copies exactly the hashed files."""

from __future__ import annotations

from pathlib import Path

import pytest

from geomlops.errors import InvalidPackageError
from steps.package import content_hash, package_files, stage_package

SKIPPED = [
    ".venv/lib/python3.11/site-packages/torch/__init__.py",
    "venv/bin/python",
    "src/__pycache__/train.cpython-311.pyc",
    ".git/HEAD",
    ".mypy_cache/3.11/cache.json",
    ".pytest_cache/v/cache/lastfailed",
    "mlruns/0/meta.yaml",
    "src/my_model.egg-info/PKG-INFO",
    "notebooks/.ipynb_checkpoints/explore-checkpoint.ipynb",
    "node_modules/left-pad/index.js",
]


def _package(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "MLproject").write_text("name: p\nentry_points: {}\n")
    (root / "src" / "train.py").write_text("print('train')\n")
    return root


def test_hash_ignores_environments_and_caches(tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg")
    before = content_hash(package)
    for rel in SKIPPED:
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text("anything")
    assert content_hash(package) == before
    assert [str(p) for p in package_files(package)] == ["MLproject", "src/train.py"]
    (package / "src" / "train.py").write_text("print('changed')\n")
    assert content_hash(package) != before


def test_staged_copy_has_the_same_hash_and_leaves_the_package_untouched(tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg")
    (package / ".venv" / "bin").mkdir(parents=True)
    (package / ".venv" / "bin" / "python").write_text("env")
    listing = sorted(str(p.relative_to(package)) for p in package.rglob("*"))
    staged = stage_package(package, tmp_path / "run" / "package")
    assert content_hash(staged) == content_hash(package)
    assert not (staged / ".venv").exists()
    (staged / "model.pt").write_text("weights")  # what a run writes stays in the copy
    assert sorted(str(p.relative_to(package)) for p in package.rglob("*")) == listing
    again = stage_package(package, staged)  # staging again replaces the copy
    assert not (again / "model.pt").exists()


def test_staging_refuses_a_destination_inside_the_package(tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg")
    with pytest.raises(InvalidPackageError, match="inside itself"):
        stage_package(package, package / "work")
    assert not (package / "work").exists()
    with pytest.raises(InvalidPackageError, match="folder not found"):
        stage_package(tmp_path / "missing", tmp_path / "dest")
