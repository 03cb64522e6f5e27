"""The KServe transformer: MLServer with :class:`geomlops.serving.runtime.GeoChipRuntime` in front of
KServe's predictor.

KServe starts a transformer container with ``--model_name NAME --predictor_host HOST[:PORT]
--http_port PORT`` appended to its command; this entry point
(``python -m geomlops.serving.kserve_transformer``) writes MLServer's settings from them and from the
``GEOMLOPS_TRANSFORMER_*`` variables of the InferenceService (lineage, classes, the MLM input and
output), then replaces itself with ``mlserver start``. A posted GeoTIFF chip is checked and
prepared as the MLM input says, sent to the predictor (the model's image running
:mod:`geomlops.serving.predictor_server`) over the V2 protocol, its answer read as the MLM output
says and answered as GeoJSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from geomlops.errors import ConfigurationError

#: transformer arguments read from ``GEOMLOPS_TRANSFORMER_<NAME>``
PARAMETERS = (
    "model_name",
    "model_version",
    "run_id",
    "tasks",
    "post_processing_function",
    "classes",
    "options",
)
RUNTIME = "geomlops.serving.runtime.GeoChipRuntime"


def transformer_settings(
    argv: Sequence[str], environ: Mapping[str, str], folder: Path, max_bytes: int
) -> list[str]:
    """Write MLServer's settings for KServe's arguments and the transformer's variables.

    Args:
        argv: the container's arguments (unknown ones are ignored, as KServe may add more).
        environ: the environment, holding ``GEOMLOPS_TRANSFORMER_*``.
        folder: where to write ``settings.json`` and ``<model>/model-settings.json``.
        max_bytes: the largest chip accepted.

    Returns:
        The ``mlserver start`` command.

    Raises:
        ConfigurationError: a required argument or variable is missing or malformed (named).
    """
    parser = argparse.ArgumentParser(prog="geomlops.serving.kserve_transformer", add_help=False)
    parser.add_argument("--model_name", required=True)
    parser.add_argument("--predictor_host", required=True)
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--grpc_port", type=int, default=8081)
    parser.add_argument("--host", default="0.0.0.0")
    try:
        args, _ = parser.parse_known_args(list(argv))
    except SystemExit as err:
        raise ConfigurationError(
            f"transformer arguments {' '.join(argv)!r}: expected --model_name and --predictor_host"
        ) from err
    raw_input = environ.get("GEOMLOPS_TRANSFORMER_INPUT", "")
    try:
        model_input: Any = json.loads(raw_input)
    except ValueError as err:
        raise ConfigurationError(f"GEOMLOPS_TRANSFORMER_INPUT: not JSON ({err})") from err
    if not isinstance(model_input, dict) or not model_input:
        raise ConfigurationError("GEOMLOPS_TRANSFORMER_INPUT: expected the MLM input as a JSON object")
    raw_output = environ.get("GEOMLOPS_TRANSFORMER_OUTPUT", "")
    try:
        model_output: Any = json.loads(raw_output) if raw_output.strip() else {}
    except ValueError as err:
        raise ConfigurationError(f"GEOMLOPS_TRANSFORMER_OUTPUT: not JSON ({err})") from err
    if not isinstance(model_output, dict):
        raise ConfigurationError("GEOMLOPS_TRANSFORMER_OUTPUT: expected the MLM output as a JSON object")
    host = args.predictor_host if "://" in args.predictor_host else f"http://{args.predictor_host}"
    name = args.model_name
    (folder / name).mkdir(parents=True, exist_ok=True)
    server = {
        "host": args.host,
        "http_port": args.http_port,
        "grpc_port": args.grpc_port,
        "metrics_endpoint": None,
        "parallel_workers": 0,
        "load_models_at_startup": True,
    }
    model_settings = {
        "name": name,
        "implementation": RUNTIME,
        "parameters": {
            "version": environ.get("GEOMLOPS_TRANSFORMER_MODEL_VERSION", ""),
            "extra": {
                "predictor_url": f"{host.rstrip('/')}/v2/models/{name}/infer",
                "input": model_input,
                "output": model_output,
                "transformer": {p: environ.get(f"GEOMLOPS_TRANSFORMER_{p.upper()}", "") for p in PARAMETERS},
                "max_bytes": max_bytes,
            },
        },
    }
    (folder / "settings.json").write_text(json.dumps(server, indent=1))
    (folder / name / "model-settings.json").write_text(json.dumps(model_settings, indent=1))
    beside = Path(sys.executable).parent / "mlserver"
    mlserver = str(beside) if beside.is_file() else shutil.which("mlserver")
    if mlserver is None:
        raise ConfigurationError("mlserver is not installed in the transformer's environment")
    return [mlserver, "start", str(folder)]


def main(argv: Sequence[str] | None = None) -> None:
    """Prepare MLServer's settings and replace this process with it."""
    from geomlops.settings import get_settings

    folder = Path(tempfile.mkdtemp(prefix="geomlops-transformer-"))
    command = transformer_settings(
        sys.argv[1:] if argv is None else argv, os.environ, folder, get_settings().serving_max_image_bytes
    )
    os.execv(command[0], command)


if __name__ == "__main__":  # pragma: no cover
    main()
