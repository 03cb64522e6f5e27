"""The block grid: integer windows covering every pixel once, exact transforms."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from geomlops.errors import VectorizeError
from postprocessing.grid import plan_blocks


@pytest.mark.parametrize(
    ("height", "width", "size"), [(10, 10, 5), (33, 47, 8), (5, 3, 10), (1, 1, 1), (7, 20, 3)]
)
def test_blocks_cover_every_pixel_exactly_once(height: int, width: int, size: int) -> None:
    grid = plan_blocks(height, width, size)
    seen = np.zeros((height, width), np.int64)
    for block in grid.blocks:
        assert 0 < block.height <= size and 0 < block.width <= size
        seen[block.row_off : block.row_off + block.height, block.col_off : block.col_off + block.width] += 1
    assert (seen == 1).all()
    assert len(grid.blocks) == grid.n_rows * grid.n_cols
    assert [b.id for b in grid.row(grid.n_rows - 1)][-1] == f"r{grid.n_rows - 1}c{grid.n_cols - 1}"


def test_partial_edge_blocks_and_shared_sides() -> None:
    grid = plan_blocks(33, 47, 8)
    last = grid.blocks[-1]
    assert (last.height, last.width) == (1, 7)
    assert grid.blocks[0].shared == (False, True, False, True)
    assert last.shared == (True, False, True, False)
    assert grid.row_lines == (8, 16, 24, 32) and grid.col_lines == (8, 16, 24, 32, 40)
    single = plan_blocks(4, 4, 8).blocks[0]
    assert single.shared == (False, False, False, False)


def test_block_transforms_are_integer_translations_of_the_raster_transform() -> None:
    raster = Affine(0.1, 0.0, 123456.789, 0.0, -0.1, 9876543.21)
    grid = plan_blocks(100_000, 100_000, 2048)
    far = grid.blocks[-1]
    block_t = far.transform(raster)
    # the block's origin is exactly where the raster transform puts that pixel: no drift
    assert block_t @ (0, 0) == raster @ (far.col_off, far.row_off)
    assert (block_t.a, block_t.e) == (raster.a, raster.e)


@pytest.mark.parametrize(
    ("args", "name"), [((0, 5, 5), "height"), ((5, -1, 5), "width"), ((5, 5, 0), "block_size")]
)
def test_bad_sizes_are_refused(args: tuple[int, int, int], name: str) -> None:
    with pytest.raises(VectorizeError, match=name):
        plan_blocks(*args)
