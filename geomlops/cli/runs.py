"""``geomlops runs``: the runs of this work folder, and each one's tasks."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geomlops.cli._tools import fail_cleanly, resolve_run_id
from geomlops.settings import get_settings


@click.group()
def runs() -> None:
    """Inspect local runs."""


@runs.command("list")
@fail_cleanly
def runs_list() -> None:
    """List local runs, newest first."""
    from geomlops.argo.runner import LocalRunner

    summaries = list(LocalRunner(get_settings().runs_dir, progress=False).list_runs())
    if not summaries:
        runs_dir = get_settings().runs_dir
        click.echo(f"no runs yet in {runs_dir} (start one: geomlops run PIPELINE, or geomlops demo)")
        return
    width = max((len(s.run_id) for s in summaries), default=0)  # columns in line, ids of any length
    for summary in summaries:
        click.echo(f"{summary.run_id:{width}}  {summary.status:11} {summary.started or ''}")


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the full state as JSON.")
@fail_cleanly
def runs_show(run_id: str, as_json: bool) -> None:
    """Show every task of RUN_ID (@latest: the newest run): status, attempts, outputs, log file."""
    from geomlops.argo.runner import LocalRunner

    run_id = resolve_run_id(run_id)
    state = LocalRunner(get_settings().runs_dir, progress=False).show(run_id)
    run_dir = get_settings().runs_dir / run_id
    data = (
        state
        if isinstance(state, dict)
        else json.loads(json.dumps(state, default=lambda o: getattr(o, "__dict__", str(o))))
    )
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(f"run {run_id}: {data.get('status')}")
    for name, node in (data.get("nodes") or {}).items():
        done = f" ({node['progress']})" if node.get("progress") else ""  # what the task reported: N/M
        click.echo(f"  {node.get('status', '?'):10} {name}{done}")
        if node.get("message") and node.get("status") in ("Failed", "Error", "Pending"):  # and why it waits
            click.echo(f"      message: {node['message']}")
        for key, value in (node.get("outputs") or {}).items():
            text = str(value)  # metrics and the like whole (usually), a long list of groups cut short
            click.echo(f"      {key} = {text[:400]}{'… (--json: all of it)' if len(text) > 400 else ''}")
        if node.get("log"):
            click.echo(f"      log: {node['log']}")
            log = Path(str(node["log"]))  # relative to the run's folder; sidecars' beside it
            for sidecar in sorted((run_dir / log.parent).glob(f"{log.stem}.*.log")):
                name = sidecar.name[len(log.stem) + 1 : -len(".log")]
                click.echo(f"      log of {name!r}: {log.parent / sidecar.name}")
    if data.get("message"):  # why it did not succeed: the first failed task and its log's end
        click.echo(str(data["message"]))
