"""Models as the gateway shows them: catalogue items joined with the MLflow registry.

The base items (collection ``models``) say what a model is (MLM: tasks, framework, inputs, bbox);
the version items and MLflow say which versions exist, their aliases (``production``,
``previous``), metrics and lineage. Search runs on the STAC API when one is configured (the
services profile, PgSTAC) and over the static catalogue's items otherwise, with the same filters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from catalog_sync import open_store
from catalog_sync.api import bbox_parts
from catalog_sync.collections import MODELS, VERSIONS
from catalog_sync.store import CatalogStore
from geomlops.errors import ItemNotFoundError, ModelNotFoundError, ParameterError
from geomlops.settings import Settings, use_tracking

_TEXT_FIELDS = ("title", "description", "keywords", "mlm:name")


def _intersects(item: dict[str, Any], box: Sequence[float]) -> bool:
    ibox = item.get("bbox")
    if not ibox or len(ibox) < 4:
        return False
    flat = (ibox[0], ibox[1], ibox[3], ibox[4]) if len(ibox) >= 6 else ibox[:4]
    return any(
        not (e < w2 or w > e2 or n < s2 or s > n2)
        for w, s, e, n in bbox_parts(flat)
        for w2, s2, e2, n2 in bbox_parts(box)
    )


def _matches_text(item: dict[str, Any], text: str) -> bool:
    props = item.get("properties") or {}
    haystack = " ".join(
        " ".join(map(str, v)) if isinstance(v, list) else str(v)
        for v in (props.get(f) for f in _TEXT_FIELDS)
        if v
    ).lower()
    # terms joined by OR: any of them; otherwise every term
    if " or " in text.lower():
        return any(term.strip().lower() in haystack for term in text.lower().split(" or ") if term.strip())
    return all(term in haystack for term in text.lower().split())


def _matches(
    item: dict[str, Any],
    task: str | None,
    framework: str | None,
    box: Sequence[float] | None,
    text: str | None,
) -> bool:
    props = item.get("properties") or {}
    if task and task not in (props.get("mlm:tasks") or []):
        return False
    if framework and str(props.get("mlm:framework", "")).lower() != framework.lower():
        return False
    if box is not None and not _intersects(item, box):
        return False
    return not (text and not _matches_text(item, text))


class Catalogue:
    """Reads models from the catalogue and the MLflow registry.

    Args:
        settings: the core settings (catalogue, STAC API, MLflow).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def store(self) -> CatalogStore:
        """The catalogue's store (static files, or PgSTAC in the services profile)."""
        return open_store(
            self.settings.catalog_href,
            schema_dir=self.settings.schema_dir,
            api_url=self.settings.stac_api_url,
        )

    def search(
        self,
        *,
        task: str | None = None,
        framework: str | None = None,
        bbox: Sequence[float] | None = None,
        text: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Base model items matching every filter given, at most ``limit``."""
        if self.settings.stac_api_url:
            from catalog_sync.api import mlm_filter, search

            return search(
                self.settings.stac_api_url,
                bbox=bbox,
                q=text,
                filter=mlm_filter(tasks=[task] if task else [], framework=framework),
                collections=[MODELS],
                max_items=limit,
            )
        items = self.store().list_items(MODELS)
        found = [i for i in items if _matches(i, task, framework, bbox, text)]
        return sorted(found, key=lambda i: str(i["id"]))[:limit]

    def base_item(self, model: str) -> dict[str, Any]:
        """The base item of ``model``.

        Raises:
            ModelNotFoundError: the catalogue has no such model.
        """
        try:
            return self.store().get_item(MODELS, model)
        except ItemNotFoundError as err:
            raise ModelNotFoundError(f"model {model!r}: not in the catalogue") from err

    def version_items(self, model: str) -> list[dict[str, Any]]:
        """The catalogue's items of every version of ``model``."""
        prefix = f"{model}-v"
        items = [i for i in self.store().list_items(VERSIONS) if str(i["id"]).startswith(prefix)]
        return [i for i in items if str(i["id"])[len(prefix) :].isdigit()]

    def registry(self, model: str) -> dict[str, Any]:
        """What MLflow says of ``model``: aliases, and each version's run, metrics and tags."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        use_tracking(self.settings)
        client = MlflowClient()
        try:
            registered = client.get_registered_model(model)
        except MlflowException:
            return {"aliases": {}, "versions": {}}
        aliases = {str(alias): str(version) for alias, version in (registered.aliases or {}).items()}
        versions: dict[str, Any] = {}
        for mv in client.search_model_versions(f"name='{model}'"):
            metrics: dict[str, float] = {}
            if mv.run_id:
                try:
                    metrics = dict(client.get_run(mv.run_id).data.metrics)
                except MlflowException:
                    metrics = {}
            versions[str(mv.version)] = {
                "version": str(mv.version),
                "run_id": mv.run_id,
                "created": mv.creation_timestamp,
                "aliases": sorted(a for a, v in aliases.items() if v == str(mv.version)),
                "metrics": {k: v for k, v in metrics.items() if v == v},  # NaN is not JSON
                "tags": dict(mv.tags or {}),
            }
        return {"aliases": aliases, "versions": versions}

    def resolve(self, model: str, version: str | None, alias: str | None, *, field: str = "version") -> str:
        """The version number a request names (a number, or an alias of ``model``).

        Raises:
            ParameterError: neither or both given, or no such version or alias (the field named).
        """
        if (version is None) == (alias is None):
            raise ParameterError("version, alias: give exactly one (a version number, or an alias)")
        known = self.registry(model)
        if alias is not None:
            if alias not in known["aliases"]:
                have = ", ".join(sorted(known["aliases"])) or "none"
                raise ParameterError(f"alias {alias!r}: model {model!r} has no such alias (aliases: {have})")
            return str(known["aliases"][alias])
        if version not in known["versions"]:
            have = ", ".join(sorted(known["versions"], key=int)) or "none"
            raise ParameterError(
                f"{field} {version!r}: model {model!r} has no such version (versions: {have})"
            )
        return str(version)
