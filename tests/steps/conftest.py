"""A real DVC repository with a local remote, built per test session; imagery for the box
models of the prediction tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]


def sh(args: list[str], cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def dvc_repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("dvc")
    repo, remote = root / "repo", root / "remote"
    repo.mkdir()
    dvc = [sys.executable, "-m", "dvc"]
    sh([*GIT, "init", "-q"], repo)
    sh([*dvc, "init", "-q"], repo)
    sh([*dvc, "remote", "add", "-d", "local", str(remote)], repo)
    data = repo / "datasets" / "tiny"
    data.mkdir(parents=True)
    (data / "a.txt").write_text("first\n")
    sh([*dvc, "add", "-q", "datasets/tiny"], repo)
    sh([*GIT, "add", "-A"], repo)
    sh([*GIT, "commit", "-q", "-m", "v1"], repo)
    sh([*GIT, "tag", "v1"], repo)
    first = sh(["git", "rev-parse", "HEAD"], repo).strip()
    (data / "b.txt").write_text("second\n")
    sh([*dvc, "add", "-q", "datasets/tiny"], repo)
    sh([*GIT, "add", "-A"], repo)
    sh([*GIT, "commit", "-q", "-m", "v2"], repo)
    sh([*dvc, "push", "-q"], repo)
    return {
        "repo": repo,
        "remote": remote,
        "v1": first,
        "head": sh(["git", "rev-parse", "HEAD"], repo).strip(),
    }


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """Integer values (the box sums are exact): a ramp with noise, and a no-data patch."""
    rng = np.random.default_rng(5)
    ramp = np.linspace(60, 200, 150)[None, :, None] * np.ones((2, 150, 170))
    data = np.clip(ramp + rng.integers(-60, 60, (2, 150, 170)), 0, 255).astype("float32")
    data[:, 70:76, 20:31] = -9999
    path = tmp_path / "image.tif"
    profile = {
        "driver": "GTiff",
        "height": 150,
        "width": 170,
        "count": 2,
        "dtype": "float32",
        "crs": "EPSG:32616",
        "transform": from_origin(452475, 3408645, 30, 30),
        "nodata": -9999,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path
