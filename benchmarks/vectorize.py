"""Benchmark: block-wise vectorization against whole-raster polygonize, on generated masks.

    python benchmarks/vectorize.py                  # 8k² and 16k²
    python benchmarks/vectorize.py --with-32k       # and 32k²
    python benchmarks/vectorize.py --sizes 4096 --block-size 1024 --scheduler synchronous

Masks (uint8 GeoTIFF, nodata 0, UTM) hold many small buildings (class 1, a fifth with a courtyard),
rough flood regions with islands (class 2) and a river (class 2) that snakes through every block.
Each method runs in its own subprocess, from the GeoTIFF to a GeoParquet file:

- ``rasterio``: the whole band read at once, ``rasterio.features.shapes`` (GDAL polygonize,
  4-connectivity), each GeoJSON-like dict turned into shapely (``shapely.geometry.shape``);
- ``gdal``: ``gdal.Polygonize`` into an in-memory layer, when the ``osgeo`` bindings import;
- ``geomlops``: ``postprocessing.vectorize.vectorize_to_file`` (blocks, Dask, streaming merge).

Both write through the same GeoParquet writer. Reported: wall time of the work (imports done
before the clock starts), throughput, peak resident memory of the process tree (sampled every
5 ms, children included) and the same after imports alone, ratios to the baseline, and whether
the outputs are identical (normalized WKB and class of every polygon). Figures vary with the
machine and its load: run it on a quiet machine, and compare only figures from one run.
"""

from __future__ import annotations

import argparse
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
STRIP = 1536  # rows generated at a time (a multiple of the building cell)
CELL = 24  # one building at most per CELL x CELL cell


def _coarse(height: int, width: int, cell: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((height // cell + 3, width // cell + 3)).astype(np.float32)


def _upsample(field: np.ndarray, cell: int, r0: int, r1: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a coarse random field over rows r0:r1 (strips join seamlessly)."""
    rows = (np.arange(r0, r1) + 0.5) / cell
    cols = (np.arange(width) + 0.5) / cell
    i, j = rows.astype(np.int64), cols.astype(np.int64)
    fy, fx = (rows - i).astype(np.float32)[:, None], (cols - j).astype(np.float32)
    top = field[i][:, j] + (field[i][:, j + 1] - field[i][:, j]) * fx
    bottom = field[i + 1][:, j] + (field[i + 1][:, j + 1] - field[i + 1][:, j]) * fx
    return top + (bottom - top) * fy


def generate_mask(path: Path, size: int, seed: int = 1, river_spacing: int = 1024) -> None:
    """Write a ``size`` x ``size`` benchmark mask, strip by strip (memory stays small)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    fields = [
        (_coarse(size, size, c, seed + k), c, w)
        for k, (c, w) in enumerate([(512, 0.75), (64, 0.2), (8, 0.05)])
    ]
    n_cells = size // CELL
    present = rng.random((n_cells, n_cells)) < 0.5
    shape = rng.integers(5, 21, (n_cells, n_cells, 2))
    shift = rng.integers(0, 3, (n_cells, n_cells, 2))
    courtyard = rng.random((n_cells, n_cells)) < 0.2
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
    with rasterio.open(path, "w", **profile) as ds:
        for r0 in range(0, size, STRIP):
            r1 = min(size, r0 + STRIP)
            flood = sum(_upsample(f, c, r0, r1, size) * w for f, c, w in fields)
            strip = np.where(flood > 0.6, 2, 0).astype(np.uint8)
            for ci in range(r0 // CELL, min(n_cells, -(-r1 // CELL))):
                for cj in np.flatnonzero(present[ci]).tolist():
                    (h, w), (dy, dx) = shape[ci, cj], shift[ci, cj]
                    y, x = ci * CELL + dy - r0, cj * CELL + dx
                    strip[y : y + h, x : x + w] = 1
                    if courtyard[ci, cj] and h > 10 and w > 10:
                        strip[y + 3 : y + h - 3, x + 3 : x + w - 3] = 0
            for k, row in enumerate(river_rows.tolist()):
                for d in range(14):  # a meandering river, 14 px wide
                    rr = row + centre + d
                    inside = (rr >= r0) & (rr < r1)
                    strip[rr[inside] - r0, cols[inside]] = 2
                if k + 1 < len(river_rows):  # joined alternately at the right and left ends
                    c = size - 40 if k % 2 == 0 else 10
                    lo, hi = max(r0, row), min(r1, int(river_rows[k + 1]) + 14)
                    if lo < hi:
                        strip[lo - r0 : hi - r0, c : c + 14] = 2
            ds.write(strip, 1, window=Window(0, r0, size, r1 - r0))


def run_method(method: str, source: str, output: str, block_size: int, scheduler: str, workers: int) -> None:
    """Child process: one method, from the GeoTIFF to GeoParquet; prints its figures as JSON."""
    import psutil
    import pyarrow.compute
    import pyarrow.parquet as pq
    import rasterio
    import rasterio.features
    import shapely
    import shapely.geometry

    from postprocessing.io import FeatureWriter
    from postprocessing.vectorize import vectorize_to_file

    del pq, pyarrow.compute  # imported to warm pyarrow's lazy imports before the clock starts
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
    elif method == "gdal":
        count = _gdal_polygonize(source, output)
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "count": count, "rss_imports": rss_imports}))


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
    """Run one method in a subprocess; sample the RSS of its whole process tree."""
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
    while proc.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.005)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{err}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["peak_mb"] = peak / 2**20
    result["imports_mb"] = result.pop("rss_imports") / 2**20
    return result


def identical(a: Path, b: Path) -> bool:
    """Same polygons (normalized WKB) with the same classes, as sets."""
    import pyarrow.parquet as pq
    import shapely

    def key(path: Path) -> list[tuple[int, bytes]]:
        table = pq.read_table(path)
        geoms = shapely.normalize(shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False)))
        return sorted(zip(table["class"].to_pylist(), shapely.to_wkb(geoms).tolist(), strict=True))

    return key(a) == key(b)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384])
    parser.add_argument("--with-32k", action="store_true", help="also 32768² (needs ~5 GB for the baseline)")
    parser.add_argument("--block-size", type=int, default=2048)
    parser.add_argument("--scheduler", default="threads")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=1, help="runs per method; the fastest is reported")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "geomlops-bench")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_method(args.run, args.input, args.output, args.block_size, args.scheduler, args.workers)
        return
    try:
        import osgeo  # type: ignore[import-not-found,unused-ignore]  # noqa: F401

        methods = ["rasterio", "gdal", "geomlops"]
    except ImportError:
        methods = ["rasterio", "geomlops"]
        print("GDAL Polygonize: skipped, the osgeo Python bindings are not importable here")
    sizes = [*args.sizes, *([32768] if args.with_32k else [])]
    args.dir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f}; block {args.block_size}, ", end="")
    print(f"scheduler {args.scheduler}, workers {args.workers}")
    columns = ("size", 7), ("method", 9), ("seconds", 8), ("Mpx/s", 7), ("peak MB", 8), ("imports MB", 10)
    header = " ".join(f"{name:>{width}}" for name, width in (*columns, ("x speed", 8), ("% mem", 6)))
    for size in sizes:
        source = args.dir / f"mask_{size}.tif"
        if not source.exists():
            start = time.perf_counter()
            generate_mask(source, size)
            print(f"generated {source} in {time.perf_counter() - start:.0f} s")
        results = {}
        for method in methods:
            runs = [
                measure(method, source, args.dir / f"{method}_{size}.parquet", args)
                for _ in range(args.repeat)
            ]
            results[method] = min(runs, key=lambda r: r["seconds"]) | {
                "peak_mb": max(r["peak_mb"] for r in runs)
            }
        print(header)
        base = results["rasterio"]
        for method, r in results.items():
            mpx = size * size / r["seconds"] / 1e6
            speed, memory = base["seconds"] / r["seconds"], 100 * r["peak_mb"] / base["peak_mb"]
            print(
                f"{size:>7} {method:>9} {r['seconds']:>8.2f} {mpx:>7.1f} {r['peak_mb']:>8.0f} "
                f"{r['imports_mb']:>10.0f} {speed:>8.2f} {memory:>6.0f}"
            )
        for method in methods[1:]:
            same = identical(args.dir / f"rasterio_{size}.parquet", args.dir / f"{method}_{size}.parquet")
            count = results[method]["count"]
            print(f"{size:>7} {method} output identical to rasterio's: {same} ({count} polygons)")


if __name__ == "__main__":
    main()
