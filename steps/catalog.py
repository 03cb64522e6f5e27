"""Put a model package's base item into the catalogue."""

from __future__ import annotations

import json
from pathlib import Path

from catalog_sync import open_store
from catalog_sync.mlm import parse_model_item
from catalog_sync.validation import ValidationResult, validate_stac
from geomlops.errors import InvalidModelItemError, InvalidPackageError
from steps.model_spec import MODELS


def publish_base_item(
    package: str | Path, catalog: str, schema_dir: Path | None = None
) -> tuple[str, ValidationResult]:
    """Validate ``package/stac-item.json`` and write it to the ``models`` collection.

    Relative asset hrefs (the package's code, its MLproject) are made absolute so the item
    still points at the package once it sits in the catalogue.

    Returns:
        The item's href and the schema validation result (``incomplete`` when a schema is not
        available offline; an invalid item is never written).

    Raises:
        InvalidPackageError: the item file is missing or not JSON.
        InvalidModelItemError: the item fails MLM validation (each fault's JSON path named).
    """
    root = Path(package).resolve()
    path = root / "stac-item.json"
    if not path.is_file():
        raise InvalidPackageError(f"{path}: file not found (a model package needs its MLM item)")
    try:
        item = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InvalidPackageError(f"{path}: not valid JSON ({err})") from err
    result = validate_stac(item, schema_dir)
    if result.status == "invalid":
        raise InvalidModelItemError(f"{path}:\n{result.summary()}")
    parse_model_item(item, href=str(path))
    for asset in item.get("assets", {}).values():
        href = asset.get("href", "")
        if href.startswith("./") or href in (".", "./"):
            asset["href"] = str((root / href).resolve())
    return open_store(catalog).put_item(MODELS, item), result
