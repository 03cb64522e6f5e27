"""Search latency: the STAC API on PgSTAC against walking the static catalogue.

Loads N generated model-version items (default 10,000) into a fresh PgSTAC database and into a
static catalogue, then answers the same question both ways — items intersecting a bbox whose
``mlm:tasks`` hold a task — and prints p50/p95 latencies and their ratio, and checks that both
ways give the same answer.

    .venv/bin/python benchmarks/catalog_search.py [--items 10000] [--queries 30]

Needs a PostgreSQL server with PostGIS (``.ci/install-postgis.sh``); the admin DSN comes from
GEOMLOPS_BENCH_PG_ADMIN_DSN (default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from catalog_sync.api import StacApiServer, mlm_filter, search
from catalog_sync.pgstac import PgStacStore, migrate
from catalog_sync.store import StaticCatalog

TASKS = ["semantic-segmentation", "object-detection", "scene-classification", "instance-segmentation"]
FRAMEWORKS = ["PyTorch", "scikit-learn", "TensorFlow", "ONNX"]
ADMIN = os.environ.get("GEOMLOPS_BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def make_items(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """n model-version items spread over the land-ish latitudes, each a few degrees wide."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        w, s = float(rng.uniform(-170, 165)), float(rng.uniform(-50, 65))
        e, n_ = w + float(rng.uniform(0.1, 5)), s + float(rng.uniform(0.1, 5))
        task = TASKS[int(rng.integers(len(TASKS)))]
        ring = [[w, s], [e, s], [e, n_], [w, n_], [w, s]]
        items.append(
            {
                "type": "Feature",
                "stac_version": "1.1.0",
                "stac_extensions": [],
                "id": f"model-{i // 10:04d}-v{i % 10 + 1}",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "bbox": [w, s, e, n_],
                "properties": {
                    "datetime": f"2026-{1 + i % 12:02d}-01T00:00:00Z",
                    "description": f"generated model version {i}",
                    "mlm:name": f"model-{i // 10:04d}",
                    "mlm:tasks": [task],
                    "mlm:framework": FRAMEWORKS[i % len(FRAMEWORKS)],
                    "mlm:accelerator": "amd64",
                },
                "assets": {},
                "links": [],
            }
        )
    return items


def make_queries(n: int, seed: int = 11) -> list[tuple[list[float], str]]:
    """``n`` searches: a random 10° box and one of :data:`TASKS` each (the same for a seed)."""
    rng = np.random.default_rng(seed)
    queries = []
    for _ in range(n):
        w, s = float(rng.uniform(-160, 150)), float(rng.uniform(-40, 50))
        queries.append(([w, s, w + 10, s + 10], TASKS[int(rng.integers(len(TASKS)))]))
    return queries


def walk_static(root: Path, bbox: list[float], task: str) -> set[str]:
    """The answer without an API: read every item of the catalogue with pystac and filter."""
    import pystac

    catalog = pystac.Catalog.from_file(str(root))
    w, s, e, n = bbox
    found = set()
    for item in catalog.get_items(recursive=True):
        bw, bs, be, bn = item.bbox or (0, 0, 0, 0)
        if bw <= e and be >= w and bs <= n and bn >= s and task in item.properties.get("mlm:tasks", []):
            found.add(item.id)
    return found


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p95 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--static-queries", type=int, default=5, help="the static walk is slow")
    args = parser.parse_args()

    items = make_items(args.items)
    queries = make_queries(args.queries)

    dbname = f"geomlops_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    dsn = ADMIN.rsplit("/", 1)[0] + f"/{dbname}"
    try:
        migrate(dsn)
        t0 = time.perf_counter()
        with PgStacStore(dsn) as store:
            for start in range(0, len(items), 2000):
                store.put_items("model-versions", items[start : start + 2000])
        load_pg = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "catalog.json"
            t0 = time.perf_counter()
            StaticCatalog(root).put_items("model-versions", items)
            load_static = time.perf_counter() - t0
            with StacApiServer(dsn) as server:
                api_times, api_answers = [], []
                for bbox, task in queries:
                    t0 = time.perf_counter()
                    found = search(
                        server.url, bbox=bbox, filter=mlm_filter(tasks=[task]), collections=["model-versions"]
                    )
                    api_times.append(time.perf_counter() - t0)
                    api_answers.append({i["id"] for i in found})
            static_times, agree = [], 0
            for (bbox, task), api_answer in list(zip(queries, api_answers, strict=True))[
                : args.static_queries
            ]:
                t0 = time.perf_counter()
                answer = walk_static(root, bbox, task)
                static_times.append(time.perf_counter() - t0)
                agree += answer == api_answer
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))

    api50, api95 = percentiles(api_times)
    st50, st95 = percentiles(static_times)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"items: {args.items:,}; load: PgSTAC {load_pg:.1f} s, static catalogue {load_static:.1f} s")
    print(
        f"query: bbox 10°x10° + mlm:tasks filter; "
        f"{len(api_times)} API queries, {len(static_times)} static walks"
    )
    print(f"STAC API (stac-fastapi-pgstac): p50 {api50:8.1f} ms   p95 {api95:8.1f} ms")
    print(f"static walk (pystac):           p50 {st50:8.1f} ms   p95 {st95:8.1f} ms")
    print(f"ratio static/API:               p50 {st50 / api50:8.1f} x   p95 {st95 / api95:8.1f} x")
    print(f"same answer both ways: {agree}/{min(args.static_queries, len(queries))} queries")


if __name__ == "__main__":
    main()
