"""A pod's sidecars and ``emptyDir`` volumes, as Argo runs them.

On Argo a template's ``sidecars`` are containers of the main container's pod: they start
with it, share its network (``localhost``) and the ``emptyDir`` volumes they mount, and are
killed once the main container has finished; the pod's phase is the main container's. Here a
pod's ``emptyDir`` volume is a folder of the attempt (``volumes/<name>``), each sidecar is a
process started before the main one (in its own sandbox, as a container has its own
filesystem, with the volumes it mounts bound at their mount paths), its output goes to
``logs/<node>.<sidecar>.log``, and it gets SIGTERM, then SIGKILL after a grace period, when
the main process ends. As on a pod, both share this machine's network: a sidecar listening on
``localhost`` is reached there; a fixed port would be shared by parallel pods here, so
templates let the sidecar pick a free port and tell the main container through a volume.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geomlops.errors import GeomlopsError

from .execute import ProcessRegistry, build_env, command_for, terminate_groups
from .sandbox import Sandbox

#: seconds a sidecar has to exit after SIGTERM before it is killed (Argo's default grace)
SIDECAR_GRACE = 10.0


def volume_folders(template: Mapping[str, Any], work_dir: Path) -> dict[str, Path]:
    """Create one folder per ``emptyDir`` volume of ``template``: name -> folder."""
    folders: dict[str, Path] = {}
    for volume in template.get("volumes") or []:
        folder = work_dir / "volumes" / str(volume["name"])
        folder.mkdir(parents=True, exist_ok=True)
        folders[str(volume["name"])] = folder
    return folders


def mounts_of(container: Mapping[str, Any], folders: Mapping[str, Path]) -> list[tuple[str, Path]]:
    """``(mountPath, folder)`` of each volume ``container`` mounts."""
    return [
        (str(mount["mountPath"]).rstrip("/") or "/", folders[str(mount["name"])])
        for mount in container.get("volumeMounts") or []
    ]


@dataclass
class Sidecar:
    """A started sidecar: its name, process and log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path


def start_sidecars(
    specs: Sequence[Mapping[str, Any]],
    *,
    work_dir: Path,
    log_prefix: Path,
    sandbox_for: Callable[[Path, Sequence[tuple[str, Path]]], Sandbox],
    folders: Mapping[str, Path],
    extra_env: Mapping[str, str],
    image_environment: Callable[[str, Mapping[str, str]], dict[str, str] | None] | None,
    registry: ProcessRegistry,
) -> list[Sidecar]:
    """Start each sidecar of ``specs`` (resolved container specs), in order.

    Raises:
        GeomlopsError: a sidecar's image has no stand-in here, or its program cannot start
            (the sidecars already started are stopped).
    """
    started: list[Sidecar] = []
    try:
        for spec in specs:
            name = str(spec["name"])
            sandbox = sandbox_for(work_dir / f"sidecar-{name}", mounts_of(spec, folders))
            sandbox.folder.mkdir(parents=True, exist_ok=True)
            env, _secrets = build_env(spec.get("env") or [], extra_env, sandbox)
            image = str(spec.get("image") or "")
            own = image_environment(image, env) if image_environment else None
            if own is None:
                raise GeomlopsError(
                    f"sidecar {name!r}: nothing on this machine stands in for image {image!r}"
                )
            argv = command_for({"container": spec}, sandbox.folder, swap_python=False)
            if not argv:
                raise GeomlopsError(f"sidecar {name!r}: no command")
            log = Path(f"{log_prefix}.{name}.log")
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as handle:
                try:
                    proc = subprocess.Popen(
                        sandbox.command(argv, str(spec.get("workingDir") or "")),
                        cwd=sandbox.folder,
                        env=own,
                        stdin=subprocess.DEVNULL,
                        stdout=handle,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                except OSError as err:
                    raise GeomlopsError(
                        f"sidecar {name!r}: cannot start {argv[0]!r}: {err.strerror or err}"
                    ) from err
            registry.add(proc)
            started.append(Sidecar(name, proc, log))
    except BaseException:
        stop_sidecars(started, registry)
        raise
    return started


def stop_sidecars(
    sidecars: Sequence[Sidecar], registry: ProcessRegistry, grace: float = SIDECAR_GRACE
) -> None:
    """SIGTERM every sidecar still running, then SIGKILL those alive after ``grace`` seconds."""
    terminate_groups([s.proc.pid for s in sidecars if s.proc.poll() is None], grace)
    for sidecar in sidecars:
        sidecar.proc.wait()
        registry.discard(sidecar.proc)
