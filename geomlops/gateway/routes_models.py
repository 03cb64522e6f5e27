"""``/api/v1/models``: search the catalogue's models; one model in full with its versions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from catalog_sync.api import parse_bbox
from catalog_sync.collections import COLLECTIONS, MODELS, VERSIONS, version_item_id
from catalog_sync.mlm import parse_model_item
from geomlops.errors import GeomlopsError, ParameterError, PromotionError
from geomlops.gateway.auth import Permission, Principal
from geomlops.gateway.context import Gateway, gateway, require
from geomlops.gateway.results import mlflow_run_url, stac_item_url
from geomlops.gateway.schemas import ModelDetail, ModelSummary, RollbackAnswer, RollbackRequest
from geomlops.settings import Settings, use_tracking

router = APIRouter(prefix="/api/v1/models", tags=["models"])
stac = APIRouter(prefix="/api/v1/stac", tags=["models"])
Parts = Annotated[Gateway, Depends(gateway)]
Reader = Annotated[Principal, require(Permission.READ)]
Admin = Annotated[Principal, require(Permission.ROLLBACK)]
ModelId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


def _classes(props: dict[str, Any]) -> list[dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for output in props.get("mlm:output") or []:
        for cls in output.get("classification:classes") or []:
            if isinstance(cls, dict) and "value" in cls:
                color = str(cls.get("color_hint") or "")
                found.setdefault(
                    int(cls["value"]),
                    {
                        "value": int(cls["value"]),
                        "name": str(cls.get("name") or cls["value"]),
                        "description": str(cls.get("description") or ""),
                        "color": f"#{color}" if color else None,
                    },
                )
    return [found[k] for k in sorted(found)]


def _bands(props: dict[str, Any]) -> list[dict[str, Any]]:
    described = {str(b.get("name")): b for b in props.get("bands") or [] if isinstance(b, dict)}
    names: list[str] = []
    for one in props.get("mlm:input") or []:
        names += [str(b.get("name") if isinstance(b, dict) else b) for b in one.get("bands") or []]
    return [
        {
            "name": name,
            "common_name": described.get(name, {}).get("eo:common_name"),
            "description": str(described.get(name, {}).get("description") or ""),
        }
        for name in names or list(described)
    ]


def _reads(item: dict[str, Any]) -> list[str]:
    """The imagery's bands the model's first input reads (derived bands give the bands they
    read); an item geomlops cannot read gives none (its runs are refused, naming the field)."""
    try:
        spec = parse_model_item(item)
    except GeomlopsError:
        return []
    return list(spec.inputs[0].source_bands) if spec.inputs else []


def _summary(item: dict[str, Any], registry: dict[str, Any], settings: Settings) -> dict[str, Any]:
    props = item.get("properties") or {}
    aliases = registry["aliases"]
    return {
        "id": item["id"],
        "title": str(props.get("title") or props.get("mlm:name") or ""),
        "description": str(props.get("description") or ""),
        "tasks": [str(t) for t in props.get("mlm:tasks") or []],
        "framework": str(props.get("mlm:framework") or ""),
        "bbox": item.get("bbox"),
        "versions": sorted(registry["versions"], key=int),
        "aliases": aliases,
        "production": aliases.get("production"),
        "previous": aliases.get("previous"),
        "classes": _classes(props),
        "bands": _bands(props),
        "reads": _reads(item),
        "geometry": item.get("geometry"),
        "item_url": stac_item_url(settings, MODELS, str(item["id"])),
    }


@router.get("", summary="Search models")
def search_models(
    parts: Parts,
    caller: Reader,
    task: Annotated[str | None, Query(max_length=100, description="An mlm:tasks value.")] = None,
    framework: Annotated[str | None, Query(max_length=100, description="mlm:framework, any case.")] = None,
    bbox: Annotated[str | None, Query(max_length=200, description="W,S,E,N in WGS 84.")] = None,
    q: Annotated[str | None, Query(max_length=500, description="Free text ('a OR b': any).")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ModelSummary]:
    """Models of the catalogue matching every filter, with their versions and aliases."""
    items = parts.catalogue.search(task=task, framework=framework, bbox=parse_bbox(bbox), text=q, limit=limit)
    return [
        ModelSummary(**_summary(i, parts.catalogue.registry(str(i["id"])), parts.settings)) for i in items
    ]


@router.get("/{model_id}", summary="One model in full")
def get_model(model_id: ModelId, parts: Parts, caller: Reader) -> ModelDetail:
    """The base item, and per version its catalogue item, MLflow run, metrics, aliases and lineage."""
    item = parts.catalogue.base_item(model_id)
    registry = parts.catalogue.registry(model_id)
    items = {str(i["id"]): i for i in parts.catalogue.version_items(model_id)}
    details = []
    tracking, ui = parts.settings.tracking_uri, parts.config.mlflow_ui_url
    for version in sorted(registry["versions"], key=int):
        record = dict(registry["versions"][version])
        tags = record.pop("tags")
        record["lineage"] = {k: v for k, v in tags.items() if k.startswith(("geomlops.", "dataset", "git"))}
        item_id = version_item_id(model_id, version)
        record["item"] = items.get(item_id)
        record["item_url"] = stac_item_url(parts.settings, VERSIONS, item_id) if item_id in items else None
        record["mlflow_run_url"] = mlflow_run_url(tracking, ui, str(record.get("run_id") or ""))
        details.append(record)
    return ModelDetail(**_summary(item, registry, parts.settings), item=item, version_details=details)


@stac.get("/collections/{collection}/items/{item_id}", summary="One item of the catalogue")
def stac_item(
    collection: Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[a-z][a-z-]*$")],
    item_id: ModelId,
    parts: Parts,
    caller: Reader,
) -> dict[str, Any]:
    """A STAC item of the catalogue (models, model-versions, predictions, datasets) as stored."""
    if collection not in COLLECTIONS:
        raise ParameterError(f"collection {collection!r}: expected one of {', '.join(sorted(COLLECTIONS))}")
    return parts.catalogue.store().get_item(collection, item_id)


@router.post("/{model_id}/rollback", summary="Put production back on the previous version")
def rollback(
    model_id: ModelId, body: RollbackRequest, request: Request, parts: Parts, caller: Admin
) -> RollbackAnswer:
    """Move the ``production`` alias back to the ``previous`` version, recorded like a promotion
    (the caller as approver, with the reason) in MLflow, the catalogue and the audit trail."""
    from steps.promotion import rollback as roll_back
    from steps.promotion import validate_approver

    parts.catalogue.base_item(model_id)
    try:
        who = validate_approver(caller.name)
    except PromotionError as err:
        raise ParameterError(f"approver (the caller's name): {err}") from err
    use_tracking(parts.settings)
    decision = roll_back(model_id, approver=who, reason=body.reason, catalog=parts.settings.catalog_href)
    request.state.audit_detail = f"rolled back {model_id}: {decision.summary}: {body.reason}"
    return RollbackAnswer(
        model=model_id,
        production=decision.version,
        demoted=decision.previous_version or "",
        approver=decision.approver,
        reason=decision.reason,
        summary=decision.summary,
    )
