"""``geomlops serve``: a registered model and its post-processing transformer on MLServer, locally.

MLServer (Apache-2.0, the runtime under Seldon Core 2 and KServe) answers the V2 inference
protocol on localhost with one custom runtime, :class:`geomlops.serving.runtime.GeoChipRuntime`,
which loads the MLflow model, predicts the posted chip and vectorizes the prediction.

MLServer pins FastAPI < 0.116 while stac-fastapi-pgstac 7 needs a newer one, so it runs in its
own environment (:mod:`geomlops.serving.isolated_env`): MLServer plus the same versions of everything
else this environment has, built once and cached.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from geomlops.errors import ServingError
from geomlops.serving.isolated_env import installed_versions, isolated_env, own_packages_path
from geomlops.serving.manifests import ServedModel, k8s_name, transformer_parameters
from geomlops.settings import Settings, get_settings

#: what the serving environment holds: MLServer and what the runtime imports
MLSERVER_REQUIREMENTS = (
    "mlserver==1.7.1",
    "mlserver-mlflow==1.7.1",  # the predictor KServe runs for MLflow models, for the tests
    "mlflow-skinny",
    "scikit-learn",
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


@dataclass(frozen=True)
class LocalServer:
    """A prepared MLServer: its folder, command, environment and address.

    Attributes:
        model: the model version served.
        folder: holds ``settings.json`` and ``<model>/model-settings.json``.
        command: the MLServer command line.
        env: the environment to run it with (geomlops' own packages on ``PYTHONPATH``).
        url: where it answers, ``http://HOST:PORT``.
    """

    model: ServedModel
    folder: Path
    command: list[str]
    env: dict[str, str]
    url: str

    @property
    def infer_url(self) -> str:
        """The V2 inference endpoint of the model."""
        return f"{self.url}/v2/models/{self.model.name}/infer"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def mlserver_env() -> Path:
    """The cached MLServer environment (built on first use)."""
    return isolated_env("mlserver", MLSERVER_REQUIREMENTS, installed_versions(exclude=MLSERVER_OWN))


def prepare_local_server(
    reference: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    grpc_port: int | None = None,
    settings: Settings | None = None,
) -> LocalServer:
    """Resolve ``MODEL[@ALIAS|@VERSION]`` and write MLServer's settings for it.

    Args:
        reference: model name with an alias (default ``production``) or a version number.
        host: interface to listen on.
        port: HTTP port (V2 REST).
        grpc_port: gRPC port (default: a free one).
        settings: geomlops settings (default: from the environment).

    Returns:
        What to run; nothing has started yet.

    Raises:
        ServingError: a bad reference.
        RegistryError: the alias or version is not in the registry.
        CatalogError: the model has no MLM item.
    """
    from geomlops.serving.deploy import parse_model_reference, resolve_served_model, served_model_spec

    settings = settings or get_settings()
    name, alias = parse_model_reference(reference)
    model = resolve_served_model(name, alias, settings)
    spec = served_model_spec(name, model.version, settings)
    folder = settings.home_dir / "serving" / "local" / k8s_name(name)
    model_folder = folder / name.replace("/", "_")  # MLServer expects the model's name here
    model_folder.mkdir(parents=True, exist_ok=True)
    server = {
        "host": host,
        "http_port": port,
        "grpc_port": grpc_port or free_port(host),
        "metrics_endpoint": None,
        "parallel_workers": 0,
        "load_models_at_startup": True,
        "debug": False,
    }
    model_settings = {
        "name": name,
        "implementation": RUNTIME,
        "parameters": {
            "version": model.version,
            "extra": {
                "model_uri": model.model_uri,
                "input": spec.inputs[0].model_dump(mode="json"),
                "transformer": transformer_parameters(model),
                "max_bytes": settings.serving_max_image_bytes,
            },
        },
    }
    (folder / "settings.json").write_text(json.dumps(server, indent=1))
    (model_folder / "model-settings.json").write_text(json.dumps(model_settings, indent=1))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(own_packages_path()), os.environ.get("PYTHONPATH")])),
    }
    env["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    env.update(settings.s3_environment())
    command = [str(mlserver_env() / "bin" / "mlserver"), "start", str(folder)]
    return LocalServer(model=model, folder=folder, command=command, env=env, url=f"http://{host}:{port}")


def run_local_server(server: LocalServer) -> None:
    """Replace this process with MLServer (signals reach it directly).

    Raises:
        ServingError: MLServer cannot be started.
    """
    print(
        f"serving {server.model.name} v{server.model.version} (run {server.model.run_id}) on MLServer: "
        f"POST {server.infer_url}",
        file=sys.stderr,
        flush=True,
    )
    try:
        os.execve(server.command[0], server.command, server.env)
    except OSError as err:
        raise ServingError(f"cannot start MLServer ({server.command[0]}): {err}") from err
