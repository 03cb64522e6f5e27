"""``geomlops dev``: start, inspect and stop the local service stack (the services profile)."""

from __future__ import annotations

import sys

import click

from geomlops.cli._tools import fail_cleanly
from geomlops.devstack import stack
from geomlops.errors import GeomlopsError
from geomlops.settings import get_settings

_MARK = {"started": ("✓", "green"), "running": ("✓", "green"), "stopped": ("○", "yellow")}


def _say(text: str) -> None:
    click.echo(f"• {text}", err=True)


@click.group()
def dev() -> None:
    """Run the services profile on this machine: an S3 store, an MLflow server on PostgreSQL and
    a STAC API on PgSTAC.

    Services run in the background on 127.0.0.1, tracked by PID files in $GEOMLOPS_HOME/dev
    (logs there too). Use them in a shell with: eval "$(geomlops dev env)".
    """


@dev.command("up")
@click.argument("services", nargs=-1)
@click.option("--s3-port", type=int, help="Port of the S3 server [default: 9000; 0: any free port].")
@click.option("--mlflow-port", type=int, help="Port of the MLflow server [default: 5000; 0: any free port].")
@click.option(
    "--mlflow-db",
    envvar="GEOMLOPS_DEV_MLFLOW_DB",
    help="PostgreSQL URL of MLflow's database, created if absent "
    "[env GEOMLOPS_DEV_MLFLOW_DB; default: postgresql://postgres@127.0.0.1:5432/geomlops_mlflow].",
)
@click.option("--stac-port", type=int, help="Port of the STAC API [default: 8081; 0: any free port].")
@click.option(
    "--pgstac-db",
    envvar="GEOMLOPS_DEV_PGSTAC_DB",
    help="PostgreSQL URL of the PgSTAC catalogue, created and migrated if needed (PostGIS) "
    "[env GEOMLOPS_DEV_PGSTAC_DB; default: postgresql://postgres@127.0.0.1:5432/geomlops_pgstac].",
)
@click.option("--gateway-port", type=int, help="Port of the gateway [default: 8090; 0: any free port].")
@click.option(
    "--gateway-db",
    envvar="GEOMLOPS_DEV_GATEWAY_DB",
    help="PostgreSQL URL of the gateway's database (keys, audit), created if absent "
    "[env GEOMLOPS_DEV_GATEWAY_DB; default: postgresql://postgres@127.0.0.1:5432/geomlops_gateway].",
)
@fail_cleanly
def up_command(
    services: tuple[str, ...],
    s3_port: int | None,
    mlflow_port: int | None,
    mlflow_db: str | None,
    stac_port: int | None,
    pgstac_db: str | None,
    gateway_port: int | None,
    gateway_db: str | None,
) -> None:
    """Start the stack (or only SERVICES: s3, mlflow, stac, gateway) unless it runs already; print URLs and
    the env to export."""

    config = stack.configure(
        get_settings(),
        s3_port=s3_port,
        mlflow_port=mlflow_port,
        mlflow_db=mlflow_db,
        stac_port=stac_port,
        pgstac_db=pgstac_db,
        gateway_port=gateway_port,
        gateway_db=gateway_db,
    )
    config, states = stack.up(config, services, say=_say)
    for state in states:
        mark, colour = _MARK.get(state.state, ("✗", "red"))
        verb = "started" if state.state == "started" else "already running"
        note = f" — {state.note}" if state.note else ""
        click.secho(f"{mark} {state.name:8} {state.url}  ({verb}, pid {state.pid}){note}", fg=colour)
    click.echo('\nUse the stack from a shell (or: eval "$(geomlops dev env)"):')
    for line in stack.export_lines(stack.environment(config)):
        click.echo(line)


@dev.command("env")
@fail_cleanly
def env_command() -> None:
    """Print the export lines of the running stack (for eval)."""

    dev_dir = get_settings().home_dir / "dev"
    config = stack.load_config(dev_dir)
    if config is None:
        raise GeomlopsError(f"no dev stack in {dev_dir}: run `geomlops dev up` first")
    for line in stack.export_lines(stack.environment(config)):
        click.echo(line)
    stopped = [state.name for state in stack.status(dev_dir) if state.state == "stopped"]
    if stopped:
        # the lines still print (a stack started later reuses them), but say they point at nothing
        click.secho(
            f"! not running: {', '.join(stopped)}; start with `geomlops dev up`", fg="yellow", err=True
        )


@dev.command("status")
@fail_cleanly
def status_command() -> None:
    """Say whether each service runs and answers; exit status 1 unless all do."""

    states = stack.status(get_settings().home_dir / "dev")
    for state in states:
        mark, colour = _MARK.get(state.state, ("✗", "red"))
        pid = f"  pid {state.pid}" if state.pid else ""
        click.secho(f"{mark} {state.name:8} {state.state:14} {state.url}{pid}", fg=colour)
    if any(state.state != "running" for state in states):
        sys.exit(1)


@dev.command("down")
@click.argument("services", nargs=-1)
@fail_cleanly
def down_command(services: tuple[str, ...]) -> None:
    """Stop the stack's services (or only SERVICES); nothing the stack did not start is touched."""

    stopped = stack.down(get_settings().home_dir / "dev", services, say=_say)
    click.echo(f"stopped {', '.join(stopped)}" if stopped else "nothing to stop")
