"""Put a model package's base item into the catalogue."""

from __future__ import annotations

from pathlib import Path

from catalog_sync import open_store
from catalog_sync.collections import MODELS
from catalog_sync.mlm import parse_model_item
from catalog_sync.mlm_assets import absolute_href, resolve_links
from catalog_sync.validation import ValidationResult
from steps.package import find_item_file, read_package_item


def publish_base_item(
    package: str | Path, catalog: str, schema_dir: Path | None = None
) -> tuple[str, ValidationResult]:
    """Validate the package's MLM item and write it to the ``models`` collection.

    Relative asset and link hrefs (the package's code, its MLproject) are made absolute so the
    item still points at the package once it sits in the catalogue.

    Returns:
        The item's href and the schema validation result (``incomplete`` when a schema is not
        available offline; an invalid item is never written).

    Raises:
        InvalidPackageError: the item file is missing or not JSON.
        InvalidModelItemError: the item fails MLM validation (each fault's JSON path named).
    """
    root = Path(package).resolve()
    item, result = read_package_item(root, schema_dir)
    item_file = str(find_item_file(root))
    parse_model_item(item, href=item_file)
    for asset in item.get("assets", {}).values():
        if isinstance(asset.get("href"), str):
            asset["href"] = absolute_href(asset["href"], item_file)
    item["links"] = resolve_links(item.get("links", []), item_file)
    return open_store(catalog).put_item(MODELS, item), result
