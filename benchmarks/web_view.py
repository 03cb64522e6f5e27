"""Bytes the web app's browser fetches for one view of a 1,000,000-polygon prediction.

Writes N square polygons (default 1,000,000, on a regular grid about 200 km wide in UTM zone
16N) to a GeoParquet and, with the predictions' own writer (postprocessing.tiles, at the
zoom levels of 10 m imagery), to a PMTiles archive. Then serves the
built web app (geomlops/gateway/web_dist) with Starlette's FileResponse for the archive (HTTP
Range, 206) and a stand-in of the few API reads the results page makes for that run (who am I,
config, the run, its lineage, the model), and opens the results page in Debian's chromium
(Playwright). It counts every byte the browser received for the archive: for the first view
(the whole extent, zoom fitted), then after a zoom into one detailed view, and after one pan
there; and the polygons in view as the page counts them (at the overview levels, cells count
the polygons they stand for), beside the archive's size and feature count.

    .venv/bin/python benchmarks/web_view.py [--features 1000000] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DIST = REPO / "geomlops" / "gateway" / "web_dist"
sys.path.insert(0, str(REPO / "tests" / "web"))
from conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

CRS = "EPSG:32616"
ORIGIN = (420_000.0, 3_300_000.0)  # UTM 16N, near the demo scene (Florida panhandle)
PIXEL = 10.0  # the imagery resolution the archive's zoom levels follow
RUN = "bench-run"
MODEL = "bench-model"


def write_predictions(folder: Path, count: int) -> tuple[Path, Path, float]:
    """GeoParquet + PMTiles of ``count`` 40 m squares on a grid; returns their paths and the
    seconds the PMTiles archive took to write."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    from postprocessing.tiles import write_prediction_tiles, zoom_range

    side = math.ceil(math.sqrt(count))
    index = np.arange(count)
    col, row = index % side, index // side
    x0 = ORIGIN[0] + col * 200.0
    y0 = ORIGIN[1] + row * 200.0
    boxes = shapely.box(x0, y0, x0 + 40.0, y0 + 40.0)
    table = pa.table(
        {
            "class": pa.array((index % 2 + 1).astype("int32")),
            "area": pa.array(np.full(count, 1600.0)),
            "block_id": pa.array(
                [f"{r // 64}-{c // 64}" for r, c in zip(row.tolist(), col.tolist(), strict=True)]
            ),
            "geometry": pa.array(shapely.to_wkb(boxes), pa.binary()),
        }
    )
    parquet = folder / "predictions.parquet"
    pq.write_table(table, parquet, row_group_size=100_000)
    zooms = zoom_range(CRS, (PIXEL, 0.0, ORIGIN[0], 0.0, -PIXEL, ORIGIN[1]), side * 20, side * 20)
    started = time.perf_counter()
    tiles = write_prediction_tiles(
        parquet, folder / "predictions.pmtiles", crs=CRS, zooms=zooms, class_names={1: "a", 2: "b"}
    )
    return parquet, tiles.path, time.perf_counter() - started


def app(archive: Path) -> Any:
    """The built web app, the archive by ranges, and the results page's other reads."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    run = {
        "run_id": RUN,
        "pipeline": "batch-inference",
        "phase": "Succeeded",
        "started": None,
        "finished": None,
        "message": "",
        "submitted_by": "bench",
        "parameters": {"model": MODEL, "model_version": "1"},
        "progress": "1/1",
        "tasks": [],
        "outputs": {},
        "waiting_gate": None,
    }
    answers: dict[str, Any] = {
        "whoami": {"key_id": "bench", "name": "bench", "role": "viewer"},
        "config": {"basemap_url": None, "version": "bench"},
        f"runs/{RUN}": run,
        f"runs/{RUN}/lineage": {"run_id": RUN, "model": MODEL, "model_version": "1", "mlflow_run_id": "x"},
        f"models/{MODEL}": {"id": MODEL, "versions": ["1"], "aliases": {}, "item": {}, "version_details": []},
    }

    async def api(request: Any) -> Any:
        path = request.path_params["path"]
        if path == f"runs/{RUN}/predictions.pmtiles":
            return FileResponse(archive, media_type="application/vnd.pmtiles")
        return JSONResponse(answers[path]) if path in answers else JSONResponse({"detail": path}, 404)

    async def index(request: Any) -> Any:
        return FileResponse(DIST / "index.html")

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/v1/{path:path}", api),
            Mount("/app", StaticFiles(directory=DIST)),
        ]
    )


def measure(archive: Path) -> dict[str, Any]:
    import uvicorn
    from playwright.sync_api import sync_playwright

    from geomlops.ports import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app(archive), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    fetched: list[tuple[str, int]] = []
    idle = (
        "() => { const m = window.geomlopsMap; return !!m && !!m.getLayer('predictions-fill')"
        " && m.loaded() && m.areTilesLoaded() && !m.isMoving(); }"
    )
    # the polygons in view as the page counts them: those drawn whole and, at the overview
    # levels, those the cells stand for
    rendered = "() => Number(document.querySelector('.in-view')?.dataset.count ?? -1)"
    out: dict[str, Any] = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()

            def finished(request: Any) -> None:
                sizes = request.sizes()
                fetched.append((request.url, sizes["responseBodySize"] + sizes["responseHeadersSize"]))

            page.on("requestfinished", finished)
            page.goto(f"{url}/")
            page.evaluate("k => sessionStorage.setItem('geomlops.apiKey', k)", "bench")
            started = time.perf_counter()
            page.goto(f"{url}/#/results/{RUN}")
            page.reload()
            page.wait_for_function(idle, timeout=300_000)
            page.wait_for_timeout(300)
            page.wait_for_function(idle, timeout=300_000)

            def step(name: str, seconds: float) -> None:
                tiles = [n for u, n in fetched if u.endswith(".pmtiles")]
                out[name] = {
                    "requests": len(tiles),
                    "bytes": sum(tiles),
                    "all_bytes": sum(n for _, n in fetched),
                    "zoom": page.evaluate("window.geomlopsMap.getZoom()"),
                    "polygons": page.evaluate(rendered),
                    "seconds": seconds,
                }
                fetched.clear()

            step("first view (whole extent)", time.perf_counter() - started)
            for name, move in (
                ("zoom into one detailed view", "m => m.jumpTo({zoom: 13})"),
                ("pan by one screen", "m => m.panBy([1400, 0], {animate: false})"),
            ):
                started = time.perf_counter()
                page.evaluate(f"({move})(window.geomlopsMap)")
                page.wait_for_function(idle, timeout=300_000)
                page.wait_for_timeout(300)
                page.wait_for_function(idle, timeout=300_000)
                step(name, time.perf_counter() - started)
            browser.close()
    finally:
        server.should_exit = True
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--features", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, help="folder for the files (default: a scratch folder)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    args = parser.parse_args(argv)
    if args.features < 1:
        parser.error("--features: expected a positive count")
    if not (DIST / "index.html").is_file():
        parser.error(f"{DIST}: no built web app (make web)")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-web-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        parquet, archive, write_s = write_predictions(work, args.features)
        sizes = (parquet.stat().st_size, archive.stat().st_size)
        views = measure(archive)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"# web app: bytes fetched per view ({platform.node()}, Python {platform.python_version()})")
    print(
        f"features {args.features:,}; GeoParquet {sizes[0]:,} B; "
        f"PMTiles {sizes[1]:,} B (written in {write_s:.1f} s)"
    )
    head = ("view", "zoom", "requests", "archive bytes", "of archive", "polygons", "s")
    print(f"{head[0]:32} {head[1]:>5} {head[2]:>8} {head[3]:>14} {head[4]:>10} {head[5]:>9} {head[6]:>6}")
    for name, v in views.items():
        share = v["bytes"] / sizes[1]
        row = f"{name:32} {v['zoom']:5.1f} {v['requests']:8d} {v['bytes']:14,} {share:10.2%}"
        print(f"{row} {v['polygons']:9,} {v['seconds']:6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
