"""``/api/v1/models``: search the catalogue's models; one model in full with its versions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from catalog_sync.api import parse_bbox
from geomlops.gateway.auth import Permission, Principal
from geomlops.gateway.context import Gateway, gateway, require
from geomlops.gateway.schemas import ModelDetail, ModelSummary

router = APIRouter(prefix="/api/v1/models", tags=["models"])
Parts = Annotated[Gateway, Depends(gateway)]
Reader = Annotated[Principal, require(Permission.READ)]
ModelId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


def _summary(item: dict[str, Any], registry: dict[str, Any]) -> dict[str, Any]:
    props = item.get("properties") or {}
    return {
        "id": item["id"],
        "title": str(props.get("title") or props.get("mlm:name") or ""),
        "description": str(props.get("description") or ""),
        "tasks": [str(t) for t in props.get("mlm:tasks") or []],
        "framework": str(props.get("mlm:framework") or ""),
        "bbox": item.get("bbox"),
        "versions": sorted(registry["versions"], key=int),
        "aliases": registry["aliases"],
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
    return [ModelSummary(**_summary(i, parts.catalogue.registry(str(i["id"])))) for i in items]


@router.get("/{model_id}", summary="One model in full")
def get_model(model_id: ModelId, parts: Parts, caller: Reader) -> ModelDetail:
    """The base item, and per version its catalogue item, MLflow run, metrics, aliases and lineage."""
    item = parts.catalogue.base_item(model_id)
    registry = parts.catalogue.registry(model_id)
    items = {str(i["id"]): i for i in parts.catalogue.version_items(model_id)}
    details = []
    for version in sorted(registry["versions"], key=int):
        record = dict(registry["versions"][version])
        tags = record.pop("tags")
        record["lineage"] = {k: v for k, v in tags.items() if k.startswith(("geomlops.", "dataset", "git"))}
        record["item"] = items.get(f"{model_id}-v{version}")
        details.append(record)
    return ModelDetail(**_summary(item, registry), item=item, version_details=details)
