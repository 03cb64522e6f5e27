"""A local MLflow tracking server on the embedded store, for a model package's own MLflow client.

A package's MLflow client may be older or newer than geomlops' own and must not open the
database file (its migrations differ): it talks to a server over HTTP. On the embedded default
(a ``sqlite:`` URI) geomlops' own ``mlflow server`` serves that store on a free port for as long
as the package's command runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator

from geomlops.errors import GeomlopsError
from geomlops.ports import free_port

#: how long a server may take to answer /health (a fresh store is migrated first)
START_TIMEOUT_S = 180.0


def healthy(url: str) -> bool:
    """Whether the MLflow server at ``url`` answers its health check."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _stop_with_parent() -> None:
    """In the server's process: get SIGINT when the process that started it dies (Linux).

    The server has its own process group (so that all of it can be stopped); without this a
    training task killed from outside would leave it running.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _listening(port: int) -> bool:
    """Whether something on this machine accepts connections on ``port``."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen[bytes], port: int) -> None:
    # Its web server stops within a second of SIGINT, but `mlflow server` itself lingers for
    # several more; nothing is in flight once the package's command has exited (SQLite commits
    # each request), so what is left of its process group is killed once the web server no
    # longer listens, or after 2 s
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + 2
    while proc.poll() is None and _listening(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def tracking_server(
    tracking_uri: str, artifact_root: str, *, cancel: threading.Event | None = None
) -> Iterator[str]:
    """The HTTP URI a package's MLflow client should use for ``tracking_uri``.

    A server's URI (``http(s)://``) is yielded as it is. Any other store is served by
    ``mlflow server`` (geomlops' own MLflow) on 127.0.0.1 and a free port until the block ends.

    Args:
        tracking_uri: geomlops' tracking URI.
        artifact_root: default artifact root of experiments the package creates itself.
        cancel: set while the server starts: the start is given up (the server stopped) and
            :class:`GeomlopsError` raised.

    Raises:
        GeomlopsError: the server did not answer; its last log lines are in the message.
    """
    if tracking_uri.startswith(("http://", "https://")):
        yield tracking_uri
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri,
        "--default-artifact-root",
        artifact_root,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # no job runner: it starts a pool of worker processes a training run never uses
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            args,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_stop_with_parent if sys.platform == "linux" else None,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not healthy(url):
                if cancel is not None and cancel.is_set():
                    raise GeomlopsError(f"the local MLflow tracking server's start was given up ({url})")
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = "\n".join(log.read().decode(errors="replace").strip().splitlines()[-10:])
                    raise GeomlopsError(
                        f"the local MLflow tracking server for {tracking_uri} did not start on {url}:\n{tail}"
                    )
                time.sleep(0.25)
            yield url
        finally:
            _stop(proc, port)
