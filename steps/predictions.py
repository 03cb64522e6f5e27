"""Turn a predicted class raster into features with their lineage, files, a picture and an item."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from catalog_sync import open_store
from steps.batch import BatchPlan
from steps.publish import VERSIONS, version_item_id

PREDICTIONS = "predictions"


class Lineage(BaseModel):
    """What every predicted feature is traced back to."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str
    model_version: str
    run_id: str


class PredictionOutputs(BaseModel):
    """Where the outputs of a batch prediction are."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    geoparquet: str
    geojson: str
    quicklook: str
    item: str
    features: int


def resolve_version(model: str, version: str) -> Lineage:
    """A version number or an alias (``production``) of a registered model, with its run."""
    from mlflow import MlflowClient

    client = MlflowClient()
    mv = (
        client.get_model_version(model, version)
        if version.isdigit()
        else client.get_model_version_by_alias(model, version)
    )
    return Lineage(model=model, model_version=str(mv.version), run_id=str(mv.run_id))


def vectorize_predictions(
    mask: Path, plan: BatchPlan, lineage: Lineage, *, scheduler: str = "threads"
) -> Any:
    """Vectorize the class raster (seam-free, block by block) and attach lineage to each feature."""
    import numpy as np

    from postprocessing.vectorize import vectorize_raster

    frame = vectorize_raster(mask, block_size=plan.block_size, scheduler=scheduler)
    frame = frame[frame["class"] != 0].reset_index(drop=True)  # background is not a feature
    points = frame.geometry.representative_point()
    inverse = ~_affine(plan)
    cols, rows = inverse @ (points.x.to_numpy(), points.y.to_numpy())
    size = plan.block_size
    frame["block_id"] = [
        f"r{int(r) // size}c{int(c) // size}" for c, r in zip(np.floor(cols), np.floor(rows), strict=True)
    ]
    frame["model"] = lineage.model
    frame["model_version"] = lineage.model_version
    frame["mlflow_run_id"] = lineage.run_id
    return frame


def _affine(plan: BatchPlan) -> Any:
    from affine import Affine

    return Affine(*plan.transform)


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_outputs(
    frame: Any, output: Path, plan: BatchPlan, lineage: Lineage, *, area: str, catalog: str
) -> PredictionOutputs:
    """GeoParquet (imagery CRS), GeoJSON (RFC 7946, WGS84), a quicklook PNG and the STAC item."""
    parquet, geojson, png = (
        output / "predictions.parquet",
        output / "predictions.geojson",
        output / "quicklook.png",
    )
    _atomic(parquet, lambda p: frame.to_parquet(p, index=False))
    wgs84 = frame.to_crs("EPSG:4326")
    _atomic(geojson, lambda p: p.write_text(wgs84.to_json(drop_id=True, to_wgs84=True)))
    _atomic(png, lambda p: _quicklook(plan, frame, p, lineage))
    store = open_store(catalog)
    item = _item(
        wgs84,
        plan,
        lineage,
        area=area,
        files={"geoparquet": parquet, "geojson": geojson, "quicklook": png},
        model_item=store.item_href(VERSIONS, version_item_id(lineage.model, lineage.model_version)),
    )
    href = store.put_item(PREDICTIONS, item)
    return PredictionOutputs(
        geoparquet=str(parquet), geojson=str(geojson), quicklook=str(png), item=href, features=len(frame)
    )


def _item(
    wgs84: Any, plan: BatchPlan, lineage: Lineage, *, area: str, files: dict[str, Path], model_item: str
) -> dict[str, Any]:
    import shapely
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape

    w, n = _affine(plan) @ (0, 0)
    e, s = _affine(plan) @ (plan.width, plan.height)
    footprint = shape(
        transform_geom(
            plan.crs, "EPSG:4326", mapping(shapely.box(min(w, e), min(s, n), max(w, e), max(s, n)))
        )
    )
    if plan.aoi:
        from steps.aoi import aoi_geometry

        footprint = footprint.intersection(aoi_geometry(plan.aoi))
    classes = {str(k): int(v) for k, v in sorted(wgs84["class"].value_counts().items())}
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [],
        "id": f"{lineage.model}-v{lineage.model_version}-{area}",
        "geometry": mapping(footprint),
        "bbox": list(footprint.bounds),
        "properties": {
            "datetime": _imagery_datetime(plan.imagery),
            "title": f"{lineage.model} v{lineage.model_version} predictions over {area}",
            "mlflow:run_id": lineage.run_id,
            "mlflow:model_version": lineage.model_version,
            "geomlops:base_model": lineage.model,
            "geomlops:features": len(wgs84),
            "geomlops:features_by_class": classes,
            "geomlops:imagery": plan.imagery,
        },
        "assets": {
            "geoparquet": {
                "href": str(files["geoparquet"]),
                "type": "application/vnd.apache.parquet",
                "roles": ["data"],
            },
            "geojson": {"href": str(files["geojson"]), "type": "application/geo+json", "roles": ["data"]},
            "quicklook": {"href": str(files["quicklook"]), "type": "image/png", "roles": ["overview"]},
        },
        "links": [
            {
                "rel": "derived_from",
                "href": model_item,
                "type": "application/geo+json",
                "title": "model version",
            }
        ],
    }


def _imagery_datetime(imagery: str) -> str:
    """The imagery's acquisition time if it says, else a fixed stamp (outputs stay byte-stable)."""
    import rasterio

    with rasterio.open(imagery) as src:
        stamp = str(src.tags().get("TIFFTAG_DATETIME") or src.tags().get("ACQUISITION_DATETIME") or "")
    if stamp and len(stamp) >= 19:
        return stamp[:10].replace(":", "-") + "T" + stamp[11:19] + "Z"
    return "1970-01-01T00:00:00Z"


def _quicklook(plan: BatchPlan, frame: Any, path: Path, lineage: Lineage) -> None:
    """Predicted polygons over the imagery: what a field analyst looks at first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import rasterio

    with rasterio.open(plan.imagery) as src:
        scale = max(1, max(src.width, src.height) // 1024)
        shape = (src.height // scale, src.width // scale)
        bands = [3, 2, 1] if src.count >= 4 else [1] * 3
        rgb = np.dstack([src.read(b, out_shape=shape).astype("float32") for b in bands])
    lo, hi = np.nanpercentile(rgb, [2, 98])
    rgb = np.clip((rgb - lo) / max(hi - lo, 1e-9), 0, 1)
    w, n = _affine(plan) @ (0, 0)
    e, s = _affine(plan) @ (plan.width, plan.height)
    fig, ax = plt.subplots(figsize=(8, 8 * plan.height / max(plan.width, 1)), dpi=100)
    ax.imshow(rgb, extent=(w, e, s, n))
    if len(frame):
        frame.boundary.plot(ax=ax, color="#ff3b30", linewidth=0.6)
    ax.set_title(
        f"{lineage.model} v{lineage.model_version}: {len(frame)} features (run {lineage.run_id[:8]})"
    )
    ax.set_axis_off()
    fig.savefig(path, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def read_plan(output: Path) -> BatchPlan:
    """The plan kept with the outputs."""
    return BatchPlan.model_validate(json.loads((output / "plan.json").read_text()))
