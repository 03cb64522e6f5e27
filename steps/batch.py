"""Batch inference over an area: plan blocks, predict groups of them, assemble the mask.

Each block's prediction is written to its own GeoTIFF under ``<output>/blocks/`` through a
temporary file and a rename, so a block's file exists only once the block is finished: a run
that dies anywhere resumes without redoing a finished block.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from catalog_sync.mlm import ModelInput
from geomlops.errors import GeomlopsError, ImageryMismatchError, ParameterError
from geomlops.files import atomic_path
from steps.predict import NODATA_CLASS


class PlannedBlock(BaseModel):
    """One block to predict: its id and pixel window."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    col_off: int
    row_off: int
    width: int
    height: int


class BatchPlan(BaseModel):
    """The blocks of the imagery that meet the area of interest, in groups for fan-out."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    imagery: str
    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    block_size: int
    aoi: dict[str, Any] | None
    notes: tuple[str, ...] = ()
    groups: tuple[tuple[PlannedBlock, ...], ...]


def plan_batch(
    imagery: str,
    aoi: dict[str, Any] | None,
    *,
    block_size: int,
    group_size: int,
    model_input: ModelInput | None = None,
) -> BatchPlan:
    """Plan the blocks of ``imagery`` that meet ``aoi`` (GeoJSON, WGS84; None: everything).

    Args:
        imagery: the GeoTIFF to predict.
        aoi: area of interest as GeoJSON (WGS84), or None for the whole imagery.
        block_size: block side in pixels.
        group_size: blocks per prediction task.
        model_input: the model's MLM input; the imagery's bands and data type are checked.

    Raises:
        ImageryMismatchError: the imagery does not match the model's input.
        AoiError: the AOI is invalid or outside the imagery.
        ParameterError: the imagery cannot be read, or sizes are not positive.
    """
    import rasterio
    import shapely
    from shapely.geometry import shape

    from postprocessing.grid import plan_blocks
    from steps.aoi import grid_aoi
    from steps.predict import check_imagery

    if block_size <= 0 or group_size <= 0:
        raise ParameterError(f"block_size and group_size must be positive, got {block_size}, {group_size}")
    try:
        with rasterio.open(imagery) as src:
            if src.crs is None or src.transform.is_identity:
                missing = "a CRS" if src.crs is None else "a geotransform"
                raise ImageryMismatchError(
                    f"imagery {imagery}: {src.driver} file without {missing}; expected a georeferenced "
                    "raster (a GeoTIFF with its CRS and transform)"
                )
            crs, transform, height, width = src.crs.to_string(), src.transform, src.height, src.width
            if model_input is not None:
                check_imagery(src, model_input)
    except rasterio.errors.RasterioIOError as err:
        raise ParameterError(f"imagery {imagery}: cannot be read ({err})") from err
    notes: tuple[str, ...] = ()
    area = None
    if aoi is not None:
        gridded = grid_aoi(aoi, raster_crs=crs, raster_transform=transform, raster_shape=(height, width))
        notes, area = gridded.notes, shape(gridded.geometry)
    blocks = []
    for block in plan_blocks(height, width, block_size).blocks:
        if area is not None:
            left, top = transform @ (block.col_off, block.row_off)
            right, bottom = transform @ (block.col_off + block.width, block.row_off + block.height)
            if not area.intersects(
                shapely.box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))
            ):
                continue
        blocks.append(
            PlannedBlock(
                id=block.id,
                col_off=block.col_off,
                row_off=block.row_off,
                width=block.width,
                height=block.height,
            )
        )
    groups = tuple(tuple(blocks[i : i + group_size]) for i in range(0, len(blocks), group_size))
    return BatchPlan(
        imagery=str(Path(imagery).resolve()),
        crs=crs,
        transform=tuple(transform)[:6],
        width=width,
        height=height,
        block_size=block_size,
        aoi=aoi,
        notes=notes,
        groups=groups,
    )


def block_path(output: Path, block_id: str) -> Path:
    """Where a finished block's prediction lives."""
    return output / "blocks" / f"{block_id}.tif"


def predict_group(
    model_uri: str, plan: BatchPlan, group: list[PlannedBlock], output: Path, *, halo: int
) -> list[str]:
    """Predict every unfinished block of ``group``; return the ids predicted now.

    Blocks whose file exists were finished by an earlier attempt and are skipped. Pixels outside
    the area of interest are written as no data.
    """
    import mlflow
    import rasterio
    from affine import Affine
    from rasterio.features import geometry_mask
    from rasterio.warp import transform_geom

    from steps.predict import predict_block

    todo = [b for b in group if not block_path(output, b.id).exists()]
    if not todo:
        return []
    model = mlflow.pyfunc.load_model(model_uri)
    transform = Affine(*plan.transform)
    area = transform_geom("EPSG:4326", plan.crs, _union(plan.aoi)) if plan.aoi else None
    (output / "blocks").mkdir(parents=True, exist_ok=True)
    done = []
    with rasterio.open(plan.imagery) as src:
        for block in todo:
            window = (block.col_off, block.row_off, block.width, block.height)
            mask = predict_block(model.predict, src, window, halo=halo)
            block_transform = transform @ Affine.translation(block.col_off, block.row_off)
            if area is not None:
                outside = geometry_mask([area], (block.height, block.width), block_transform)
                mask[outside] = NODATA_CLASS
            _write_block(block_path(output, block.id), mask, plan.crs, block_transform)
            done.append(block.id)
    return done


def _union(aoi: dict[str, Any] | None) -> dict[str, Any]:
    from shapely.geometry import mapping

    from steps.aoi import aoi_geometry

    return dict(mapping(aoi_geometry(aoi or {})))


def _write_block(path: Path, mask: Any, crs: str, transform: Any) -> None:
    import rasterio

    with atomic_path(path) as tmp:
        profile = {
            "driver": "GTiff",
            "height": mask.shape[0],
            "width": mask.shape[1],
            "count": 1,
            "dtype": "uint8",
            "crs": crs,
            "transform": transform,
            "nodata": NODATA_CLASS,
            "compress": "deflate",
        }
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(mask, 1)


def assemble_mask(plan: BatchPlan, output: Path) -> Path:
    """Write every block's prediction into one class raster (``mask.tif``), block by block.

    Raises:
        GeomlopsError: a planned block has no prediction (its id named).
    """
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    missing = [b.id for g in plan.groups for b in g if not block_path(output, b.id).exists()]
    if missing:
        raise GeomlopsError(
            f"blocks not predicted yet: {', '.join(missing[:10])}{' …' if len(missing) > 10 else ''}"
        )
    target = output / "mask.tif"
    profile = {
        "driver": "GTiff",
        "height": plan.height,
        "width": plan.width,
        "count": 1,
        "dtype": "uint8",
        "crs": plan.crs,
        "transform": Affine(*plan.transform),
        "nodata": NODATA_CLASS,
        "compress": "deflate",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    with atomic_path(target) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            for row_start in range(0, plan.height, 256):
                h = min(256, plan.height - row_start)
                dst.write(
                    np.full((h, plan.width), NODATA_CLASS, dtype="uint8"),
                    1,
                    window=Window(0, row_start, plan.width, h),
                )
            for group in plan.groups:
                for block in group:
                    with rasterio.open(block_path(output, block.id)) as src:
                        window = Window(block.col_off, block.row_off, block.width, block.height)
                        dst.write(src.read(1), 1, window=window)
    return target


def save_plan(plan: BatchPlan, output: Path) -> Path:
    """Keep the plan with the outputs (what was predicted, on which grid)."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / "plan.json"
    path.write_text(json.dumps(plan.model_dump(mode="json"), indent=1))
    return path
