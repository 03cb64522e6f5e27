"""What the gateway reads of a run's outputs: batch progress, prediction files, lineage, reports.

A batch inference run's ``plan-blocks`` task names its output folder; the runner keeps the plan
there (``plan.json``) and one file per finished block (``blocks/<id>.tif``), so blocks done and
planned are read from the folder where the gateway can read it (the local runner), and otherwise
(Argo) from the blocks each predict task reports done as its progress (``N/M``) of those the plan
task counted, or from the predict tasks' phases (groups of blocks) for a run planned before tasks
reported them.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from catalog_sync.store import CatalogStore
from geomlops.argo.task_progress import parse_progress
from geomlops.errors import GeomlopsError, ItemNotFoundError
from geomlops.gateway.backends.base import BlockProgress, Phase, RunInfo, RunNotFoundError, TaskInfo
from geomlops.settings import Settings

#: the batch inference tasks whose outputs the gateway reads
PLAN_TASK = "plan-blocks"
PREDICT_TASK = "predict-blocks"


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def output_folder(run: RunInfo) -> Path | None:
    """The output folder of a batch inference run, when the gateway can read it."""
    folder = (run.outputs.get(PLAN_TASK) or {}).get("output")
    if folder and Path(folder).is_dir():
        return Path(folder)
    return None


def aoi_folder(settings: Settings) -> Path:
    """Where the gateway keeps the areas of interest it gives local runs (named by content)."""
    return settings.home_dir / "gateway" / "aoi"


def aoi_bbox(run: RunInfo, settings: Settings) -> list[float] | None:
    """W,S,E,N (WGS84; west > east across the antimeridian) of a batch inference run's area of
    interest when the gateway gave it: GeoJSON in the parameter (Argo) or a file in
    :func:`aoi_folder`. None for the whole imagery, another pipeline, or an area given as a file
    elsewhere (the gateway reads no other file)."""
    from postprocessing.antimeridian import bbox_across
    from steps.aoi import aoi_geometry, read_aoi

    given = run.parameters.get("aoi", "").strip()
    if run.pipeline != "batch-inference" or not given:
        return None
    if not given.startswith("{") and Path(given).resolve().parent != aoi_folder(settings).resolve():
        return None
    try:
        geometry = aoi_geometry(read_aoi(given), where="aoi")
    except GeomlopsError:
        return None
    return bbox_across(geometry)  # west > east for an area cut at 180°


#: a predict task of the fan-out (``predict-blocks(0:0)``), and an attempt of it (``…(1)``) where
#: Argo retries it: a Retry node with one pod an attempt
_PREDICT_ITEM = re.compile(rf"^({re.escape(PREDICT_TASK)}\(\d+:[^()]*\))(?:\((\d+)\))?$")


def _predict_tasks(run: RunInfo) -> tuple[dict[str, TaskInfo], dict[str, TaskInfo]]:
    """The run's predict tasks by fan-out item, and the last attempt of each that has attempts
    of its own (on Argo, the pods of a Retry node)."""
    items: dict[str, TaskInfo] = {}
    attempts: dict[str, tuple[int, TaskInfo]] = {}
    for task in run.tasks:
        match = _PREDICT_ITEM.match(task.name)
        if match is None:
            continue
        item, attempt = match.group(1), match.group(2)
        if attempt is None:
            items[item] = task
        elif item not in attempts or int(attempt) >= attempts[item][0]:
            attempts[item] = (int(attempt), task)
    for item, (_, task) in attempts.items():
        items.setdefault(item, task)
    return items, {k: t for k, (_, t) in attempts.items()}


def _reported(progress: str) -> int:
    """The blocks a predict task reported done (``N`` of its ``N/M``; 0 before it reports)."""
    reported = parse_progress(progress)
    return reported[0] if reported is not None else 0


def block_progress(run: RunInfo, now: datetime | None = None) -> BlockProgress | None:
    """Blocks done and planned, elapsed time and an estimate of the time left (None before the
    plan exists, or for another pipeline)."""
    if run.pipeline != "batch-inference":
        return None
    now = now or datetime.now(UTC)
    started, finished = _time(run.started), _time(run.finished)
    elapsed = ((finished or now) - started).total_seconds() if started else None
    plan_task = next((t for t in run.tasks if t.name == PLAN_TASK), None)
    predicting_since = _time(plan_task.finished) if plan_task else None
    folder = output_folder(run)
    done: int
    total: int
    unit = "blocks"
    recent = 0  # blocks finished during this run (earlier runs' blocks are skipped, not predicted)
    if folder is not None and (folder / "plan.json").is_file():
        plan = json.loads((folder / "plan.json").read_text(encoding="utf-8"))
        ids = [str(b["id"]) for group in plan.get("groups") or [] for b in group]
        total = len(ids)
        stamps = []
        for block_id in ids:
            path = folder / "blocks" / f"{block_id}.tif"
            if path.is_file():
                stamps.append(path.stat().st_mtime)
        done = len(stamps)
        if predicting_since is not None:
            recent = sum(1 for s in stamps if s >= predicting_since.timestamp() - 1)
    else:
        groups = (run.outputs.get(PLAN_TASK) or {}).get("groups")
        if not groups:
            return BlockProgress(done=0, total=0, started=run.started, elapsed_s=elapsed)
        try:
            total = len(json.loads(groups))
        except ValueError:
            return BlockProgress(done=0, total=0, started=run.started, elapsed_s=elapsed)
        unit = "groups"
        items, attempts = _predict_tasks(run)
        done = sum(1 for t in items.values() if t.phase in (Phase.SUCCEEDED, Phase.SKIPPED))
        blocks = str((run.outputs.get(PLAN_TASK) or {}).get("blocks") or "")
        if blocks.isdigit() and int(blocks) > 0:  # each predict task reports its blocks done (N/M)
            unit, total = "blocks", int(blocks)
            # a retried task's last attempt counts (it counts the blocks earlier ones finished)
            latest = {k: attempts.get(k, task) for k, task in items.items()}
            done = min(total, sum(_reported(t.progress) for t in latest.values()))
        if run.phase is Phase.SUCCEEDED:
            done = total  # every group predicted, however the engine names its fan-out
        recent = done
    eta: float | None = None
    if done >= total:
        eta = 0.0
    elif recent > 0 and predicting_since is not None and finished is None:
        spent = (now - predicting_since).total_seconds()
        eta = round(spent / recent * (total - done), 1)
    return BlockProgress(
        done=done,
        total=total,
        unit=unit,
        started=run.started,
        elapsed_s=round(elapsed, 1) if elapsed is not None else None,
        eta_s=eta,
    )


def prediction_outputs(run: RunInfo) -> dict[str, str]:
    """The outputs of the task that published a batch run's predictions (item, features).

    Raises:
        RunNotFoundError: the run published no predictions (yet).
    """
    for outputs in run.outputs.values():
        if outputs.get("item") and "features" in outputs:
            return outputs
    raise RunNotFoundError(
        f"run {run.run_id}: no predictions (phase {run.phase.value}); "
        "a succeeded batch inference run has them"
    )


def read_item(href: str) -> dict[str, Any]:
    """A STAC item read from a URL or a file."""
    if href.startswith(("http://", "https://")):
        import requests

        answer = requests.get(href, timeout=30)
        answer.raise_for_status()
        data: dict[str, Any] = answer.json()
        return data
    found: dict[str, Any] = json.loads(Path(href.removeprefix("file://")).read_text(encoding="utf-8"))
    return found


def local_asset(item: dict[str, Any], name: str, run_id: str) -> Path:
    """The file on this machine of asset ``name`` of a predictions item.

    Raises:
        RunNotFoundError: the item has no such asset, or it is not a file here.
    """
    href = str(((item.get("assets") or {}).get(name) or {}).get("href", "")).removeprefix("file://")
    if not href or not Path(href).is_absolute() or not Path(href).is_file():
        raise RunNotFoundError(
            f"run {run_id}: its {name} is not a file on the gateway's machine ({href or 'none'})"
        )
    return Path(href)


def mlflow_run_url(tracking_uri: str, ui_url: str | None, run_id: str) -> str | None:
    """A link to an MLflow run in a UI: ``ui_url``, else the tracking server's; None without one."""
    root = ui_url or (tracking_uri if tracking_uri.startswith(("http://", "https://")) else None)
    if not root or not run_id:
        return None
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        experiment = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.experiment_id
    except MlflowException:
        return None
    return f"{root.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"


def stac_item_url(settings: Settings, collection: str, item_id: str) -> str:
    """Where a browser reads a catalogue item: the STAC API's URL when one serves the
    catalogue, else the gateway's own route (``/api/v1/stac/…``, with the caller's key)."""
    if settings.stac_api_url:
        return f"{settings.stac_api_url.rstrip('/')}/collections/{collection}/items/{item_id}"
    return f"/api/v1/stac/collections/{collection}/items/{item_id}"


def version_trace(
    store: CatalogStore, settings: Settings, model: str, version: str, run_id: str
) -> dict[str, str | None]:
    """A model version's dataset hash, code commit and code digest: from its catalogue item,
    else from its MLflow run's tags."""
    from catalog_sync.collections import VERSIONS, version_item_id

    found: dict[str, str | None] = {"dataset_hash": None, "code_commit": None, "code_sha256": None}
    try:
        props = store.get_item(VERSIONS, version_item_id(model, version)).get("properties") or {}
    except ItemNotFoundError:
        props = {}
    dataset, code = props.get("geomlops:dataset") or {}, props.get("geomlops:code") or {}
    found["dataset_hash"] = dataset.get("md5") or None
    found["code_commit"] = code.get("git_commit") or None
    found["code_sha256"] = code.get("sha256") or None
    if all(found.values()) or not run_id:
        return found
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        tags = MlflowClient(tracking_uri=settings.tracking_uri).get_run(run_id).data.tags
    except MlflowException:
        return found
    found["dataset_hash"] = found["dataset_hash"] or tags.get("geomlops.dataset.md5")
    found["code_commit"] = (
        found["code_commit"] or tags.get("geomlops.code.git_commit") or tags.get("mlflow.source.git.commit")
    )
    found["code_sha256"] = found["code_sha256"] or tags.get("geomlops.code.sha256")
    return found
