"""The ``geomlops`` command line."""

from __future__ import annotations

import difflib
import functools
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import yaml

from geomlops import __version__
from geomlops.cli._tools import DEBUG_ENV, fail_cleanly, resolve_run_id
from geomlops.errors import PERMANENT_EXIT_CODE, GeomlopsError, ManifestError, ParameterError
from geomlops.settings import ARGO_ARTIFACTS_BUCKET, get_settings


def load_manifest(source: str) -> dict[str, Any]:
    """A pipeline name renders it; anything else is read as a YAML manifest file."""
    from pipelines import PIPELINES, render

    if source in PIPELINES:
        return render(source)
    path = Path(source)
    if not path.is_file():
        pipelines = ", ".join(sorted(PIPELINES))
        looks_like_a_file = (
            path.suffix.lower() in (".yaml", ".yml", ".json") or os.sep in source or "/" in source
        )
        if looks_like_a_file and not path.exists():
            raise ManifestError(
                f"{source}: no such file (PIPELINE is a pipeline name — {pipelines} — or a manifest file)"
            )
        close = difflib.get_close_matches(source, sorted(PIPELINES), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ManifestError(f"'{source}' is neither a pipeline ({pipelines}) nor a manifest file{hint}")
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as err:
        raise ManifestError(f"{path}: not valid YAML ({err})") from err
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ManifestError(f"{path}: expected exactly one YAML mapping (a Workflow or WorkflowTemplate)")
    manifest: dict[str, Any] = docs[0]
    return manifest


def manifest_arguments(manifest: Mapping[str, Any]) -> dict[str, str]:
    """The literal values a manifest gives its parameters (``spec.arguments.parameters``; an
    Argo expression such as ``{{workflow.name}}`` is resolved in the run, not checked here)."""
    spec = manifest.get("spec")
    arguments = spec.get("arguments") if isinstance(spec, Mapping) else None
    parameters = arguments.get("parameters") if isinstance(arguments, Mapping) else None
    return {
        str(p["name"]): str(p["value"])
        for p in parameters or []
        if isinstance(p, Mapping)
        and "name" in p
        and p.get("value") is not None
        and "{{" not in str(p["value"])
    }


def load_lintable(source: str) -> list[tuple[str, dict[str, Any]]]:
    """What ``lint`` checks in SOURCE, each with its label: a pipeline, a one-document file,
    or every Argo document (``apiVersion: argoproj.io/…``) of a multi-document file, as
    ``geomlops install`` writes them.

    Raises:
        ManifestError: SOURCE is neither, is not YAML, or holds no Argo document.
    """
    from pipelines import PIPELINES

    path = Path(source)
    if source in PIPELINES or not path.is_file():
        return [(source, load_manifest(source))]
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as err:
        raise ManifestError(f"not valid YAML ({err})") from err
    if len(docs) == 1 and isinstance(docs[0], dict):
        return [(source, docs[0])]
    argo = [
        d for d in docs if isinstance(d, dict) and str(d.get("apiVersion", "")).startswith("argoproj.io/")
    ]
    if not argo:
        raise ManifestError(
            f"no Argo document (apiVersion argoproj.io/…) among its {len(docs)} YAML document(s)"
        )
    return [(f"{source} [{d.get('kind')} {(d.get('metadata') or {}).get('name')}]", d) for d in argo]


def parse_params(pairs: tuple[str, ...], option: str = "-p") -> dict[str, str]:
    """``NAME=VALUE`` pairs (given with ``option``) to a dict."""
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ParameterError(f"{option} {pair!r}: expected NAME=VALUE")
        params[name] = value
    return params


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geomlops")
@click.option("--debug", is_flag=True, help="On an error, show its traceback too (for a bug report).")
def main(debug: bool) -> None:
    """geomlops: train, register and publish geospatial models with workflows-as-code.

    Workflows are Hera definitions rendered to Argo WorkflowTemplates; the same manifest
    runs on one machine (geomlops run) or on a cluster (geomlops submit). State lives in
    the work folder $GEOMLOPS_HOME (default ./.geomlops).

    \b
    Pipelines: training, registration, batch-inference, batch-inference-schedule,
    promotion, retrain. New here? Run: geomlops demo
    """
    home = get_settings().home_dir
    if (
        "GEOMLOPS_HOME" not in os.environ
        and not home.exists()
        and not {"--help", "--version"} & set(sys.argv)
    ):
        # the default work folder is relative: started from another folder, it is another one
        click.secho(
            f"! no work folder in this folder: {home} is made when needed (GEOMLOPS_HOME names another)",
            fg="yellow",
            err=True,
        )
    # tasks run in their own folders: hand them the work folder as an absolute path
    os.environ["GEOMLOPS_HOME"] = str(home)
    if debug:
        os.environ[DEBUG_ENV] = "1"


@main.command()
@click.option(
    "--package",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Model package to train (default: the bundled examples/cloud-mask).",
)
@click.option("--workers", default=4, show_default=True, help="Parallel tasks at most.")
@fail_cleanly
def demo(package: Path | None, workers: int) -> None:
    """Train the example cloud-mask model end to end on one machine.

    Puts a real Landsat-8 scene under DVC, registers the model package in the STAC
    catalogue, runs the training WorkflowTemplate with the local runner and prints where the
    MLflow run, the model version and its STAC item are.
    """
    from geomlops.cli.demo import run_demo

    sys.exit(run_demo(get_settings(), package=package, workers=workers))


@main.command()
@click.argument("pipeline")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
@fail_cleanly
def render(pipeline: str, output: Path | None) -> None:
    """Print the Argo manifest of PIPELINE as YAML (what Argo and the local runner receive)."""
    from pipelines import render as render_pipeline
    from pipelines import to_yaml

    text = to_yaml(render_pipeline(pipeline))
    if output:
        output.write_text(text)
    else:
        click.echo(text, nl=False)


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option(
    "--semantic-only",
    is_flag=True,
    help="Accept that Argo's JSON schema is not available: run only the semantic checks.",
)
@click.option(
    "--templates",
    "template_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Check every templateRef against the WorkflowTemplates and ClusterWorkflowTemplates in this "
    "file or folder (repeatable) and geomlops' pipelines. Without it references are not checked: "
    "on a cluster they resolve to the templates installed there.",
)
@fail_cleanly
def lint(files: tuple[str, ...], semantic_only: bool, template_paths: tuple[Path, ...]) -> None:
    """Check manifests (files or pipeline names) against Argo's schema, strictly, and more.

    Unknown fields are errors; the entrypoint and every task's template must exist; DAGs
    must have no cycle. The schema is read offline from $GEOMLOPS_SCHEMA_DIR. In a file of
    several YAML documents (such as `geomlops install` writes) each Argo document is checked.
    Without the schema, lint fails (the strict check did not run) unless --semantic-only.
    """
    from geomlops.argo.lint import lint_manifest
    from geomlops.argo.template_library import template_ref_errors

    library = _template_library(template_paths) if template_paths else None
    schema_dir = get_settings().schema_dir
    failed = False
    checks: list[tuple[str, Any]] = []
    for item in files:
        try:
            checks += load_lintable(item)
        except ManifestError as err:
            message = str(err).removeprefix(f"{item}: ")
            click.secho(f"✗ {item}: {message}", fg="red")
            failed = True
    noted = False
    for source, manifest in checks:
        result = lint_manifest(manifest, source, schema_dir)
        if library is not None:
            result.errors += template_ref_errors(manifest, library)
        if result.schema_note and not noted:  # the same for every document: said once
            click.secho(f"! {result.schema_note}", fg="yellow", err=True)
            noted = True
        if result.ok and not result.schema_checked and not semantic_only:
            failed = True
            click.secho(
                f"✗ {source}: the schema check did not run (semantic checks passed); "
                "give --semantic-only to accept that",
                fg="red",
            )
        elif result.ok:
            click.secho(
                f"✓ {source}" + ("" if result.schema_checked else " (semantic checks only)"), fg="green"
            )
        else:
            failed = True
            click.secho(f"✗ {source}", fg="red")
            for error in result.errors:
                click.echo(f"    {error}")
    if failed:
        sys.exit(1)


def manifest_parameters(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The workflow parameters a manifest declares (a CronWorkflow's in its ``workflowSpec``)."""
    from geomlops.argo.template_library import workflow_spec

    spec = workflow_spec(manifest) or {}
    parameters = (spec.get("arguments") or {}).get("parameters") or []
    return [p for p in parameters if isinstance(p, dict) and p.get("name")]


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


@main.command(cls=_RunCommand)
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

    library = _template_library(template_paths)

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
                preflight(checked, {**manifest_arguments(manifest), **values})
            except GeomlopsError as err:
                err.add_note("no run was started")
                raise
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


def _template_library(paths: tuple[Path, ...]) -> Any:
    """The templates of ``--templates`` paths, with geomlops' own pipelines after them."""
    from geomlops.argo.template_library import TemplateLibrary
    from pipelines import template_resolver

    return TemplateLibrary.load(paths, fallback=template_resolver, fallback_name="geomlops' pipelines")


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


@main.group()
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


@main.command()
@click.argument("pipeline")
@click.option(
    "-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="Workflow parameter (repeatable)."
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the requests instead of sending them (needs no server; parameters are checked).",
)
@fail_cleanly
def submit(pipeline: str, params: tuple[str, ...], dry_run: bool) -> None:
    """Install PIPELINE's WorkflowTemplate on an Argo server and submit a run of it.

    Server, namespace and token come from GEOMLOPS_ARGO_SERVER, GEOMLOPS_ARGO_NAMESPACE and
    GEOMLOPS_ARGO_TOKEN (the token is never printed).
    """
    from geomlops.argo.submit import plan_submission, send

    settings = get_settings()
    requests_ = plan_submission(load_manifest(pipeline), parse_params(params), settings, dry_run=dry_run)
    if dry_run:
        click.echo(json.dumps([r.redacted() for r in requests_], indent=2))
        return
    for line in send(requests_):
        click.echo(line)


from geomlops.cli.catalog import catalog  # noqa: E402 - subcommands register after main

main.add_command(catalog)


@main.command()
@click.option("-n", "--namespace", required=True, help="Namespace (with Argo Workflows) to install into.")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one YAML file per group here (default: all to stdout, for `kubectl apply -f -`).",
)
@click.option(
    "--argo",
    "via_argo",
    is_flag=True,
    help="Also install the WorkflowTemplates and CronWorkflows through the Argo server's API.",
)
@click.option(
    "--artifact-bucket",
    default=ARGO_ARTIFACTS_BUCKET,
    show_default=True,
    help="Bucket for Argo's artifacts and logs.",
)
@click.option(
    "--artifact-endpoint", default="minio.storage.svc:9000", show_default=True, help="Object store host:port."
)
@click.option("--secure/--insecure", default=False, show_default=True, help="Talk TLS to the object store.")
@fail_cleanly
def install(
    namespace: str,
    output: Path | None,
    via_argo: bool,
    artifact_bucket: str,
    artifact_endpoint: str,
    secure: bool,
) -> None:
    """Render what a cluster with Argo Workflows needs to run geomlops in NAMESPACE.

    ServiceAccount with least RBAC, Secret templates (keys only: fill the values in the cluster),
    the Argo artifact repository on the object store, and every WorkflowTemplate and CronWorkflow.
    """
    from geomlops.argo.submit import install_request, send
    from geomlops.cli.install import install_manifests

    groups = install_manifests(
        namespace, bucket=artifact_bucket, endpoint=artifact_endpoint, insecure=not secure
    )
    if output:
        output.mkdir(parents=True, exist_ok=True)
        for name, docs in groups.items():
            (output / name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
            click.echo(f"wrote {output / name} ({len(docs)} object(s))", err=True)
    else:
        click.echo(
            yaml.safe_dump_all([d for docs in groups.values() for d in docs], sort_keys=False), nl=False
        )
    if via_argo:
        settings = get_settings()
        for manifest in groups["40-workflows.yaml"]:
            for line in send([install_request(manifest, settings, namespace)]):
                click.echo(line, err=True)


from geomlops.cli.dev import dev  # noqa: E402 (a sub-group of main, added once main exists)

main.add_command(dev)

from geomlops.cli.vectorize import vectorize_command  # noqa: E402 - registers after main

main.add_command(vectorize_command)

from geomlops.cli.promote import promote  # noqa: E402 - registers after main

main.add_command(promote)

from geomlops.cli.serve import serve_command  # noqa: E402 - registers after main

main.add_command(serve_command)

from geomlops.cli.gateway import gateway  # noqa: E402 - registers after main

main.add_command(gateway)

from geomlops.cli.package import package  # noqa: E402 - registers after main

main.add_command(package)

from geomlops.cli.data import data  # noqa: E402 - registers after main

main.add_command(data)

from geomlops.cli.schemas import schemas  # noqa: E402 - registers after main

main.add_command(schemas)

if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
