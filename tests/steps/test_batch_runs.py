"""A batch run's folder belongs to the run that planned into it last: blocks an earlier run left
are never taken for the new run's, and a run whose folder was taken stops rather than mix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.transform import from_origin

from geomlops.errors import PermanentError
from steps.batch import (
    BatchPlan,
    _write_block,
    assemble_mask,
    block_done,
    block_path,
    plan_batch,
    start_plan,
)
from steps.predictions import read_plan


def _plan(tmp_path: Path, run: str) -> BatchPlan:
    image = tmp_path / "scene.tif"
    if not image.exists():
        profile = {"driver": "GTiff", "width": 64, "height": 48, "count": 1, "dtype": "uint8"}
        with rasterio.open(
            image, "w", crs="EPSG:32616", transform=from_origin(452475, 3408645, 30, 30), **profile
        ) as dst:
            dst.write(np.zeros((1, 48, 64), np.uint8))
    plan = plan_batch(str(image), None, block_size=32, group_size=2)
    return plan.model_copy(update={"run": run})


def _predict_all(plan: BatchPlan, output: Path, value: int) -> None:
    """Every block written as the predict step writes them, for ``plan.run``."""
    for group in plan.groups:
        for block in group:
            mask = np.full((block.height, block.width), value, np.uint8)
            transform = Affine(*plan.transform) @ Affine.translation(block.col_off, block.row_off)
            (output / "blocks").mkdir(parents=True, exist_ok=True)
            _write_block(block_path(output, block.id), mask, plan.crs, transform, plan.run)


def test_a_new_run_never_takes_the_blocks_an_earlier_run_left(tmp_path: Path) -> None:
    output = tmp_path / "out"
    first = _plan(tmp_path, "uid-first")
    start_plan(first, output)
    _predict_all(first, output, 1)
    some = block_path(output, first.groups[0][0].id)
    assert block_done(some, "uid-first") and not block_done(some, "uid-second")

    second = _plan(tmp_path, "uid-second")
    start_plan(second, output)
    assert not (output / "blocks").exists()  # the earlier run's blocks are gone
    assert read_plan(output, "uid-second") == second
    _predict_all(second, output, 2)
    with rasterio.open(assemble_mask(second, output)) as mask:
        assert set(np.unique(mask.read(1))) == {2}


def test_a_run_whose_folder_another_run_took_stops(tmp_path: Path) -> None:
    output = tmp_path / "out"
    first = _plan(tmp_path, "uid-first")
    start_plan(first, output)
    start_plan(_plan(tmp_path, "uid-second"), output)  # planned into the same folder since
    with pytest.raises(
        PermanentError, match=r"now holds the plan of another run \(workflow uid uid-second\)"
    ):
        read_plan(output, "uid-first")
    assert read_plan(output, "").run == "uid-second"  # outside a run: not checked

    # a block the first run still wrote after the second took the folder is not the second's
    second = read_plan(output, "uid-second")
    _predict_all(second, output, 2)
    late = second.groups[0][0]
    mask = np.full((late.height, late.width), 1, np.uint8)
    transform = Affine(*second.transform) @ Affine.translation(late.col_off, late.row_off)
    _write_block(block_path(output, late.id), mask, second.crs, transform, "uid-first")
    assert not block_done(block_path(output, late.id), "uid-second")  # predicted again, not skipped
    with pytest.raises(
        PermanentError, match=rf"block {late.id} in .* was predicted by another run \(uid-first\)"
    ):
        assemble_mask(second, output)
    assert not (output / "mask.tif").exists()


def test_pieces_another_run_traced_are_never_taken_for_this_runs(tmp_path: Path) -> None:
    import os

    from postprocessing._rings import empty
    from postprocessing.grid import plan_blocks
    from postprocessing.kernel import BlockPieces
    from steps.batch import load_pieces, pieces_path, pieces_run, save_pieces
    from steps.predictions import _traced_pieces

    output = tmp_path / "out"
    plan = _plan(tmp_path, "uid-second")
    start_plan(plan, output)
    _predict_all(plan, output, 2)
    none = BlockPieces(final=empty(), edge=empty())
    blocks = [block for group in plan.groups for block in group]
    for block in blocks:
        tif = block_path(output, block.id)
        save_pieces(pieces_path(output, block.id), none, "uid-second")
        os.utime(tif, ns=(tif.stat().st_atime_ns, pieces_path(output, block.id).stat().st_mtime_ns + 1))
    grid = plan_blocks(plan.height, plan.width, plan.block_size)
    assert _traced_pieces(plan, output, grid) == [pieces_path(output, b.id) for b in grid.blocks]

    # an older run, still going, left its pieces of a block beside this run's block (dated
    # before it, so their time does not tell): traced again from the mask, not taken
    other = pieces_path(output, blocks[0].id)
    save_pieces(other, none, "uid-first")
    tif = block_path(output, blocks[0].id)
    os.utime(tif, ns=(tif.stat().st_atime_ns, other.stat().st_mtime_ns + 1))
    assert pieces_run(other) == "uid-first"
    assert _traced_pieces(plan, output, grid) is None
    broken = pieces_path(output, blocks[1].id)
    for junk in (b"", b"PK\x03\x04 cut short"):  # unreadable pieces: traced again, no crash
        broken.write_bytes(junk)
        assert pieces_run(broken) is None
    # where pieces are read as blocks finish (the streamed feature files), the run stops
    with pytest.raises(
        PermanentError, match=r"traced by another run \(workflow uid uid-first, this run uid-second\)"
    ):
        load_pieces(other, "uid-second")
    assert load_pieces(other).final.classes.size == 0  # outside a run: not checked
