"""Keep the catalogue in step with the MLflow Model Registry.

MLflow is the source of truth for versions, aliases and tags; the catalogue's
``model-versions`` items are derived from it. A sync creates the items that are missing,
rewrites those whose MLflow side changed (an alias moved), and reports what exists on one side
only. A second sync has nothing to do.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from catalog_sync.store import CatalogStore
from geomlops.errors import ItemNotFoundError, RegistryError

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


def _comparable(item: dict[str, Any]) -> dict[str, Any]:
    """An item without what the store adds (its own links and collection field)."""
    links = [link for link in item.get("links") or [] if link.get("rel") not in _STORE_LINKS]
    return {**{k: v for k, v in item.items() if k not in _STORE_FIELDS}, "links": links}


def sync_registry(store: CatalogStore, *, dry_run: bool = False) -> SyncReport:
    """Bring the catalogue's version items in line with the MLflow registry.

    Args:
        store: the catalogue.
        dry_run: report what would change without writing.

    Returns:
        What was created, updated, left alone, and what exists on one side only.
    """
    from mlflow import MlflowClient

    from steps.model_spec import MODELS
    from steps.publish import VERSIONS, expected_version_item, version_item_id

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
                expected = expected_version_item(store, model.name, str(mv.version))
            except RegistryError:
                report.only_in_mlflow.append(f"{item_id} (no dataset record: cannot describe it)")
                continue
            try:
                current = store.get_item(VERSIONS, item_id)
            except ItemNotFoundError:
                report.created.append(item_id)
                if not dry_run:
                    store.put_item(VERSIONS, expected)
                continue
            if _comparable(current) == _comparable(expected):
                report.unchanged.append(item_id)
            else:
                report.updated.append(item_id)
                if not dry_run:
                    store.put_item(VERSIONS, expected)
    for item in store.list_items(VERSIONS):
        if item["id"] not in expected_ids:
            report.only_in_catalog.append(item["id"])
    for field in ("created", "updated", "unchanged", "only_in_mlflow", "only_in_catalog"):
        getattr(report, field).sort()
    return report
