"""``geomlops serve``: the model in its own environment and its post-processing transformer on
MLServer, on this machine."""

from __future__ import annotations

import errno

import click

from geomlops.cli._tools import fail_cleanly
from geomlops.errors import ParameterError
from geomlops.ports import bind_error


def _refuse_taken(option: str, host: str, port: int | None) -> None:
    """Refuse a port nothing could listen on now, before the model is loaded (minutes).

    Raises:
        ParameterError: ``host:port`` is taken or cannot be bound here.
    """
    if port is None:
        return
    err = bind_error(host, port)
    if err is None:
        return
    why = (
        "in use: something else listens there; give a free one"
        if err.errno == errno.EADDRINUSE
        else (err.strerror or str(err))
    )
    raise ParameterError(f"{option} {port}: cannot listen on {host}:{port} ({why})")


@click.command("serve")
@click.argument("model", metavar="MODEL[@ALIAS|@VERSION]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="HTTP port.")
@click.option(
    "--grpc-port", type=click.IntRange(1, 65535), help="MLServer's gRPC port (default: a free one)."
)
@fail_cleanly
def serve_command(model: str, host: str, port: int, grpc_port: int | None) -> None:
    """Serve MODEL (alias 'production' unless @ALIAS or @VERSION is given) on MLServer.

    POST a georeferenced GeoTIFF chip to /v2/models/MODEL/infer as one BYTES input named 'chip'
    (base64); the answer's 'geojson' output is a FeatureCollection (WGS84) whose features carry
    the class, area in m² (area_method: geodesic or planar), model version and MLflow run id.
    The largest chip accepted is GEOMLOPS_SERVING_MAX_IMAGE_BYTES.

    The model predicts in its own environment (the one it was trained in), in a predictor
    process started first: a model that does not load there ends the command with status 2
    and the reason (a missing module's name, say). The transformer runs on MLServer in
    geomlops' serving environment, built on first use. Ctrl-C stops both. A port that
    cannot be listened on (one in use) is refused before anything loads.
    """
    from geomlops.serving.local import prepare_local_server, run_local_server

    if grpc_port == port:
        raise ParameterError(f"--grpc-port {grpc_port}: the same port as --port; give another")
    for option, number in (("--port", port), ("--grpc-port", grpc_port)):
        _refuse_taken(option, host, number)
    run_local_server(prepare_local_server(model, host=host, port=port, grpc_port=grpc_port))
