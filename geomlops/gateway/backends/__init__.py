"""Run backends of the gateway, one interface (:class:`.base.RunBackend`), chosen by settings.

``GEOMLOPS_GATEWAY_BACKEND=local`` (default) runs pipelines with the local runner in detached
processes; ``argo`` submits them to Argo Server (``GEOMLOPS_ARGO_SERVER``...). Each backend
module exposes a class built from the core settings alone.
"""

from __future__ import annotations

import importlib

from geomlops.gateway.backends.base import RunBackend
from geomlops.gateway.settings import GatewaySettings
from geomlops.settings import Settings


def make_backend(settings: Settings, gateway: GatewaySettings) -> RunBackend:
    """Build the backend ``gateway.backend`` names.

    Args:
        settings: the core settings (work folder, Argo Server, MLflow...).
        gateway: the gateway's settings.
    """
    if gateway.backend == "argo":
        # by name: the Argo backend is written beside this one and may not be there yet
        module = importlib.import_module("geomlops.gateway.backends.argo")
        backend: RunBackend = module.ArgoBackend(settings)
        return backend
    from geomlops.gateway.backends.local import LocalBackend

    return LocalBackend(settings)
