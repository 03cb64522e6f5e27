"""Turn a predicted class raster into features with their lineage, files, a picture and an item.

Features are streamed: each batch the seam merge completes is written and drawn at once.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from catalog_sync import open_store
from catalog_sync.collections import PREDICTIONS, VERSIONS, version_item_id
from geomlops.background import InOrder
from geomlops.errors import ItemNotFoundError, ModelNotFoundError
from geomlops.files import atomic_path, remove, temporary_beside, write_atomic
from geomlops.tracking import raise_if_unreachable
from steps.batch import (
    PLAN_FILE,
    BatchPlan,
    block_done,
    block_path,
    check_plan_run,
    load_pieces,
    pieces_path,
    pieces_run,
)
from steps.model_io import BACKGROUND_CLASS, NODATA_CLASS

if TYPE_CHECKING:
    from collections.abc import Mapping

    from affine import Affine

    from postprocessing._rings import Polygons
    from postprocessing.grid import Block
    from postprocessing.io import RasterInfo
    from postprocessing.kernel import BlockPieces
    from steps.own_entry_points import Worker


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
    """A version number or an alias (``production``) of a registered model, with its run.

    Raises:
        ModelNotFoundError: no such registered model, version or alias (the message lists the
            versions and aliases there are).
        TrackingUnavailableError: the tracking server does not answer.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        mv = (
            client.get_model_version(model, version)
            if version.isdigit()
            else client.get_model_version_by_alias(model, version)
        )
    except MlflowException as err:
        raise_if_unreachable(err)
        raise ModelNotFoundError(not_found_message(client, model, version)) from None
    return Lineage(model=model, model_version=str(mv.version), run_id=str(mv.run_id))


def not_found_message(client: Any, model: str, version: str, *, missing_alias_hint: str = "") -> str:
    """What to say when ``model`` has no version or alias ``version``: the versions and
    aliases it has, or that there is no such registered model.

    Args:
        client: an ``MlflowClient`` of the registry that was asked.
        model: the registered model's name.
        version: the version number or alias that was not found.
        missing_alias_hint: said after the versions and aliases when the model is there and
            ``version`` is an alias it lacks (what the caller can do instead).

    Raises:
        TrackingUnavailableError: the tracking server does not answer.
    """
    from mlflow.exceptions import MlflowException

    what = "version" if version.isdigit() else "alias"
    try:
        registered = client.get_registered_model(model)
    except MlflowException as err:
        raise_if_unreachable(err)
        return f"no registered model '{model}' in MLflow"
    versions = sorted((str(v.version) for v in client.search_model_versions(f"name='{model}'")), key=int)
    aliases = sorted(registered.aliases or {})
    hint = f"; {missing_alias_hint}" if missing_alias_hint and what == "alias" else ""
    return (
        f"model '{model}' has no {what} {version!r} in MLflow (versions: {', '.join(versions) or 'none'}; "
        f"aliases: {', '.join(aliases) or 'none'}){hint}"
    )


def trace_foreground_block(info: RasterInfo, block: Block) -> BlockPieces:
    """Read one block of the class raster and trace every class but the background.

    The background class and no-data pixels are left untraced: they never become features, so
    the kernel and the merge do no work for them. It is the task each Dask worker runs.
    """
    from postprocessing.io import read_block
    from postprocessing.kernel import mask_to_polygons

    data = read_block(info, block)
    data[data == BACKGROUND_CLASS] = NODATA_CLASS
    return mask_to_polygons(data, block.offset, nodata=NODATA_CLASS, shared=block.shared)


def publish_predictions(
    mask: Path,
    output: Path,
    plan: BatchPlan,
    lineage: Lineage,
    *,
    area: str,
    catalog: str,
    scheduler: str = "threads",
    workers: int | None = None,
    features: Path | None = None,
    made_with: Mapping[str, str] | None = None,
) -> PredictionOutputs:
    """Vectorize the class raster seam-free and stream its features with their lineage to files.

    Each block's polygon pieces are those the predict step traced as it finished the block
    (``blocks/<id>.pieces.npz``), traced from the mask only where they are missing. Rows of
    blocks are read (or traced) on the Dask ``scheduler``; each batch of polygons the merge
    completes is written at once to GeoParquet (the imagery's CRS) and GeoJSON (RFC 7946, WGS84)
    and burnt into the quicklook's canvas, so memory holds a row group, a row of blocks' pieces
    and a canvas of at most 1,024 x 1,024 cells, not the features' records. Features come out
    row of blocks by row of blocks, each batch in scan order of the polygons' first pixels, so
    the files are byte-identical whatever the scheduler and however often the run was resumed.
    Every feature carries ``class``, ``area``, ``class_name``, the id of the block holding its
    first pixel, ``model``, ``model_version`` and ``mlflow_run_id``. The STAC item (the files,
    the quicklook, the mask and the vector tiles as its assets) goes into the predictions
    collection last.

    Args:
        mask: the assembled class raster (``mask.tif``).
        output: the folder of the outputs.
        plan: the batch plan (grid, block size, imagery, area of interest).
        lineage: the model version the predictions come from.
        area: the area's name (part of the item id).
        catalog: the catalogue to publish the item in.
        scheduler: ``synchronous``, ``threads``, ``processes`` or a Dask scheduler address.
        workers: local Dask workers (default: the CPU count).
        features: the GeoJSON the package's own post-processing wrote from ``mask``, where its
            item chooses it (:mod:`steps.own_entry_points`): its features are written instead
            of geomlops' polygons (:func:`write_package_features`).
        made_with: what predicted and what post-processed (``inference``, ``postprocess``),
            recorded in the item as ``geomlops:inference`` and ``geomlops:postprocess``.

    Returns:
        Where the outputs are and how many features they hold.

    Raises:
        VectorizeError: the mask cannot be read or a block cannot be traced; no output file is
            left half-written.
    """
    from postprocessing.grid import plan_blocks
    from postprocessing.io import read_raster_info
    from postprocessing.tiles import PMTILES_FILE
    from postprocessing.vectorize import iter_polygons

    own_mask = mask == output / "mask.tif"  # assembled from the blocks, which hold their pieces
    written = streamed_features(output, plan, lineage) if own_mask and features is None else None
    if features is not None:
        written = write_package_features(features, output, plan, lineage, catalog=catalog)
    elif written is None:
        info = read_raster_info(mask)
        grid = plan_blocks(info.height, info.width, plan.block_size)
        traced = _traced_pieces(plan, output, grid) if own_mask else None
        task, args = (
            (load_pieces, [(path, plan.run) for path in traced])
            if traced is not None
            else (trace_foreground_block, [(info, block) for block in grid.blocks])
        )
        polygons = iter_polygons(grid, args, task, scheduler=scheduler, workers=workers)
        written = write_features(
            polygons,
            output,
            plan,
            lineage,
            catalog=catalog,
            crs=info.crs_wkt or plan.crs,
            transform=info.transform,
        )
    store = open_store(catalog)
    parquet, geojson, png = (output / name for name in _FILES)
    item = _item(
        written.features,
        {int(k): v for k, v in written.by_class.items()},
        plan,
        lineage,
        area=area,
        files={
            "geoparquet": parquet,
            "geojson": geojson,
            "quicklook": png,
            "mask": mask,
            **({"pmtiles": output / PMTILES_FILE} if (output / PMTILES_FILE).is_file() else {}),
        },
        model_item=store.item_href(VERSIONS, version_item_id(lineage.model, lineage.model_version)),
    )
    item["properties"].update({f"geomlops:{k}": v for k, v in (made_with or {}).items()})
    href = store.put_item(PREDICTIONS, item)
    write_atomic(output / PUBLISHED, json.dumps({"item": item["id"], "href": href}) + "\n")
    return PredictionOutputs(
        geoparquet=str(parquet),
        geojson=str(geojson),
        quicklook=str(png),
        item=href,
        features=written.features,
    )


def publish_batch(
    output: Path,
    plan: BatchPlan,
    lineage: Lineage,
    *,
    area: str,
    catalog: str,
    scheduler: str = "threads",
    worker: Callable[[], tuple[AbstractContextManager[Worker], Path]] | None = None,
) -> PredictionOutputs:
    """Assemble the predicted blocks' mask and publish it (:func:`publish_predictions`): traced
    by geomlops, or turned into features by the package's own post-processing entry point where
    the model's item chooses it (:mod:`steps.own_entry_points`), run by ``worker``.

    Args:
        worker: opens the worker that runs the package's commands (in commands mode), and says
            the folder it shares with this process; default: one started here in the package's
            environment.

    Raises:
        GeomlopsError: as :func:`publish_predictions`; the package's entry point failed (its
            exit code and last error lines) or wrote features that are not what is expected.
    """
    from steps.batch import assemble_mask
    from steps.model_spec import fetch_model_spec
    from steps.own_entry_points import chosen_inference, chosen_postprocess, own_postprocess, stage_package

    mask = assemble_mask(plan, output)
    spec = fetch_model_spec(lineage.model, catalog, lineage.model_version)
    entry_point = chosen_postprocess(spec)
    inference = chosen_inference(spec)
    made_with = {
        "inference": f"mlproject:{inference}" if inference else "pyfunc",
        "postprocess": f"mlproject:{entry_point}" if entry_point else "geomlops",
    }
    if entry_point is None:
        return publish_predictions(
            mask, output, plan, lineage, area=area, catalog=catalog, scheduler=scheduler, made_with=made_with
        )
    with ExitStack() as scope:
        if worker is None:
            shared = Path(scope.enter_context(tempfile.TemporaryDirectory(prefix="geomlops-own-")))
            opened: AbstractContextManager[Worker] = _local_commands(lineage, shared)
        else:
            opened, shared = worker()
        commands = scope.enter_context(opened)
        package = stage_package(spec.package_uri, shared)
        features = own_postprocess(
            commands, entry_point=entry_point, package=package, shared=shared, mask=mask
        )
        return publish_predictions(
            mask, output, plan, lineage, area=area, catalog=catalog, features=features, made_with=made_with
        )


def _local_commands(lineage: Lineage, shared: Path) -> AbstractContextManager[Worker]:
    """A worker in commands mode, started here in the environment the model was trained in."""
    from geomlops.settings import get_settings
    from steps._package_predictor import model_worker_inputs, package_predictor

    python, model_dir = model_worker_inputs(
        f"models:/{lineage.model}/{lineage.model_version}", get_settings().home_dir / "models"
    )
    return package_predictor(python, model_dir, mode="commands", shared=shared)


#: the files of the features, beside the PMTiles archive: GeoParquet, GeoJSON, quicklook
_FILES = ("predictions.parquet", "predictions.geojson", "quicklook.png")
#: what :func:`stream_features` wrote, kept beside the files it wrote
STREAMED = "streamed.json"
#: the predictions item whose assets the folder's files are (:func:`check_output_item`)
PUBLISHED = "published.json"


#: the feature files' columns as this version writes them (2: ``class_name`` added); files a
#: stamp says were written otherwise are written again
FEATURES_LAYOUT = 2


class WrittenFeatures(BaseModel):
    """What the feature files hold, and what they were written from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    layout: int = 1
    """:data:`FEATURES_LAYOUT` when written; stamps from before it had none (1)."""
    lineage: Lineage
    plan_sha256: str
    features: int
    by_class: dict[str, int]
    sizes: dict[str, int]


def _plan_digest(plan: BatchPlan) -> str:
    import hashlib

    return hashlib.sha256(plan.model_dump_json().encode()).hexdigest()


def write_features(
    polygons: Iterable[Polygons],
    output: Path,
    plan: BatchPlan,
    lineage: Lineage,
    *,
    catalog: str,
    crs: str,
    transform: Affine,
) -> WrittenFeatures:
    """Write complete polygons (pixel corners of the raster placed by ``transform``, in ``crs``),
    batch by batch as the merge gives them, with their lineage to GeoParquet, GeoJSON, the
    quicklook and the PMTiles archive (see :func:`publish_predictions`).

    Raises:
        VectorizeError: a feature cannot be written; no output file is left half-written.
        PostprocessorError: the model's item names a post-processor that is not registered.
    """
    from postprocessing.finalize import (
        canonical,
        finish_each,
        first_pixels,
        in_scan_order,
        polygon_areas,
        to_geometries,
    )
    from postprocessing.grid import block_ids

    size = plan.block_size
    # the model's MLM item, read once: the quicklook's bands, the finisher, the tiles' class names
    model_item = predictions_model_item(catalog, lineage)
    finish = _finisher(model_item)

    def batches() -> Iterator[_Batch]:
        for batch in polygons:
            polys = canonical(in_scan_order(batch))
            rows, cols = first_pixels(polys)
            geoms = to_geometries(polys, transform)
            ids = block_ids(rows.tolist(), cols.tolist(), size)
            classes, areas = polys.classes, None
            if finish is not None:  # each part keeps its polygon's class and block
                geoms, index, areas = finish_each(finish, geoms, crs)
                classes, ids = classes[index], [ids[i] for i in index.tolist()]
            if areas is None:
                areas = polygon_areas(polys, transform, crs)
            yield geoms, classes, areas, ids

    return _write_batches(batches(), output, plan, lineage, crs=crs, model_item=model_item)


def write_package_features(
    path: Path, output: Path, plan: BatchPlan, lineage: Lineage, *, catalog: str
) -> WrittenFeatures:
    """Write the features of the GeoJSON a package's own post-processing wrote
    (:func:`steps.own_entry_points.own_postprocess`) as :func:`write_features` writes geomlops'
    own: in the imagery's CRS, with their lineage, measured areas and the block holding each
    one's representative point.

    Raises:
        GeomlopsError: the GeoJSON is not what is expected (the feature and field named); no
            output file is left half-written.
    """
    import numpy as np
    import shapely
    from affine import Affine

    from catalog_sync.mlm import parse_model_item
    from postprocessing.finalize import geometry_areas
    from postprocessing.grid import block_ids
    from steps.own_entry_points import package_features

    model_item = predictions_model_item(catalog, lineage)
    spec = parse_model_item(model_item) if model_item is not None else None
    a, b, c, d, e, f = (~Affine(*plan.transform))[:6]
    size = plan.block_size

    def batches() -> Iterator[_Batch]:
        for geoms, classes in package_features(path, plan.crs, spec.outputs[0] if spec else None):
            points = shapely.get_coordinates(shapely.point_on_surface(geoms))
            x, y = points[:, 0], points[:, 1]
            cols, rows = a * x + b * y + c, d * x + e * y + f
            rows = np.clip(np.floor(rows), 0, plan.height - 1).astype(np.int64)
            cols = np.clip(np.floor(cols), 0, plan.width - 1).astype(np.int64)
            ids = block_ids(rows.tolist(), cols.tolist(), size)
            yield geoms, classes, geometry_areas(geoms, plan.crs), ids

    return _write_batches(batches(), output, plan, lineage, crs=plan.crs, model_item=model_item)


#: one batch of features: geometries, class values, areas (m²), the block of each
_Batch = tuple[Any, Any, Any, list[str]]


def _write_batches(
    batches: Iterable[_Batch],
    output: Path,
    plan: BatchPlan,
    lineage: Lineage,
    *,
    crs: str,
    model_item: Mapping[str, Any] | None,
) -> WrittenFeatures:
    """The files, quicklook and tiles of features given in batches (see :func:`write_features`)."""
    from postprocessing.io import FeatureWriter
    from postprocessing.tiles import (
        PMTILES_FILE,
        TileFeatures,
        class_names_of,
        item_class_names,
        write_prediction_tiles,
        zoom_range,
    )

    parquet, geojson, png = (output / name for name in _FILES)
    shared = {"model": lineage.model, "model_version": lineage.model_version, "mlflow_run_id": lineage.run_id}
    picture = _Quicklook(plan, model_item)
    by_class: Counter[int] = Counter()
    count = 0
    # the same features as vector tiles for maps: gathered as they are written (not read back)
    for_tiles = TileFeatures(crs)
    names = item_class_names(model_item)
    tiles = partial(
        write_prediction_tiles,
        parquet,
        crs=crs,
        zooms=zoom_range(plan.crs, plan.transform, plan.width, plan.height),
        class_names=names,
    )
    # the files are written and drawn in a thread of their own, a batch behind: while the next
    # batch is merged, and while the tiles are cut once every feature is in (each of these holds
    # Python's lock part of the time: on two cores publishing took about a tenth less, not half)
    archive = output / PMTILES_FILE
    # the archive and the quicklook are written beside, and moved into place once the files are
    staged, staged_png = temporary_beside(archive), temporary_beside(png)
    try:
        with (
            FeatureWriter((parquet, geojson), crs, extra=("class_name", "block_id"), shared=shared) as files,
            InOrder("feature-files") as behind,
        ):
            for geoms, classes, areas, block_ids in batches:
                named = class_names_of(classes, names)
                behind.submit(_write_and_draw, files, picture, geoms, classes, areas, named, block_ids)
                for_tiles.add(geoms, classes, areas, block_ids)
                by_class.update(classes.tolist())
                count += len(geoms)
            title = f"{lineage.model} v{lineage.model_version}: {count} features (run {lineage.run_id[:8]})"
            behind.submit(picture.save, staged_png, title)
            made = None
            if for_tiles.kept:  # a PMTiles archive, read by HTTP ranges
                made = tiles(staged, name=title, gathered=for_tiles)
        os.replace(staged_png, png)
        if not for_tiles.kept:  # too many features to keep: cut from the GeoParquet, now written
            archive.unlink(missing_ok=True)  # none, rather than one of other files, if this fails
            tiles(archive, name=title)
        elif made is None:  # no feature: no archive, and no stale one
            archive.unlink(missing_ok=True)
        else:
            os.replace(staged, archive)
    finally:
        remove(staged)
        remove(staged_png)
    return WrittenFeatures(
        layout=FEATURES_LAYOUT,
        lineage=lineage,
        plan_sha256=_plan_digest(plan),
        features=count,
        by_class={str(k): v for k, v in sorted(by_class.items())},
        sizes={
            name: (output / name).stat().st_size
            for name in (*_FILES, PMTILES_FILE)
            if (output / name).exists()
        },
    )


def _write_and_draw(
    files: Any,
    picture: _Quicklook,
    geoms: Any,
    classes: Any,
    areas: Any,
    class_names: Sequence[str],
    block_ids: Sequence[str],
) -> None:
    files.write(geoms, classes, areas, class_name=class_names, block_id=block_ids)
    picture.add(geoms)


def stream_features(
    output: Path,
    plan: BatchPlan,
    lineage: Lineage,
    *,
    catalog: str,
    parent: int | None = None,
    poll: float = 0.05,
) -> None:
    """Write the feature files while the blocks are predicted, row of blocks by row of blocks
    as each row's blocks are finished (their GeoTIFFs appear), and keep what was written in
    ``streamed.json``, which :func:`publish_predictions` takes instead of writing them again.

    It runs beside the predict step of a plan that one task predicts (another process: the
    merge and the writers never wait on the predict step's threads), which ends it if
    predicting fails. The files are those :func:`publish_predictions` writes, byte for byte.
    It stops when its ``parent`` process is gone, or is ended (SIGTERM), leaving no file half
    written.
    """
    import os
    import signal
    import time

    from postprocessing.grid import plan_blocks
    from postprocessing.io import read_raster_info
    from postprocessing.vectorize import merge_rows

    def ended(signum: int, frame: Any) -> None:
        raise SystemExit(f"ended by signal {signum}")  # temporary files removed on the way out

    signal.signal(signal.SIGTERM, ended)
    grid = plan_blocks(plan.height, plan.width, plan.block_size)
    planned = {b.id for g in plan.groups for b in g}

    def finished(block_id: str) -> Path:
        path = block_path(output, block_id)
        while not block_done(path, plan.run):
            if parent is not None and os.getppid() != parent:
                raise SystemExit(f"the predict step (process {parent}) is gone")
            time.sleep(poll)
        return path

    def rows() -> Iterator[list[BlockPieces]]:
        for r in range(grid.n_rows):
            row = grid.blocks[r * grid.n_cols : (r + 1) * grid.n_cols]
            paths = [pieces_path(output, b.id) if b.id in planned and finished(b.id) else None for b in row]
            yield [load_pieces(path, plan.run) for path in paths]

    first = next(b.id for g in plan.groups for b in g)
    # the CRS as the blocks (and the mask assembled from them) carry it
    crs = read_raster_info(finished(first)).crs_wkt or plan.crs
    written = write_features(
        merge_rows(grid, rows()), output, plan, lineage, catalog=catalog, crs=crs, transform=_affine(plan)
    )
    with atomic_path(output / STREAMED) as tmp:
        tmp.write_text(written.model_dump_json(indent=1))


def features_while_predicting(
    output: Path, plan: BatchPlan, lineage: Lineage, *, on_cpu: bool = False
) -> Callable[[str], Any]:
    """What the predict step runs beside the prediction (``steps.batch.predict_group(beside=…)``)
    to write the feature files as its blocks are finished (:func:`stream_features`, in a
    process of its own: spawned, so that the predict step's threads are not forked with it).

    Only for a plan of one task, predicted from the start, and where the model runs on a GPU,
    whose host cores are then free: a model on the CPU keeps them busy itself (both examples'
    use every core), so there only with ``on_cpu``. On two cores it saved nothing for the cloud
    mask and cost the building model a second (``benchmarks/batch_inference.py --stream``).
    """

    def start(device: str) -> Any:
        import multiprocessing
        import os

        if len(plan.groups) != 1 or not (device.startswith("cuda") or on_cpu):
            return None
        if any(block_path(output, b.id).exists() for b in plan.groups[0]):
            return None  # resumed: publishing writes them, as for any plan
        (output / STREAMED).unlink(missing_ok=True)
        process = multiprocessing.get_context("spawn").Process(
            target=stream_features,
            args=(output, plan, lineage),
            kwargs={"catalog": _catalog(), "parent": os.getpid()},
            name="stream-features",
            daemon=True,
        )
        process.start()
        return process

    return start


def _catalog() -> str:
    from geomlops.settings import get_settings

    return get_settings().catalog_href


def streamed_features(output: Path, plan: BatchPlan, lineage: Lineage) -> WrittenFeatures | None:
    """What :func:`stream_features` wrote for this plan and model version, if its files are
    still those it wrote and no block was predicted again since; else None."""
    from postprocessing.tiles import PMTILES_FILE

    path = output / STREAMED
    try:
        written = WrittenFeatures.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None
    made = (written.layout, written.lineage, written.plan_sha256)
    if made != (FEATURES_LAYOUT, lineage, _plan_digest(plan)):
        return None  # files of another layout, model version or plan
    expected = {*_FILES, PMTILES_FILE} if written.features else set(_FILES)
    if set(written.sizes) != expected or any(
        not (output / name).is_file() or (output / name).stat().st_size != n
        for name, n in written.sizes.items()
    ):
        return None
    stamped = path.stat().st_mtime_ns
    blocks = (block_path(output, b.id) for g in plan.groups for b in g)
    if any(not b.is_file() or b.stat().st_mtime_ns > stamped for b in blocks):
        return None
    return written


def predictions_model_item(catalog: str, lineage: Lineage) -> dict[str, Any] | None:
    """The MLM item of the version (else of the model) the predictions come from, if any.

    Only read: a static catalogue that does not exist yet is not created here.
    """
    from catalog_sync.collections import MODELS

    local = catalog.removeprefix("file://")
    if "://" not in local and not Path(local).is_file():
        return None
    store = open_store(catalog)
    version_item = (VERSIONS, version_item_id(lineage.model, lineage.model_version))
    for collection, item_id in (version_item, (MODELS, lineage.model)):
        try:
            return store.get_item(collection, item_id)
        except ItemNotFoundError:
            continue
    return None


def _finisher(model_item: Mapping[str, Any] | None) -> Any:
    """What the model's post-processor does to whole polygons (``buildings``: simplified and
    squared as the item asks), as the MLM output of ``model_item``
    (:func:`predictions_model_item`) chooses; None for one that keeps the traced polygons.

    Raises:
        PostprocessorError: the item names a post-processor that is not registered, or a bad
            option of it (checked before any feature is written).
    """
    from postprocessing.registry import resolve_finisher

    outputs = (model_item or {}).get("properties", {}).get("mlm:output") or []
    return resolve_finisher(outputs[0]) if outputs else None


def _traced_pieces(plan: BatchPlan, output: Path, grid: Any) -> list[Path | None] | None:
    """Each grid block's pieces as the predict step traced them (None for a block outside the
    plan: no data, nothing to trace), or None when any planned block has none to read. Only for
    the mask :func:`steps.batch.assemble_mask` assembled from those blocks."""
    planned = {b.id for g in plan.groups for b in g}
    if grid.block_size != plan.block_size or (grid.height, grid.width) != (plan.height, plan.width):
        return None
    paths: list[Path | None] = []
    for block in grid.blocks:
        if block.id not in planned:
            paths.append(None)
            continue
        path = pieces_path(output, block.id)
        tif = block_path(output, block.id)
        # pieces are written before their block: an older block would have none, or older ones;
        # pieces another run traced (two runs in one folder) are traced again from the mask
        if not (path.is_file() and tif.is_file()) or path.stat().st_mtime_ns > tif.stat().st_mtime_ns:
            return None
        if plan.run and pieces_run(path) != plan.run:
            return None
        paths.append(path)
    return paths


def _affine(plan: BatchPlan) -> Any:
    from affine import Affine

    return Affine(*plan.transform)


def predictions_item_id(lineage: Lineage, area: str) -> str:
    """The id of the predictions item of ``lineage``'s version over ``area``."""
    return f"{lineage.model}-v{lineage.model_version}-{area}"


def check_output_item(output: Path, item_id: str) -> None:
    """Refuse to plan into a folder that holds anything but a batch run's outputs, or whose
    files another predictions item describes.

    A run replaces and removes files in its folder (``mask.tif``, ``blocks/`` …): a folder of
    other files (a package, a user's data) is never taken over. Where the files are the assets
    of another item (an earlier run of another version or area given the same ``output``), that
    item would then describe this run's predictions. The same item's files are replaced, as a
    rerun does.

    Raises:
        ParameterError: naming the folder, what is in it and what to do.
    """
    from geomlops.errors import ParameterError

    if output.exists() and not output.is_dir():
        raise ParameterError(f"parameter 'output' {str(output)!r}: a file; expected a folder (new or empty)")
    if output.is_dir() and not (output / PLAN_FILE).is_file():
        # a volume's own lost+found, hidden files (.gitkeep, .DS_Store) are no one's outputs
        held = sorted(
            p.name for p in output.iterdir() if not p.name.startswith(".") and p.name != "lost+found"
        )
        if held:
            raise ParameterError(
                f"parameter 'output' {str(output)!r}: the folder holds other files "
                f"({', '.join(held[:3])}{', …' if len(held) > 3 else ''}) and no batch run's plan; a "
                "run replaces and removes files in its folder, so give a new or empty folder"
            )
    path = output / PUBLISHED
    if not path.is_file():
        return
    published = json.loads(path.read_text(encoding="utf-8")).get("item")
    if published and published != item_id:
        raise ParameterError(
            f"parameter 'output' {str(output)!r}: its files are the assets of predictions item "
            f"'{published}', which this run ({item_id}) would overwrite; give another output, "
            "or remove that item and the folder first"
        )


def _item(
    count: int,
    by_class: dict[int, int],
    plan: BatchPlan,
    lineage: Lineage,
    *,
    area: str,
    files: dict[str, Path],
    model_item: str,
) -> dict[str, Any]:
    import shapely
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape

    from postprocessing.antimeridian import bbox_across

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
    classes = {str(k): int(v) for k, v in sorted(by_class.items())}
    stamp, stamp_source = _imagery_datetime(plan.imagery)
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [],
        "id": predictions_item_id(lineage, area),
        "geometry": mapping(footprint),
        "bbox": bbox_across(footprint),
        "properties": {
            "datetime": stamp,
            "geomlops:datetime_source": stamp_source,
            "title": f"{lineage.model} v{lineage.model_version} predictions over {area}",
            "mlflow:run_id": lineage.run_id,
            "mlflow:model_version": lineage.model_version,
            "geomlops:base_model": lineage.model,
            "geomlops:features": count,
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
            "mask": {
                "href": str(files["mask"]),
                "type": "image/tiff; application=geotiff",
                "roles": ["data"],
                "title": "class values per pixel, as predicted",
            },
            **(
                {
                    "pmtiles": {
                        "href": str(files["pmtiles"]),
                        "type": "application/vnd.pmtiles",
                        "roles": ["visual"],
                        "title": "the features as vector tiles for maps",
                    }
                }
                if "pmtiles" in files
                else {}
            ),
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


#: metadata items that may carry when imagery was taken, in the order they are trusted:
#: (domain, key); acquisition stamps first, the TIFF file's own stamp last
DATETIME_TAGS = (
    ("IMAGERY", "ACQUISITIONDATETIME"),
    ("", "ACQUISITIONDATETIME"),
    ("", "ACQUISITION_DATETIME"),
    ("", "EXIF_DateTimeOriginal"),
    ("", "EXIF_DateTimeDigitized"),
    ("", "DATETIME"),
    ("", "datetime"),
    ("", "TIFFTAG_DATETIME"),
    ("", "EXIF_DateTime"),
)


def _imagery_datetime(imagery: str, now: datetime | None = None) -> tuple[str, str]:
    """When the imagery was taken, from its metadata, else the run's time (``now``).

    The first of :data:`DATETIME_TAGS` that holds a readable date and time (``YYYY:MM:DD
    HH:MM:SS`` as TIFF and EXIF write it, or ISO 8601; a time without a zone is UTC) wins.

    Returns:
        The RFC 3339 UTC stamp, and where it came from: ``imagery:KEY`` or ``run``.
    """
    import rasterio

    with rasterio.open(imagery) as src:
        domains = {domain: src.tags(ns=domain or None) for domain in {d for d, _ in DATETIME_TAGS}}
    for domain, key in DATETIME_TAGS:
        stamp = _parse_stamp(str(domains[domain].get(key) or ""))
        if stamp is not None:
            return stamp, f"imagery:{key}"
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "run"


def _parse_stamp(text: str) -> str | None:
    """``text`` as an RFC 3339 UTC stamp, or None when it is not a date and time."""
    text = text.strip().strip("\x00").strip()
    if re.fullmatch(r"\d{4}:\d{2}:\d{2}[ T].*", text):  # TIFF/EXIF: colons in the date
        text = text[:10].replace(":", "-") + "T" + text[11:]
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        return None
    if parsed.year < 1900 or parsed.replace(tzinfo=None) == datetime(1970, 1, 1):
        return None  # an unset clock: 0000:00:00, or the epoch written by default
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Quicklook:
    """Predicted outlines over the imagery (what a field analyst looks at first), burnt batch by
    batch into a picture-sized canvas as the features are written.

    The imagery is drawn in colour when the model's MLM item names its red, green and blue
    input bands (``eo:common_name``) or, failing that, when the imagery's colour interpretation
    does; otherwise in grey from its first band (:func:`steps._quicklook.rgb_bands`). No-data
    pixels are white.

    The canvas has one cell per pixel of the decimated imagery (at most 1,024 on the longer side),
    so memory stays the same for a town or a country: the outlines are not kept, only the cells
    they cross. A polygon smaller than a cell shows as one cell. The decimated imagery is read in
    a thread while the outlines are burnt (GDAL reads without Python's lock): on a large scene
    reading every block of the imagery takes seconds.
    """

    #: outline colour (RGB, 0-1)
    COLOUR = (1.0, 0.23, 0.19)
    #: the area of interest's outline, dashed (as the web app draws it)
    AOI_COLOUR = "#1f6feb"

    def __init__(self, plan: BatchPlan, model_item: Mapping[str, Any] | None = None) -> None:
        import numpy as np
        import rasterio
        from affine import Affine

        from steps._quicklook import rgb_bands

        with rasterio.open(plan.imagery) as src:
            scale = max(1, max(src.width, src.height) // 1024)
            shape = (max(1, src.height // scale), max(1, src.width // scale))
            self.bands = rgb_bands(model_item, [c.name for c in src.colorinterp])
        self.outline = np.zeros(shape, np.bool_)
        self.plan = plan
        # world -> canvas cell: the inverse of the imagery's transform scaled to the canvas
        self._to_cell = ~(_affine(plan) @ Affine.scale(plan.width / shape[1], plan.height / shape[0]))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quicklook")
        self._backdrop = self._pool.submit(_backdrop, plan.imagery, self.bands, shape)
        self._pool.shutdown(wait=False)

    @property
    def rgb(self) -> Any:
        """The imagery, stretched to 0..1 (white where it has no data), once it has been read."""
        return self._backdrop.result()

    def add(self, geoms: Any, max_points: int = 1 << 20) -> None:
        """Burn the outlines of a batch of polygons (in the imagery's CRS) into the canvas: each
        ring's edges are sampled at least once per cell, a million points at a time."""
        import numpy as np
        import shapely

        if len(geoms) == 0:
            return
        coords, ring = shapely.get_coordinates(shapely.get_rings(geoms), return_index=True)
        m = self._to_cell
        col = m.a * coords[:, 0] + m.b * coords[:, 1] + m.c
        row = m.d * coords[:, 0] + m.e * coords[:, 1] + m.f
        del coords
        edge = np.flatnonzero(ring[1:] == ring[:-1])  # from a vertex to the next of its ring
        height, width = self.outline.shape
        start = 0
        while start < len(edge):
            a = edge[start : start + max_points]
            start += len(a)
            dc, dr = col[a + 1] - col[a], row[a + 1] - row[a]
            steps = np.ceil(np.maximum(np.abs(dc), np.abs(dr))).astype(np.int64) + 1
            seg = np.repeat(np.arange(len(a)), steps)
            t = np.arange(len(seg), dtype=np.float64) - np.repeat(np.cumsum(steps) - steps, steps)
            t /= np.maximum(steps - 1, 1)[seg]
            c = np.floor(col[a][seg] + t * dc[seg]).astype(np.int64)
            r = np.floor(row[a][seg] + t * dr[seg]).astype(np.int64)
            inside = (c >= 0) & (c < width) & (r >= 0) & (r < height)
            self.outline[r[inside], c[inside]] = True

    def save(self, path: Path, title: str) -> None:
        """Write the PNG (no timestamp in it: the same features give the same bytes)."""
        import math

        from pyproj import CRS

        from steps._quicklook import pyplot

        plt = pyplot()

        picture = self.rgb.copy()
        picture[self.outline] = self.COLOUR
        height, width = self.outline.shape
        w, n = _affine(self.plan) @ (0, 0)
        e, s = _affine(self.plan) @ (self.plan.width, self.plan.height)
        # in longitude/latitude, a degree of longitude is shorter than one of latitude: drawn
        # with the ground's proportions, as a map in metres would be
        aspect = 1.0
        if CRS.from_user_input(self.plan.crs).is_geographic:
            aspect = 1.0 / max(math.cos(math.radians((n + s) / 2)), 1e-6)
        fig, ax = plt.subplots(figsize=(8, 8 * height / max(width, 1)), dpi=100)
        try:
            ax.imshow(picture, extent=(w, e, s, n), interpolation="nearest", aspect=aspect)
            for i, (xs, ys) in enumerate(self._aoi_rings()):
                label = "area of interest" if i == 0 else None
                ax.plot(xs, ys, color=self.AOI_COLOUR, linewidth=1.2, linestyle=(0, (4, 2)), label=label)
            if self.plan.aoi:
                ax.legend(loc="lower right", fontsize=8)
            ax.set_xlim(w, e)  # an area beyond the imagery does not widen the picture
            ax.set_ylim(s, n)
            ax.set_title(title)
            ax.set_axis_off()
            fig.savefig(path, format="png", bbox_inches="tight", metadata={"Software": None})
        finally:
            plt.close(fig)

    def _aoi_rings(self) -> list[tuple[Any, Any]]:
        """The area of interest's rings in the imagery's CRS (x and y), none without one."""
        if not self.plan.aoi:
            return []
        import shapely
        from rasterio.warp import transform_geom
        from shapely.geometry import mapping, shape

        from steps.aoi import aoi_geometry

        area = shape(transform_geom("EPSG:4326", self.plan.crs, mapping(aoi_geometry(self.plan.aoi))))
        rings = shapely.get_rings(shapely.get_parts(area))
        return [tuple(shapely.get_coordinates(ring).T) for ring in rings]


def _backdrop(imagery: str, bands: Sequence[int], shape: tuple[int, int]) -> Any:
    """``bands`` of ``imagery`` decimated to ``shape``, as RGB stretched to 0..1 (one stretch for
    the three, which keeps the imagery's colour balance; white where it has no data)."""
    import numpy as np
    import rasterio

    with rasterio.open(imagery) as src:
        # the bands read in one call (each block decoded once, whatever the interleaving), each
        # band once, masked where the imagery has no data
        distinct = list(dict.fromkeys(bands))
        read = src.read(distinct, out_shape=(len(distinct), *shape), masked=True)
        rgb = np.dstack([np.ma.filled(read[distinct.index(b)].astype("float32"), np.nan) for b in bands])
    lo, hi = np.nanpercentile(rgb, [2, 98]) if not np.isnan(rgb).all() else (0.0, 1.0)
    return np.nan_to_num(np.clip((rgb - lo) / max(hi - lo, 1e-9), 0, 1), nan=1.0)


def read_plan(output: Path, run: str = "") -> BatchPlan:
    """The plan kept with the outputs, made by run ``run`` (see :func:`steps.batch.check_plan_run`).

    Raises:
        PermanentError: another run planned into the folder since.
    """
    plan = BatchPlan.model_validate(json.loads((output / PLAN_FILE).read_text()))
    return check_plan_run(plan, run, output)
