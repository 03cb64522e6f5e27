"""Checks of a pipeline's parameters that can be made before its run starts.

A bad request should fail in seconds, with the field named, not minutes into a run after
retries. What can be checked from this machine without doing the work is checked here: names
that become folders, output folders, files given by relative paths, the AOI's geometry, the
imagery's georeference, bands and data type against the model's MLM input, that the model and
the version or alias exist, that ``train_params`` is a JSON object, the promotion policy's
metric and tolerance, that the candidate is not already in production. The same checks run
again inside the workflow's steps (on Argo nothing runs before them), where they raise
permanent errors that are not retried.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from geomlops.errors import ParameterError, PromotionError

#: a pipeline's check: raises on the first fault; gives back notes for the user (or None)
Check = Callable[[Mapping[str, str]], tuple[str, ...] | None]


def _positive_int(params: Mapping[str, str], name: str) -> None:
    value = params.get(name)
    if value is None:
        return
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise ParameterError(f"parameter '{name}' {value!r}: expected a whole number > 0")


def _batch_inference(params: Mapping[str, str]) -> tuple[str, ...] | None:
    import rasterio

    from geomlops.names import check_name, check_output_folder
    from geomlops.settings import get_settings, use_tracking
    from steps.aoi import aoi_geometry, read_aoi
    from steps.batch import check_batch_locations, plan_batch
    from steps.model_spec import fetch_model_spec
    from steps.predictions import check_output_item, predictions_item_id, resolve_version

    if "model" not in params:
        return None  # the manifest's own check names a missing required parameter
    model = params["model"]
    check_name(model, "parameter 'model'")
    check_name(params.get("area", "aoi"), "parameter 'area'")
    if params.get("output"):
        check_output_folder(params["output"], "parameter 'output'")
    for name in ("block_size", "group_size"):
        _positive_int(params, name)
    if params.get("halo") not in (None, "") and not params["halo"].isdigit():
        raise ParameterError(f"parameter 'halo' {params['halo']!r}: expected a whole number >= 0")
    check_batch_locations(params.get("imagery", ""), params.get("aoi", ""))
    aoi = read_aoi(params["aoi"]) if params.get("aoi") else None
    if aoi is not None:
        aoi_geometry(aoi, f"parameter 'aoi' ({params['aoi']})")
    settings = get_settings()
    fetch_model_spec(model, settings.catalog_href)  # names the models there when it is not
    use_tracking(settings)
    lineage = resolve_version(model, params.get("model_version") or "production")
    if params.get("output"):
        check_output_item(Path(params["output"]), predictions_item_id(lineage, params.get("area", "aoi")))
    spec = fetch_model_spec(model, settings.catalog_href, lineage.model_version)
    imagery = params.get("imagery", "")
    if not imagery:
        return None  # the manifest's own check names a missing required parameter
    block_size = int(params.get("block_size") or 1 << 20)
    try:
        plan = plan_batch(imagery, aoi, block_size=block_size, group_size=1, model_input=spec.inputs[0])
    except rasterio.errors.RasterioIOError as err:  # pragma: no cover - plan_batch names it
        raise ParameterError(f"parameter 'imagery' {imagery!r}: {err}") from err
    return plan.notes  # e.g. imagery that is decoded whole for every block: said before the run


def _training(params: Mapping[str, str]) -> None:
    from geomlops.names import check_name
    from geomlops.settings import get_settings
    from steps.model_spec import fetch_model_spec

    if "model" not in params:
        return  # the manifest's own check names a missing required parameter
    model = params["model"]
    check_name(model, "parameter 'model'")
    given: dict[str, Any] = {}
    for name in ("train_params", "eval_params"):
        raw = params.get(name)
        if raw in (None, ""):
            continue
        try:
            parsed: Any = json.loads(str(raw))
        except json.JSONDecodeError as err:
            raise ParameterError(
                f"parameter '{name}' {raw!r}: expected a JSON object such as "
                f'{{"max_iter": 50}} ({err.msg} at character {err.pos})'
            ) from None
        if not isinstance(parsed, dict):
            raise ParameterError(
                f"parameter '{name}' {raw!r}: expected a JSON object, not {type(parsed).__name__}"
            )
        if name == "eval_params":
            from steps._eval_classes import parse_parameters

            parse_parameters(parsed)  # names an unknown or mistyped field
        else:
            given = parsed
    settings = get_settings()
    spec = fetch_model_spec(model, settings.catalog_href)
    if given and spec.package_uri and Path(spec.package_uri).is_dir():
        _check_train_params(given, Path(spec.package_uri))
    repo = params.get("dataset_repo") or settings.data_repo_url  # as the run reads it
    if params.get("dataset_path") and "://" not in repo and not repo.startswith("git@"):
        from steps.dataset import resolve_dataset

        # a data repository on this machine: the path and revision are looked up in seconds
        resolve_dataset(repo, params["dataset_path"], params.get("dataset_rev") or "HEAD")


def _check_train_params(given: Mapping[str, Any], package: Path) -> None:
    """Refuse training parameters the package's ``train`` entry point does not declare (its
    command would get them as extra ``--name value`` arguments) and ``data`` (geomlops')."""
    from steps.package import read_mlproject

    entry = (read_mlproject(package).get("entry_points") or {}).get("train") or {}
    declared = sorted((entry.get("parameters") or {}) if isinstance(entry, dict) else {})
    unknown = sorted(set(given) - set(declared)) + (["data"] if "data" in given else [])
    if unknown:
        takes = ", ".join(d for d in declared if d != "data") or "none"
        raise ParameterError(
            f"parameter 'train_params': {', '.join(repr(u) for u in unknown)} "
            f"{'is not a parameter' if len(unknown) == 1 else 'are not parameters'} geomlops can pass to "
            f"the train entry point of {package / 'MLproject'} (it takes: {takes}; data is geomlops' own)"
        )


def _promotion(params: Mapping[str, str]) -> None:
    from mlflow import MlflowClient

    from catalog_sync import open_store
    from catalog_sync.collections import MODELS
    from geomlops.names import check_name
    from geomlops.settings import get_settings, use_tracking
    from steps.model_spec import fetch_model_spec
    from steps.promotion_report import production_version, promotion_policy, version_run

    if "model" not in params:
        return  # the manifest's own check names a missing required parameter
    model = params["model"]
    check_name(model, "parameter 'model'")
    settings = get_settings()
    fetch_model_spec(model, settings.catalog_href)  # names the models there when it is not
    base = open_store(settings.catalog_href).get_item(MODELS, model)
    try:
        metric, _, _ = promotion_policy(
            base.get("properties") or {}, params.get("primary_metric", ""), params.get("tolerance")
        )
    except PromotionError as err:
        raise ParameterError(str(err)) from None
    use_tracking(settings)
    candidate = params.get("candidate", "")
    run = MlflowClient().get_run(version_run(model, candidate))
    if production_version(model) == candidate:
        raise ParameterError(
            f"parameter 'candidate': version {candidate} of '{model}' already is the production version"
        )
    logged = sorted(run.data.metrics)
    if metric not in logged:
        raise ParameterError(
            f"primary metric {metric!r}: version {candidate} of '{model}' logged no such metric "
            f"(it logged: {', '.join(logged) or 'none'})"
        )


def _registration(params: Mapping[str, str]) -> None:
    from geomlops.names import check_absolute_location
    from steps.package_source import is_git_source

    package = params.get("package", "")
    if package and not is_git_source(package):  # a folder or an archive the first task reads
        check_absolute_location(package, "parameter 'package'")
        local = package.removeprefix("file://")
        if "://" not in local and not Path(local).exists():
            raise ParameterError(
                f"parameter 'package' {package!r}: no such folder or file (expected a model package: "
                "its folder, or an archive of it)"
            )


#: the checks of each pipeline that has some
CHECKS: dict[str, Check] = {
    "registration": _registration,
    "batch-inference": _batch_inference,
    "training": _training,
    "promotion": _promotion,
}


def preflight(pipeline: str, params: Mapping[str, str]) -> tuple[str, ...]:
    """Check ``params`` of ``pipeline`` before its run starts (nothing for other pipelines).

    Returns:
        Notes for the user that are no fault (batch inference: imagery that is decoded whole
        for every block, an area of interest reprojected to the imagery's CRS).

    Raises:
        GeomlopsError: the first fault found, naming the parameter (a ``PermanentError`` for bad
            input or something not found; an unavailable service says so).
    """
    check = CHECKS.get(pipeline)
    notes = check(params) if check is not None else None
    return tuple(notes or ())
