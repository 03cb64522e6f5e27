"""``geomlops demo``: the training workflow end to end on the embedded defaults."""

from __future__ import annotations

import json
import os
import tempfile
from importlib import resources
from pathlib import Path

import click

from catalog_sync.validation import ValidationResult
from geomlops.errors import ConfigurationError, GeomlopsError
from geomlops.settings import Settings
from steps.data_repo import dvc as _dvc
from steps.data_repo import ensure_data_repo
from steps.data_repo import git as _git

DATASET = "datasets/landsat8-cloud"
MODEL = "cloud-mask"


def default_package() -> Path:
    """The example model package, shipped as package data of ``examples``.

    Raises:
        ConfigurationError: the example is not installed with geomlops (pass ``--package``).
    """
    try:
        path = Path(str(resources.files("examples").joinpath(MODEL)))
    except ModuleNotFoundError:
        path = None
    if path is None or not (path / "MLproject").is_file():
        raise ConfigurationError(
            f"the example model package '{MODEL}' is not installed with geomlops (package data "
            f"examples/{MODEL}/MLproject not found); pass --package PATH to a model package"
        )
    return path


def prepare_dataset(repo: Path, package: Path, settings: Settings) -> None:
    """Build the cloud-mask dataset with the package's preprocess entry point; version it with DVC.

    The entry point runs in the package's own environment (built once, then cached), in a
    copy of the package.
    """
    from steps.package import describe_package, stage_package
    from steps.package_env import command_environment, ensure_environment
    from steps.training import entry_point_command, run_package_command

    target = repo / DATASET
    if not (repo / f"{DATASET}.dvc").exists():
        click.echo(f"• preparing the dataset with {package.name}'s preprocess entry point")
        info = describe_package(package, required=("preprocess",))
        environment = ensure_environment(package)
        if environment.note:
            click.echo(f"• {environment.note}")
        work = settings.home_dir / "work"
        work.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="geomlops-preprocess-", dir=work) as tmp:
            staged = stage_package(package, Path(tmp) / info.name)
            command = entry_point_command(info, "preprocess", {"output": str(target)}, staged)
            code, tail = run_package_command(command, staged, command_environment(environment))
        if code != 0:
            raise GeomlopsError("preprocess entry point failed:\n" + "\n".join(tail))
        _dvc(repo, "add", "-q", DATASET)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", f"Add {DATASET}")
    _dvc(repo, "push", "-q")


def run_demo(settings: Settings, package: Path | None = None, workers: int = 4) -> int:
    """Prepare data and catalogue, run the training workflow, and say where everything is."""
    from geomlops.argo.runner import LocalRunner
    from pipelines import render, template_resolver
    from steps.catalog import publish_base_item

    home = settings.home_dir
    home.mkdir(parents=True, exist_ok=True)
    os.environ["GEOMLOPS_HOME"] = str(home)
    package = (package or default_package()).resolve()
    click.secho(f"geomlops demo — work folder {home}", bold=True)

    repo = Path(settings.data_repo_url)
    ensure_data_repo(repo, settings.dvc_remote_url)
    prepare_dataset(repo, package, settings)
    click.echo(f"• dataset {DATASET} versioned by DVC in {repo} (remote {settings.dvc_remote_url})")

    href, validation = publish_base_item(package, settings.catalog_href, settings.schema_dir)
    _report_validation(validation)
    click.echo(f"• base model item: {href}")

    from geomlops.argo.runner.sandbox import settings_writable_paths
    from steps.local_images import LocalImages
    from steps.package_env import writable_cache_paths

    # tasks build and share the package's environment (its cache and uv's) outside the run
    writable = [*settings_writable_paths(settings), *writable_cache_paths()]
    with LocalImages(settings) as images:  # the model's image: its package's environment
        images.warm()  # training runs the package against a tracking server: start it now
        runner = LocalRunner(
            settings.runs_dir,
            max_workers=workers,
            template_resolver=template_resolver,
            writable_paths=writable,
            image_environment=images,
        )
        summary = runner.run(render("training"), {"model": MODEL, "dataset_path": DATASET})
    click.echo()
    if summary.status != "Succeeded":
        click.secho(f"training run {summary.run_id} {summary.status}: {summary.message}", fg="red")
        click.echo(f"  logs: {summary.run_dir}\n  resume: geomlops run --resume {summary.run_id}")
        return 1
    outputs = summary.outputs
    run_id = outputs["collect-run"]["run_id"]
    version = outputs["register"]["version"]
    metrics = json.loads(outputs["evaluate"]["metrics"])
    scores = ", ".join(f"{k.removeprefix('test_')} {metrics[k]:.3f}" for k in _HEADLINE if k in metrics)
    click.secho("Done. Where everything is:", fg="green", bold=True)
    click.echo(f"  workflow run   {summary.run_id}  ({summary.run_dir})")
    click.echo(f"  MLflow run     {run_id}  (tracking URI {settings.tracking_uri})")
    click.echo(f"  model version  models:/{MODEL}/{version}")
    click.echo(f"  STAC item      {outputs['publish']['item']}")
    click.echo(f"  test metrics   {scores} (cloud class, spatially held-out blocks)")
    click.echo(f"  quicklook      {_quicklook(run_id, settings.tracking_uri)}")
    click.echo(f"  browse         {browse_hint(settings.tracking_uri)}")
    return 0


def browse_hint(tracking_uri: str) -> str:
    """How to look at the MLflow runs: open a tracking server, or start the UI on a store.

    ``mlflow ui --backend-store-uri`` accepts a database or folder, not a server's URL.
    """
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} (the MLflow server's UI)"
    return f"mlflow ui --backend-store-uri {tracking_uri}"


_HEADLINE = ("test_iou", "test_f1", "test_precision", "test_recall")


def _quicklook(run_id: str, tracking_uri: str) -> str:
    from mlflow import MlflowClient

    artifacts = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.artifact_uri
    return f"{artifacts}/evaluation/quicklook.png".removeprefix("file://")


def _report_validation(result: ValidationResult) -> None:
    if result.status == "valid":
        click.echo("• model item valid against STAC core and every declared extension schema")
    else:
        click.secho(
            "• model item passed MLM field checks; extension schemas not available offline "
            "(`geomlops schemas fetch --into FOLDER` while online, then set GEOMLOPS_SCHEMA_DIR to "
            "validate them): " + ", ".join(result.unavailable),
            fg="yellow",
        )
