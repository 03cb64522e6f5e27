"""Check a model package against the written contract (docs/model-package.md) in one pass.

Every fault is collected, none raised: each names the file, the field and what was expected.
The test prediction (:func:`prediction_faults`) needs a trained model and the package's own
environment, so it is separate: it takes a ``predict`` callable and the model's MLM spec.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from catalog_sync.mlm import ModelSpec, parse_model_item
from catalog_sync.mlm_assets import CODE_ROLE, INFERENCE_RUNTIME_ROLE, TRAINING_RUNTIME_ROLE
from catalog_sync.mlm_checks import mlm_faults
from catalog_sync.validation import validate_stac
from geomlops.errors import (
    InvalidModelItemError,
    InvalidPackageError,
    MissingInterpreterError,
    PackageEnvironmentError,
    ParameterError,
)
from geomlops.names import check_name
from geomlops.schemas import json_path
from steps.model_io import ModelIO
from steps.own_entry_points import entry_point_faults, passed_parameters
from steps.package import ENTRY_POINTS, ITEM_FILES, PackageInfo, describe_package, find_item_file
from steps.package_env import find_interpreter, read_declaration
from steps.package_scaffold import PLACEHOLDER_OWNER

#: parameters geomlops passes to each entry point it runs (others need a default)
PASSED_PARAMETERS = {"train": ("data",), "evaluate": ("model_uri", "data")}
#: per entry point: the parameters it must declare, and those passed only where declared
Passed = Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]
#: environment declarations MLproject may name, and the files MLflow reads without one
ENV_FIELDS = ("python_env", "conda_env", "docker_env")
DEFAULT_ENV_FILES = ("python_env.yaml", "conda.yaml")
#: jsonschema's message for a missing property
REQUIRED_MESSAGE = re.compile(r"'(.+)' is a required property")


class Fault(BaseModel):
    """One way a package breaks the contract."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    file: str
    """The file at fault, relative to the package."""
    field: str
    """The field in it (a YAML key path or a JSON path), or ``-`` for the file as a whole."""
    expected: str
    """What was expected, and what was found."""

    def __str__(self) -> str:
        return self.describe()

    def describe(self, root: str | Path | None = None) -> str:
        """``FILE: FIELD: EXPECTED`` (the file under ``root`` when given; no field for a whole file)."""
        file = str(Path(root) / self.file) if root is not None else self.file
        return f"{file}: {self.expected}" if self.field == "-" else f"{file}: {self.field}: {self.expected}"


class PackageCheck(BaseModel):
    """What checking a package found."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    root: str
    faults: list[Fault] = []
    notes: list[str] = []
    """Things checked only in part (a schema not available offline), not faults."""
    warnings: list[str] = []
    """What would stop the package on this machine but not on a cluster (its Python missing)."""
    spec: ModelSpec | None = None
    """The model spec, when the item could be read."""
    item_file: str | None = None

    @property
    def ok(self) -> bool:
        """Whether no fault was found."""
        return not self.faults


def _load(path: Path, what: str, faults: list[Fault], rel: str) -> Any:
    try:
        return yaml.safe_load(path.read_text()) if what == "YAML" else json.loads(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as err:
        faults.append(Fault(file=rel, field="-", expected=f"valid {what} ({str(err).splitlines()[0]})"))
        return None


def _placeholder_faults(
    where: str, command: str, params: Mapping[str, Any], named_elsewhere: tuple[str, ...] = ()
) -> list[Fault]:
    """Each ``{name}`` of ``command`` must be a parameter: the command is formatted with them
    (one ``named_elsewhere``, a parameter whose absence another fault names, is not named again)."""
    import string

    try:
        names = [field for _, field, _, _ in string.Formatter().parse(command) if field is not None]
    except ValueError as err:
        expected = f"a command whose braces pair ({err}; a literal brace is written twice)"
        return [Fault(file="MLproject", field=f"{where}.command", expected=expected)]
    declared = ", ".join(str(p) for p in params) or "none"
    faults = []
    for name in dict.fromkeys(re.split(r"[.\[]", field)[0] for field in names):
        if name not in params and name not in named_elsewhere:
            expected = f"{{{name}}} to be one of its parameters (declared: {declared})"
            faults.append(Fault(file="MLproject", field=f"{where}.command", expected=expected))
    return faults


def _entry_point_faults(name: str, raw: Any, passed_to: Passed) -> list[Fault]:
    where = f"entry_points.{name}"
    if not isinstance(raw, Mapping):
        return [Fault(file="MLproject", field=where, expected="a mapping with 'command' and 'parameters'")]
    faults = []
    command = raw.get("command")
    if not isinstance(command, str) or not command.strip():
        faults.append(
            Fault(file="MLproject", field=f"{where}.command", expected="a non-empty command string")
        )
    if "parameters" in raw and raw["parameters"] is None:  # MLflow fails to read the project
        expected = "a mapping of parameters, not null (leave 'parameters' out for none)"
        return [*faults, Fault(file="MLproject", field=f"{where}.parameters", expected=expected)]
    params = raw.get("parameters") or {}
    if not isinstance(params, Mapping):
        return [
            *faults,
            Fault(file="MLproject", field=f"{where}.parameters", expected="a mapping of parameters"),
        ]
    passed, optional = passed_to.get(name, ((), ()))
    if isinstance(command, str):  # a parameter geomlops passes, missing, is named once, below
        faults += _placeholder_faults(where, command, params, passed)
    for needed in passed:
        if needed not in params:
            faults.append(
                Fault(
                    file="MLproject",
                    field=f"{where}.parameters",
                    expected=f"a parameter '{needed}' (geomlops passes {', '.join(passed)})",
                )
            )
    also = f" (and {', '.join(optional)} where declared)" if optional else ""
    for param, spec in params.items():
        # as MLflow reads it: a type alone (`size: float`) or a null default is required
        has_default = isinstance(spec, Mapping) and spec.get("default") is not None
        if name in passed_to and param not in (*passed, *optional) and not has_default:
            faults.append(
                Fault(
                    file="MLproject",
                    field=f"{where}.parameters.{param}",
                    expected=f"a default (geomlops passes only {', '.join(passed)}{also} to {name})",
                )
            )
    return faults


def _environment_faults(root: Path, project: Mapping[str, Any]) -> list[Fault]:
    declared = [f for f in ENV_FIELDS if project.get(f)]
    if len(declared) > 1:
        return [
            Fault(
                file="MLproject",
                field=", ".join(declared),
                expected="one environment declaration, not several",
            )
        ]
    if not declared:
        if any((root / n).is_file() for n in DEFAULT_ENV_FILES):
            return []
        return [
            Fault(
                file="MLproject",
                field="python_env | conda_env | docker_env",
                expected="an environment declaration (or "
                + " or ".join(DEFAULT_ENV_FILES)
                + " beside MLproject)",
            )
        ]
    kind = declared[0]
    value = project[kind]
    if kind == "docker_env":
        if not isinstance(value, Mapping) or not isinstance(value.get("image"), str):
            return [Fault(file="MLproject", field="docker_env.image", expected="the image to run, a string")]
        return []
    path = root / str(value)
    if not path.is_file():
        return [Fault(file="MLproject", field=kind, expected=f"names {value}, which is not in the package")]
    faults: list[Fault] = []
    data = _load(path, "YAML", faults, str(value))
    if faults:
        return faults
    if not isinstance(data, Mapping):
        return [Fault(file=str(value), field="-", expected="a YAML mapping")]
    deps = data.get("dependencies", [])
    if not isinstance(deps, list):
        faults.append(Fault(file=str(value), field="dependencies", expected="a list"))
    if kind == "python_env" and not isinstance(data.get("python"), str | float):
        faults.append(Fault(file=str(value), field="python", expected='the Python version, e.g. "3.11"'))
    return faults


def _interpreter_warnings(root: Path, project: Mapping[str, Any]) -> list[str]:
    """Whether the Python the package's environment asks for is on this machine.

    Not a fault: a package may train only on a cluster, in its image. ``docker_env`` is left
    out (reading it asks a Docker engine); a declaration that cannot be read is left to the
    faults.
    """
    if project.get("docker_env"):
        return []
    try:
        find_interpreter(read_declaration(root))
    except MissingInterpreterError as err:
        return [
            f"{err}. Only training on this machine needs it: on a cluster the package's image "
            "brings its own Python"
        ]
    except (InvalidPackageError, PackageEnvironmentError):
        pass  # not this check's to report (no uv, a malformed declaration)
    return []


def _mlproject_faults(root: Path, passed_to: Passed) -> tuple[list[Fault], Mapping[str, Any]]:
    path = root / "MLproject"
    if not path.is_file():
        return [
            Fault(file="MLproject", field="-", expected="file not found (a model package needs an MLproject)")
        ], {}
    faults: list[Fault] = []
    project = _load(path, "YAML", faults, "MLproject")
    if faults:
        return faults, {}
    if not isinstance(project, Mapping) or not isinstance(project.get("entry_points"), Mapping):
        return [Fault(file="MLproject", field="entry_points", expected="a mapping of entry points")], {}
    entry_points = project["entry_points"]
    missing = [n for n in ENTRY_POINTS if n not in entry_points]
    if missing:
        faults.append(
            Fault(
                file="MLproject",
                field="entry_points",
                expected=f"entry_points lacks {', '.join(repr(m) for m in missing)} "
                f"(has: {', '.join(sorted(entry_points)) or 'none'})",
            )
        )
    for name, raw in entry_points.items():
        faults += _entry_point_faults(str(name), raw, passed_to)
    faults += _environment_faults(root, project)
    return faults, project


def _href_faults(root: Path, item: Mapping[str, Any], rel: str) -> list[Fault]:
    faults = []
    for key, asset in (item.get("assets") or {}).items():
        if not isinstance(asset, Mapping) or not isinstance(asset.get("href"), str):
            continue
        roles = asset.get("roles") or []
        href = str(asset["href"])
        field = f"$.assets['{key}'].href"
        runtime = [r for r in roles if r in (TRAINING_RUNTIME_ROLE, INFERENCE_RUNTIME_ROLE)]
        if runtime:  # an image reference
            if PLACEHOLDER_OWNER in href.split("/"):
                faults.append(
                    Fault(
                        file=rel,
                        field=field,
                        expected=f"the {runtime[0]} image (REGISTRY/REPO:TAG, e.g. "
                        f"ghcr.io/your-org/{href.rsplit('/', 1)[-1]}), got {href}: replace the "
                        f"scaffold's placeholder owner {PLACEHOLDER_OWNER} with your registry and "
                        "owner (or scaffold with `geomlops package new NAME --image REGISTRY/REPO:TAG`)",
                    )
                )
            continue
        if CODE_ROLE in roles and href.startswith("git+"):
            if "@" not in href.removeprefix("git+").split("://", 1)[-1]:
                faults.append(
                    Fault(file=rel, field=field, expected=f"git+URL@COMMIT (a fixed revision), got {href}")
                )
            continue
        if "://" in href and not href.startswith("file://"):
            if CODE_ROLE in roles:
                faults.append(
                    Fault(
                        file=rel,
                        field=field,
                        expected=f"'./' (the package folder) or git+URL@COMMIT, got {href}",
                    )
                )
            continue
        local = Path(href.removeprefix("file://"))
        target = local if local.is_absolute() else (root / local).resolve()
        if not target.exists():
            faults.append(
                Fault(file=rel, field=field, expected=f"a path that exists in the package, got {href}")
            )
    return faults


def _missing_field(path: str, message: str) -> str | None:
    """The JSON path of the field a schema's "'X' is a required property" names, else None."""
    missing = REQUIRED_MESSAGE.fullmatch(message)
    return path + json_path([missing.group(1)])[1:] if missing else None


#: the formats of a ``post_processing_function`` geomlops runs
FUNCTION_FORMATS = {
    "python": "a registered post-processor",
    "mlproject": "an entry point of the package",
}


def _function_faults(item: Mapping[str, Any], rel: str) -> list[Fault]:
    """A post-processing function of a format nothing runs, named before any prediction."""
    outputs = (item.get("properties") or {}).get("mlm:output") if isinstance(item, Mapping) else None
    faults = []
    for i, output in enumerate(outputs if isinstance(outputs, list) else []):
        function = output.get("post_processing_function") if isinstance(output, Mapping) else None
        if isinstance(function, Mapping) and function.get("format") not in FUNCTION_FORMATS:
            known = " or ".join(f"{k!r} ({v})" for k, v in FUNCTION_FORMATS.items())
            faults.append(
                Fault(
                    file=rel,
                    field=f"$.properties['mlm:output'][{i}].post_processing_function.format",
                    expected=f"{known}, got {function.get('format')!r}",
                )
            )
    return faults


def _item_faults(
    root: Path, schema_dir: Path | None
) -> tuple[list[Fault], list[str], ModelSpec | None, str | None]:
    path = find_item_file(root)
    if path is None:
        expected = f"file not found (a model package needs its MLM item: {' or '.join(ITEM_FILES)})"
        return [Fault(file=ITEM_FILES[0], field="-", expected=expected)], [], None, None
    rel = path.name
    faults: list[Fault] = []
    item = _load(path, "JSON", faults, rel)
    if faults:
        return faults, [], None, rel
    if not isinstance(item, Mapping):
        return [Fault(file=rel, field="-", expected="a STAC item (JSON object)")], [], None, rel
    result = validate_stac(item, schema_dir)
    own = mlm_faults(item)
    # a field geomlops' own check names is reported once, by that check (it names the field)
    named = {p for p, _ in own}
    faults += [
        Fault(file=rel, field=i.path, expected=f"{i.message} ({i.schema_uri})")
        for i in result.issues
        if _missing_field(i.path, i.message) not in named
    ]
    notes = [f"{rel}: schema not available offline, not checked: {uri}" for uri in result.unavailable]
    seen = {f.field for f in faults}
    faults += [Fault(file=rel, field=p, expected=e) for p, e in own if p not in seen or p == "$.assets"]
    faults += _href_faults(root, item, rel)
    faults += _function_faults(item, rel)
    item_id = item.get("id")
    if isinstance(item_id, str) and item_id:
        try:  # the id names the model's folders and is part of every version item's id
            check_name(item_id, "id")
        except ParameterError as err:
            faults.append(Fault(file=rel, field="$.id", expected=str(err).removeprefix("id ")))
    spec = None
    try:
        spec = parse_model_item(item, href=str(path))
        # what batch inference, evaluation and serving read of it: scaling, resizing, halo, output
        ModelIO.from_spec(spec)
    except InvalidModelItemError as err:
        if spec is not None or not faults:  # parse errors repeat what the checks above named
            field, _, expected = str(err).partition(": ")
            if not (field.startswith("$") and expected):
                field, expected = "-", str(err)
            if field not in {f.field for f in faults}:  # a field the checks above named, once
                faults.append(Fault(file=rel, field=field, expected=expected))
    return faults, notes, spec, rel


def check_package(package: str | Path, schema_dir: Path | None = None) -> PackageCheck:
    """Check a package folder against the contract, reporting every fault at once.

    Checks: ``MLproject`` (the four entry points, each with a command, the parameters
    geomlops passes, defaults for the others, one environment declaration that parses); a
    ``Dockerfile``; the MLM item (core and extension schemas offline; inputs, outputs and
    classes consistent; assets with roles ``mlm:model``, ``mlm:training-runtime`` and
    ``code``; local hrefs that exist; a code asset that is the package or git+URL@COMMIT;
    runtime images that are not the scaffold's placeholder). A Python version the environment
    asks for that is not on this machine is a warning, not a fault.

    Args:
        package: the package folder (see ``steps.package_source`` for archives and git).
        schema_dir: extension schemas stored by URL (``GEOMLOPS_SCHEMA_DIR``).

    Returns:
        The faults (empty when the package passes), notes, warnings and, when readable, the
        model spec.
    """
    root = Path(package).resolve()
    if not root.is_dir():
        fault = Fault(file=str(root), field="-", expected="a package folder, not found")
        return PackageCheck(root=str(root), faults=[fault])
    item_faults, notes, spec, item_file = _item_faults(root, schema_dir)
    # the entry points the item chooses to run get what geomlops passes them, as train does
    passed_to: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
        name: (needed, ()) for name, needed in PASSED_PARAMETERS.items()
    }
    for name, (needed, optional) in passed_parameters(spec).items():
        before, before_optional = passed_to.get(name, ((), ()))
        passed_to[name] = (tuple(dict.fromkeys((*before, *needed))), (*before_optional, *optional))
    faults, project = _mlproject_faults(root, passed_to)
    if not (root / "Dockerfile").is_file():
        why = "the package's image is built from it" + (
            "; MLproject declares docker_env" if project.get("docker_env") else ""
        )
        faults.append(Fault(file="Dockerfile", field="-", expected=f"file not found ({why})"))
    declared = project.get("entry_points") if project else None
    if spec is not None and isinstance(declared, Mapping):
        item_faults += [
            Fault(file=item_file or "", field=field, expected=expected)
            for field, expected in entry_point_faults(spec, declared)
        ]
    return PackageCheck(
        root=str(root),
        faults=faults + item_faults,
        notes=notes,
        warnings=_interpreter_warnings(root, project) if project else [],
        spec=spec,
        item_file=item_file,
    )


def tiny_input(spec: ModelSpec, *, side: int = 32) -> NDArray[Any]:
    """A tiny input as the model's first MLM input declares it: shape, bands and data type.

    Any size (``-1``) becomes 1 for the batch and ``side`` for the others; values are a
    deterministic ramp in the data type's range.
    """
    first = spec.inputs[0]
    shape = tuple(
        n
        if n > 0
        else (1 if name == "batch" else len(first.bands) if name == "bands" and first.bands else side)
        for n, name in zip(first.shape, first.dim_order, strict=True)
    )
    size = int(np.prod(shape))
    return (np.arange(size, dtype=np.float64) % 7).reshape(shape).astype(first.data_type)


def prediction_faults(spec: ModelSpec, predict: Callable[[NDArray[Any]], NDArray[Any]]) -> list[Fault]:
    """Predict :func:`tiny_input` and check the answer against the first MLM output.

    Checked: the number of dimensions and every fixed size of ``result.shape``; batch, height
    and width equal to the input's; class values among ``classification:classes`` (or, with
    a class dimension, that dimension's size).

    Args:
        spec: the model's MLM spec.
        predict: the trained model's predict (run in the package's own environment).

    Returns:
        The faults, each naming the output field it breaks (file ``model``).
    """
    array = tiny_input(spec)
    output = spec.outputs[0]
    where = "$.properties['mlm:output'][0]"
    try:
        result = np.asarray(predict(array))
    except Exception as err:  # noqa: BLE001 - any failure of the model is a fault to report
        return [Fault(file="model", field="predict", expected=f"an answer for input {array.shape}: {err}")]
    if result.ndim != len(output.shape):
        return [
            Fault(
                file="model",
                field=f"{where}.result.shape",
                expected=f"{len(output.shape)} dimensions {output.dim_order}, got shape {result.shape} "
                f"for input {array.shape}",
            )
        ]
    faults = []
    sizes = dict(zip(spec.inputs[0].dim_order, array.shape, strict=True))
    for i, (declared, name) in enumerate(zip(output.shape, output.dim_order, strict=True)):
        wanted = declared if declared > 0 else sizes.get(name)
        if wanted is not None and result.shape[i] != wanted:
            faults.append(
                Fault(
                    file="model",
                    field=f"{where}.result.shape[{i}]",
                    expected=f"'{name}' of size {wanted}, got {result.shape[i]} (input {array.shape})",
                )
            )
    values = {c.value for c in output.classes}
    class_dim = any(d in ("class", "classes", "channel", "channels") for d in output.dim_order)
    if values and not class_dim and not faults:
        found = {int(v) for v in np.unique(result)} if result.dtype.kind in "iub" else None
        if found is None or not found <= values:
            faults.append(
                Fault(
                    file="model",
                    field=f"{where}['classification:classes']",
                    expected=f"class values among {sorted(values)}, got "
                    + (f"{sorted(found - values)}" if found is not None else f"data type {result.dtype}"),
                )
            )
    return faults


class PackageReport(BaseModel):
    """A validated model package: what the registration workflow needs of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    package: PackageInfo
    model_id: str
    image: str
    schema_status: str
    unavailable_schemas: list[str] = []


def validate_package(
    package: str | Path, schema_dir: Path | None = None, *, source: str | Path | None = None
) -> PackageReport:
    """Check a whole model package against the contract (every fault at once) and describe it.

    Args:
        package: the package folder.
        schema_dir: folder of extension schemas stored by URL (offline validation).
        source: the folder ``package`` was copied from, where the user mends a fault: faults
            name files there (default: in ``package``).

    Returns:
        The package, its model id and the image to build (the item's training-runtime asset).

    Raises:
        InvalidPackageError: listing every fault, each naming the file, the field and what was
            expected (see ``steps.package_check.check_package``).
    """
    check = check_package(package, schema_dir)
    if check.faults or check.spec is None or not check.spec.training_image:
        shown = str(source) if source is not None else check.root
        faults = "\n".join(f"  {fault.describe(shown)}" for fault in check.faults)
        checked = f" (checked as its copy {check.root})" if source is not None else ""
        raise InvalidPackageError(f"model package {shown}{checked}: {len(check.faults)} fault(s):\n{faults}")
    info = describe_package(check.root, required=tuple(ENTRY_POINTS))
    return PackageReport(
        package=info,
        model_id=check.spec.id,
        image=check.spec.training_image,
        schema_status="incomplete" if check.notes else "valid",
        unavailable_schemas=[n.rsplit(": ", 1)[-1] for n in check.notes],
    )
