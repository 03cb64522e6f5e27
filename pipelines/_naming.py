"""Names of rendered templates carry the package version, so a cluster can hold releases side by side."""

from __future__ import annotations

from geomlops import __version__


def template_name(pipeline: str) -> str:
    """``geomlops-<pipeline>-<version>``, a valid Kubernetes name (``0.1.0`` → ``0-1-0``)."""
    return f"geomlops-{pipeline}-{__version__.replace('.', '-').replace('+', '-')}"


#: the ServiceAccount every workflow runs as (created by `geomlops install`)
SERVICE_ACCOUNT = "geomlops-workflow"
