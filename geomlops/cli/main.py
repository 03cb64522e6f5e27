"""The ``geomlops`` command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from geomlops import __version__
from geomlops.cli._manifests import load_lintable, load_manifest, parse_params, template_library
from geomlops.cli._tools import DEBUG_ENV, fail_cleanly
from geomlops.errors import ManifestError
from geomlops.settings import ARGO_ARTIFACTS_BUCKET, get_settings


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

    library = template_library(template_paths) if template_paths else None
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


from geomlops.cli.run import run  # noqa: E402 - registers after main

main.add_command(run)

from geomlops.cli.runs import runs  # noqa: E402 - registers after main

main.add_command(runs)

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
