"""``geomlops data``: version a dataset in the data repository, for training to read."""

from __future__ import annotations

from pathlib import Path

import click

from geomlops.cli._tools import fail_cleanly
from geomlops.errors import ConfigurationError
from geomlops.settings import get_settings


@click.group("data")
def data() -> None:
    """Datasets: version a folder in the data repository (git + DVC) that training reads."""


@data.command("add")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--as",
    "path",
    required=True,
    metavar="PATH",
    help="Its path in the data repository (e.g. datasets/water): training's -p dataset_path.",
)
@fail_cleanly
def add(folder: Path, path: str) -> None:
    """Version FOLDER in the data repository as PATH, and push it to the DVC remote.

    The folder is copied into the repository ($GEOMLOPS_DATA_REPO, default
    $GEOMLOPS_HOME/data, created with the DVC remote $GEOMLOPS_DVC_REMOTE if new), added with
    DVC, committed and pushed. Its layout is the package's to decide; geomlops' evaluation
    reads chips/ + labels/ or image.tif + labels.tif + split.tif (docs/model-package.md).
    """
    from steps.data_repo import add_dataset

    settings = get_settings()
    repo_url = settings.data_repo_url
    if "://" in repo_url or repo_url.startswith("git@"):
        raise ConfigurationError(
            f"the data repository {repo_url} is not a folder on this machine: clone it, then "
            "`dvc add` and `git push` there (or set GEOMLOPS_DATA_REPO to a local clone)"
        )
    version = add_dataset(folder, path, Path(repo_url), settings.dvc_remote_url)
    said = "versioned" if version.changed else "unchanged (already the version at HEAD)"
    click.echo(f"{version.path}: {said} in {version.repo}, commit {version.commit[:12]}")
    click.echo(
        f"  train on it: geomlops run training -p model=MODEL -p dataset_path={version.path} "
        f"-p dataset_rev={version.commit[:12]}"
    )
