"""Predict arrays with a pyfunc model in another interpreter (the model package's own).

geomlops never imports a model's framework: :func:`package_predictor` starts
:mod:`steps._pyfunc_worker` with the package environment's Python and exchanges arrays with it
as length-prefixed frames over its stdin and stdout (the framing, and why, is in that module's
docstring). :func:`model_worker_inputs` finds, for a model URI, a local copy of its files and
the interpreter of its environment (the one it was trained in, else one built from what MLflow
logged with it: :func:`steps.package_env.logged_model_python`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from geomlops.errors import GeomlopsError

WORKER = Path(__file__).with_name("_pyfunc_worker.py")
_LENGTH = struct.Struct(">I")
#: run tag naming the environment the model was trained in (set by training)
ENVIRONMENT_TAG = "geomlops.environment"


class PackagePredictor:
    """``predict(array) -> array`` through a running worker; :attr:`device` is where it runs.

    Args:
        reader: the worker's answers (its stdout, or the socket).
        writer: the worker's requests (its stdin, or the socket).
        tail: what the worker said of itself when it fails (its last error lines, exit code).
        model_dir: the model, for messages.
        device: the device asked for (the ready frame says which was chosen).
    """

    def __init__(
        self, reader: IO[bytes], writer: IO[bytes], tail: Callable[[], str], model_dir: str, device: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._tail = tail
        self.model_dir = model_dir
        self.device = device
        self.flavor = ""
        self.mode = "pyfunc"

    def _fail(self, what: str, reason: str | None) -> GeomlopsError:
        tail = self._tail()
        return GeomlopsError(f"{what}: {reason or 'the predictor ended'}\n{tail}".rstrip())

    def _read(self, count: int) -> bytearray | None:
        buffer = bytearray(count)
        view, got = memoryview(buffer), 0
        while got < count:
            n = self._reader.readinto(view[got:])  # type: ignore[attr-defined]
            if not n:
                return None
            got += n
        return buffer

    def _frame(self, what: str) -> tuple[dict[str, Any], bytearray]:
        length = self._read(_LENGTH.size)
        if length is None:
            raise self._fail(what, None)
        raw = self._read(_LENGTH.unpack(bytes(length))[0])
        header: dict[str, Any] = json.loads(bytes(raw or b"{}"))
        if "error" in header:
            raise self._fail(what, str(header["error"]))
        nbytes = int(header.get("nbytes", 0))
        payload = self._read(nbytes) if nbytes else bytearray()
        if payload is None:
            raise self._fail(what, None)
        return header, payload

    def ready(self, what: str) -> None:
        """Wait for the model to load; raise with the worker's reason if it did not."""
        header, _ = self._frame(what)
        self.device = str(header.get("device", self.device))
        self.flavor = str(header.get("flavor", ""))
        self.mode = str(header.get("mode", "pyfunc"))

    def run(self, command: str, cwd: str, what: str) -> None:
        """Run ``command`` (a shell command) in the worker's environment, in ``cwd`` (a folder
        relative to the folder the worker shares with this process); a worker started in
        commands mode only.

        Raises:
            GeomlopsError: the command failed (``what``, its exit code and last error lines).
        """
        if self.mode != "commands":
            raise GeomlopsError(f"{what}: the model's worker runs in {self.mode} mode, not commands mode")
        header = json.dumps({"run": command, "cwd": cwd}).encode()
        try:
            self._writer.write(_LENGTH.pack(len(header)) + header)
            self._writer.flush()
        except (BrokenPipeError, ConnectionError):
            raise self._fail(what, None) from None
        answer, _ = self._frame(what)
        code = int(answer.get("returncode", 1))
        if code != 0:
            lines = "\n".join(f"  {line}" for line in answer.get("tail") or [])
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise GeomlopsError(f"{what}: `{command}` {how}\n{lines}".rstrip())

    def __call__(self, array: NDArray[Any]) -> NDArray[Any]:
        """The model's prediction of ``array``.

        Raises:
            GeomlopsError: the model failed (its last error lines in the message).
        """
        data = np.ascontiguousarray(array)
        header = json.dumps({"shape": list(data.shape), "dtype": data.dtype.str, "nbytes": data.nbytes})
        what = f"the model {self.model_dir} failed to predict an array of shape {data.shape}"
        try:
            self._writer.write(_LENGTH.pack(len(header)) + header.encode())
            if data.nbytes:
                self._writer.write(data.data.cast("B"))
            self._writer.flush()
        except (BrokenPipeError, ConnectionError):
            raise self._fail(what, None) from None
        answer, payload = self._frame(what)
        result: NDArray[Any] = np.frombuffer(payload, dtype=np.dtype(answer["dtype"]))
        return result.reshape(answer["shape"])


def _worker_env(python: str | Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(Path(python).parent), env.get("PATH", "")])
    return env


@contextmanager
def package_predictor(
    python: str | Path,
    model_dir: str | Path,
    *,
    device: str = "cpu",
    mode: str = "pyfunc",
    shared: str | Path = "",
) -> Iterator[PackagePredictor]:
    """A ``predict(array) -> array`` running the pyfunc model at ``model_dir`` with ``python``.

    Args:
        python: the interpreter of the model's environment (holding its MLflow and framework).
        model_dir: a local folder of the logged model (with ``MLmodel``).
        device: ``cpu``, ``cuda`` or ``auto``: ``cuda`` is used only where torch reports a GPU;
            the predictor's ``device`` says which was chosen.
        mode: ``pyfunc`` (load the model, predict arrays) or ``commands`` (load nothing, run the
            package's entry points: :meth:`PackagePredictor.run`).
        shared: commands mode: the folder that ``run``'s folders are relative to.

    Raises:
        GeomlopsError: the model cannot be loaded (the worker's reason, e.g. the missing module,
            and its last error lines in the message), or a prediction fails.
    """
    with (
        tempfile.TemporaryDirectory(prefix="geomlops-predict-") as tmp,
        tempfile.TemporaryFile("w+") as errors,
    ):
        proc = subprocess.Popen(
            [str(python), str(WORKER), str(model_dir), "--device", device, "--mode", mode]
            + (["--shared", str(shared)] if shared else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=_worker_env(python),
            cwd=tmp,
        )
        assert proc.stdout is not None and proc.stdin is not None

        def tail() -> str:
            errors.seek(0)
            lines = errors.read().strip().splitlines()
            code = proc.poll()
            ended = [f"  (the predictor exited with code {code})"] if code is not None else []
            return "\n".join([*(f"  {t}" for t in lines[-12:]), *ended])

        try:
            predictor = PackagePredictor(proc.stdout, proc.stdin, tail, str(model_dir), device)
            predictor.ready(f"cannot load the model {model_dir} with {python}")
            yield predictor
        finally:
            if proc.stdin is not None:
                with suppress(BrokenPipeError):
                    proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # busy (a command in commands mode): end it
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@contextmanager
def socket_predictor(
    port_file: Path, *, model: str, timeout: float, log_hint: str
) -> Iterator[PackagePredictor]:
    """A predictor talking to a worker that serves one connection on ``localhost`` (run with
    ``--listen``, e.g. a sidecar in the model's image), once it has written its port to
    ``port_file``.

    Args:
        port_file: where the worker writes its port.
        model: the model, for messages.
        timeout: seconds to wait for the port and then for the model to load.
        log_hint: where the worker's own output is, for messages.

    Raises:
        GeomlopsError: no port within ``timeout``; the model cannot be loaded (the worker's
            reason, e.g. the missing module); a prediction fails.
    """
    import socket
    import time

    deadline = time.monotonic() + timeout
    while not port_file.is_file():
        if time.monotonic() > deadline:
            raise GeomlopsError(
                f"the model's worker did not start within {timeout:.0f} s ({port_file} never appeared); "
                f"its output: {log_hint}"
            )
        time.sleep(0.1)
    port = int(port_file.read_text(encoding="utf-8").strip())
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.settimeout(None)  # a model may take long on a batch; the pod's deadline bounds it
        reader, writer = conn.makefile("rb"), conn.makefile("wb")
        predictor = PackagePredictor(
            reader, writer, lambda: f"  (the worker's output: {log_hint})", model, ""
        )
        predictor.ready(f"cannot load the model {model}")
        try:
            yield predictor
        finally:
            with suppress(OSError):
                writer.close()
            reader.close()


def download_model(uri: str, folder: Path, named: str | None = None) -> Path:
    """The model's files at ``uri`` in ``folder``, downloaded unless they are there already.

    They are downloaded beside it and moved into place, so a folder with an ``MLmodel`` is
    whole; when another process moved its copy there first, that one is kept.

    Args:
        uri: what MLflow downloads (``models:/NAME/VERSION``, ``runs:/``, a URI of the files).
        folder: where the files go.
        named: the model as errors name it (default ``uri``).

    Raises:
        GeomlopsError: the model cannot be downloaded.
    """
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    if (folder / "MLmodel").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        try:
            found = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except MlflowException as err:
            raise GeomlopsError(f"model {named or uri}: cannot be downloaded ({err.message})") from err
        try:
            found.rename(folder)
        except OSError:  # another process put it there first
            if not (folder / "MLmodel").is_file():
                raise
    return folder


def model_worker_inputs(model_uri: str, cache: Path) -> tuple[str, Path]:
    """The interpreter and a local folder of ``model_uri`` (``models:/NAME/VERSION``, ``runs:/``,
    a URI of the model's files or a local folder), downloaded once into ``cache``.

    Raises:
        GeomlopsError: the model or its run cannot be found or downloaded.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from steps.package_env import logged_model_python

    local = Path(model_uri.removeprefix("file://"))
    if local.is_dir():  # a model's files on this machine: no run to read the environment from
        return logged_model_python("", local), local
    client = MlflowClient()
    tags: dict[str, str] = {}
    key = model_uri
    try:
        if model_uri.startswith("models:/"):
            name, _, version = model_uri.removeprefix("models:/").partition("/")
            mv = (
                client.get_model_version(name, version)
                if version.isdigit()
                else client.get_model_version_by_alias(name, version)
            )
            key = f"models:/{name}/{mv.version}"  # an alias moves; a version's files never change
            tags = client.get_run(str(mv.run_id)).data.tags if mv.run_id else {}
        elif model_uri.startswith("runs:/"):
            tags = client.get_run(model_uri.removeprefix("runs:/").split("/")[0]).data.tags
    except MlflowException as err:
        raise GeomlopsError(f"model {model_uri}: cannot be found ({err.message})") from err
    environment = tags.get(ENVIRONMENT_TAG, "")
    folder = cache / hashlib.sha256(key.encode()).hexdigest()[:24]
    download_model(key, folder, model_uri)
    return logged_model_python(environment, folder), folder
