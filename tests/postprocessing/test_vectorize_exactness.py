"""Tiled vectorization equals whole-raster vectorization: same polygons, areas and classes.

The reference is GDAL's polygonize over the whole raster at once (rasterio.features.shapes,
4-connectivity). Comparisons are on normalized WKB, so they are byte-exact, not approximate.
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from vector_checks import IDENTITY, assert_same_as_reference, hostile_masks, keys, tile_and_merge

from geomlops.errors import VectorizeError
from postprocessing import _rings
from postprocessing.finalize import to_geometries
from postprocessing.grid import plan_blocks
from postprocessing.kernel import mask_to_polygons
from postprocessing.merge import EdgeMerger, merge_across_block_edges
from postprocessing.vectorize import vectorize_array

HOSTILE = hostile_masks()


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_mask_tiled_equals_whole_raster(name: str) -> None:
    mask, block_size, nodata = HOSTILE[name]
    assert_same_as_reference(vectorize_array(mask, block_size=block_size, nodata=nodata), mask, nodata)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_mask_every_block_size_gives_the_same_bytes(name: str) -> None:
    mask, _, nodata = HOSTILE[name]
    whole = keys(vectorize_array(mask, block_size=max(mask.shape), nodata=nodata))
    for block_size in (1, 2, 3, 5, 8):
        assert keys(vectorize_array(mask, block_size=block_size, nodata=nodata)) == whole


def test_diagonal_pixels_at_a_block_corner_stay_apart() -> None:
    mask = np.zeros((4, 4), np.uint8)
    mask[1, 1] = mask[2, 2] = 1
    polys = vectorize_array(mask, block_size=2, nodata=0)
    assert len(polys) == 2
    assert sorted(shapely.area(to_geometries(polys, IDENTITY)).tolist()) == [1.0, 1.0]


def test_one_region_crossing_every_block_is_one_polygon() -> None:
    mask, block_size, nodata = HOSTILE["one region crossing every block"]
    polys = vectorize_array(mask, block_size=block_size, nodata=nodata)
    grid = plan_blocks(*mask.shape, block_size)
    assert len(polys) == 1
    (geom,) = to_geometries(polys, IDENTITY)
    for block in grid.blocks:
        window = shapely.box(
            block.col_off, block.row_off, block.col_off + block.width, block.row_off + block.height
        )
        assert geom.intersection(window).area > 0, block.id
    assert geom.area == np.count_nonzero(mask)


def test_hole_cut_by_block_edges_is_one_hole() -> None:
    mask, block_size, nodata = HOSTILE["hole cut by block edges"]
    polys = vectorize_array(mask, block_size=block_size, nodata=nodata)
    ones = polys.classes == 1
    ((geom,),) = [to_geometries(_rings.take(polys, ones), IDENTITY)]
    assert len(geom.interiors) == 1 and shapely.Polygon(geom.interiors[0]).area == 36


def test_randomized_masks_match_whole_raster() -> None:
    """Hypothesis-style: many random masks, densities, class counts, shapes and block sizes."""
    for seed in range(200):
        rng = np.random.default_rng(seed)
        height, width = (int(v) for v in rng.integers(1, 36, 2))
        n_classes = int(rng.integers(1, 4))
        if seed % 3 == 0:  # salt and pepper: saddles everywhere
            mask = rng.integers(0, n_classes + 1, (height, width)).astype(np.uint8)
        else:  # blobs with noise: long shared edges, holes, islands
            coarse = rng.integers(0, n_classes + 1, (height // 3 + 1, width // 3 + 1))
            mask = np.kron(coarse, np.ones((3, 3), np.int64))[:height, :width].astype(np.uint8)
            flip = rng.random((height, width)) < 0.15
            mask[flip] = rng.integers(0, n_classes + 1, int(flip.sum()))
        nodata = None if seed % 2 else 0
        block_size = int(rng.integers(1, 13))
        try:
            assert_same_as_reference(tile_and_merge(mask, block_size, nodata), mask, nodata)
        except AssertionError as err:
            raise AssertionError(f"seed {seed}, block size {block_size}, mask:\n{mask}") from err


def test_int16_classes_and_negative_values() -> None:
    rng = np.random.default_rng(3)
    mask = rng.integers(-300, 300, (6, 7)).astype(np.int16) // 200 * 1000
    assert_same_as_reference(vectorize_array(mask, block_size=3), mask)


def test_kernel_alone_equals_gdal_on_a_single_block() -> None:
    mask, _, nodata = HOSTILE["rings inside holes"]
    pieces = mask_to_polygons(mask, nodata=nodata)
    assert len(pieces.edge) == 0
    assert_same_as_reference(pieces.final, mask, nodata)


def test_kernel_offsets_and_shared_sides() -> None:
    mask = np.zeros((4, 4), np.uint8)
    mask[0, 1] = 1  # touches the top side
    mask[2, 2] = 2  # inside
    pieces = mask_to_polygons(mask, (10, 20), nodata=0, shared=(True, False, False, False))
    assert pieces.edge.classes.tolist() == [1] and pieces.final.classes.tolist() == [2]
    assert pieces.edge.xy.min(axis=0).tolist() == [21, 10]
    assert pieces.final.xy.min(axis=0).tolist() == [22, 12]


@pytest.mark.parametrize(
    ("mask", "kwargs", "message"),
    [
        (np.zeros((2, 2, 2), np.uint8), {}, "2-D"),
        (np.zeros((2, 2), np.float32), {}, "integer"),
        (np.zeros((2, 2), np.uint8), {"connectivity": 8}, "connectivity=8"),
    ],
)
def test_kernel_refuses_bad_input(mask: np.ndarray, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(VectorizeError, match=message):
        mask_to_polygons(mask, **kwargs)


def test_merge_streams_row_by_row() -> None:
    """Pieces wait only while they touch the bottom line of the rows seen so far."""
    mask = np.zeros((9, 9), np.uint8)
    mask[0:5, 1] = 1  # crosses the first row line, ends in the second block row
    mask[0:2, 5] = 2  # stays in the first block row
    grid = plan_blocks(9, 9, 3)
    merger = EdgeMerger(grid)
    done = []
    for r in range(grid.n_rows):
        pieces = [
            mask_to_polygons(
                mask[b.row_off : b.row_off + b.height, b.col_off : b.col_off + b.width],
                b.offset,
                nodata=0,
                shared=b.shared,
            )
            for b in grid.row(r)
        ]
        merged = merger.add_row(_rings.concat([p.edge for p in pieces]))
        done.append(_rings.concat([*(p.final for p in pieces), merged]))
        assert merger.pending == (1 if r == 0 else 0)
    assert [d.classes.tolist() for d in done] == [[2], [1], []]
    with pytest.raises(VectorizeError, match="past the grid"):
        merger.add_row(_rings.empty())


def test_merge_across_block_edges_checks_the_row_count() -> None:
    grid = plan_blocks(4, 4, 2)
    with pytest.raises(VectorizeError, match="got 1 block rows"):
        list(merge_across_block_edges([_rings.empty()], grid))
