"""Benchmark: block-wise vectorization against whole-raster polygonize, on generated masks.

    python benchmarks/vectorize.py                  # 8k² and 16k²
    python benchmarks/vectorize.py --with-32k       # and 32k²
    python benchmarks/vectorize.py --sizes 4096 --block-size 1024 --scheduler synchronous
    python benchmarks/vectorize.py --sizes 32768 65536 100000 --methods geomlops

Masks (uint8 GeoTIFF, tiled, deflate, nodata 0, UTM) hold many small buildings (class 1, a fifth
with a courtyard), rough flood regions with islands (class 2) and a river (class 2) that snakes
through every block, so one flood polygon spans the whole raster. They are generated strip by
strip and written window by window: a 100,000² mask (10 Gpx) never sits in memory.
Each method runs in its own subprocess, from the GeoTIFF to a GeoParquet file; all import
rasterio, pyproj and pyarrow before the clock starts (each reads with GDAL and writes the same
GeoParquet), and otherwise only what they use:

- ``rasterio``: the whole band read at once, ``rasterio.features.shapes`` (GDAL polygonize,
  4-connectivity), each GeoJSON-like dict turned into shapely (``shapely.geometry.shape``);
- ``gdal``: ``gdal.Polygonize`` into an in-memory layer, when the ``osgeo`` bindings import;
- ``geomlops``: ``postprocessing.vectorize.vectorize_to_file`` (blocks, Dask, streaming merge).

All write through the same GeoParquet writer. The whole-raster methods hold the band (1 byte a
pixel) and every polygon at once; they are skipped, with the reason printed, where that would not
fit in the memory available (about 4.5 bytes a pixel at the sizes measured).

Reported: wall time of the work (imports done before the clock starts), throughput, peak resident
memory of the process tree (sampled every 5 ms, children included), the process's start-up RSS
once its imports are done, and the working memory above it (peak minus start-up: what grows with
the raster), the kernel's high-water mark of the main process as a check on the sampling, ratios
to the baseline, and whether the outputs are identical (normalized WKB and class of every
polygon). Figures vary with the machine and its load: compare only figures from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STRIP = 1536  # rows generated at a time: a multiple of the 512-row tiles and of the building cell
SECTION = 170 * 24  # columns of a strip computed at a time (bounded temporaries; whole cells)
CELL = 24  # one building at most per CELL x CELL cell
BAND = 64  # rows of a coarse random field drawn from one seed
FIELDS = ((512, 0.75), (64, 0.2), (8, 0.05))  # coarse cell and weight of each flood noise octave


def _coarse_rows(seed: int, octave: int, cell: int, size: int, i0: int, i1: int) -> np.ndarray:
    """Rows ``i0:i1`` of a coarse random field; each band of rows has its own seed, so any rows
    can be drawn without the rest (the field of a 100,000² mask would not fit in memory)."""
    n_cols = size // cell + 3
    first = i0 // BAND
    bands = [
        np.random.default_rng([seed, octave, b]).random((BAND, n_cols), dtype=np.float32)
        for b in range(first, (i1 - 1) // BAND + 1)
    ]
    return np.concatenate(bands)[i0 - first * BAND : i1 - first * BAND]


def _upsample(coarse: np.ndarray, i0: int, cell: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Bilinear upsampling over pixels ``r0:r1, c0:c1`` of a coarse field whose rows start at
    ``i0``: along the columns on the coarse rows, then along the rows (strips join seamlessly)."""
    cols = (np.arange(c0, c1) + 0.5) / cell
    j = cols.astype(np.int64)
    across = coarse[:, j] + (coarse[:, j + 1] - coarse[:, j]) * (cols - j).astype(np.float32)
    rows = (np.arange(r0, r1) + 0.5) / cell
    i = rows.astype(np.int64)
    fy = (rows - i).astype(np.float32)[:, None]
    result: np.ndarray = across[i + 1 - i0]
    top = across[i - i0]
    result -= top
    result *= fy
    result += top
    return result


def _draw_buildings(seed: int, r0: int, rows: int, size: int) -> dict[str, np.ndarray]:
    """Each cell of the strip's whole cell rows: is there a building, where, with a courtyard."""
    n_cells = size // CELL
    n_rows = rows // CELL  # a cell cut by the raster's last row holds nothing
    rng = np.random.default_rng([seed, 99, r0 // STRIP])
    h, w = rng.integers(5, 21, (2, n_rows, n_cells), dtype=np.int8)
    top, left = rng.integers(0, 3, (2, n_rows, n_cells), dtype=np.int8)
    present = rng.random((n_rows, n_cells)) < 0.5
    courtyard = present & (rng.random((n_rows, n_cells)) < 0.2) & (h > 10) & (w > 10)
    return {
        "present": present,
        "courtyard": courtyard,
        "top": top,
        "bottom": top + h,
        "left": left,
        "right": left + w,
    }


def _paint_buildings(strip: np.ndarray, cells: dict[str, np.ndarray], c0: int, c1: int) -> None:
    """Buildings (class 1) over the strip's columns ``c0:c1`` (``c0`` on a cell boundary)."""
    n_rows, n_cells = cells["present"].shape
    j0, j1 = c0 // CELL, min(c1 // CELL, n_cells)
    if n_rows == 0 or j1 <= j0:
        return
    view = strip[: n_rows * CELL, j0 * CELL : j1 * CELL].reshape(n_rows, CELL, j1 - j0, CELL)
    y = np.arange(CELL, dtype=np.int8)[None, :, None, None]
    x = np.arange(CELL, dtype=np.int8)[None, None, None, :]

    def cell(name: str) -> np.ndarray:
        return cells[name][:, None, j0:j1, None]

    top, bottom, left, right = cell("top"), cell("bottom"), cell("left"), cell("right")
    building = ((y >= top) & (y < bottom) & cell("present")) & ((x >= left) & (x < right))
    np.copyto(view, np.uint8(1), where=building)
    yard = ((y >= top + 3) & (y < bottom - 3) & cell("courtyard")) & ((x >= left + 3) & (x < right - 3))
    np.copyto(view, np.uint8(0), where=yard)


def generate_mask(path: Path, size: int, seed: int = 1, river_spacing: int = 1024) -> None:
    """Write a ``size`` x ``size`` benchmark mask, strip by strip.

    Memory holds one strip of ``STRIP`` rows and the float temporaries of one ``SECTION`` of it,
    never the raster: every random draw is made per strip or per band of coarse rows.
    """
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    river_rows = np.arange(river_spacing // 2, size, river_spacing)
    cols = np.arange(size)
    centre = (60 * np.sin(cols / 173.0) + 20 * np.sin(cols / 31.0)).astype(np.int64)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": size,
        "width": size,
        "count": 1,
        "dtype": "uint8",
        "nodata": 0,
        "crs": "EPSG:32633",
        "transform": from_origin(500_000, 4_000_000, 0.5, 0.5),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    tmp = path.with_name(f".{path.name}.tmp")
    with rasterio.Env(GDAL_CACHEMAX=256), rasterio.open(tmp, "w", **profile) as ds:
        for r0 in range(0, size, STRIP):
            r1 = min(size, r0 + STRIP)
            strip = np.empty((r1 - r0, size), np.uint8)
            coarse = []
            for octave, (cell, weight) in enumerate(FIELDS):
                i0, i1 = int((r0 + 0.5) / cell), int((r1 - 0.5) / cell) + 2
                coarse.append((_coarse_rows(seed, octave, cell, size, i0, i1), i0, cell, weight))
            cells = _draw_buildings(seed, r0, r1 - r0, size)
            for c0 in range(0, size, SECTION):
                c1 = min(size, c0 + SECTION)
                flood = np.zeros((r1 - r0, c1 - c0), np.float32)
                for field, i0, cell, weight in coarse:
                    flood += _upsample(field, i0, cell, r0, r1, c0, c1) * np.float32(weight)
                strip[:, c0:c1] = flood > 0.6
                strip[:, c0:c1] *= 2
                _paint_buildings(strip, cells, c0, c1)
            for k, row in enumerate(river_rows.tolist()):
                if row + 94 > r0 and row - 80 < r1:  # a meandering river, 14 px wide
                    rr = row + centre[:, None] + np.arange(14)
                    inside = (rr >= r0) & (rr < r1)
                    strip[rr[inside] - r0, np.broadcast_to(cols[:, None], rr.shape)[inside]] = 2
                if k + 1 < len(river_rows):  # joined alternately at the right and left ends
                    c = size - 40 if k % 2 == 0 else 10
                    lo, hi = max(r0, row), min(r1, int(river_rows[k + 1]) + 14)
                    if lo < hi:
                        strip[lo - r0 : hi - r0, c : c + 14] = 2
            ds.write(strip, 1, window=Window(0, r0, size, r1 - r0))
    tmp.replace(path)


#: peak memory of the whole-raster baseline per pixel (4,423 MB at 32768², measured), rounded up
BASELINE_BYTES_PER_PIXEL = 4.5


def run_method(method: str, source: str, output: str, block_size: int, scheduler: str, workers: int) -> None:
    """Child process: one method, from the GeoTIFF to GeoParquet; prints its figures as JSON.

    Each method imports what it needs (both write GeoParquet, so both import pyarrow's writer)
    before its start-up RSS is taken; the clock starts after.
    """
    import resource

    import psutil
    import pyarrow.compute
    import pyarrow.parquet as pq
    import pyproj
    import rasterio

    # every method reads the GeoTIFF with rasterio (GDAL) and writes its CRS with pyproj: both
    # are imported, and pyarrow's lazy imports warmed, before the start-up RSS and the clock
    del pq, pyarrow.compute, pyproj, rasterio
    if method == "geomlops":
        from postprocessing.vectorize import vectorize_to_file
    elif method == "rasterio":
        import rasterio
        import rasterio.features
        import shapely
        import shapely.geometry

        from postprocessing.io import FeatureWriter
    elif method == "gdal":
        from osgeo import gdal, ogr, osr  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    else:
        raise SystemExit(f"unknown method {method}")
    rss_imports = psutil.Process().memory_info().rss
    start = time.perf_counter()
    if method == "geomlops":
        count = vectorize_to_file(source, output, block_size=block_size, scheduler=scheduler, workers=workers)
    elif method == "rasterio":
        with rasterio.open(source) as ds:
            mask, transform, crs = ds.read(1), ds.transform, ds.crs.to_wkt()
        items = [
            (shapely.geometry.shape(g), int(v))
            for g, v in rasterio.features.shapes(mask, mask=mask != 0, connectivity=4, transform=transform)
        ]
        geoms = np.array([g for g, _ in items], dtype=object)
        with FeatureWriter(output, crs) as writer:
            writer.write(geoms, np.array([v for _, v in items], np.int64), shapely.area(geoms))
        count = len(items)
    else:
        count = _gdal_polygonize(source, output)
    seconds = time.perf_counter() - start
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    print(json.dumps({"seconds": seconds, "count": count, "rss_imports": rss_imports, "hwm": hwm}))


def _gdal_polygonize(source: str, output: str) -> int:
    from osgeo import gdal, ogr, osr  # type: ignore[import-not-found,unused-ignore]

    from postprocessing.io import FeatureWriter

    gdal.UseExceptions()
    ds = gdal.Open(source)
    band = ds.GetRasterBand(1)
    srs = osr.SpatialReference(wkt=ds.GetProjection())
    layer = ogr.GetDriverByName("Memory").CreateDataSource("mem").CreateLayer("p", srs=srs)
    layer.CreateField(ogr.FieldDefn("class", ogr.OFTInteger))
    gdal.Polygonize(band, band.GetMaskBand(), layer, 0, ["8CONNECTED=NO"])
    import shapely

    wkb = [bytes(f.GetGeometryRef().ExportToWkb()) for f in layer]
    classes = np.array([f.GetField(0) for f in layer], np.int64)
    geoms = shapely.from_wkb(wkb)
    with FeatureWriter(output, ds.GetProjection()) as writer:
        writer.write(geoms, classes, shapely.area(geoms))
    return len(wkb)


def measure(method: str, source: Path, output: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run one method in a subprocess; sample the RSS of its whole process tree every 5 ms.

    The list of child processes is refreshed every half second (listing them walks /proc, too
    costly to do at every sample on a small machine).
    """
    import psutil

    command = [sys.executable, __file__, "--run", method, "--input", str(source), "--output", str(output)]
    command += [
        "--block-size",
        str(args.block_size),
        "--scheduler",
        args.scheduler,
        "--workers",
        str(args.workers),
    ]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    parent, peak = psutil.Process(proc.pid), 0
    tree, listed = [parent], 0.0
    while proc.poll() is None:
        now = time.monotonic()
        try:
            if now - listed > 0.5:
                tree, listed = [parent, *parent.children(recursive=True)], now
            rss = 0
            for p in tree:
                with contextlib.suppress(psutil.Error):
                    rss += p.memory_info().rss
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.005)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{err}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["peak_mb"] = max(peak, result["hwm"]) / 2**20
    result["imports_mb"] = result.pop("rss_imports") / 2**20
    result["hwm_mb"] = result.pop("hwm") / 2**20
    return result


def baseline_fits(size: int) -> tuple[bool, str]:
    """Whether a whole-raster method fits in the memory available now, and why not."""
    import psutil

    need = size * size * BASELINE_BYTES_PER_PIXEL
    available = psutil.virtual_memory().available
    if need <= 0.6 * available:
        return True, ""
    return False, (
        f"needs about {need / 2**30:.0f} GB ({size}² bytes of band plus its polygons, "
        f"{BASELINE_BYTES_PER_PIXEL} B/px), {available / 2**30:.0f} GB available"
    )


def identical(a: Path, b: Path) -> bool:
    """Same polygons (normalized WKB) with the same classes, as sets."""
    import pyarrow.parquet as pq
    import shapely

    def key(path: Path) -> list[tuple[int, bytes]]:
        table = pq.read_table(path)
        geoms = shapely.normalize(shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False)))
        return sorted(zip(table["class"].to_pylist(), shapely.to_wkb(geoms).tolist(), strict=True))

    return key(a) == key(b)


def largest_polygon_mb(path: Path) -> float:
    """The WKB size of the largest polygon of a GeoParquet output (16 bytes a vertex), read
    batch by batch."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    largest = 0
    for batch in pq.ParquetFile(path).iter_batches(columns=["geometry"], batch_size=65536):
        largest = max(largest, pc.max(pc.binary_length(batch.column(0))).as_py() or 0)
    return largest / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384])
    parser.add_argument("--with-32k", action="store_true", help="also 32768² (needs ~5 GB for the baseline)")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=["rasterio", "gdal", "geomlops"],
        help="methods to run (default: all that import; whole-raster ones only where they fit)",
    )
    parser.add_argument("--block-size", type=int, default=2048)
    parser.add_argument("--scheduler", default="threads")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=1, help="runs per method; the fastest is reported")
    parser.add_argument("--keep", action="store_true", help="keep the output files (removed once compared)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "geomlops-bench")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_method(args.run, args.input, args.output, args.block_size, args.scheduler, args.workers)
        return
    methods = args.methods or ["rasterio", "gdal", "geomlops"]
    if "gdal" in methods:
        try:
            import osgeo  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
        except ImportError:
            methods = [m for m in methods if m != "gdal"]
            print("GDAL Polygonize: skipped, the osgeo Python bindings are not importable here")
    sizes = [*args.sizes, *([32768] if args.with_32k else [])]
    args.dir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f}; block {args.block_size}, ", end="")
    print(f"scheduler {args.scheduler}, workers {args.workers}")
    print("peak: whole-process RSS, sampled; start-up: RSS after imports; working: peak - start-up")
    columns = (
        ("size", 7),
        ("method", 9),
        ("seconds", 8),
        ("Mpx/s", 7),
        ("peak MB", 8),
        ("start-up MB", 11),
        ("working MB", 10),
        ("HWM MB", 7),
        ("x speed", 8),
        ("% peak", 6),
        ("% working", 9),
    )
    header = " ".join(f"{name:>{width}}" for name, width in columns)
    for size in sizes:
        source = args.dir / f"mask_{size}.tif"
        if not source.exists():
            start = time.perf_counter()
            generate_mask(source, size)
            print(f"generated {source} in {time.perf_counter() - start:.0f} s")
        results = {}
        for method in methods:
            if method != "geomlops":
                fits, why = baseline_fits(size)
                if not fits:
                    print(f"{size:>7} {method}: skipped, whole-raster vectorization {why}")
                    continue
            runs = [
                measure(method, source, args.dir / f"{method}_{size}.parquet", args)
                for _ in range(args.repeat)
            ]
            results[method] = min(runs, key=lambda r: r["seconds"]) | {
                "peak_mb": max(r["peak_mb"] for r in runs)
            }
        print(header)
        base = results.get("rasterio")
        for method, r in results.items():
            mpx = size * size / r["seconds"] / 1e6
            working = r["peak_mb"] - r["imports_mb"]
            ratios = "".join(
                [
                    f" {base['seconds'] / r['seconds']:>8.2f} {100 * r['peak_mb'] / base['peak_mb']:>6.0f}",
                    f" {100 * working / (base['peak_mb'] - base['imports_mb']):>9.0f}",
                ]
                if base
                else ""
            )
            print(
                f"{size:>7} {method:>9} {r['seconds']:>8.2f} {mpx:>7.1f} {r['peak_mb']:>8.0f} "
                f"{r['imports_mb']:>11.0f} {working:>10.0f} {r['hwm_mb']:>7.0f}{ratios}"
            )
        outputs = [args.dir / f"{method}_{size}.parquet" for method in results]
        for method in [m for m in results if m != "rasterio"]:
            count = results[method]["count"]
            largest = largest_polygon_mb(args.dir / f"{method}_{size}.parquet")
            print(f"{size:>7} {method}: largest polygon {largest:.0f} MB of WKB ({count} polygons)")
            if base is None:
                print(f"{size:>7} {method}: no whole-raster output to compare with")
                continue
            same = identical(args.dir / f"rasterio_{size}.parquet", args.dir / f"{method}_{size}.parquet")
            print(f"{size:>7} {method} output identical to rasterio's: {same} ({count} polygons)")
        if not args.keep:
            for path in outputs:
                path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
