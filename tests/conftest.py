"""Shared fixtures: the shared schemas and data, an isolated work folder, MLflow on SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import mlflow
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GEOMLOPS_TEST_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def schema_dir() -> Path:
    """Published JSON schemas stored by URL (CI reads them from ../shared/schemas)."""
    path = Path(os.environ.get("GEOMLOPS_TEST_SCHEMA_DIR", SHARED / "schemas"))
    assert (path / "stac-extensions.github.io").is_dir(), f"schemas not found at {path}"
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real data for tests (../shared/data)."""
    path = SHARED / "data"
    assert path.is_dir(), f"shared data not found at {path}"
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty work folder; MLflow and every GEOMLOPS_* setting point into it."""
    work = tmp_path / "home"
    work.mkdir()
    for key in list(os.environ):
        if key.startswith("GEOMLOPS_") and key not in ("GEOMLOPS_TEST_SCHEMA_DIR", "GEOMLOPS_TEST_SHARED"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("GEOMLOPS_HOME", str(work))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # MLflow's process-wide URI wins over the variable: a command run in-process (use_tracking)
    # sets it, so each test starts from its own and leaves none behind
    mlflow.set_tracking_uri(uri)
    yield work
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None unsets it (MLflow's own reset)


# --- a fake Argo server on localhost that records requests (real HTTP, answers like Argo's API),
# and a work folder where the demo ran (shared by the workflow, CLI and serving tests)


class _Argo(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        entry = {
            "method": self.command,
            "path": self.path,
            "auth": self.headers.get("Authorization"),
            "body": body,
        }
        self.seen.append(entry)
        return entry

    def do_POST(self) -> None:
        entry = self._record()
        if entry["path"].startswith("/api/v1/workflow-templates/"):
            self._answer(409, {"message": "already exists"})
        else:
            self._answer(200, {"metadata": {"name": "geomlops-training-abcde"}})

    def do_GET(self) -> None:
        self._record()
        self._answer(200, {"metadata": {"name": "geomlops-training-0-2-0", "resourceVersion": "41"}})

    def do_PUT(self) -> None:
        entry = self._record()
        field = next(k for k in entry["body"] if k != "namespace")
        self._answer(200, {"metadata": entry["body"][field]["metadata"]})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def argo_server() -> Iterator[str]:
    _Argo.seen.clear()
    server = HTTPServer(("127.0.0.1", 0), _Argo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def argo_requests() -> list[dict[str, Any]]:
    """What the fake Argo server received, in order."""
    return _Argo.seen


GEOMLOPS = str(Path(sys.executable).parent / "geomlops")


def isolated_env(home: Path) -> dict[str, str]:
    """This process's environment without GEOMLOPS_* and MLFLOW_* settings, with home ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOMLOPS_", "MLFLOW_"))}
    return env | {"GEOMLOPS_HOME": str(home)}


def cli_in(home: Path, env: dict[str, str]) -> Any:
    """A function running ``geomlops ARGS…`` in ``home`` with ``env``."""

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GEOMLOPS, *args], env=env, capture_output=True, text=True, cwd=home, timeout=900
        )

    return cli


@pytest.fixture(scope="session")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A work folder where ``geomlops demo`` ran once (shared by the workflow tests).

    Holds ``home``, ``env`` (the environment the CLI runs with), ``first`` (the demo's
    completed process) and ``cli`` (runs ``geomlops ARGS…`` there).
    """
    home = tmp_path_factory.mktemp("demo-home")
    env = isolated_env(home)
    cli = cli_in(home, env)
    first = cli("demo")
    return {"home": home, "env": env, "first": first, "cli": cli}


def commit_model_repo(repo: Path, package: Path, subdir: str = "model") -> str:
    """Copy ``package`` into the git repository ``repo`` (created if needed) under ``subdir``,
    commit it, and return the commit id (a model repository as CI pushes it)."""
    import shutil

    ident = ["-c", "user.name=geomlops", "-c", "user.email=geomlops@localhost"]
    if not (repo / ".git").is_dir():
        repo.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    shutil.copytree(
        package, repo / subdir, ignore=shutil.ignore_patterns("__pycache__", "mlruns"), dirs_exist_ok=True
    )
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), *ident, "commit", "-q", "-m", "model change"], check=True)
    out = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


@pytest.fixture(scope="session")
def retrain_work(tmp_path_factory: pytest.TempPathFactory, schema_dir: Path) -> dict[str, Any]:
    """A work folder where ``geomlops demo`` ran once (version 1 of cloud-mask, no production
    alias yet), with a git repository in it holding the example package in ``model/`` at commit
    ``commit``: what the CI retrain tests start from (its own, so that the versions they add
    leave the ``work`` fixture's counts alone).

    Holds ``home``, ``env``, ``cli``, ``repo`` and ``commit``.
    """
    from geomlops.cli.demo import default_package

    home = tmp_path_factory.mktemp("retrain-home")
    env = isolated_env(home) | {"GEOMLOPS_SCHEMA_DIR": str(schema_dir)}
    cli = cli_in(home, env)
    demo = cli("demo")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    repo = home / "repos" / "cloud-mask"  # inside the work folder: tasks see no host /tmp
    commit = commit_model_repo(repo, default_package())
    return {"home": home, "env": env, "cli": cli, "repo": repo, "commit": commit}


@pytest.fixture(scope="session")
def commit_package() -> Any:
    """:func:`commit_model_repo`, for tests that push their own commits."""
    return commit_model_repo


def _write_labelled_source(folder: Path, names: list[str]) -> None:
    """Images of three bands, and in labels/ their class (1 where the band mean exceeds 3): the
    source a scaffolded package's preprocess reads."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    (folder / "labels").mkdir(parents=True)
    grid = {"width": 16, "height": 16, "crs": "EPSG:4326", "transform": from_origin(85.5, 27.7, 1e-4, 1e-4)}
    for i, name in enumerate(names):
        image = np.linspace(i, 6 + i, 3 * 16 * 16, dtype="float32").reshape(3, 16, 16)
        with rasterio.open(folder / name, "w", driver="GTiff", count=3, dtype="float32", **grid) as dst:
            dst.write(image)
        labels = (image.mean(axis=0) > 3).astype("uint8")
        label_file = folder / "labels" / name
        with rasterio.open(label_file, "w", driver="GTiff", count=1, dtype="uint8", **grid) as dst:
            dst.write(labels, 1)


@pytest.fixture
def labelled_source() -> Callable[[Path, list[str]], None]:
    """Writes ``names`` (GeoTIFFs of three bands) and their labels into a folder."""
    return _write_labelled_source
