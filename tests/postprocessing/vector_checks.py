"""Shared test helpers: the whole-raster reference, canonical keys, hostile masks, tiny GeoTIFFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
import shapely
import shapely.geometry
from affine import Affine

from postprocessing import _rings
from postprocessing._rings import Polygons
from postprocessing.finalize import in_scan_order, polygon_areas, to_geometries
from postprocessing.grid import plan_blocks
from postprocessing.kernel import mask_to_polygons
from postprocessing.merge import EdgeMerger

IDENTITY = Affine.identity()
CRS = "EPSG:32633"
TRANSFORM = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_000_000.0)


def reference(
    mask: np.ndarray, nodata: int | None = None, transform: Affine = IDENTITY
) -> list[tuple[int, bytes]]:
    """Whole-raster GDAL polygonize (rasterio, 4-connectivity): sorted (class, normalized WKB)."""
    valid = None if nodata is None else mask != nodata
    shapes = rasterio.features.shapes(mask, mask=valid, connectivity=4, transform=transform)
    items = [(int(v), shapely.geometry.shape(g)) for g, v in shapes]
    if not items:
        return []
    geoms = shapely.normalize(np.array([g for _, g in items], dtype=object))
    return sorted(zip([v for v, _ in items], shapely.to_wkb(geoms).tolist(), strict=True))


def tile_and_merge(mask: np.ndarray, block_size: int, nodata: int | None = None) -> Polygons:
    """Kernel on every block, then the streaming merge, row by row (no scheduler in between)."""
    grid = plan_blocks(mask.shape[0], mask.shape[1], block_size)
    merger = EdgeMerger(grid)
    out = []
    for r in range(grid.n_rows):
        pieces = [
            mask_to_polygons(
                mask[b.row_off : b.row_off + b.height, b.col_off : b.col_off + b.width],
                b.offset,
                nodata=nodata,
                shared=b.shared,
            )
            for b in grid.row(r)
        ]
        out += [p.final for p in pieces]
        out.append(merger.add_row(_rings.concat([p.edge for p in pieces])))
    assert merger.pending == 0
    return in_scan_order(_rings.concat(out))


def keys(polys: Polygons, transform: Affine = IDENTITY) -> list[tuple[int, bytes]]:
    """Our polygons as sorted (class, normalized WKB)."""
    geoms = shapely.normalize(to_geometries(polys, transform))
    return sorted(zip(polys.classes.tolist(), shapely.to_wkb(geoms).tolist(), strict=True))


def assert_same_as_reference(polys: Polygons, mask: np.ndarray, nodata: int | None = None) -> None:
    """Same polygons (byte for byte, normalized), same classes, same areas, all valid."""
    ours, ref = keys(polys), reference(mask, nodata)
    assert len(ours) == len(ref), f"{len(ours)} polygons, whole-raster has {len(ref)}"
    assert ours == ref
    geoms = to_geometries(polys, IDENTITY)
    assert shapely.is_valid(geoms).all()
    assert np.array_equal(polygon_areas(polys, IDENTITY), shapely.area(geoms))
    expected = mask.size if nodata is None else int(np.count_nonzero(mask != nodata))
    assert float(shapely.area(geoms).sum()) == expected


def write_tif(path: Path, mask: np.ndarray, *, nodata: int | None = None, crs: str | None = CRS) -> Path:
    """A single-band GeoTIFF with an explicit CRS and transform."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=mask.shape[0],
        width=mask.shape[1],
        count=1,
        dtype=mask.dtype,
        crs=crs,
        transform=TRANSFORM,
        nodata=nodata,
    ) as ds:
        ds.write(mask, 1)
    return path


def hostile_masks() -> dict[str, tuple[np.ndarray, int, int | None]]:
    """Masks built to break a tiled vectorizer: name -> (mask, block size, nodata)."""
    masks: dict[str, tuple[np.ndarray, int, int | None]] = {}

    m = np.zeros((8, 8), np.uint8)
    m[3, 3] = m[4, 4] = 1  # diagonal pixels meeting exactly at the corner of four blocks
    m[3, 4] = 2
    masks["diagonal at a block corner"] = (m, 4, 0)

    m = np.zeros((12, 12), np.uint8)
    m[1:11, 1:11] = 1
    m[3:9, 3:9] = 0  # a courtyard cut in four by the block lines
    masks["hole cut by block edges"] = (m, 6, None)

    m = np.zeros((42, 49), np.uint8)
    m[2:40:4, 1:48] = 1  # a serpent: runs through every block, joined alternately at each end
    for k, row in enumerate(range(2, 36, 4)):
        col = 48 if k % 2 == 0 else 0
        m[row : row + 5, col] = 1
        m[row, col] = m[row + 4, col] = 1
    masks["one region crossing every block"] = (m, 7, 0)

    m = np.zeros((30, 30), np.uint8)
    m[2:28, 2:28] = 1  # island
    m[5:25, 5:25] = 2  # lake in the island
    m[9:21, 9:21] = 1  # island in the lake
    m[13:17, 13:17] = 2  # pond in that island
    masks["rings inside holes"] = (m, 8, None)

    m = np.zeros((16, 16), np.uint8)
    m[:, :5], m[:, 5:11], m[:, 11:] = 1, 2, 3  # adjacent classes meeting on and off block lines
    m[4:12, 4:12] = 4
    masks["adjacent classes"] = (m, 4, None)

    rng = np.random.default_rng(7)
    m = rng.integers(0, 3, (20, 20)).astype(np.uint8)
    m[5:15, 5:15] = 255  # a nodata window across four blocks
    masks["nodata"] = (m, 10, 255)

    m = np.zeros((16, 16), np.uint8)
    m[7, :] = 1  # one-pixel line just above a block line
    m[:, 8] = 2  # and one just right of another
    masks["1-pixel lines along block edges"] = (m, 8, 0)

    m = np.zeros((33, 47), np.uint8)
    m[3:30, 2:45] = 1
    m[10:20, 10:40] = 0
    m[12:18, 12:15] = 1
    masks["blocks smaller than objects, partial blocks"] = (m, 5, 0)

    m = np.zeros((9, 9), np.uint8)
    m[0:3, 0:3] = 1
    m[3:6, 3:6] = 1  # two squares touching at a corner on a block-corner vertex
    m[6:9, 0:3] = 1
    m[3, 0:3] = 1  # joined to the first by an edge: one polygon touching itself at a corner
    masks["self-touching at a block corner"] = (m, 3, 0)

    m = np.zeros((11, 13), np.uint8)
    m[1:10, 1:12] = 1
    m[3, 3] = m[4, 4] = m[5, 5] = 0  # a chain of diagonal holes across a block corner
    m[2:9, 8] = 0
    masks["diagonal holes"] = (m, 4, None)
    return masks
