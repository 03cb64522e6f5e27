"""What a catalogue checks before it writes an item: schemas (offline), id, datetime, geometry.

Every check is offline and pure, so a batch can be checked completely before anything of it
is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import shapely
from shapely.errors import GEOSException
from shapely.geometry import shape

from catalog_sync.validation import validate_stac
from geomlops.errors import InvalidItemError


def item_problems(item: Mapping[str, Any], schema_dir: Path | None) -> list[str]:
    """Why a catalogue refuses ``item``, one ``JSON path: message`` line each; empty if none.

    The item is checked against the core STAC schema and every extension schema it declares
    that is available offline: a schema that is not available is no reason to refuse (the
    result is "incomplete"), a fault against one that is, is. Its geometry must also be valid
    (OGC simple features: no self-intersecting rings), since spatial search depends on it.

    Args:
        item: the STAC item.
        schema_dir: folder of extension schemas stored by URL (``GEOMLOPS_SCHEMA_DIR``).
    """
    problems: list[str] = []
    item_id = item.get("id")
    if not isinstance(item_id, str) or not item_id or "/" in item_id:
        problems.append(f"$.id: expected a non-empty string without '/', got {item_id!r}")
    result = validate_stac(item, schema_dir)
    problems += [f"{issue.path}: {issue.message} ({issue.schema_uri})" for issue in result.issues]
    if not any(issue.path.startswith("$.geometry") for issue in result.issues):
        problems += _geometry_problems(item.get("geometry"))
    properties = item.get("properties")
    if isinstance(properties, Mapping):
        problems += _datetime_problems(properties)
    return list(dict.fromkeys(problems))


def _datetime_problems(properties: Mapping[str, Any]) -> list[str]:
    # the schemas do not check formats; PostgreSQL would refuse the whole batch later
    problems = []
    for key in ("datetime", "start_datetime", "end_datetime"):
        value = properties.get(key)
        if value is None:
            continue
        try:
            datetime.fromisoformat(str(value))
        except ValueError:
            problems.append(f"$.properties.{key}: {value!r} is not an RFC 3339 date-time")
    if properties.get("datetime") is None and (
        properties.get("start_datetime") is None or properties.get("end_datetime") is None
    ):
        problems.append("$.properties.datetime: null needs both start_datetime and end_datetime")
    return problems


def _geometry_problems(geometry: Any) -> list[str]:
    if geometry is None:
        return ["$.geometry: a geometry is required (the catalogue indexes every item in space)"]
    try:
        geom = shape(geometry)
    except (GEOSException, ValueError, TypeError, KeyError, AttributeError, IndexError) as err:
        return [f"$.geometry: not a GeoJSON geometry ({err})"]
    if geom.is_empty:
        return ["$.geometry: the geometry is empty"]
    if not geom.is_valid:
        return [f"$.geometry: invalid geometry: {shapely.is_valid_reason(geom)}"]
    return []


def check_batch(items: Sequence[Mapping[str, Any]], schema_dir: Path | None, *, where: str) -> None:
    """Check every item of a batch; refuse the whole batch if one item is refused.

    Args:
        items: the batch.
        schema_dir: folder of extension schemas stored by URL.
        where: the collection and store, for the message.

    Raises:
        InvalidItemError: naming each refused item (its id, or its position) and every JSON
            path at fault.
    """
    refused: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            refused.append(f"  item #{index}: expected a JSON object, got {type(item).__name__}")
            continue
        problems = item_problems(item, schema_dir)
        if problems:
            name = item.get("id")
            label = f"'{name}'" if isinstance(name, str) and name else f"#{index}"
            refused.append(f"  item {label}:\n" + "\n".join(f"    {p}" for p in problems))
    if refused:
        raise InvalidItemError(
            f"refused {len(refused)} of {len(items)} items for {where}; nothing was written:\n"
            + "\n".join(refused)
        )
