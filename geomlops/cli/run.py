"""``geomlops run``: a pipeline or a manifest run on this machine, as Argo would run it."""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import yaml

from geomlops.cli._manifests import (
    load_manifest,
    manifest_arguments,
    manifest_parameters,
    parse_params,
    template_library,
)
from geomlops.cli._tools import fail_cleanly, resolve_run_id
from geomlops.errors import PERMANENT_EXIT_CODE, GeomlopsError, ParameterError
from geomlops.settings import ARGO_ARTIFACTS_BUCKET, get_settings


class _RunCommand(click.Command):
    """``geomlops run PIPELINE --help`` also lists PIPELINE's parameters (``-p NAME=VALUE``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # --help is eager: it is answered before PIPELINE is parsed, so PIPELINE is read here
        if args and not args[0].startswith("-"):
            ctx.meta["geomlops.pipeline"] = args[0]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_help(ctx, formatter)
        source = ctx.meta.get("geomlops.pipeline")
        if source is None:
            return
        try:
            parameters = manifest_parameters(load_manifest(source))
        except (GeomlopsError, OSError, UnicodeDecodeError, AttributeError) as err:
            formatter.write_paragraph()
            formatter.write_text(f"PIPELINE {source!r}: {err}")
            return
        rows = []
        for param in parameters:
            default = f" [default: {param['value']!r}]" if "value" in param else " (required)"
            choices = f" (one of: {', '.join(map(str, param['enum']))})" if param.get("enum") else ""
            rows.append((str(param["name"]), f"{param.get('description', '')}{choices}{default}".strip()))
        with formatter.section(f"Parameters of {source} (-p NAME=VALUE)"):
            formatter.write_dl(rows) if rows else formatter.write_text("none")


@click.command(cls=_RunCommand)
@click.argument("pipeline", required=False)
@click.option(
    "-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="Workflow parameter (repeatable)."
)
@click.option(
    "--resume",
    "resume_id",
    metavar="RUN_ID",
    help="Resume a run: only what did not succeed runs (@latest: the newest run).",
)
@click.option(
    "--approve",
    metavar="APPROVER",
    help="Approve every suspend gate as this person (a name or an email address); with --resume, "
    "approve a run waiting at a gate.",
)
@click.option("--reason", default="", help="Why the approver approves (recorded with the approval).")
@click.option(
    "--override",
    is_flag=True,
    help="With --approve: explicitly override the gate's policy (a promotion of a candidate worse "
    "than production); recorded with the approval.",
)
@click.option(
    "-o",
    "--output",
    "supplied",
    multiple=True,
    metavar="NAME=VALUE",
    help="With --approve: the value of a suspend gate's output parameter that the approver supplies "
    "(Argo's valueFrom.supplied); repeatable.",
)
@click.option(
    "--interactive/--no-interactive", default=None, help="Ask at suspend gates (default: when on a terminal)."
)
@click.option("--allow-host-containers", is_flag=True, help="Run container templates' commands on this host.")
@click.option("--workers", default=4, show_default=True, help="Parallel tasks at most.")
@click.option(
    "--cpus",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="CPUs of the one node that tasks are placed on by their CPU requests, as Kubernetes "
    "places pods (default: this machine's usable CPUs). A task that does not fit waits until "
    "running ones end.",
)
@click.option(
    "--templates",
    "template_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="WorkflowTemplates and ClusterWorkflowTemplates for templateRef: a YAML file (several "
    "documents allowed) or a folder read recursively (repeatable); geomlops' pipelines are found too.",
)
@click.option(
    "--semaphore",
    "semaphores",
    multiple=True,
    metavar="CONFIGMAP/KEY=LIMIT",
    help="The limit of a semaphore (in Argo, key KEY of ConfigMap CONFIGMAP); repeatable. "
    "ConfigMaps in --templates files count too.",
)
@click.option(
    "--sandbox/--no-sandbox",
    default=None,
    help="Run each task in its own filesystem view with bubblewrap: a private /tmp, the host "
    "read-only but for $GEOMLOPS_HOME (default: unless GEOMLOPS_SANDBOX=off).",
)
@click.option(
    "--artifact-bucket",
    default=ARGO_ARTIFACTS_BUCKET,
    show_default=True,
    help="Services profile: the bucket of Argo's artifacts, as geomlops install renders it "
    "(the embedded default keeps artifacts in the run's folder).",
)
@fail_cleanly
def run(
    pipeline: str | None,
    params: tuple[str, ...],
    resume_id: str | None,
    approve: str | None,
    reason: str,
    override: bool,
    supplied: tuple[str, ...],
    interactive: bool | None,
    allow_host_containers: bool,
    workers: int,
    cpus: float | None,
    template_paths: tuple[Path, ...],
    semaphores: tuple[str, ...],
    sandbox: bool | None,
    artifact_bucket: str,
) -> None:
    """Run PIPELINE (a pipeline name or a Workflow/WorkflowTemplate YAML file) on this machine.

    The manifest is executed as Argo would: DAG and steps, parameters, fan-out, retries,
    suspend gates, exit handlers. Each run's state and logs stay in $GEOMLOPS_HOME/runs.
    """
    from geomlops.argo.runner import Approval, LocalRunner, RunInterrupted
    from geomlops.argo.runner.node import this_machine
    from geomlops.argo.runner.sandbox import settings_writable_paths
    from geomlops.argo.runner.synchronization import parse_limits
    from steps.local_images import LocalImages
    from steps.package_env import writable_cache_paths
    from steps.promotion import validate_approver

    library = template_library(template_paths)

    if override and approve is None:
        raise ParameterError("--override needs --approve NAME: only an approver can override a policy")
    if supplied and approve is None:
        raise ParameterError("-o needs --approve NAME: the approver supplies a gate's output values")
    if approve is not None:
        try:
            approve = validate_approver(approve)
        except GeomlopsError as err:
            raise ParameterError(f"--approve: {err}") from err
        if not reason.strip():
            raise ParameterError("--reason: required with --approve (it is recorded with the approval)")
    manifest: dict[str, Any] = {}
    values: dict[str, str] = {}
    # a bad request fails here, in seconds, before anything is made
    if resume_id:
        if pipeline or params:
            raise ParameterError("--resume takes no PIPELINE or -p: a run resumes with what it started with")
        resume_id = resolve_run_id(resume_id)
    else:
        if not pipeline:
            raise ParameterError("missing PIPELINE (a pipeline name or a manifest file), or --resume RUN_ID")
        values = parse_params(params)
        from pipelines import PIPELINES
        from pipelines._naming import manifest_pipeline

        manifest = load_manifest(pipeline)
        # a pipeline by its name, or a manifest file rendered from one, with the values the file
        # gives its parameters
        checked = pipeline if pipeline in PIPELINES else manifest_pipeline(manifest)
        if checked is not None:
            from steps.preflight import preflight

            try:
                notes = preflight(checked, {**manifest_arguments(manifest), **values})
            except GeomlopsError as err:
                err.add_note("no run was started")
                raise
            for note in notes:
                click.secho(f"! note: {note}", fg="yellow", err=True)
        # what the checks let through (other parameters, other manifests): a warning
        for warning in relative_path_params(values, Path.cwd()):
            click.secho(f"! {warning}", fg="yellow", err=True)
    runner = LocalRunner(
        get_settings().runs_dir,
        max_workers=workers,
        capacity=None if cpus is None else {**this_machine(), "cpu": cpus},
        approval=Approval(approve, reason, override, parse_params(supplied, "-o")) if approve else None,
        interactive=sys.stdin.isatty() if interactive is None else interactive,
        allow_host_containers=allow_host_containers,
        template_resolver=library,
        approver_check=validate_approver,
        semaphores={**library.semaphore_limits(), **parse_limits(semaphores)},
        sandbox=sandbox,
        # tasks also build and share model packages' environments (their cache and uv's)
        writable_paths=[*settings_writable_paths(get_settings()), *writable_cache_paths()],
        artifact_repository=_artifact_repository(artifact_bucket),
        # model images are stood in for by their packages' environments
        image_environment=(images := LocalImages(get_settings())),
    )
    if resume_id:
        start = functools.partial(runner.resume, resume_id)
        try:  # the run's own manifest (an unknown run is the runner's to say)
            kept = get_settings().runs_dir / resume_id / "manifest.yaml"
            manifest = yaml.safe_load(kept.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            manifest = {}
    else:
        start = functools.partial(runner.run, manifest, values)
    # a model's image: its tasks need a tracking server, started while the run starts
    if isinstance(manifest, Mapping) and _images_chosen_when_run(manifest, library):
        images.warm()
    try:
        with images:
            summary = start()
    except RunInterrupted as stop:  # its tasks are stopped and the state says Interrupted
        click.secho(f"Interrupted: {stop}", fg="yellow", err=True)
        sys.exit(stop.exit_code)
    _print_summary(summary)
    sys.exit(0 if summary.status in ("Succeeded", "Suspended") else 1)


def _images_chosen_when_run(manifest: Mapping[str, Any], library: Any = None) -> bool:
    """Whether a template of ``manifest`` runs an image named by a parameter (``{{…}}``),
    following a CronWorkflow's ``workflowSpec`` and, with ``library``, every ``templateRef`` and
    ``workflowTemplateRef`` (``retrain`` and the schedule run training and batch inference so)."""
    from geomlops.argo.template_library import referenced_templates

    for template in referenced_templates(manifest, library):
        parts = [template.get("container"), template.get("script"), *template.get("sidecars", [])]
        if any(isinstance(p, Mapping) and "{{" in str(p.get("image", "")) for p in parts):
            return True
    return False


def _artifact_repository(bucket: str) -> Any:
    """The services profile's artifact repository, with the bucket and key format that
    ``geomlops install`` renders for Argo; None on the embedded default (the run folder)."""
    settings = get_settings()
    if settings.profile != "services":
        return None
    from geomlops.argo.runner.artifacts import S3Repository
    from geomlops.cli.install import artifact_repository

    rendered = artifact_repository("argo", bucket, settings.s3_endpoint or "", True)["data"]["geomlops"]
    s3 = yaml.safe_load(rendered)["s3"]
    return S3Repository(s3["bucket"], settings.s3_endpoint, s3["keyFormat"])


#: geomlops' pipeline parameters whose values are names, never paths (a folder of the same name
#: here, such as the model's package, is no reason to warn)
NAME_PARAMETERS = frozenset({"model", "candidate", "model_version", "area"})


def relative_path_params(params: dict[str, str], cwd: Path) -> list[str]:
    """Warnings for parameters whose value is a relative path to something under ``cwd``.

    Tasks run in their own folders (as pods do on Argo), so such a path does not resolve there.
    """
    warnings = []
    for name, value in params.items():
        if name in NAME_PARAMETERS:
            continue
        path = value.removeprefix("file://")
        if path and "://" not in path and not Path(path).is_absolute() and (cwd / path).exists():
            warnings.append(
                f"-p {name}={value} is a relative path: tasks run in their own folders, where it "
                f"does not resolve; pass {(cwd / path).resolve()} instead"
            )
    return warnings


def _print_summary(summary: Any) -> None:
    from geomlops.argo.runner.runner import MADE_FOLDER_NOTE

    colour = {"Succeeded": "green", "Suspended": "yellow"}.get(summary.status, "red")
    click.secho(f"{summary.status}: run {summary.run_id}", fg=colour, bold=True)
    click.echo(f"  state and logs: {summary.run_dir}")
    if summary.status == "Succeeded" and summary.outputs:  # what the last task made
        task, values = list(summary.outputs.items())[-1]
        for key, value in values.items():
            text = str(value)
            click.echo(f"  {task}.{key} = {text[:200]}{'…' if len(text) > 200 else ''}")
    if summary.message:
        click.echo(f"  {summary.message}")
    if summary.status == "Suspended":
        click.echo(f"  approve with: geomlops run --resume {summary.run_id} --approve NAME --reason WHY")
    elif summary.status == "Failed" and _refused_at_a_gate(summary.run_dir):
        click.echo("  a person refused at an approval gate: start a new run to ask again")
    elif summary.status == "Failed" and _permanent_failure(summary.run_dir):
        click.echo(
            f"  a permanent error (exit code {PERMANENT_EXIT_CODE}: bad input or something not found): "
            "resuming would fail the same way; fix what the message names and run again"
        )
    elif summary.status == "Failed" and MADE_FOLDER_NOTE in (summary.message or ""):
        click.echo(
            "  a path given did not exist (see the note): a resume keeps the run's parameters, so "
            "run again with the path corrected"
        )
    elif summary.status == "Failed":
        click.echo(f"  resume with: geomlops run --resume {summary.run_id}")


def _refused_at_a_gate(run_dir: Path) -> bool:
    """Whether a person refused at one of the run's approval gates (the gate failed so, or
    passed the refusal on to the workflow, which recorded it and failed)."""
    from geomlops.argo.runner.state_file import load_state
    from geomlops.argo.runner.suspend import refused_at

    try:
        nodes = load_state(run_dir).nodes.values()
    except GeomlopsError:
        return False
    return any(refused_at(n) for n in nodes)


def _permanent_failure(run_dir: Path) -> bool:
    """Whether every failed task of the run ended with geomlops' permanent-error exit code."""
    from geomlops.argo.runner.state_file import load_state

    try:
        nodes = load_state(run_dir).nodes.values()
    except GeomlopsError:
        return False
    codes = {n.exit_code for n in nodes if n.status in ("Failed", "Error") and n.exit_code is not None}
    return codes == {PERMANENT_EXIT_CODE}
