"""Gateway latency: model search and run status through the gateway, beside the STAC API's own.

Loads N generated model items (default 10,000) into a fresh PgSTAC database served by
stac-fastapi-pgstac and into a static catalogue, writes R run states (default 100) in the
local runner's format, and serves two gateways over HTTP: one searching the STAC API (the
services profile's catalogue) and one walking the static catalogue (the embedded default). Then
it times, in one run, the same searches (items intersecting a bbox whose ``mlm:tasks`` hold a
task) on the STAC API directly and through each gateway, and run status (one run; the list of
all runs) through the gateway, and prints p50/p95 in a table with the ratio to the STAC API.

    .venv/bin/python benchmarks/gateway.py [--items 10000] [--runs 100] [--queries 30]

Needs PostgreSQL with PostGIS; the admin DSN comes from GEOMLOPS_BENCH_PG_ADMIN_DSN (default
postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catalog_search import ADMIN, make_items, make_queries

from catalog_sync.api import StacApiServer, mlm_filter, search
from catalog_sync.collections import MODELS
from catalog_sync.pgstac import PgStacStore, migrate
from catalog_sync.store import StaticCatalog
from geomlops.argo.runner.model import NodeState, RunState
from geomlops.argo.runner.state_file import STATE_FILE, state_json
from geomlops.gateway.app import create_app
from geomlops.gateway.auth import create_key
from geomlops.gateway.settings import GatewaySettings
from geomlops.ports import free_port
from geomlops.settings import Settings

TASK_NAMES = ("fetch-model", "resolve-dataset", "train", "evaluate", "register", "publish")


def write_runs(runs_dir: Path, count: int) -> list[str]:
    """``count`` finished runs of six tasks each, as the local runner leaves them."""
    ids = []
    for i in range(count):
        run_id = f"training-bench-{i:04d}"
        nodes = {
            name: NodeState(name, name, "Pod", "Succeeded", "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z")
            for name in TASK_NAMES
        }
        state = RunState(
            run_id, "geomlops-training", str(uuid.uuid4()), run_id, "Succeeded", "2026-01-01T00:00:00Z"
        )
        state.nodes = nodes
        (runs_dir / run_id).mkdir(parents=True)
        (runs_dir / run_id / STATE_FILE).write_text(state_json(state), encoding="utf-8")
        ids.append(run_id)
    return ids


def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p95 * 1000


def clock(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """Seconds one call took, and what it returned."""
    t0 = time.perf_counter()
    answer = call(*args, **kwargs)
    return time.perf_counter() - t0, answer


class Served:
    """A gateway under uvicorn in a thread, and a viewer's HTTP client."""

    def __init__(self, settings: Settings) -> None:
        app = create_app(settings, GatewaySettings())
        key = create_key(app.state.gateway.db, "bench", "viewer").token
        port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        import threading

        threading.Thread(target=self.server.run, daemon=True).start()
        while not self.server.started:
            time.sleep(0.05)
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=300
        )

    def get(self, path: str, **params: Any) -> Any:
        answer = self.client.get(path, params=params)
        answer.raise_for_status()
        return answer.json()

    def close(self) -> None:
        self.client.close()
        self.server.should_exit = True


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--static-queries", type=int, default=5, help="the static walk is slow")
    args = parser.parse_args(argv)

    items = make_items(args.items)
    queries = make_queries(args.queries)
    dbname = f"geomlops_bench_gw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    dsn = ADMIN.rsplit("/", 1)[0] + f"/{dbname}"
    rows: list[tuple[str, list[float]]] = []
    agree = 0
    try:
        migrate(dsn)
        with PgStacStore(dsn) as store:
            for start in range(0, len(items), 2000):
                store.put_items(MODELS, items[start : start + 2000])
        with tempfile.TemporaryDirectory() as tmp, StacApiServer(dsn) as api:
            static_home, api_home = Path(tmp) / "static", Path(tmp) / "api"
            StaticCatalog(static_home / "catalog" / "catalog.json").put_items(MODELS, items)
            run_ids = write_runs(api_home / "runs", args.runs)
            via_api = Served(Settings(home=api_home, pgstac_dsn=dsn, stac_api_url=api.url))
            via_static = Served(Settings(home=static_home))
            try:
                for served in (via_api, via_static):  # untimed: MLflow creates its database first
                    served.get("/api/v1/models", limit=1)
                direct: list[float] = []
                gateway: list[float] = []
                static: list[float] = []
                status: list[float] = []
                direct_answers, gateway_answers = [], []
                for bbox, task in queries:
                    seconds, found = clock(
                        search, api.url, bbox=bbox, filter=mlm_filter(tasks=[task]), collections=[MODELS]
                    )
                    direct.append(seconds)
                    direct_answers.append({i["id"] for i in found})
                    box = ",".join(f"{v:.6f}" for v in bbox)
                    seconds, answer = clock(via_api.get, "/api/v1/models", task=task, bbox=box, limit=1000)
                    gateway.append(seconds)
                    gateway_answers.append({m["id"] for m in answer})
                for (bbox, task), expected in list(zip(queries, direct_answers, strict=True))[
                    : args.static_queries
                ]:
                    box = ",".join(f"{v:.6f}" for v in bbox)
                    seconds, answer = clock(via_static.get, "/api/v1/models", task=task, bbox=box, limit=1000)
                    static.append(seconds)
                    agree += {m["id"] for m in answer} == expected
                agree += sum(a == b for a, b in zip(direct_answers, gateway_answers, strict=True))
                for i in range(args.queries):
                    status.append(clock(via_api.get, f"/api/v1/runs/{run_ids[i % len(run_ids)]}")[0])
                listing = [clock(via_api.get, "/api/v1/runs")[0] for _ in range(max(3, args.queries // 5))]
            finally:
                via_api.close()
                via_static.close()
        rows = [
            ("STAC API search (stac-fastapi-pgstac, direct)", direct),
            ("gateway model search (STAC API, services profile)", gateway),
            ("gateway model search (static catalogue, embedded)", static),
            ("gateway run status (one run, all tasks)", status),
            (f"gateway run list ({args.runs} runs)", listing),
        ]
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))

    base50 = percentiles(direct)[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"catalogue items: {args.items:,}; runs: {args.runs}; query: bbox 10°x10° + mlm:tasks")
    print("| what | requests | p50 ms | p95 ms | p50 / STAC API |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, samples in rows:
        p50, p95 = percentiles(samples)
        print(f"| {label} | {len(samples)} | {p50:.1f} | {p95:.1f} | {p50 / base50:.2f} |")
    total = len(queries) + min(args.static_queries, len(queries))
    print(f"same models as the STAC API's answer: {agree}/{total} searches")


if __name__ == "__main__":
    main()
