"""``geomlops package``: check a model package against the contract, scaffold a new one, run
one of its entry points in its own environment."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from catalog_sync.mlm import ModelSpec
    from steps.package_check import Fault

from geomlops.cli._tools import fail_cleanly
from geomlops.errors import GeomlopsError
from geomlops.settings import get_settings, use_tracking

#: exit status of ``package check`` when the package breaks the contract (2: the command
#: itself was refused, e.g. a source that does not exist)
EXIT_FAULTS = 4


@click.group("package")
def package() -> None:
    """Model packages: check one against the contract (docs/model-package.md), scaffold one, run
    one of its entry points in its own environment."""


def _model_dir(model_uri: str, work: Path) -> Path:
    local = Path(model_uri.removeprefix("file://"))
    if local.is_dir():
        return local
    import mlflow

    use_tracking()
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(work / "model")))


def _prediction(spec: ModelSpec, model_dir: Path, python: Path) -> list[Fault]:
    """Load the model with the package's interpreter and check one prediction."""
    from steps._package_predictor import package_predictor
    from steps.package_check import Fault, prediction_faults

    try:
        with package_predictor(python, model_dir) as predict:
            return prediction_faults(spec, predict)
    except GeomlopsError as err:
        return [
            Fault(
                file="model",
                field="load",
                expected=f"a pyfunc model loadable in the package's environment: {err}",
            )
        ]


@package.command("check")
@click.argument("source")
@click.option(
    "--model-uri",
    help="A trained model of this package (runs:/ID/model, models:/NAME/VERSION or a folder): "
    "also make a test prediction on a tiny input built from the MLM input, checked against the MLM output.",
)
@click.option(
    "--python",
    "python",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Interpreter of the package's environment for the test prediction (default: the "
    "environment geomlops builds from the package's declaration).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the faults as JSON.")
@fail_cleanly
def check(source: str, model_uri: str | None, python: Path | None, as_json: bool) -> None:
    """Check the model package at SOURCE and report every fault at once.

    SOURCE is a folder, an archive (.tar.gz, .tgz, .tar, .zip) or git+URL@COMMIT. Each fault
    names the file, the field and what was expected. Exit status: 0 when the package passes,
    4 when it has faults, 2 when SOURCE cannot be read.
    """
    from steps.package_check import check_package
    from steps.package_source import open_package_source

    with tempfile.TemporaryDirectory(prefix="geomlops-package-") as tmp:
        work = Path(tmp)
        root = open_package_source(source, work)
        result = check_package(root, get_settings().schema_dir)
        faults = list(result.faults)
        predicted = False
        if model_uri and result.spec is not None and not faults:
            if python is None:
                from steps.package_env import ensure_environment

                python = ensure_environment(root).python
            faults += _prediction(result.spec, _model_dir(model_uri, work), python)
            predicted = True
    if as_json:
        click.echo(
            json.dumps(
                {
                    "package": source,
                    "faults": [f.model_dump() for f in faults],
                    "notes": result.notes,
                    "warnings": result.warnings,
                }
            )
        )
    else:
        for note in [*result.notes, *result.warnings]:
            click.secho(f"! {note}", fg="yellow", err=True)
        for fault in faults:
            click.echo(f"✗ {fault}")
        if faults:
            click.secho(f"{source}: {len(faults)} fault(s)", fg="red")
        else:
            done = (
                "contract and test prediction"
                if predicted
                else "contract (no --model-uri: no test prediction)"
            )
            click.secho(f"✓ {source}: {done}", fg="green")
    sys.exit(EXIT_FAULTS if faults else 0)


@package.command("new")
@click.argument("name")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder to create the package in.",
)
@click.option(
    "--image",
    metavar="REGISTRY/REPO:TAG",
    help="The image to build the package into and train in, e.g. ghcr.io/your-org/NAME:0.1.0 "
    "(the item's runtime assets). Without it they name ghcr.io/OWNER/NAME:0.1.0, which "
    "`package check` reports until replaced.",
)
@fail_cleanly
def new(name: str, output: Path, image: str | None) -> None:
    """Scaffold the model package NAME (a folder OUTPUT/NAME); with --image it passes
    `geomlops package check` as written."""
    from steps.package_scaffold import placeholder_image, scaffold_package

    created = scaffold_package(name, output, image=image)
    click.echo(f"created {created}")
    if image is None:
        click.secho(
            f"! {created / 'stac-item.json'}: put your image in place of {placeholder_image(name)} "
            "(training-runtime and inference-runtime), or scaffold with --image REGISTRY/REPO:TAG",
            fg="yellow",
            err=True,
        )


@package.command("run")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("entry_point", metavar="ENTRY_POINT")
@click.option(
    "-P",
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A parameter of the entry point, as `mlflow run -P` takes it (repeat for more).",
)
@fail_cleanly
def run(source: Path, entry_point: str, params: tuple[str, ...]) -> None:
    """Run ENTRY_POINT of the model package in folder SOURCE in the package's own environment
    (built from its declaration as training builds it, cached; nothing is installed into
    geomlops'), e.g. its preprocess to make a dataset:

        geomlops package run water-mask preprocess -P source=/data/scenes -P output=/data/water

    Parameters are substituted into the MLproject command as `mlflow run` substitutes them:
    defaults filled in, types checked, `path` parameters made absolute from here. The command
    runs in SOURCE, as with `mlflow run`: give `string` parameters that name files as absolute
    paths. A parameter the entry point does not declare is refused (`mlflow run` would pass
    it on as `--NAME VALUE`). `train` is run by the training workflow (`geomlops run
    training`), which versions the data and registers the model. Exits with the command's exit
    status.
    """
    from geomlops.errors import ParameterError
    from steps.package import describe_package
    from steps.package_env import command_environment, ensure_environment
    from steps.training import entry_point_command, run_package_command

    if entry_point == "train":
        raise ParameterError(
            "ENTRY_POINT 'train': train through the training workflow (geomlops run training -p "
            "model=NAME -p dataset_path=…), which versions the data, tracks the run and registers the model"
        )
    parameters: dict[str, str] = {}
    for given in params:
        name, equals, value = given.partition("=")
        if not equals or not name.strip():
            raise ParameterError(f"-P {given!r}: expected NAME=VALUE")
        parameters[name.strip()] = value
    info = describe_package(source, required=())
    if entry_point not in info.entry_points:
        raise ParameterError(
            f"ENTRY_POINT {entry_point!r}: {Path(info.path) / 'MLproject'} has no such entry point "
            f"(it has: {', '.join(sorted(info.entry_points)) or 'none'})"
        )
    declared = info.entry_points[entry_point].get("parameters") or {}
    if isinstance(declared, dict) and (unknown := sorted(set(parameters) - set(declared))):
        # mlflow run would pass them on as extra --NAME VALUE arguments, which the command
        # refuses (or ignores) only once the environment is built and the command runs
        raise ParameterError(
            f"{', '.join(f'-P {u}' for u in unknown)}: entry point '{entry_point}' of "
            f"{Path(info.path) / 'MLproject'} has no parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(u) for u in unknown)} "
            f"(it takes: {', '.join(sorted(declared)) or 'none'})"
        )
    command = entry_point_command(info, entry_point, parameters, info.path)
    environment = ensure_environment(info.path)
    said = f"; {environment.note}" if environment.note else ""
    click.secho(f"environment: {environment.root} (Python {environment.python_version}){said}", err=True)
    click.secho(f"$ {command}", fg="cyan", err=True)
    code, _ = run_package_command(command, Path(info.path), command_environment(environment))
    sys.exit(code if code >= 0 else 128 - code)  # killed by signal N: 128 + N, as a shell says
