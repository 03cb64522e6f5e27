"""Writing a country-sized prediction as vector tiles: size and time of the PMTiles archive.

Generates N polygons (default 1,000,000) as a segmentation model's output looks once
vectorized: pixel-aligned rectangles and L-shapes of 1 to 12 pixels a side on a 10 m grid,
classes 1 to 3, clustered in fields over an area about 300 km wide (UTM zone 16N), with the
block id of each; writes them to a GeoParquet (the predictions' own file) and times
:func:`postprocessing.tiles.write_prediction_tiles` on it, at the zoom levels the imagery's
resolution gives. Prints the archive's size, its zoom levels, the seconds to write it, and the
ratio to the seconds pyarrow took to write the same features' GeoParquet, measured side by side;
with ``--compare``, also the seconds of GDAL's PMTiles driver writing the same features at the
same zoom levels in one pass (every feature at every level: GDAL has no overview cells), the
writer the archive came from before the tiles were encoded with numpy.

    .venv/bin/python benchmarks/web_tiles.py [--features 1000000] [--work DIR] [--keep] [--compare]

:func:`synthetic_predictions` is the generator (the web app's benchmarks can call it).
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

CRS = "EPSG:32616"
ORIGIN = (300_000.0, 3_250_000.0)  # UTM 16N, south-west corner of the area
PIXEL = 10.0
BLOCK = 512  # pixels a side of a batch block (block ids)


def _shapes(count: int, seed: int) -> tuple[Any, Any, Any]:
    """Geometries (pixel-aligned, in CRS), classes and block ids of ``count`` polygons."""
    import numpy as np
    import shapely

    rng = np.random.default_rng(seed)
    fields = max(1, count // 400)
    side = math.ceil(math.sqrt(fields))
    spacing = 30_000 // side * 10  # pixels between field centres: the area is about 300 km wide
    field = rng.integers(0, fields, count)
    centre_col = (field % side) * spacing // 10 + spacing // 20
    centre_row = (field // side) * spacing // 10 + spacing // 20
    col = centre_col + rng.normal(0, spacing / 40, count).astype("int64")
    row = centre_row + rng.normal(0, spacing / 40, count).astype("int64")
    width, height = rng.integers(1, 13, count), rng.integers(1, 13, count)
    x0, y0 = ORIGIN[0] + col * PIXEL, ORIGIN[1] + row * PIXEL
    boxes = shapely.box(x0, y0, x0 + width * PIXEL, y0 + height * PIXEL)
    # every third one an L: its upper right quarter cut away (when it is at least 2 x 2)
    cut = (np.arange(count) % 3 == 0) & (width > 1) & (height > 1)
    notch = shapely.box(
        x0 + (width // 2) * PIXEL, y0 + (height // 2) * PIXEL, x0 + width * PIXEL, y0 + height * PIXEL
    )
    geoms = np.where(cut, shapely.difference(boxes, notch), boxes)
    classes = rng.integers(1, 4, count).astype("int64")
    blocks = [f"r{r // BLOCK}c{c // BLOCK}" for r, c in zip(row.tolist(), col.tolist(), strict=True)]
    return geoms, classes, blocks


def synthetic_predictions(path: Path, count: int = 1_000_000, seed: int = 0) -> tuple[Path, tuple[int, int]]:
    """Write ``count`` synthetic predicted polygons to the GeoParquet ``path`` (the columns of
    batch inference's: class, area, block_id, WKB geometry in EPSG:32616; 100,000 rows per
    chunk); return it and the zoom levels 10 m imagery gives."""
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]
    import shapely

    from postprocessing.tiles import zoom_range

    schema = pa.schema(
        [("class", pa.int64()), ("area", pa.float64()), ("block_id", pa.string()), ("geometry", pa.binary())]
    )
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for start in range(0, count, 100_000):
            n = min(100_000, count - start)
            geoms, classes, blocks = _shapes(n, seed + start)
            writer.write_table(
                pa.table(
                    {
                        "class": pa.array(classes),
                        "area": pa.array(shapely.area(geoms)),
                        "block_id": pa.array(blocks),
                        "geometry": pa.array(shapely.to_wkb(geoms), pa.binary()),
                    },
                    schema=schema,
                )
            )
    extent = 30_000  # pixels a side
    return path, zoom_range(
        CRS, (PIXEL, 0.0, ORIGIN[0], 0.0, -PIXEL, ORIGIN[1] + extent * PIXEL), extent, extent
    )


def _geoparquet_seconds(parquet: Path, target: Path) -> float:
    """Seconds pyarrow takes to read ``parquet`` and write it again (the side-by-side reference:
    what the machine's load does to a plain write)."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

    started = time.perf_counter()
    with (
        pq.ParquetFile(parquet) as source,
        pq.ParquetWriter(target, source.schema_arrow, compression="zstd") as out,
    ):
        for batch in source.iter_batches():
            out.write_batch(batch)
    return time.perf_counter() - started


def _one_pass_seconds(parquet: Path, target: Path, zooms: tuple[int, int]) -> tuple[float, int]:
    """Seconds and bytes of GDAL's PMTiles driver writing every feature at every level in one pass."""
    import numpy as np
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]
    import pyogrio  # type: ignore[import-untyped,unused-ignore]

    from postprocessing.tiles import LAYER

    names = {1: "a", 2: "b", 3: "c"}

    def batches() -> Any:
        offset = 0
        for batch in pq.ParquetFile(parquet).iter_batches(columns=["class", "area", "block_id", "geometry"]):
            n = batch.num_rows
            classes = batch.column("class").cast(pa.int32())
            yield pa.RecordBatch.from_arrays(
                [
                    classes,
                    pa.array([names.get(c, str(c)) for c in classes.to_pylist()]),
                    batch.column("area"),
                    batch.column("block_id"),
                    pa.array(np.arange(offset, offset + n)),
                    pa.array(np.ones(n, "int32")),
                    batch.column("geometry"),
                ],
                names=["class", "class_name", "area", "block_id", "feature_id", "features", "geometry"],
            )
            offset += n

    started = time.perf_counter()
    first = batches()
    head = next(first)
    pyogrio.write_arrow(
        pa.RecordBatchReader.from_batches(head.schema, [head, *first]),
        str(target),
        driver="PMTiles",
        layer=LAYER,
        geometry_name="geometry",
        geometry_type="Polygon",
        crs=CRS,
        dataset_options={"MINZOOM": str(zooms[0]), "MAXZOOM": str(zooms[1])},
    )
    return time.perf_counter() - started, target.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=1_000_000)
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for the files (default: a temporary one)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the files")
    parser.add_argument(
        "--compare", action="store_true", help="also time one GDAL pass writing every feature at every level"
    )
    args = parser.parse_args()

    from postprocessing.tiles import write_prediction_tiles

    work = args.work or Path(tempfile.mkdtemp(prefix="geomlops-web-tiles-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        parquet, zooms = synthetic_predictions(work / "predictions.parquet", args.features)
        generated = time.perf_counter() - started
        reference = _geoparquet_seconds(parquet, work / "copy.parquet")
        started, cpu = time.perf_counter(), time.process_time()
        info = write_prediction_tiles(
            parquet, work / "predictions.pmtiles", crs=CRS, zooms=zooms, class_names={1: "a", 2: "b", 3: "c"}
        )
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        assert info is not None
        print(f"machine            {platform.node()} ({platform.processor() or platform.machine()})")
        print(f"features           {info.features:,} (generated in {generated:.1f} s)")
        print(f"GeoParquet         {parquet.stat().st_size / 1e6:.1f} MB, rewritten in {reference:.1f} s")
        print(f"PMTiles            {info.bytes / 1e6:.1f} MB, zoom {info.min_zoom}-{info.max_zoom}")
        print(
            f"PMTiles written in {seconds:.1f} s, {cpu:.1f} s of CPU "
            f"({info.features / seconds:,.0f} features/s)"
        )
        print(f"ratio              {seconds / reference:.1f} x the GeoParquet rewrite")
        if args.compare:
            before, size = _one_pass_seconds(
                parquet, work / "one-pass.pmtiles", (info.min_zoom, info.max_zoom)
            )
            print(f"one GDAL pass      {before:.1f} s, {size / 1e6:.1f} MB (every feature at every level)")
            print(f"speed-up           {before / seconds:.1f} x")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
