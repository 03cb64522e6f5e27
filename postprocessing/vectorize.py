"""Vectorize a class raster block by block: the same polygons as tracing it whole.

Blocks are read with windowed reads and traced on a Dask scheduler; rows of blocks come back in
order and the merge joins what their edges cut, streaming: memory holds a few rows of blocks'
pieces, never the whole raster. Polygons stay in integer pixel coordinates until they are
complete; then the small ones are dropped, the geotransform is applied and they are written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from affine import Affine
from numpy.typing import NDArray
from tqdm import tqdm

from geomlops.errors import VectorizeError
from postprocessing import _rings
from postprocessing._dask import BlockExecutor
from postprocessing._memory import release_freed_memory
from postprocessing._rings import IntArray, Polygons
from postprocessing.finalize import (
    canonical,
    drop_small,
    in_scan_order,
    large_enough,
    polygon_areas,
    scan_order,
    simplify_coverage,
    to_geometries,
)
from postprocessing.grid import DEFAULT_BLOCK_SIZE, Block, BlockGrid, plan_blocks
from postprocessing.io import FeatureWriter, RasterInfo, read_block, read_raster_info
from postprocessing.kernel import BlockPieces, mask_to_polygons, release_buffers
from postprocessing.merge import EdgeMerger

if TYPE_CHECKING:
    import geopandas  # type: ignore[import-untyped,unused-ignore]

#: ``nodata`` default: take the raster band's own nodata value
RASTER_NODATA: Literal["raster"] = "raster"


def trace_raster_block(info: RasterInfo, block: Block, nodata: int | None) -> BlockPieces:
    """Read one block of the raster and trace it (the task each worker runs)."""
    return mask_to_polygons(read_block(info, block), block.offset, nodata=nodata, shared=block.shared)


def trace_array_block(data: NDArray[Any], block: Block, nodata: int | None) -> BlockPieces:
    """Trace one block already cut from an in-memory mask."""
    return mask_to_polygons(data, block.offset, nodata=nodata, shared=block.shared)


def iter_polygons(
    grid: BlockGrid,
    block_args: Sequence[tuple[Any, ...]],
    task: Any,
    *,
    scheduler: str = "threads",
    workers: int | None = None,
    progress: bool = False,
) -> Iterator[Polygons]:
    """Complete polygons, row of blocks by row of blocks, in pixel-corner coordinates.

    Args:
        grid: the block grid.
        block_args: the task's arguments for each block of ``grid.blocks``.
        task: a module-level function returning the block's :class:`BlockPieces`.
        scheduler: ``synchronous``, ``threads``, ``processes`` or a Dask scheduler address.
        workers: threads or processes for local schedulers (default: CPU count).
        progress: show a progress bar over blocks.

    Yields:
        After each block row, the polygons completed by it (order fixed for a given grid).

    Raises:
        VectorizeError: on a bad scheduler or a block that cannot be traced.
    """
    merger = EdgeMerger(grid)
    with (
        BlockExecutor(scheduler, workers) as executor,
        tqdm(total=len(grid.blocks), disable=not progress, unit="block", desc="vectorize") as bar,
    ):
        # enough whole rows per batch to keep every worker busy
        rows_per_batch = max(1, -(-2 * executor.workers // grid.n_cols))
        starts = range(0, grid.n_rows, rows_per_batch)
        batches = (
            block_args[s * grid.n_cols : min(grid.n_rows, s + rows_per_batch) * grid.n_cols] for s in starts
        )
        for results in executor.map_batches(task, batches, lambda: _advance(bar)):
            for i in range(len(results) // grid.n_cols):
                row: list[BlockPieces] = results[i * grid.n_cols : (i + 1) * grid.n_cols]
                # not bound to a name here: nothing keeps a row's polygons (a row may complete a
                # country-wide flood) while the caller writes them
                yield _complete_row(merger, row, executor)
            del results


def merge_rows(grid: BlockGrid, rows: Iterable[Sequence[BlockPieces]]) -> Iterator[Polygons]:
    """Complete polygons row of blocks by row of blocks, from rows of pieces traced elsewhere
    (by the predict step, say) and given top to bottom as they are finished: what
    :func:`iter_polygons` yields for the same pieces."""
    merger = EdgeMerger(grid)
    for row in rows:
        yield _row_polygons(merger, row)
        release_freed_memory()


def _row_polygons(merger: EdgeMerger, row: Sequence[BlockPieces]) -> Polygons:
    """The polygons a row of blocks completes: its blocks' own, and the groups of edge pieces its
    edge pieces close."""
    return _rings.concat([*(p.final for p in row), merger.add_row(_rings.concat([p.edge for p in row]))])


def _complete_row(merger: EdgeMerger, row: list[BlockPieces], executor: BlockExecutor) -> Polygons:
    """The polygons a row of blocks completes. After the last row the workers and their tracing
    buffers go, before the caller writes what may be the largest polygon of the raster; freed heap
    memory goes back to the system after every row."""
    done = _row_polygons(merger, row)
    if merger.rows_seen == merger.grid.n_rows:
        executor.close()
        release_buffers()
    release_freed_memory()
    return done


def _advance(bar: tqdm[Any]) -> None:
    bar.update(1)


def vectorize_array(
    mask: NDArray[Any],
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    nodata: int | None = None,
    scheduler: str = "synchronous",
    workers: int | None = None,
) -> Polygons:
    """Vectorize an in-memory class mask block by block, in pixel-corner coordinates.

    Args:
        mask: 2-D integer array.
        block_size: block side in pixels.
        nodata: value not to vectorize.
        scheduler: Dask scheduler (see :func:`iter_polygons`).
        workers: local workers.

    Returns:
        Every polygon, in scan order of its first pixel: identical to tracing the whole mask.

    Raises:
        VectorizeError: on a bad mask, block size or scheduler.
    """
    array = np.asarray(mask)
    if array.ndim != 2:
        raise VectorizeError(f"mask: expected a 2-D array, got shape {array.shape}")
    grid = plan_blocks(array.shape[0], array.shape[1], block_size)
    args = [
        (
            np.ascontiguousarray(array[b.row_off : b.row_off + b.height, b.col_off : b.col_off + b.width]),
            b,
            nodata,
        )
        for b in grid.blocks
    ]
    parts = list(iter_polygons(grid, args, trace_array_block, scheduler=scheduler, workers=workers))
    return canonical(in_scan_order(_rings.concat(parts)))


def _raster(
    path: str | Path, band: int, nodata: int | Literal["raster"] | None
) -> tuple[RasterInfo, int | None]:
    info = read_raster_info(path, band)
    if not np.issubdtype(np.dtype(info.dtype), np.integer) and info.dtype != "bool":
        raise VectorizeError(f"{path}: band {band} holds {info.dtype} values; a class mask must be integer")
    return info, info.nodata if nodata == RASTER_NODATA else nodata


def vectorize_raster(
    path: str | Path,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    scheduler: str = "threads",
    progress: bool = False,
    band: int = 1,
    nodata: int | Literal["raster"] | None = RASTER_NODATA,
    min_area: float = 0.0,
    simplify: float = 0.0,
    workers: int | None = None,
) -> geopandas.GeoDataFrame:
    """Vectorize a class raster into a GeoDataFrame, in the raster's CRS.

    Args:
        path: a GeoTIFF (or any raster GDAL reads) of integer class values.
        block_size: block side in pixels; memory grows with it, the result does not change.
        scheduler: ``synchronous``, ``threads``, ``processes`` or ``tcp://HOST:PORT``.
        progress: show a progress bar over blocks.
        band: the band to vectorize (1-based).
        nodata: pixels of this value are not vectorized; default: the band's nodata value.
        min_area: drop polygons smaller than this (square metres, as the ``area`` column; without
            a CRS, the transform's units squared), after the merge.
        simplify: coverage-preserving simplification tolerance (CRS units); 0 keeps every corner.
        workers: local workers (default: CPU count).

    Returns:
        One row per polygon: ``class``, ``area`` and ``geometry``, in scan order.

    Raises:
        VectorizeError: on an unreadable or non-integer raster, bad options or a failed block.
    """
    import geopandas  # type: ignore[import-untyped,unused-ignore]

    info, value = _raster(path, band, nodata)
    polys = _finish(
        _rings.concat(list(_iter_raster(info, value, block_size, scheduler, workers, progress))),
        min_area,
        info.transform,
        info.crs_wkt,
    )
    if simplify:
        geoms = simplify_coverage(polys, simplify, info.transform)
    else:
        geoms = to_geometries(polys, info.transform)
    areas = polygon_areas(polys, info.transform, info.crs_wkt)
    return geopandas.GeoDataFrame({"class": polys.classes, "area": areas}, geometry=geoms, crs=info.crs_wkt)


def vectorize_to_file(
    path: str | Path,
    output: str | Path,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    scheduler: str = "threads",
    progress: bool = False,
    band: int = 1,
    nodata: int | Literal["raster"] | None = RASTER_NODATA,
    min_area: float = 0.0,
    simplify: float = 0.0,
    workers: int | None = None,
    pixel_coordinates: bool = False,
) -> int:
    """Vectorize a class raster straight into GeoParquet or GeoJSON (see :mod:`postprocessing.io`).

    Without ``simplify`` the features stream to the file row of blocks by row of blocks, so
    memory does not grow with the raster; coverage simplification needs every neighbour, so with
    it the polygons are gathered first. Arguments are those of :func:`vectorize_raster`, and
    ``pixel_coordinates``: accept a raster without a CRS, writing GeoParquet in its pixel
    coordinates (``crs: null``); otherwise such a raster is refused.

    Returns:
        The number of features written.

    Raises:
        VectorizeError: as :func:`vectorize_raster`, for a raster without a CRS (unless
            ``pixel_coordinates``), or when the output cannot be written; no partial file is
            left behind.
    """
    info, value = _raster(path, band, nodata)
    if info.crs_wkt is None and not pixel_coordinates:
        raise VectorizeError(
            f"{path}: the raster has no CRS, so its polygons would be in pixel coordinates; "
            "georeference it, or accept pixel coordinates explicitly (--pixel-coordinates)"
        )
    with FeatureWriter(output, info.crs_wkt) as writer:
        batches = _iter_raster(info, value, block_size, scheduler, workers, progress)
        if simplify:
            polys = _finish(_rings.concat(list(batches)), min_area, info.transform, info.crs_wkt)
            areas = polygon_areas(polys, info.transform, info.crs_wkt)
            writer.write(simplify_coverage(polys, simplify, info.transform), polys.classes, areas)
        else:
            _write_rows(batches, writer, min_area, info.transform, crs=info.crs_wkt)
        return writer.count


def _write_rows(
    batches: Iterator[Polygons],
    writer: FeatureWriter,
    min_area: float,
    transform: Affine,
    run_vertices: int = 1 << 20,
    crs: str | None = None,
) -> None:
    """Write each row's complete polygons in scan order, a run of about a million vertices at a
    time (bounded temporaries, even for a row of floods).

    Memory holds the row, one run in canonical form, then its encoding. When a run holds most of
    the row's vertices (a country-wide flood), the rest of the row is copied out and the row let
    go before the run is written, so the polygon is not held three times over.
    """
    for polys in batches:
        order = scan_order(polys)
        kept = large_enough(polys, min_area, transform, crs)
        if kept is not None:
            order = order[kept[order]]
        counts = _vertex_counts(polys)[order]
        while len(order):
            stop = max(1, int(np.searchsorted(np.cumsum(counts), run_vertices, side="right")))
            encoded = writer.encode(canonical(polys, order[:stop]), transform)
            written = int(counts[:stop].sum())
            order, counts = order[stop:], counts[stop:]
            if not len(order):
                polys = _rings.empty()  # the row is written: let it go before the next
            elif 2 * written > written + int(counts.sum()):
                polys, order = _rings.take(polys, order), np.arange(len(order), dtype=np.int64)
            writer.write_encoded(encoded)
            del encoded


def _vertex_counts(polys: Polygons) -> IntArray:
    """The number of vertices of each polygon, holes included."""
    counts: IntArray = np.diff(polys.ring_offsets[polys.poly_offsets])
    return counts


def _iter_raster(
    info: RasterInfo, nodata: int | None, block_size: int, scheduler: str, workers: int | None, progress: bool
) -> Iterator[Polygons]:
    grid = plan_blocks(info.height, info.width, block_size)
    args = [(info, b, nodata) for b in grid.blocks]
    return iter_polygons(
        grid, args, trace_raster_block, scheduler=scheduler, workers=workers, progress=progress
    )


def _finish(polys: Polygons, min_area: float, transform: Affine, crs: str | None = None) -> Polygons:
    """Complete polygons: small ones dropped (``min_area`` in the features' area units), in scan
    order, rings in canonical form."""
    return canonical(in_scan_order(drop_small(polys, min_area, transform, crs)))
