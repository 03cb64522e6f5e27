"""Benchmark: batch inference end to end against the model's own prediction time, on the demo.

    geomlops demo                                   # once: trains the demo model in $GEOMLOPS_HOME
    python benchmarks/batch_inference.py            # the real demo scene (603 x 627 px)
    python benchmarks/batch_inference.py --size 1800 --block-size 450   # the scene tiled 3 x 3
    python benchmarks/batch_inference.py --home /tmp/demo --no-workflow  # in-process stages only

It uses the demo's model (``models:/cloud-mask/1``, a pyfunc taking ``(1, 10, h, w)`` float32)
and the demo's real Landsat-8 scene from the work folder (``datasets/*/image.tif``), cropped or
tiled to ``--size`` pixels a side when asked. On the blocks the batch-inference workflow plans,
it measures in one run:

- **model**: ``model.predict`` on every block's array already in memory, without and with the
  halo (the model's own time; the first is the reference of every ratio);
- **stages in one process**: reading the blocks with their halo (IO); the predict step
  (``steps.batch.predict_group``: load the model, read with halo, predict, crop, write the block);
  assembling the mask; publishing (``steps.predictions.publish_predictions``: seam-free
  vectorization and merge on Dask threads, GeoParquet, GeoJSON, quicklook, STAC item);
- **scaling from 1 to 2 workers**, the way the workflow really runs: the batch-inference
  WorkflowTemplate through the local runner (``geomlops run --workers N``: group tasks fan out
  as processes), and the publish step's Dask threads (1 and 2 workers).

The outputs of every run are compared byte for byte. Figures vary with the machine and its load:
compare only figures from one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("predictions.parquet", "predictions.geojson")


def machine() -> str:
    """CPU model, CPU count, memory and load: what the figures depend on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{kib / 1024**2:.0f} GiB"
    except (OSError, StopIteration):
        memory = "unknown memory"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{platform.machine()}, {cpu}, {usable} CPUs usable, {memory}, load average {load}"


def scene_imagery(home: Path, size: int | None, folder: Path) -> Path:
    """The demo's scene, or the scene cropped or tiled (mirrored, so no seams) to ``size`` px."""
    import rasterio

    [scene] = sorted((home / "datasets").glob("*/image.tif"))
    if size is None:
        return scene
    with rasterio.open(scene) as src:
        data, profile = src.read(), src.profile
    reps = -(-size // min(data.shape[1:]))
    rows = [np.concatenate([data if j % 2 == 0 else data[:, :, ::-1] for j in range(reps)], axis=2)]
    for i in range(1, reps):
        rows.append(rows[0][:, ::-1] if i % 2 else rows[0])
    tiled = np.concatenate(rows, axis=1)[:, :size, :size]
    profile.update(height=size, width=size, tiled=True, blockxsize=256, blockysize=256)
    path = folder / f"scene-{size}.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(tiled)
    return path


def _timed(func: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = func(*args, **kwargs)
    return time.perf_counter() - start, result


def model_time(model: Any, plan: Any, halo: int) -> dict[str, float]:
    """``model.predict`` on the blocks' arrays in memory, without and with the halo; the read."""
    import rasterio
    from rasterio.windows import Window

    blocks = [b for g in plan.groups for b in g]
    start = time.perf_counter()
    arrays = []
    with rasterio.open(plan.imagery) as src:
        for b in blocks:  # as steps.predict.predict_block reads them
            window = Window(b.col_off - halo, b.row_off - halo, b.width + 2 * halo, b.height + 2 * halo)
            data = src.read(window=window, boundless=True, masked=True)
            arrays.append(np.ma.filled(data, 0).astype("float32")[None])
    read = time.perf_counter() - start
    cores = [
        np.ascontiguousarray(a[:, :, halo : a.shape[2] - halo, halo : a.shape[3] - halo]) for a in arrays
    ]

    def run(batches: list[np.ndarray]) -> float:
        start = time.perf_counter()
        for batch in batches:
            model.predict(batch)
        return time.perf_counter() - start

    return {"core": run(cores), "halo": run(arrays), "read": read}


def in_process(uri: str, plan: Any, folder: Path, halo: int, lineage: Any, catalog: str) -> dict[str, float]:
    """The workflow's steps one after the other in this process; publish on 1, then 2 threads."""
    from steps.batch import assemble_mask, predict_group, save_plan
    from steps.predictions import publish_predictions

    save_plan(plan, folder)
    predict = sum(_timed(predict_group, uri, plan, list(g), folder, halo=halo)[0] for g in plan.groups)
    assemble, mask = _timed(assemble_mask, plan, folder)
    publish = {}
    for workers, out in ((1, folder), (2, folder / "two-threads")):
        out.mkdir(exist_ok=True)
        publish[workers], _ = _timed(
            publish_predictions, mask, out, plan, lineage, area=folder.name, catalog=catalog, workers=workers
        )
    return {"predict": predict, "assemble": assemble, "publish": publish[1], "publish2": publish[2]}


def workflow(
    workers: int, args: argparse.Namespace, imagery: Path, folder: Path, env: dict[str, str]
) -> float:
    """Wall time of ``geomlops run batch-inference --workers N`` (the local runner)."""
    params = {
        "model": args.model,
        "model_version": args.model_version,
        "imagery": str(imagery),
        "area": folder.name,
        "block_size": str(args.block_size),
        "group_size": str(args.group_size),
        "halo": str(args.halo),
        "output": str(folder),
    }
    cmd = [str(Path(sys.executable).parent / "geomlops"), "run", "batch-inference", "--workers", str(workers)]
    for k, v in params.items():
        cmd += ["-p", f"{k}={v}"]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=args.home, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(
            f"batch-inference with {workers} worker(s) failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return seconds


def same_outputs(folders: list[Path]) -> bool:
    """Whether every folder holds the same GeoParquet and GeoJSON bytes."""
    first = [(folders[0] / name).read_bytes() for name in OUTPUTS]
    return all([(f / name).read_bytes() for name in OUTPUTS] == first for f in folders[1:])


def table(rows: list[tuple[str, float | None, str]], pixels: int, reference: float) -> str:
    """Markdown rows: what, seconds, Mpx/s, ratio to the model's own time (or a note)."""
    out = ["| what | seconds | Mpx/s | × model time |", "| --- | --- | --- | --- |"]
    for name, seconds, note in rows:
        if seconds is None:
            out.append(f"| {name} | | | {note} |")
            continue
        ratio = note or f"{seconds / reference:.2f}"
        out.append(f"| {name} | {seconds:.3f} | {pixels / seconds / 1e6:.2f} | {ratio} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--home", type=Path, default=None, help="work folder of `geomlops demo` (default: $GEOMLOPS_HOME)"
    )
    parser.add_argument("--size", type=int, default=None, help="crop or tile the scene to SIZE px a side")
    parser.add_argument("--block-size", type=int, default=160)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--halo", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of measurements (the fastest is kept)")
    parser.add_argument("--model", default="cloud-mask")
    parser.add_argument("--model-version", default="1")
    parser.add_argument("--no-workflow", action="store_true", help="skip the local-runner runs")
    parser.add_argument(
        "--model-threads", type=int, default=None, help="OpenMP threads of the model (default: its own)"
    )
    args = parser.parse_args()
    home = args.home or (Path(os.environ["GEOMLOPS_HOME"]) if os.environ.get("GEOMLOPS_HOME") else None)
    if home is None or not (home / "datasets").is_dir():
        raise SystemExit("no demo work folder: run `geomlops demo`, then pass --home or set GEOMLOPS_HOME")
    args.home = home = home.resolve()
    os.environ["GEOMLOPS_HOME"] = str(home)
    if args.model_threads:  # before the model's libraries load; the workflow's tasks inherit it
        os.environ["OMP_NUM_THREADS"] = str(args.model_threads)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}

    import geopandas  # noqa: F401  (imports before any clock starts)
    import matplotlib.pyplot  # noqa: F401
    import mlflow
    import pyarrow.parquet  # noqa: F401

    import postprocessing.vectorize  # noqa: F401
    from geomlops.settings import get_settings
    from steps.batch import plan_batch
    from steps.predictions import resolve_version

    settings = get_settings()
    mlflow.set_tracking_uri(settings.tracking_uri)
    lineage = resolve_version(args.model, args.model_version)
    uri = f"models:/{lineage.model}/{lineage.model_version}"
    print(f"machine: {machine()}; OpenMP threads: {os.environ.get('OMP_NUM_THREADS', 'default')}")
    with tempfile.TemporaryDirectory(prefix="bench-batch-", dir=home) as tmp:
        work = Path(tmp)
        imagery = scene_imagery(home, args.size, work)
        plan = plan_batch(str(imagery), None, block_size=args.block_size, group_size=args.group_size)
        pixels = plan.width * plan.height
        n_blocks = sum(len(g) for g in plan.groups)
        print(
            f"scene: {imagery.name} {plan.width} x {plan.height} px ({pixels / 1e6:.2f} Mpx), "
            f"{n_blocks} blocks of {args.block_size} px in {len(plan.groups)} groups, halo {args.halo} px"
        )
        load, model = _timed(mlflow.pyfunc.load_model, uri)
        model.predict(np.zeros((1, 10, 64, 64), np.float32))  # warm-up
        in_process(uri, plan, work / "warm-up", args.halo, lineage, settings.catalog_href)
        rounds: list[dict[str, float]] = []
        folders: list[Path] = []
        for r in range(args.repeat):  # the least disturbed of the rounds: the machine may be shared
            folder = work / f"in-process-{r}"
            times = model_time(model, plan, args.halo)
            times.update(in_process(uri, plan, folder, args.halo, lineage, settings.catalog_href))
            if not args.no_workflow:
                for n in (1, 2):
                    times[f"workflow{n}"] = workflow(n, args, imagery, work / f"workflow-{n}-{r}", env)
                    folders.append(work / f"workflow-{n}-{r}")
            rounds.append(times)
            folders += [folder, folder / "two-threads"]
        best = {key: min(t[key] for t in rounds) for key in rounds[0]}
        core = best["core"]
        total = best["predict"] + best["assemble"] + best["publish"]
        rows: list[tuple[str, float | None, str]] = [
            ("model.predict on the blocks in memory (no halo)", core, ""),
            (f"model.predict on the blocks with their {args.halo} px halo", best["halo"], ""),
            ("read the blocks with their halo (IO)", best["read"], ""),
            ("load the model once (MLflow pyfunc)", load, ""),
            ("predict step: per group load, read, predict, crop, write blocks", best["predict"], ""),
            ("assemble the mask", best["assemble"], ""),
            ("publish: vectorize, merge, GeoParquet, GeoJSON, quicklook, item", best["publish"], ""),
            ("end to end, steps in one process", total, ""),
            (
                "publish on 2 Dask threads (vs 1)",
                best["publish2"],
                f"speedup {best['publish'] / best['publish2']:.2f}×",
            ),
        ]
        if not args.no_workflow:
            one, two = best["workflow1"], best["workflow2"]
            rows += [
                ("workflow through the local runner, 1 worker", one, ""),
                ("workflow through the local runner, 2 workers", two, f"speedup {one / two:.2f}×"),
            ]
        print(f"fastest of {args.repeat} round(s), after a warm-up round")
        print(table(rows, pixels, core))
        io, halo = best["read"] / core, best["halo"] / core - 1
        print(
            f"overhead over the model's own time: IO {io:.2f}×, halo {halo:+.0%}, "
            f"vectorization (publish) {best['publish'] / core:.2f}×, end to end {total / core:.2f}×"
        )
        print(f"identical outputs in every run: {'yes' if same_outputs(folders) else 'NO'}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
