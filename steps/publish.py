"""Publish a model version's STAC item, linked to its run, data and code."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from catalog_sync import CatalogStore, open_store
from catalog_sync.collections import MODELS, VERSIONS, version_item_id
from catalog_sync.mlm import VERSION_SCHEMA
from catalog_sync.mlm_assets import resolve_links, version_assets
from geomlops.errors import InvalidModelItemError, ItemNotFoundError, RegistryError
from steps.dataset import DatasetRef

#: version tag holding the exact dataset (DatasetRef JSON) a version was trained on
DATASET_TAG = "geomlops.dataset"
#: version tag holding the decision (JSON) that made a version production: who, when, why
DECISION_TAG = "geomlops.promotion"
#: version tag holding the rollback (JSON) that took a version out of production
ROLLED_BACK_TAG = "geomlops.rolled_back"
#: version tag holding the last refusal (JSON) to promote a version
REFUSED_TAG = "geomlops.promotion.refused"


def _json_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    """Metrics as JSON holds them: an undefined metric (NaN, e.g. precision of a model that
    never predicts the class) becomes ``null``; bare ``NaN`` is not JSON and never equals itself."""
    return {k: (float(v) if math.isfinite(v) else None) for k, v in sorted(metrics.items())}


def build_version_item(
    base_item: dict[str, Any],
    base_href: str,
    *,
    version: str,
    run: dict[str, Any],
    dataset: DatasetRef,
    model_uri: str,
    artifact_uri: str,
) -> dict[str, Any]:
    """Derive a version item from the model's base item (pure: no IO).

    Args:
        base_item: the model's base MLM item.
        base_href: where the base item lives (target of the ``derived_from`` link).
        version: registered model version.
        run: ``{"run_id", "experiment_id", "tags", "metrics", "params", "end_time"}``.
        dataset: the exact dataset version used.
        model_uri: ``models:/NAME/VERSION``.
        artifact_uri: where the model's files are (``file://`` or ``s3://``).
    """
    item = copy.deepcopy(base_item)
    model_id = base_item["id"]
    item["id"] = version_item_id(model_id, version)
    extensions = list(item.get("stac_extensions", []))
    if VERSION_SCHEMA not in extensions:
        extensions.append(VERSION_SCHEMA)
    item["stac_extensions"] = extensions
    props = item["properties"]
    finished = datetime.fromtimestamp(run["end_time"] / 1000, tz=UTC) if run.get("end_time") else None
    stamp = (finished or datetime.now(tz=UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    props.update(
        {
            "datetime": stamp,
            "created": stamp,
            "updated": stamp,
            "version": version,
            "title": f"{props.get('title') or model_id} v{version}",
            "mlm:hyperparameters": {**props.get("mlm:hyperparameters", {}), **run["params"]},
            "mlflow:run_id": run["run_id"],
            "mlflow:experiment_id": run["experiment_id"],
            "mlflow:model_uri": model_uri,
            "mlflow:model_version": version,
            "geomlops:base_model": model_id,
            "geomlops:dataset": {
                "repo": dataset.repo,
                "path": dataset.path,
                "rev": dataset.rev,
                "commit": dataset.commit,
                "md5": dataset.md5,
                "url": dataset.url,
            },
            "geomlops:code": {
                "git_commit": run["tags"].get("mlflow.source.git.commit")
                or run["tags"].get("geomlops.code.git_commit"),
                "sha256": run["tags"].get("geomlops.code.sha256"),
            },
            "geomlops:metrics": _json_metrics(run["metrics"]),
        }
    )
    # every model asset is kept (ONNX, TorchScript, checkpoints ...); the pyfunc one is the trained model
    item["assets"] = version_assets(
        item.get("assets") or {},
        base_href,
        model_href=artifact_uri,
        title=f"MLflow model, version {version}",
        item_bands=props.get("bands"),
    )
    kept = [link for link in item.get("links", []) if link.get("rel") not in {"self", "derived_from"}]
    derived = {
        "rel": "derived_from",
        "href": base_href,
        "type": "application/geo+json",
        "title": "base model",
    }
    item["links"] = [*resolve_links(kept, base_href), derived]
    return item


def expected_version_item(
    store: CatalogStore, model_id: str, version: str, dataset: DatasetRef | None = None
) -> dict[str, Any]:
    """The STAC item a registered version should have, built from MLflow and the base item.

    The dataset comes from the version's ``geomlops.dataset`` tag unless given. Aliases and tags
    of the version are part of the item, so moving an alias changes what is expected.

    Raises:
        ItemNotFoundError: the base model is not in the catalogue.
        RegistryError: the version has no dataset record and none was given.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    base = store.get_item(MODELS, model_id)
    client = MlflowClient()
    mv = client.get_model_version(model_id, version)
    try:  # published already: what it was trained with stays, whatever was registered since
        published: dict[str, Any] | None = store.get_item(VERSIONS, version_item_id(model_id, version))
    except ItemNotFoundError:
        published = None
    tags = dict(mv.tags or {})
    if dataset is None:
        if DATASET_TAG not in tags:
            raise RegistryError(f"version {version} of '{model_id}' has no '{DATASET_TAG}' tag")
        dataset = DatasetRef.model_validate_json(tags[DATASET_TAG])
    run = client.get_run(str(mv.run_id))
    item = build_version_item(
        base,
        store.item_href(MODELS, model_id),
        version=version,
        run={
            "run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id,
            "tags": dict(run.data.tags),
            "metrics": dict(run.data.metrics),
            "params": dict(run.data.params),
            "end_time": run.info.end_time,
        },
        dataset=dataset,
        model_uri=f"models:/{model_id}/{version}",
        artifact_uri=_artifact_uri(mv),
    )
    # an item of another run under this id (a registered model deleted and made again, its
    # numbers starting over) is not what this version was trained with
    if published is not None and (published.get("properties") or {}).get("mlflow:run_id") == mv.run_id:
        item = _as_trained(item, published)
    item["properties"]["mlflow:aliases"] = sorted(mv.aliases or [])
    item["properties"]["mlflow:version_tags"] = dict(sorted(tags.items()))
    # promotion decisions live in version tags (MLflow is the source of truth); the item shows them
    decisions = {
        DECISION_TAG: "geomlops:promotion",
        ROLLED_BACK_TAG: "geomlops:rolled_back",
        REFUSED_TAG: "geomlops:promotion_refused",
    }
    for tag, prop in decisions.items():
        if tag in tags:
            item["properties"][prop] = json.loads(tags[tag])
    if version.isdigit() and int(version) > 1:
        previous = str(int(version) - 1)
        try:
            client.get_model_version(model_id, previous)
        except MlflowException:
            return item
        item["links"].append(
            {
                "rel": "predecessor-version",
                "href": store.item_href(VERSIONS, version_item_id(model_id, previous)),
                "type": "application/geo+json",
            }
        )
    return item


def _as_trained(item: dict[str, Any], published: Mapping[str, Any]) -> dict[str, Any]:
    """``item`` (built from the base item as it is now) with what the ``published`` item of the
    same version and run says it was trained with: its MLM fields and bands, the extensions
    describing them, and its assets (the package's code, images, README, the model's bands);
    the MLflow model's place is the registry's. A package registered again later changes the
    base item for later versions, not this one's item."""
    trained = ("bands", "eo:bands", "raster:bands")
    props = {k: v for k, v in item["properties"].items() if not (k.startswith("mlm:") or k in trained)}
    kept = published.get("properties") or {}
    props.update({k: copy.deepcopy(v) for k, v in kept.items() if k.startswith("mlm:") or k in trained})
    assets = {k: copy.deepcopy(dict(v)) for k, v in (published.get("assets") or {}).items()}
    assets["model"] = {**assets.get("model", {}), "href": item["assets"]["model"]["href"]}
    extensions = list(published.get("stac_extensions") or item.get("stac_extensions") or [])
    return {**item, "stac_extensions": extensions, "properties": props, "assets": assets}


def publish_version_item(
    model_id: str,
    version: str,
    run_id: str,
    dataset: DatasetRef,
    *,
    catalog: str,
    schema_dir: Path | None = None,
) -> str:
    """Write (or rewrite, idempotently) the STAC item of a registered model version.

    The item is checked before it is written (core and extension schemas offline, geometry,
    dates). An item the catalogue would refuse is never written, and a version that has no item
    yet is deleted from the registry, as the training workflow's exit handler would: no model
    version is left without its item.

    Args:
        model_id: the registered model (the base item's id).
        version: the version to publish.
        run_id: the run the version must come from.
        dataset: the dataset version it was trained on.
        catalog: the catalogue's root href.
        schema_dir: extension schemas stored by URL; default ``GEOMLOPS_SCHEMA_DIR``.

    Returns:
        The item's href.

    Raises:
        ModelNotFoundError: the base model is not in the catalogue.
        RegistryError: ``version`` was not registered from ``run_id``.
        InvalidModelItemError: the version item is invalid (each fault's JSON path named).
    """
    from mlflow import MlflowClient

    from catalog_sync._item_checks import item_problems
    from geomlops.settings import get_settings
    from steps.model_spec import fetch_model_spec

    fetch_model_spec(model_id, catalog)  # the base item must exist and be a valid MLM item
    client = MlflowClient()
    mv = client.get_model_version(model_id, version)
    if mv.run_id != run_id:
        raise RegistryError(f"version {version} of '{model_id}' comes from run {mv.run_id}, not {run_id}")
    store = open_store(catalog)
    item = expected_version_item(store, model_id, version, dataset)
    problems = item_problems(item, schema_dir if schema_dir is not None else get_settings().schema_dir)
    if problems:
        if not _published(store, model_id, version):
            client.delete_model_version(model_id, version)
            left = f"version {version} was deleted from the registry"
        else:
            left = f"the published item of version {version} is left as it was"
        raise InvalidModelItemError(
            f"item '{item['id']}' of model '{model_id}' version {version} is invalid and was not "
            f"written; {left}:\n" + "\n".join(f"  {p}" for p in problems)
        )
    return store.put_item(VERSIONS, item)


def _published(store: CatalogStore, model_id: str, version: str) -> bool:
    try:
        store.get_item(VERSIONS, version_item_id(model_id, version))
    except ItemNotFoundError:
        return False
    return True


def _artifact_uri(mv: Any) -> str:
    from mlflow import MlflowClient

    source = str(mv.source)
    if source.startswith("models:/"):
        # MLflow 3 logged models: resolve to the storage location
        location = getattr(mv, "storage_location", None)
        if location:
            return str(location)
        model = MlflowClient().get_logged_model(source.removeprefix("models:/"))
        return str(model.artifact_location)
    return source


def retract_unpublished_versions(model_id: str, workflow_uid: str, *, catalog: str) -> list[str]:
    """Delete the versions a failed workflow run registered without publishing their item.

    Returns:
        The versions deleted (none when every version has its STAC item).
    """
    from steps.registry import delete_unpublished_versions

    store = open_store(catalog)

    def published(version: str) -> bool:
        return _published(store, model_id, version)

    return delete_unpublished_versions(model_id, workflow_uid, published)
