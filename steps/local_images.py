"""On one machine, a model's image is stood in for by its package's own environment.

On Argo the training workflow runs the package's commands in the model's image (the
``mlm:training-runtime`` asset of its item). With no container engine, the local runner runs
them as processes; for those to find the package's dependencies, and nothing of geomlops',
each model image is stood in for by the package's environment (:mod:`steps.package_env`: built
with uv from its declaration, cached by content). The planning step records which package an
image was planned from (:func:`record_image`), for the workflow run that planned it: versions of
a model usually share an image name, and a run must not take the package another run planned
since (its pods know their run by :data:`WORKFLOW_ENV`). :class:`LocalImages`, given to the
runner, gives a process of that image the environment's ``PATH`` and a tracking server's address: a package's
MLflow client never opens the embedded SQLite store (its version may differ from geomlops'), so
on the embedded default a local ``mlflow server`` serves that store for as long as the run
needs one (:mod:`steps._tracking_server`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from geomlops.errors import GeomlopsError
from geomlops.files import write_atomic
from geomlops.settings import Settings
from steps._tracking_server import tracking_server
from steps.package_env import command_environment, ensure_environment

#: the folder of ``$GEOMLOPS_HOME`` holding one record per image and workflow run
IMAGES_DIR = "images"
#: the variable giving a pod its workflow run's uid (``{{workflow.uid}}`` in the manifest)
WORKFLOW_ENV = "GEOMLOPS_WORKFLOW_UID"


def _digest(text: str, size: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def _record_path(image: str, home: Path, workflow: str = "") -> Path:
    run = f".{_digest(workflow, 16)}" if workflow else ""
    return home / IMAGES_DIR / f"{_digest(image, 32)}{run}.json"


def this_workflow() -> str:
    """The uid of the workflow run this process is a step of ("" outside one)."""
    return os.environ.get(WORKFLOW_ENV, "")


def record_image(
    image: str, package: str | Path, home: Path, environment: str = "", workflow: str = ""
) -> None:
    """Record that ``image`` is the image of the package at ``package`` (its folder) for the
    run ``workflow`` (its uid; "": for any run without a record of its own), and the hash of
    the environment that stood in for it, once one did."""
    record = {"image": image, "package": str(Path(package).resolve())}
    if environment:
        record["environment"] = environment
    path = _record_path(image, home, workflow)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record, indent=1) + "\n")


def _read_record(image: str, home: Path, workflow: str) -> dict[str, str]:
    # only the run's own record: another run's package is never taken (a run planned before
    # records were kept per run has no uid in its manifest, and reads the one made outside runs)
    path = _record_path(image, home, workflow)
    if not path.is_file():
        return {}
    record = json.loads(path.read_text(encoding="utf-8"))
    return record if isinstance(record, dict) and record.get("image") == image else {}


def recorded_package(image: str, home: Path, workflow: str = "") -> Path | None:
    """The package folder recorded for ``image`` in run ``workflow``, or None for an image
    with no record."""
    package = _read_record(image, home, workflow).get("package")
    return Path(package) if package else None


def stand_in_hash(image: str, home: Path, workflow: str = "") -> str:
    """The hash of the environment that stood in for ``image`` in run ``workflow`` here (""
    if none did).

    Training runs are tagged with it, so that later steps predict in the same environment.
    """
    return str(_read_record(image, home, workflow).get("environment") or "")


class LocalImages:
    """The runner's stand-in for model images: ``(image, environment) -> environment or None``.

    Args:
        settings: where records are kept (``home_dir``), the tracking URI and the S3 endpoint.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: threading.Thread | None = None
        self._warming: threading.Thread | None = None
        self._tracking_url = ""

    def __call__(self, image: str, env: Mapping[str, str]) -> dict[str, str] | None:
        workflow = env.get(WORKFLOW_ENV, "")
        package = recorded_package(image, self.settings.home_dir, workflow)
        if package is None:
            return None
        if not package.is_dir():
            raise GeomlopsError(f"the package {package} recorded for this image is gone: start a new run")
        environment = ensure_environment(package)
        if environment.note:
            print(environment.note, file=sys.stderr)
        record_image(image, package, self.settings.home_dir, environment.hash, workflow)
        out = command_environment(environment, env)
        out["MLFLOW_TRACKING_URI"] = self.tracking_url()
        for name, value in self.settings.s3_environment().items():
            out.setdefault(name, value)
        return out

    def tracking_url(self) -> str:
        """The tracking server packages talk to: the configured one, else a local one, started
        on first use and stopped by :meth:`close`."""
        uri = self.settings.tracking_uri
        if uri.startswith(("http://", "https://")):
            return uri
        with self._lock:
            if not self._tracking_url:
                self._tracking_url = self._start_server(uri)
            return self._tracking_url

    def warm(self) -> None:
        """Start the local tracking server now, in the background, for a run whose model images
        will need it, so that its start (seconds: MLflow's imports and store) overlaps the run's
        first tasks. Where it fails, :meth:`tracking_url` tries again and raises the reason.

        A SQLite store that does not exist yet is made first, here: else the server and the
        run's first task to open it would both create its tables at once."""
        uri = self.settings.tracking_uri
        if uri.startswith(("http://", "https://")) or self._warming is not None:
            return
        store = self.settings.sqlite_store
        if store is not None and not store.exists():
            from mlflow.tracking import MlflowClient

            try:
                MlflowClient(uri).search_experiments(max_results=1)
            except Exception:  # noqa: BLE001 - not warmed: the task that opens it says why
                return

        def start() -> None:
            with contextlib.suppress(Exception):
                self.tracking_url()

        self._warming = threading.Thread(target=start, name="geomlops-tracking-warm", daemon=True)
        self._warming.start()

    def _start_server(self, uri: str) -> str:
        # The server is started, and waited on, by a thread of its own that lives until close():
        # it is stopped when the thread that started it ends (it must outlive the runner's
        # worker thread that first needs it) or the process dies.
        ready: queue.Queue[str | Exception] = queue.Queue()

        def serve() -> None:
            try:
                with tracking_server(uri, self.settings.artifact_root, cancel=self._stop) as url:
                    ready.put(url)
                    self._stop.wait()
            except Exception as err:  # noqa: BLE001 - handed to the caller, who raises it
                ready.put(err)

        self._server = threading.Thread(target=serve, name="geomlops-tracking-server", daemon=True)
        self._server.start()
        started = ready.get()
        if isinstance(started, Exception):
            raise started
        return started

    def close(self) -> None:
        """Stop the local tracking server, if one was started (a start under way is given up)."""
        self._stop.set()
        if self._warming is not None:
            self._warming.join()
        if self._server is not None:
            self._server.join()
            self._server = None

    def __enter__(self) -> LocalImages:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
