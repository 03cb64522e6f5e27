"""A real DVC repository with a local remote, built per test session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
