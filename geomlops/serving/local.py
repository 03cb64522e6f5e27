"""``geomlops serve``: a registered model and its post-processing transformer, on this machine.

Two processes answer, as a KServe ``InferenceService`` with a transformer would:

- **the predictor**, :mod:`geomlops.serving.predictor_server`, run by the Python of the model
  package's own environment (the uv environment the version was trained in): it loads the
  MLflow model with the package's own MLflow and framework and answers the V2 inference
  protocol on a private port of 127.0.0.1. geomlops' environment never imports the model's
  framework, and nothing is installed anywhere by hand;
- **the transformer**, MLServer (Apache-2.0, the runtime under Seldon Core 2 and KServe) in
  geomlops' serving environment with :class:`geomlops.serving.runtime.GeoChipRuntime`: it
  takes the posted chip, prepares it as the model's MLM item says, asks the predictor, reads
  the answer (class values, scores) as the item says and answers GeoJSON.

The predictor is started first and must load the model before MLServer starts: a model that
does not load (a module missing from its environment, say) ends ``geomlops serve`` with a
non-zero status and the predictor's reason. Either process stopping ends the other and the
command, again non-zero unless it was asked to stop (Ctrl-C, SIGTERM).

MLServer pins FastAPI < 0.116 while stac-fastapi-pgstac 7 needs a newer one, so it runs in its
own environment (:mod:`geomlops.serving.isolated_env`): MLServer plus the same versions of
everything else this environment has, built once and cached.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from geomlops.errors import ServingError
from geomlops.ports import free_port
from geomlops.serving.isolated_env import installed_versions, isolated_env, own_packages_path
from geomlops.serving.manifests import ServedModel, k8s_name, transformer_parameters
from geomlops.settings import Settings, get_settings

#: what the serving environment holds: MLServer and what the transformer's runtime imports
MLSERVER_REQUIREMENTS = (
    "mlserver==1.7.1",
    "pandas",
    "rasterio",
    "shapely",
    "contourpy",
    "affine",
    "pyproj",
    "pydantic",
    "pydantic-settings",
    "pyyaml",
    "requests",
)
#: resolved differently there: MLServer 1.7 needs FastAPI < 0.116 (and its Starlette, protobuf)
MLSERVER_OWN = ("fastapi", "starlette", "protobuf", "geomlops")
#: the runtime MLServer loads
RUNTIME = "geomlops.serving.runtime.GeoChipRuntime"
#: the predictor's script, run by the model environment's Python
PREDICTOR = Path(__file__).with_name("predictor_server.py")
#: lines of the predictor's log kept to name a failure
LOG_TAIL = 40


@dataclass(frozen=True)
class LocalServer:
    """A prepared serving graph: the predictor's command and MLServer's folder and command.

    Attributes:
        model: the model version served.
        folder: holds ``settings.json`` and ``<model>/model-settings.json``.
        command: the MLServer command line.
        env: the environment to run MLServer with (geomlops' own packages on ``PYTHONPATH``).
        url: where it answers, ``http://HOST:PORT``.
        predictor: the predictor's command line (the model environment's Python first).
        predictor_env: the environment to run it with (nothing of geomlops' interpreter).
        model_settings: MLServer's model settings, less the predictor's URL (known once it runs).
    """

    model: ServedModel
    folder: Path
    command: list[str]
    env: dict[str, str]
    url: str
    predictor: list[str]
    predictor_env: dict[str, str]
    model_settings: dict[str, Any]

    @property
    def infer_url(self) -> str:
        """The V2 inference endpoint of the model."""
        return f"{self.url}/v2/models/{self.model.name}/infer"


def mlserver_env() -> Path:
    """The cached MLServer environment (built on first use)."""
    return isolated_env("mlserver", MLSERVER_REQUIREMENTS, installed_versions(exclude=MLSERVER_OWN))


def model_environment(model: ServedModel, settings: Settings) -> tuple[str, Path]:
    """The Python of the model's own environment and a local folder of its files.

    The environment is the one the version's run was trained in (its ``geomlops.environment``
    tag, cached on this machine), else the one its package (the MLM item's ``code`` asset, a
    folder here) declares, built now.

    Raises:
        ServingError: the model's files cannot be had, or its environment is not on this
            machine and cannot be built.
    """
    from geomlops.errors import GeomlopsError
    from geomlops.settings import use_tracking
    from steps._package_predictor import model_worker_inputs

    use_tracking(settings)
    try:
        python, folder = model_worker_inputs(
            f"models:/{model.name}/{model.version}", settings.home_dir / "serving" / "models"
        )
    except GeomlopsError as err:
        raise ServingError(f"model {model.name} v{model.version}: {err}") from err
    if python != sys.executable:  # (a venv's python and this one may link to one binary)
        return python, folder
    from geomlops.serving.deploy import served_model_spec
    from steps.package_env import ensure_environment

    package = served_model_spec(model.name, model.version, settings).package_uri or ""
    package_dir = Path(package.removeprefix("file://"))
    if not package or not (package_dir / "MLproject").is_file():
        raise ServingError(
            f"model {model.name} v{model.version}: the environment it was trained in is not on this "
            f"machine, and its package ({package or 'none in its MLM item'}) is not a folder here to "
            "build one from"
        )
    try:
        return str(ensure_environment(package_dir).python), folder
    except GeomlopsError as err:
        raise ServingError(f"model {model.name} v{model.version}: {err}") from err


def prepare_local_server(
    reference: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    grpc_port: int | None = None,
    settings: Settings | None = None,
) -> LocalServer:
    """Resolve ``MODEL[@ALIAS|@VERSION]``, find its environment and files, write MLServer's settings.

    Args:
        reference: model name with an alias (default ``production``) or a version number.
        host: interface to listen on.
        port: HTTP port (V2 REST).
        grpc_port: gRPC port (default: a free one).
        settings: geomlops settings (default: from the environment).

    Returns:
        What to run; nothing has started yet.

    Raises:
        ServingError: a bad reference, or the model's files or environment cannot be had.
        RegistryError: the alias or version is not in the registry.
        CatalogError: the model has no MLM item.
    """
    from geomlops.serving.deploy import parse_model_reference, resolve_served_model

    settings = settings or get_settings()
    name, alias = parse_model_reference(reference)
    model = resolve_served_model(name, alias, settings)
    python, model_dir = model_environment(model, settings)
    folder = settings.home_dir / "serving" / "local" / k8s_name(name)
    (folder / name.replace("/", "_")).mkdir(parents=True, exist_ok=True)  # MLServer wants it so
    server = {
        "host": host,
        "http_port": port,
        "grpc_port": grpc_port or free_port(host),
        "metrics_endpoint": None,
        "parallel_workers": 0,
        "load_models_at_startup": True,
        "debug": False,
    }
    (folder / "settings.json").write_text(json.dumps(server, indent=1))
    model_settings = {
        "name": name,
        "implementation": RUNTIME,
        "parameters": {
            "version": model.version,
            "extra": {
                "input": model.model_input,
                "output": model.model_output,
                "transformer": transformer_parameters(model),
                "max_bytes": settings.serving_max_image_bytes,
            },
        },
    }
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(own_packages_path()), os.environ.get("PYTHONPATH")])),
    }
    env["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    env.update(settings.s3_environment())
    predictor_env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    predictor = [
        python,
        str(PREDICTOR),
        "--model-dir",
        str(model_dir),
        "--name",
        name,
        "--version",
        model.version,
        "--port",
        "0",
    ]
    return LocalServer(
        model=model,
        folder=folder,
        command=[str(mlserver_env() / "bin" / "mlserver"), "start", str(folder)],
        env=env,
        url=f"http://{host}:{port}",
        predictor=predictor,
        predictor_env=predictor_env,
        model_settings=model_settings,
    )


class _Log:
    """Copies a process's output to ours line by line, keeping the last lines to name a failure."""

    def __init__(self, stream: IO[str], out: IO[str]) -> None:
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
        self._thread = threading.Thread(target=self._copy, args=(stream, out), daemon=True)
        self._thread.start()

    def _copy(self, stream: IO[str], out: IO[str]) -> None:
        for line in stream:
            self.tail.append(line.rstrip("\n"))
            out.write(line)
            out.flush()

    def cause(self) -> str:
        """The line naming why the process stopped (its last error line), else its last line."""
        self._thread.join(timeout=5)
        lines = [t for t in self.tail if t.strip()]
        named = [t for t in lines if t.startswith("geomlops-predictor:")]
        return (named or lines or ["(no output)"])[-1].strip()


def start_predictor(server: LocalServer) -> tuple[subprocess.Popen[str], _Log, str]:
    """Start the predictor in the model's environment and wait until it has loaded the model.

    Returns:
        The process, its log, and the V2 ``infer`` URL it answers on.

    Raises:
        ServingError: the model does not load (the predictor's reason: the missing module's
            name, say), or the predictor cannot be started.
    """
    model = server.model
    try:
        proc = subprocess.Popen(
            server.predictor,
            env=server.predictor_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C reaches this process, which stops both in order
        )
    except OSError as err:
        raise ServingError(f"cannot start the predictor ({server.predictor[0]}): {err}") from err
    assert proc.stdout is not None and proc.stderr is not None
    log = _Log(proc.stderr, sys.stderr)
    line = proc.stdout.readline()  # the ready line, or nothing when it exits
    try:
        ready = json.loads(line) if line.strip() else {}
    except ValueError:
        ready = {}
    if not ready.get("ready"):
        proc.wait()
        raise ServingError(
            f"model {model.name} v{model.version} does not load in its own environment "
            f"({server.predictor[0]}): {log.cause()} (predictor exit status {proc.returncode})"
        )
    return proc, log, f"http://127.0.0.1:{int(ready['port'])}/v2/models/{model.name}/infer"


def _stop(proc: subprocess.Popen[str] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_local_server(server: LocalServer) -> None:
    """Run the predictor, then MLServer with the transformer, until stopped.

    Returns normally when asked to stop (SIGINT, SIGTERM).

    Raises:
        ServingError: the model does not load in its environment, MLServer cannot be started,
            or either process stopped on its own (what it said last is in the message).
    """
    stopping = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        stopping.set()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    predictor: subprocess.Popen[str] | None = None
    mlserver: subprocess.Popen[str] | None = None
    try:
        predictor, predictor_log, predictor_url = start_predictor(server)
        model_settings = json.loads(json.dumps(server.model_settings))
        model_settings["parameters"]["extra"]["predictor_url"] = predictor_url
        settings_file = server.folder / server.model.name.replace("/", "_") / "model-settings.json"
        settings_file.write_text(json.dumps(model_settings, indent=1))
        print(
            f"serving {server.model.name} v{server.model.version} (run {server.model.run_id}): "
            f"POST {server.infer_url} (the model predicts in {server.predictor[0]})",
            file=sys.stderr,
            flush=True,
        )
        try:
            mlserver = subprocess.Popen(server.command, env=server.env, text=True, start_new_session=True)
        except OSError as err:
            raise ServingError(f"cannot start MLServer ({server.command[0]}): {err}") from err
        while not stopping.wait(0.5):
            if predictor.poll() is not None:
                raise ServingError(
                    f"the predictor of {server.model.name} stopped (exit status {predictor.returncode}): "
                    f"{predictor_log.cause()}"
                )
            if mlserver.poll() is not None:
                raise ServingError(
                    f"MLServer stopped (exit status {mlserver.returncode}) before it was asked to: the "
                    "transformer did not load or the server failed; its log is above"
                )
    finally:
        _stop(mlserver)
        _stop(predictor)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
