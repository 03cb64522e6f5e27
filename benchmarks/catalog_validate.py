"""Per-item validation time: a fresh validator per item (the old way) against the cached one.

Validates the MLM example items (``mlm-examples/item_*.json``) and fAIr's model items
(``fair-model-items/*.json``) of the shared data, offline, with the schemas of ``--schema-dir``,
both ways in one run and item by item in turn, so that both see the same load on the machine:

- fresh: a new ``StacValidator(fast=False)`` per item, which reads, crawls and resolves every
  schema the item needs and evaluates it with jsonschema alone, as ``validate_stac`` did before
  it cached anything;
- cached: ``validate_stac``, which shares one ``StacValidator`` per schema folder and decides
  "valid" with jsonschema-rs first. Its first pass over the examples (reading and compiling the
  schemas) is reported apart, as warm-up.

Prints mean, p50 and p95 milliseconds per item each way, their ratio, the time 10,000 items would
take, whether the goal (cached <= 20 ms per item) is met, and whether both ways gave the same
result for every item. Figures vary with the machine and its load: compare only one run's.

    .venv/bin/python benchmarks/catalog_validate.py [--items 240] [--schema-dir ../shared/schemas]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from catalog_sync.validation import StacValidator, validate_stac

REPO = Path(__file__).resolve().parents[1]
GOAL_MS = 20.0


def load_items(data_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """The example items of the shared data, by file name: MLM examples, then fAIr's items."""
    paths = sorted((data_dir / "mlm-examples").glob("item_*.json"))
    paths += sorted((data_dir / "fair-model-items").glob("*.json"))
    items = [(path.name, json.loads(path.read_text())) for path in paths]
    return [(name, item) for name, item in items if item.get("type") == "Feature"]


def timed(call: Any, *args: Any) -> tuple[float, float, Any]:
    """Wall and CPU milliseconds (this thread's) taken by ``call(*args)``, and what it returned."""
    gc.collect()  # each call pays for its own garbage, not for the other way's
    start, start_cpu = time.perf_counter(), time.thread_time()
    result = call(*args)
    return (time.perf_counter() - start) * 1000, (time.thread_time() - start_cpu) * 1000, result


def stats(samples: list[float]) -> tuple[float, float, float]:
    """Mean, p50 and p95 of milliseconds."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.fmean(ordered), statistics.median(ordered), p95


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=240, help="items validated each way (examples cycled)")
    parser.add_argument("--schema-dir", type=Path, default=REPO.parent / "shared" / "schemas")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    if not (args.schema_dir / "stac-extensions.github.io").is_dir():
        parser.error(f"no schemas stored by URL in {args.schema_dir}")
    examples = load_items(args.data_dir)
    if not examples:
        parser.error(f"no STAC items in {args.data_dir}/mlm-examples or fair-model-items")

    warmup = [timed(validate_stac, item, args.schema_dir)[:2] for _, item in examples]
    fresh: list[tuple[float, float]] = []
    cached: list[tuple[float, float]] = []
    same = 0
    for i in range(args.items):
        _, item = examples[i % len(examples)]
        *ms_fresh, old = timed(lambda doc: StacValidator(args.schema_dir, fast=False).validate(doc), item)
        *ms_cached, new = timed(validate_stac, item, args.schema_dir)
        fresh.append((ms_fresh[0], ms_fresh[1]))
        cached.append((ms_cached[0], ms_cached[1]))
        same += old == new

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}, "
        f"Python {platform.python_version()}"
    )
    print(f"items: {len(examples)} examples, {args.items} validations each way; schemas: {args.schema_dir}")
    print("ms: wall-clock milliseconds per item; CPU ms: this thread's CPU time (steadier under load)")
    print(f"{'validator':<28} {'items':>6} {'mean ms':>9} {'p50 ms':>9} {'p95 ms':>9} {'CPU ms':>9}")
    figures = {}
    for label, samples in [
        ("fresh per item (old)", fresh),
        ("cached (validate_stac)", cached),
        ("cached, first pass (warm-up)", warmup),
    ]:
        figures[label] = (*stats([wall for wall, _ in samples]), statistics.fmean(cpu for _, cpu in samples))
        cells = " ".join(f"{value:>9.1f}" for value in figures[label])
        print(f"{label:<28} {len(samples):>6} {cells}")
    old, new = figures["fresh per item (old)"], figures["cached (validate_stac)"]
    ratios = " ".join(f"{a / b:>8.1f}x" for a, b in zip(old, new, strict=True))
    print(f"{'ratio fresh/cached':<28} {'':>6} {ratios}")
    print(f"10,000 items, wall: fresh {old[0] * 10:.0f} s, cached {new[0] * 10:.0f} s")
    wall, cpu = new[0], new[3]
    verdict = "met" if max(wall, cpu) <= GOAL_MS else "met on CPU time only" if cpu <= GOAL_MS else "NOT met"
    print(
        f"goal: cached <= {GOAL_MS:.0f} ms per item (mean): {verdict} (wall {wall:.1f} ms, CPU {cpu:.1f} ms)"
    )
    print(f"same result both ways: {same}/{args.items} items")


if __name__ == "__main__":
    main()
