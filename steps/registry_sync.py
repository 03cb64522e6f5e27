"""Keep the catalogue in step with the MLflow Model Registry.

MLflow is the source of truth for versions, aliases and tags; the catalogue's
``model-versions`` items are derived from it. A sync creates the items that are missing,
rewrites those whose MLflow side changed (an alias moved), and reports what exists on one side
only. A second sync has nothing to do. The promotion workflow refreshes one model's items the
same way (:func:`refresh_version_items`), with the same comparison.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel

from catalog_sync import CatalogStore, open_store
from catalog_sync.collections import MODELS, VERSIONS, version_item_id
from geomlops.errors import ItemNotFoundError, RegistryError
from steps.publish import expected_version_item

_STORE_FIELDS = {"collection"}
_STORE_LINKS = {"root", "parent", "collection", "self"}


class SyncReport(BaseModel):
    """What a sync did and found."""

    created: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    only_in_mlflow: list[str] = []
    only_in_catalog: list[str] = []

    @property
    def nothing_to_do(self) -> bool:
        """True when the catalogue already matched MLflow."""
        return not (self.created or self.updated)

    def lines(self) -> list[str]:
        """A line per finding, for people."""
        out = [f"created   {i}" for i in self.created] + [f"updated   {i}" for i in self.updated]
        out += [f"only in MLflow (no base item in the catalogue): {i}" for i in self.only_in_mlflow]
        out += [f"only in the catalogue (no such MLflow version): {i}" for i in self.only_in_catalog]
        if self.nothing_to_do:
            out.append(f"nothing to do: {len(self.unchanged)} version item(s) match MLflow")
        return out


def same_item(current: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Whether two items say the same, leaving out what the store adds (its own links and the
    collection field). Compared as JSON text: an undefined metric (NaN) equals itself there."""

    def comparable(item: dict[str, Any]) -> str:
        links = [link for link in item.get("links") or [] if link.get("rel") not in _STORE_LINKS]
        fields = {k: v for k, v in item.items() if k not in _STORE_FIELDS}
        return json.dumps({**fields, "links": links}, sort_keys=True)

    return comparable(current) == comparable(expected)


def reconcile_version_item(
    store: CatalogStore, model: str, version: str, *, create: bool, dry_run: bool = False
) -> Literal["created", "updated", "unchanged", "absent"]:
    """Bring one version's item in line with MLflow.

    Args:
        store: the catalogue.
        model: registered model name (the base item's id).
        version: the MLflow version.
        create: write the item when the catalogue has none (else report it ``absent``).
        dry_run: report what would change without writing.

    Returns:
        What was (or would be) done.

    Raises:
        RegistryError: the version has no dataset record, so it cannot be described.
    """
    try:
        current: dict[str, Any] | None = store.get_item(VERSIONS, version_item_id(model, version))
    except ItemNotFoundError:
        current = None
    if current is None and not create:
        return "absent"
    expected = expected_version_item(store, model, version)
    if current is not None and same_item(current, expected):
        return "unchanged"
    if not dry_run:
        store.put_item(VERSIONS, expected)
    return "created" if current is None else "updated"


def sync_registry(store: CatalogStore, *, dry_run: bool = False) -> SyncReport:
    """Bring the catalogue's version items in line with the MLflow registry.

    Args:
        store: the catalogue.
        dry_run: report what would change without writing.

    Returns:
        What was created, updated, left alone, and what exists on one side only.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    report = SyncReport()
    base_ids = {item["id"] for item in store.list_items(MODELS)}
    expected_ids: set[str] = set()
    for model in client.search_registered_models():
        for mv in client.search_model_versions(f"name='{model.name}'"):
            item_id = version_item_id(model.name, str(mv.version))
            if model.name not in base_ids:
                report.only_in_mlflow.append(item_id)
                continue
            expected_ids.add(item_id)
            try:
                outcome = reconcile_version_item(
                    store, model.name, str(mv.version), create=True, dry_run=dry_run
                )
            except RegistryError:
                report.only_in_mlflow.append(f"{item_id} (no dataset record: cannot describe it)")
                continue
            if outcome != "absent":
                getattr(report, outcome).append(item_id)
    for item in store.list_items(VERSIONS):
        if item["id"] not in expected_ids:
            report.only_in_catalog.append(item["id"])
    for field in ("created", "updated", "unchanged", "only_in_mlflow", "only_in_catalog"):
        getattr(report, field).sort()
    return report


def refresh_version_items(model: str, catalog: str) -> list[str]:
    """Bring the existing items of ``model``'s versions in line with MLflow (aliases, decisions).

    Returns:
        The ids of the items rewritten (those whose MLflow side changed).
    """
    from mlflow import MlflowClient

    store = open_store(catalog)
    changed = []
    for mv in MlflowClient().search_model_versions(f"name='{model}'"):
        if reconcile_version_item(store, model, str(mv.version), create=False) == "updated":
            changed.append(version_item_id(model, str(mv.version)))
    return sorted(changed)
