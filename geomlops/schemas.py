"""JSON schemas kept offline, stored by the URL they are published at, and JSON paths of faults.

A schema folder holds each schema at ``<folder>/<host>/<path>`` of its URL (the folder
``GEOMLOPS_SCHEMA_DIR`` names; the tests use the shared one beside the checkout), so validation
never needs the network. :func:`schema_path` serves the catalogue's item validation;
:func:`json_path` names a fault's place for it and for Argo lint.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def schema_path(schema_dir: Path, uri: str) -> Path:
    """The file that stores the schema published at ``uri`` in a by-URL schema folder."""
    parsed = urlparse(uri)
    return schema_dir / parsed.netloc / parsed.path.lstrip("/")


def json_path(parts: Iterable[Any]) -> str:
    """A JSONPath for a jsonschema error location: ``$.properties['mlm:input'][0]``."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).replace("_", "").isalnum():
            out += f".{part}"
        else:
            out += f"['{part}']"
    return out
