"""Benchmark: batch inference end to end against the model's own predict throughput.

    geomlops demo                                              # once: trains models:/cloud-mask/1
    python benchmarks/batch_inference.py --home ~/geomlops-demo               # 4096² px scene
    python benchmarks/batch_inference.py --home H --model buildings --imagery drone.tif --size 4096
    python benchmarks/batch_inference.py --home H --size 200 --block-size 100   # a quick look

Takes any registered model (``--model``, ``--model-version``) with its MLM item in the work
folder's catalogue, and imagery (``--imagery``; default: the demo's Landsat-8 scene from the
work folder, ``datasets/*/image.tif``) tiled, mirrored so no seam appears, to ``--size`` px a
side (default 4096: 16.8 Mpx). On the blocks the batch-inference workflow plans it measures:

- **model**: the package-environment worker predicting the prepared blocks (read, scaled, with
  their halo, batched as the predict step batches them) back to back: the model's own time,
  the reference of every ratio;
- **stages, one at a time**: reading and preparing the blocks; turning the model's answers into
  class values, writing the blocks and tracing their polygon pieces, in one thread (as beside a
  model on the CPU) and in as many as there are usable CPUs, up to the most a predict step uses
  beside a model on a GPU (``steps.batch.MAX_THREADS_BESIDE``);
- **end to end**: the predict step (``steps.batch.predict_group`` per group: start the worker,
  load the model, read ahead, predict, write and trace while the next batch is predicted), then
  assembling the mask and publishing (``steps.predictions.publish_predictions``: merge across
  block edges, GeoParquet, GeoJSON, quicklook, STAC item);
- **the workflow** (unless ``--no-workflow``), once: ``geomlops run batch-inference`` on the same
  scene, blocks and groups, as a user runs it on one machine: every task a process of its own
  in its sandbox (plan, predict, publish), each importing what it needs and the predict tasks
  each starting the model's worker.

It prints the throughputs, their ratio (goal >= 0.8) and the per-stage times, and the CPU time
the model and the whole run used (this process and its children, the worker among them): spread
over the usable cores, the whole run's CPU work gives the least time it can take here, so the
highest ratio this machine allows for it (where a CPU model keeps every core busy, everything
else the run does adds to the time). Of ``--repeat`` rounds, each measuring the model and then
the whole run, the fastest is shown whole, with every round's ratio. The outputs of the rounds
are compared byte for byte. Figures vary with the machine and its load: compare only figures
from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("predictions.parquet", "predictions.geojson")
#: the area the workflow's run publishes its predictions item under
WORKFLOW_AREA = "benchmark-workflow"


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


def scene_imagery(source: Path, size: int | None, folder: Path) -> Path:
    """``source``, or it cropped or tiled (mirrored, so no seams) to ``size`` px a side."""
    import rasterio

    if size is None:
        return source
    with rasterio.open(source) as src:
        data, profile, descriptions = src.read(), src.profile, src.descriptions
    reps = -(-size // min(data.shape[1:]))
    rows = [np.concatenate([data if j % 2 == 0 else data[:, :, ::-1] for j in range(reps)], axis=2)]
    for i in range(1, reps):
        rows.append(rows[0][:, ::-1] if i % 2 else rows[0])
    tiled = np.concatenate(rows, axis=1)[:, :size, :size]
    # a tiled GeoTIFF whatever the source (a JPEG is decoded from its start for every window)
    profile.update(driver="GTiff", height=size, width=size, tiled=True, blockxsize=256, blockysize=256)
    path = folder / f"scene-{size}.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(tiled)
        for i, name in enumerate(descriptions, start=1):
            if name:
                dst.set_band_description(i, name)
    return path


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its children (the model's worker among
    them): those ended and waited for, and those running."""
    import psutil

    me = psutil.Process()
    own = me.cpu_times()
    total = own.user + own.system + own.children_user + own.children_system
    for child in me.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:  # ended since it was listed: counted once it is waited for
            continue
        total += times.user + times.system
    return total


def model_time(predict: Any, plan: Any, io: Any, batch: int, scratch: Path, threads: int) -> dict[str, float]:
    """The worker predicting prepared batches back to back (only those calls timed), and the
    other stages one at a time: reading and preparing, writing and tracing the answers (in one
    thread, then in ``threads`` at once, as beside a model on a GPU)."""
    from concurrent.futures import ThreadPoolExecutor

    from steps.batch import _batches, _BlockWriter

    blocks = [b for g in plan.groups for b in g]
    writer = _BlockWriter(plan, scratch, io)
    times = {"read": 0.0, "model": 0.0, "model_cpu": 0.0, "write": 0.0}
    answers = []
    batches = _batches(plan, blocks, io, batch)
    while True:
        start = time.perf_counter()
        item = next(batches, None)
        times["read"] += time.perf_counter() - start
        if item is None:
            break
        part, stack, invalid = item
        start, cpu = time.perf_counter(), cpu_seconds()
        raw = predict(io.to_model_size(stack))
        times["model"] += time.perf_counter() - start
        times["model_cpu"] += cpu_seconds() - cpu
        start = time.perf_counter()
        writer.write(part, raw, invalid)
        times["write"] += time.perf_counter() - start
        answers.append((part, raw, invalid))
    if threads > 1:
        start = time.perf_counter()
        for _ in _batches(plan, blocks, io, batch, threads=lambda: threads, most=threads):
            pass
        times["read_threads"] = time.perf_counter() - start
        writer = _BlockWriter(plan, scratch.with_name(f"{scratch.name}-threads"), io)
        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda answer: writer.write(*answer), answers))
        times["write_threads"] = time.perf_counter() - start
    return times


def end_to_end(
    uri: str, plan: Any, spec: Any, folder: Path, args: argparse.Namespace, lineage: Any
) -> dict[str, float]:
    """The workflow's steps one after the other in this process."""
    from geomlops.settings import get_settings
    from steps.batch import assemble_mask, predict_group, save_plan
    from steps.predictions import features_while_predicting, publish_predictions

    cpu = cpu_seconds()
    save_plan(plan, folder)
    times = {"predict": 0.0}
    for group in plan.groups:
        start = time.perf_counter()
        predict_group(
            uri,
            plan,
            list(group),
            folder,
            halo=args.halo,
            spec=spec,
            batch_size=args.batch,
            device=args.device,
            beside=features_while_predicting(folder, plan, lineage, on_cpu=args.stream),
        )
        times["predict"] += time.perf_counter() - start
    start = time.perf_counter()
    mask = assemble_mask(plan, folder)
    times["assemble"] = time.perf_counter() - start
    start = time.perf_counter()
    publish_predictions(mask, folder, plan, lineage, area=folder.name, catalog=get_settings().catalog_href)
    times["publish"] = time.perf_counter() - start
    times["end_cpu"] = cpu_seconds() - cpu
    return times


def workflow(uri: str, imagery: Path, folder: Path, args: argparse.Namespace, ran: list[str]) -> float:
    """Seconds of ``geomlops run batch-inference`` on ``imagery`` writing to ``folder``; the
    run's id is added to ``ran`` (failed or not)."""
    import re
    import subprocess

    model, _, version = uri.removeprefix("models:/").partition("/")
    params = {
        "model": model,
        "model_version": version,
        "imagery": str(imagery),
        "area": WORKFLOW_AREA,
        "block_size": str(args.block_size),
        "group_size": str(args.group_size),
        "halo": "" if args.halo is None else str(args.halo),
        "output": str(folder),
    }
    beside = Path(sys.executable).with_name("geomlops")  # this environment's, else on PATH
    command = [str(beside) if beside.exists() else shutil.which("geomlops") or "geomlops"]
    command += ["run", "batch-inference"]
    for name, value in params.items():
        command += ["-p", f"{name}={value}"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    # the summary's "<Status>: run <id>" line
    ran += re.findall(r"^\w+: run (\S+)$", done.stdout, flags=re.MULTILINE)[-1:]
    if done.returncode != 0:
        raise SystemExit(
            f"the workflow failed (exit code {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return seconds


def forget(lineage: Any, areas: list[str], run_id: str | None) -> None:
    """Remove what the benchmark left in the work folder: the predictions items it published
    (their files were in its temporary folder) and its workflow's run record."""
    from catalog_sync import open_store
    from catalog_sync.collections import PREDICTIONS
    from geomlops.errors import GeomlopsError
    from geomlops.settings import get_settings
    from steps.predictions import predictions_item_id

    settings = get_settings()
    try:
        store = open_store(settings.catalog_href)
        for area in areas:
            try:
                store.delete_item(PREDICTIONS, predictions_item_id(lineage, area))
            except (GeomlopsError, OSError) as err:  # not published: what was measured matters more
                print(f"left predictions item {predictions_item_id(lineage, area)!r}: {err}")
    except (GeomlopsError, OSError) as err:
        print(f"left the benchmark's predictions items: {err}")
    if run_id and (settings.runs_dir / run_id / "state.json").is_file():
        shutil.rmtree(settings.runs_dir / run_id, ignore_errors=True)


def same_outputs(folders: list[Path]) -> bool:
    """Whether every folder holds the same GeoParquet and GeoJSON bytes."""
    first = [(folders[0] / name).read_bytes() for name in OUTPUTS]
    return all([(f / name).read_bytes() for name in OUTPUTS] == first for f in folders[1:])


#: the end of a row's name for a cost paid once per predict task, whatever its pixels (no Mpx/s)
ONCE = "once per predict task"


def table(rows: list[tuple[str, float]], pixels: int, reference: float) -> str:
    """Markdown rows: what, seconds, Mpx/s (none for a cost paid :data:`ONCE`), seconds as a
    multiple of the model's own."""
    out = ["| what | seconds | Mpx/s | × model time |", "| --- | --- | --- | --- |"]
    for name, seconds in rows:
        rate = "—" if name.endswith(ONCE) else f"{pixels / seconds / 1e6:.2f}"
        out.append(f"| {name} | {seconds:.3f} | {rate} | {seconds / reference:.2f} |")
    return "\n".join(out)


def count(n: int, noun: str) -> str:
    """``1 block``, ``2 blocks``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=None, help="work folder (default: $GEOMLOPS_HOME)")
    parser.add_argument(
        "--model", default="cloud-mask", help="registered model (its MLM item in the catalogue)"
    )
    parser.add_argument("--model-version", default="1")
    parser.add_argument("--imagery", type=Path, default=None, help="GeoTIFF (default: the demo's scene)")
    parser.add_argument(
        "--size", type=int, default=4096, help="tile the imagery to SIZE px a side (0: as is)"
    )
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument(
        "--group-size", type=int, default=64, help="blocks per predict task (each starts a worker)"
    )
    parser.add_argument(
        "--model-threads", type=int, default=None, help="OpenMP threads of the model (default: its own)"
    )
    parser.add_argument("--halo", type=int, default=None, help="default: the item's geomlops:halo (else 16)")
    parser.add_argument(
        "--batch", type=int, default=None, help="blocks per predict call (default: the item's)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: as the item declares)")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="write the feature files while predicting on the CPU too (on a GPU they always are)",
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="rounds of measurements (the fastest round is shown)"
    )
    parser.add_argument(
        "--workflow",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time `geomlops run batch-inference` on the same scene once (default: yes)",
    )
    args = parser.parse_args()
    home = args.home or (Path(os.environ["GEOMLOPS_HOME"]) if os.environ.get("GEOMLOPS_HOME") else None)
    if home is None or not home.is_dir():
        raise SystemExit("no work folder: run `geomlops demo`, then pass --home or set GEOMLOPS_HOME")
    home = home.resolve()
    os.environ["GEOMLOPS_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the work folder's own
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # not amid the figures
    if args.model_threads:  # the worker inherits it
        os.environ["OMP_NUM_THREADS"] = str(args.model_threads)

    import geopandas  # noqa: F401  (imports before any clock starts)
    import matplotlib.pyplot  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import postprocessing.vectorize  # noqa: F401
    from geomlops.background import usable_cpus
    from geomlops.settings import get_settings, use_tracking
    from steps._package_predictor import model_worker_inputs, package_predictor
    from steps.batch import DEFAULT_BATCH, MAX_THREADS_BESIDE, _device, plan_batch
    from steps.model_io import ModelIO
    from steps.model_spec import fetch_model_spec
    from steps.predictions import resolve_version

    use_tracking()
    settings = get_settings()
    lineage = resolve_version(args.model, args.model_version)
    uri = f"models:/{lineage.model}/{lineage.model_version}"
    spec = fetch_model_spec(args.model, settings.catalog_href, lineage.model_version)
    io = ModelIO.from_spec(spec, halo=args.halo)
    batch = args.batch or spec.batch_size or DEFAULT_BATCH
    source = args.imagery or next(iter(sorted((home / "datasets").glob("*/image.tif"))), None)
    if source is None:
        raise SystemExit(f"no imagery: pass --imagery (none under {home / 'datasets'})")
    print(f"machine: {machine()}; OpenMP threads: {os.environ.get('OMP_NUM_THREADS', 'default')}")
    cpus = min(usable_cpus(), MAX_THREADS_BESIDE)  # the stages alone in this many threads too
    published: list[str] = []  # areas whose predictions items it published, and its run
    ran: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-", dir=home) as tmp, contextlib.ExitStack() as left:
        left.callback(lambda: forget(lineage, published, ran[0] if ran else None))  # however it ends
        work = Path(tmp)
        imagery = scene_imagery(source.resolve(), args.size or None, work)
        plan = plan_batch(
            str(imagery),
            None,
            block_size=args.block_size,
            group_size=args.group_size,
            model_input=spec.inputs[0],
        )
        pixels = plan.width * plan.height
        n_blocks = sum(len(g) for g in plan.groups)
        print(
            f"model: {uri} ({spec.framework or 'framework not declared'}); scene: {imagery.name} "
            f"{plan.width} x {plan.height} px ({pixels / 1e6:.2f} Mpx), {count(n_blocks, 'block')} of "
            f"{args.block_size} px in {count(len(plan.groups), 'group')}, halo {io.halo} px, "
            f"{count(batch, 'block')} per call"
        )
        start = time.perf_counter()
        python, model_dir = model_worker_inputs(uri, settings.home_dir / "models")
        resolve = time.perf_counter() - start
        start = time.perf_counter()
        with package_predictor(python, model_dir, device=args.device or _device(spec)) as predict:
            load = time.perf_counter() - start
            print(f"worker: {python} on {predict.device}, model loaded in {load:.2f} s")
            rounds: list[dict[str, float]] = []
            folders = []
            # each round measures the model alone, then end to end, so that a disturbance of the
            # machine (it may be shared) weighs on both sides; the least disturbed round is kept
            for r in range(args.repeat):
                rounds.append(model_time(predict, plan, io, batch, work / f"stages-{r}", cpus))
                folders.append(work / f"run-{r}")
                published.append(folders[-1].name)
                rounds[r].update(end_to_end(uri, plan, spec, folders[-1], args, lineage))
        # one whole round, the one that took least (model and end to end): each figure the
        # fastest of its own rounds would pair a model from one round with a run from another
        totals = [t["predict"] + t["assemble"] + t["publish"] for t in rounds]
        kept = min(range(len(rounds)), key=lambda r: rounds[r]["model"] + totals[r])
        best, total = rounds[kept], totals[kept]
        rows = [
            ("model: the worker predicting prepared blocks back to back (reference)", best["model"]),
            (f"find the model's environment and files (MLflow), {ONCE}", resolve),
            (f"start the worker and load the model, {ONCE}", load),
            ("read and prepare the blocks (halo, bands, scaling), alone", best["read"]),
            *(
                [(f"the same in {cpus} threads (as beside a model on a GPU)", best["read_threads"])]
                if "read_threads" in best
                else []
            ),
            ("answers to class values, write blocks, trace pieces, alone", best["write"]),
            *(
                [(f"the same in {cpus} threads (as beside a model on a GPU)", best["write_threads"])]
                if "write_threads" in best
                else []
            ),
            ("predict step: worker start, read ahead, predict, write and trace overlapped", best["predict"]),
            ("assemble the mask", best["assemble"]),
            ("publish: merge pieces, GeoParquet, GeoJSON, quicklook, item", best["publish"]),
            ("end to end: predict step + assemble + publish", total),
        ]
        print(f"round {kept + 1} of {args.repeat}, the fastest:")
        print(table(rows, pixels, best["model"]))
        print(
            f"throughput: model {pixels / best['model'] / 1e6:.2f} Mpx/s, "
            f"end to end {pixels / total / 1e6:.2f} Mpx/s; ratio {best['model'] / total:.2f} (goal >= 0.8); "
            "the ratio in each round: "
            + ", ".join(f"{t['model'] / whole:.2f}" for t, whole in zip(rounds, totals, strict=True))
        )
        if pixels < 16e6:
            print(
                "(the goal is for scenes of 16 Mpx or more: on a smaller one the worker's start, "
                "paid once per predict task, weighs more)"
            )
        # the least time the CPU work of the run can take on this machine's cores (the model's
        # own work counted as it was done beside the rest): where a CPU model keeps every core
        # busy, everything else the run does adds to the time, beside the model or after it
        cores = usable_cpus()
        floor = best["end_cpu"] / cores
        print(
            f"CPU: the model {best['model_cpu']:.1f} s in {best['model']:.1f} s "
            f"({best['model_cpu'] / best['model']:.2f} of {cores} cores busy); end to end "
            f"{best['end_cpu']:.1f} s in {total:.1f} s ({best['end_cpu'] / total:.2f} cores busy): "
            f"spread over {cores} cores that work takes at least {floor:.1f} s, a ratio of at most "
            f"{best['model'] / floor:.2f} here"
        )
        print(f"identical outputs in every round: {'yes' if same_outputs(folders) else 'NO'}")
        if args.workflow:  # last, with no worker of this process running beside it
            if args.batch or args.device or args.stream:
                print("the workflow takes no --batch, --device or --stream: it runs as the item says")
            published.append(WORKFLOW_AREA)
            whole = workflow(uri, imagery, work / "workflow", args, ran)
            same = same_outputs([folders[0], work / "workflow"])
            print(
                f"the workflow (`geomlops run batch-inference`, every task a process, one round): "
                f"{whole:.1f} s, {pixels / whole / 1e6:.2f} Mpx/s; ratio {best['model'] / whole:.2f}; "
                f"the same outputs as the rounds': {'yes' if same else 'NO'}"
            )


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
