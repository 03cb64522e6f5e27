"""Offline validation of STAC items against the schemas they declare.

Core STAC schemas come from pystac's bundled copies; extension schemas from a folder of
schemas stored by URL (``<schema_dir>/<host>/<path>``, set by ``GEOMLOPS_SCHEMA_DIR``). No
network is ever used. A schema that cannot be found is reported as unavailable: the result is
then "incomplete", never "valid".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError
from pydantic import BaseModel
from pystac.validation.local_validator import get_local_schema_cache
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource

from geomlops.schemas import json_path, schema_path

_CORE_ITEM = "https://schemas.stacspec.org/v{version}/item-spec/json-schema/item.json"


class Issue(BaseModel):
    """One fault found in a document."""

    schema_uri: str
    path: str
    message: str


class ValidationResult(BaseModel):
    """What validating one document found."""

    status: Literal["valid", "invalid", "incomplete"]
    issues: list[Issue] = []
    unavailable: list[str] = []
    checked: list[str] = []

    def summary(self) -> str:
        """One line per fault or missing schema, for people."""
        lines = [f"{i.path}: {i.message} ({i.schema_uri})" for i in self.issues]
        lines += [f"schema not available offline: {uri}" for uri in self.unavailable]
        return "\n".join(lines) or "valid"


def _retriever(schema_dir: Path | None) -> Any:
    core = get_local_schema_cache()

    def retrieve(uri: str) -> Resource[Any]:
        uri = uri.rstrip("#")
        if uri in core:
            return Resource.from_contents(core[uri])
        if schema_dir is not None:
            path = schema_path(schema_dir, uri)
            if path.is_file():
                return Resource.from_contents(json.loads(path.read_text()))
        raise NoSuchResource(ref=uri)  # type: ignore[call-arg]

    return retrieve


def _deepest(error: ValidationError) -> ValidationError:
    # anyOf/oneOf failures hide the useful message in their context
    best = error
    for sub in error.context or []:
        candidate = _deepest(sub)
        if len(candidate.absolute_path) > len(best.absolute_path):
            best = candidate
    return best


def validate_stac(document: Mapping[str, Any], schema_dir: Path | None = None) -> ValidationResult:
    """Validate a STAC item against the core item schema and every declared extension.

    Args:
        document: the item as a JSON-like mapping.
        schema_dir: folder of extension schemas stored by URL; None means core only.

    Returns:
        The result: ``valid``, ``invalid`` (with each fault's JSON path) or ``incomplete``
        (a declared schema is not available offline; nothing is assumed about it).
    """
    registry: Registry[Any] = Registry(retrieve=_retriever(schema_dir))  # type: ignore[call-arg]
    core = _CORE_ITEM.format(version=document.get("stac_version", "1.1.0"))
    uris = [core] + [str(u) for u in document.get("stac_extensions", []) or []]
    result = ValidationResult(status="valid")
    for uri in uris:
        try:
            schema = registry.get_or_retrieve(uri).value.contents
        except Exception:  # noqa: BLE001 - any failure to load means "not available"
            result.unavailable.append(uri)
            continue
        validator = Draft7Validator(schema, registry=registry)
        try:
            errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
        except Exception as err:  # noqa: BLE001 - an unresolvable $ref inside the schema
            result.unavailable.append(f"{uri} (needs {getattr(err, 'ref', err)})")
            continue
        result.checked.append(uri)
        for error in errors:
            deep = _deepest(error)
            result.issues.append(
                Issue(schema_uri=uri, path=json_path(deep.absolute_path), message=deep.message)
            )
    if result.issues:
        result.status = "invalid"
    elif result.unavailable:
        result.status = "incomplete"
    return result
