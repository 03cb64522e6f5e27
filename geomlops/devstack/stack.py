"""The local service stack behind ``geomlops dev``: the services profile on one machine.

- ``s3``: moto's S3 server (the MinIO stand-in: same API) holding the MLflow-artifacts and
  DVC-data buckets;
- ``mlflow``: ``mlflow server`` on PostgreSQL (its database created if absent), artifacts under
  ``s3://<artifacts bucket>`` read and written by the clients themselves (``--no-serve-artifacts``),
  so a model's URI is a real ``s3://`` URI;
- ``stac``: stac-fastapi-pgstac under uvicorn on a PgSTAC database on PostgreSQL (created if
  absent and migrated with ``pypgstac migrate``, which installs PostGIS into it);
- ``gateway``: the REST API (``geomlops gateway``) on its own PostgreSQL database (created if
  absent, migrated by alembic at start), searching the STAC API, tracking in MLflow.

Every service is a background process on 127.0.0.1, tracked by a PID file in
``$GEOMLOPS_HOME/dev/`` with its log beside it; ``stack.json`` there records the ports and
databases, so ``status`` and ``down`` act on exactly what ``up`` started. ``up`` is idempotent.

Adding a service: write a function ``DevConfig -> Service`` (``prepare`` readies its state,
``argv`` runs it on ``HOST``, ``exports`` names the variables a shell sets to use it; see
:func:`geomlops.devstack.services.stac_service`) and append it to :data:`EXTRA_SERVICES`, adding its
port to :class:`DevConfig`. Services start in list order and stop in reverse.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from geomlops.devstack import processes as procs
from geomlops.devstack.services import (
    HOST,
    DevConfig,
    Service,
    ensure_database,
    gateway_service,
    mlflow_service,
    s3_environment,
    s3_service,
    stac_service,
)
from geomlops.errors import DevStackError
from geomlops.ports import free_port
from geomlops.settings import Settings

__all__ = [
    "EXTRA_SERVICES",
    "HOST",
    "DevConfig",
    "Service",
    "ServiceStatus",
    "configure",
    "down",
    "ensure_database",
    "environment",
    "export_lines",
    "load_config",
    "s3_environment",
    "services",
    "status",
    "up",
]


def _no_say(_: str) -> None:
    return None


@dataclass(frozen=True)
class ServiceStatus:
    """What ``status`` (and ``up``) says about one service."""

    name: str
    url: str
    state: str  # "running", "started", "stopped" or "not answering"
    pid: int | None = None
    note: str = ""


#: builders of further services, started after the built-in ones
EXTRA_SERVICES: list[Callable[[DevConfig], Service]] = []


def services(config: DevConfig) -> list[Service]:
    """Every service of the stack, in start order."""
    built_in = [s3_service(config), mlflow_service(config), stac_service(config), gateway_service(config)]
    return [*built_in, *(build(config) for build in EXTRA_SERVICES)]


def environment(config: DevConfig) -> dict[str, str]:
    """Everything a shell needs to use the stack: the services profile's settings and S3 access."""
    env = {"GEOMLOPS_HOME": str(config.dev_dir.parent)}
    for service in services(config):
        env.update(service.exports)
    return env


def export_lines(env: Mapping[str, str]) -> list[str]:
    """``export NAME=VALUE`` lines, quoted for a POSIX shell."""
    return [f"export {name}={shlex.quote(value)}" for name, value in env.items()]


def _state_file(dev_dir: Path) -> Path:
    return dev_dir / "stack.json"


def load_config(dev_dir: Path) -> DevConfig | None:
    """The config ``up`` last started the stack with, if any."""
    try:
        return DevConfig.model_validate_json(_state_file(dev_dir).read_text())
    except (OSError, ValueError):
        return None


def configure(settings: Settings, **overrides: object) -> DevConfig:
    """The stack's config: what ``up`` recorded last (else the defaults), with the ``overrides``
    that are not None (``s3_port=0``...).

    Raises:
        DevStackError: an override is invalid, or differs from a stack that runs now.
    """
    recorded = load_config(settings.home_dir / "dev")
    base = recorded or DevConfig.from_settings(settings)
    given = {k: v for k, v in overrides.items() if v is not None}
    if recorded is not None and _running(recorded):  # "any free port": the one it runs on
        given = {k: v for k, v in given.items() if not (k.endswith("_port") and v == 0)}
    try:
        config = DevConfig.model_validate({**base.model_dump(), **given})
    except ValidationError as err:
        raise DevStackError(f"dev stack settings: {err}") from err
    _refuse_change_while_running(recorded, config)
    return config


def _running(config: DevConfig) -> bool:
    return any(procs.read_tracked(config.dev_dir, s.name) for s in services(config))


def _refuse_change_while_running(recorded: DevConfig | None, config: DevConfig) -> None:
    if recorded is None or not _running(recorded):
        return
    changed = {k for k, v in config.model_dump().items() if v != getattr(recorded, k)}
    changed = {k for k in changed if not (k.endswith("_port") and getattr(config, k) == 0)}
    if changed:
        raise DevStackError(
            f"the dev stack in {recorded.dev_dir} runs with other {', '.join(sorted(changed))}: "
            "stop it (`geomlops dev down`) to change them"
        )


def _select(config: DevConfig, names: Sequence[str]) -> list[Service]:
    every = services(config)
    unknown = sorted(set(names) - {s.name for s in every})
    if unknown:
        raise DevStackError(
            f"unknown service {', '.join(unknown)}: the stack has {', '.join(s.name for s in every)}"
        )
    return [s for s in every if not names or s.name in names]


def _with_ports(config: DevConfig) -> DevConfig:
    ports = {
        k: free_port(HOST)
        for k in ("s3_port", "mlflow_port", "stac_port", "gateway_port")
        if getattr(config, k) == 0
    }
    return config.model_copy(update=ports) if ports else config


def up(
    config: DevConfig, names: Sequence[str] = (), say: Callable[[str], None] = _no_say
) -> tuple[DevConfig, list[ServiceStatus]]:
    """Start the services (all, or ``names``) that are not running; wait until each answers.

    ``config`` comes from :func:`configure`; ports 0 become free ports, unless the stack
    already runs (it keeps the ports it has).

    Returns:
        The config in force (ports resolved) and what became of each service.

    Raises:
        DevStackError: a port is taken by another program, PostgreSQL cannot be reached, PgSTAC
            cannot be installed into its database, moto's server is not installed, or a service
            exits or does not answer in time (the end of its log is in the message). The
            services this call had already started are stopped again (the message names them);
            those that were running before are left running.
    """
    recorded = load_config(config.dev_dir)
    _refuse_change_while_running(recorded, config)
    if recorded is not None and _running(recorded):
        config = recorded
    else:
        config = _with_ports(config)
        config.dev_dir.mkdir(parents=True, exist_ok=True)
        _state_file(config.dev_dir).write_text(config.model_dump_json(indent=1))
    statuses: list[ServiceStatus] = []
    try:
        for service in _select(config, names):
            statuses.append(_start(config, service, say))
    except DevStackError as err:
        started = [s.name for s in statuses if s.state == "started"]
        if not started:
            raise
        stopped = down(config.dev_dir, started, say)
        raise DevStackError(f"{err}\nstopped what this start had started: {', '.join(stopped)}") from err
    return config, statuses


def _start(config: DevConfig, service: Service, say: Callable[[str], None]) -> ServiceStatus:
    tracked = procs.read_tracked(config.dev_dir, service.name)
    notes = []
    fresh = tracked is None
    if tracked is None:
        if procs.port_in_use(HOST, service.port):
            raise DevStackError(
                f"{service.name}: port {service.port} on {HOST} is taken by a program the dev stack "
                "did not start; stop it or choose another port"
            )
        notes.append(service.prepare())
        say(f"starting {service.name} on {service.url}")
        tracked = procs.spawn(config.dev_dir, service.name, service.argv, service.env)
    why = procs.wait_until(service.ready, tracked, config.start_timeout)
    if why:
        if fresh:
            procs.stop(config.dev_dir, tracked)
        log = procs.log_file(config.dev_dir, service.name)
        raise DevStackError(
            f"{service.name} {why} before answering on {service.url} (log {log}):\n"
            + procs.log_tail(config.dev_dir, service.name)
        )
    if fresh:
        notes.append(service.after_start())
    note = "; ".join(n for n in notes if n)
    return ServiceStatus(service.name, service.url, "started" if fresh else "running", tracked.pid, note)


def down(dev_dir: Path, names: Sequence[str] = (), say: Callable[[str], None] = _no_say) -> list[str]:
    """Stop the services (all, or ``names``) the stack started; others are never touched.

    The S3 store saves its objects first (see :mod:`geomlops.devstack.s3store`).

    Returns:
        The names of the services stopped.
    """
    config = load_config(dev_dir)
    if config is None:
        return []
    stopped = []
    for service in reversed(_select(config, names)):
        tracked = procs.read_tracked(dev_dir, service.name)
        if tracked is None:
            procs.pid_file(dev_dir, service.name).unlink(missing_ok=True)
            continue
        if service.ready():
            note = service.before_stop()
            if note:
                say(f"{service.name}: {note}")
        else:
            say(f"{service.name} does not answer: stopping it without saving its state")
        procs.stop(dev_dir, tracked)
        stopped.append(service.name)
    return stopped


def status(dev_dir: Path) -> list[ServiceStatus]:
    """Say, for each service, whether its process runs and answers."""
    config = load_config(dev_dir)
    if config is None:
        config = DevConfig(dev_dir=dev_dir)
    result = []
    for service in services(config):
        tracked = procs.read_tracked(dev_dir, service.name)
        if tracked is None:
            result.append(ServiceStatus(service.name, service.url, "stopped"))
        else:
            state = "running" if service.ready() else "not answering"
            result.append(ServiceStatus(service.name, service.url, state, tracked.pid))
    return result
