"""Typed view of a model's STAC item with the MLM extension.

Only conversion to and from dicts lives here; reading and writing items is the stores' job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from geomlops.errors import InvalidModelItemError

MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.5.2/schema.json"
VERSION_SCHEMA = "https://stac-extensions.github.io/version/v1.2.0/schema.json"

#: fields the MLM extension requires in an item's properties
REQUIRED_PROPERTIES = ("mlm:name", "mlm:architecture", "mlm:tasks", "mlm:input", "mlm:output")


class ModelClass(BaseModel):
    """One class a model output can take."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    value: int


#: MLM ``value_scaling`` types and the fields each needs
SCALING_FIELDS: dict[str, tuple[str, ...]] = {
    "min-max": ("minimum", "maximum"),
    "z-score": ("mean", "stddev"),
    "clip": ("minimum", "maximum"),
    "clip-min": ("minimum",),
    "clip-max": ("maximum",),
    "offset": ("value",),
    "scale": ("value",),
    "processing": (),
}


class ValueScaling(BaseModel):
    """One MLM ``value_scaling`` object (for all bands, or for one band in order)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    stddev: float | None = None
    value: float | None = None
    expression: str | None = None


class DerivedBand(BaseModel):
    """An input band computed from the imagery's bands: an MLM band with an ``expression``
    (see :mod:`catalog_sync.band_expression`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    expression: str
    reads: tuple[str, ...]
    """The imagery's bands the expression reads, in order of first use."""


class ModelInput(BaseModel):
    """One MLM input: its bands, tensor shape and how values are prepared.

    ``halo`` is ``geomlops:halo``: the pixels of context the model needs on each side of a
    pixel (its receptive-field radius), read around every block.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    bands: tuple[str, ...]
    shape: tuple[int, ...]
    dim_order: tuple[str, ...]
    data_type: str
    value_scaling: tuple[ValueScaling, ...] = ()
    resize_type: str | None = None
    halo: int | None = None
    entry_point: str | None = None
    """``geomlops:inference``: the package's entry point that predicts an image, used instead of
    the logged pyfunc model (None: the model)."""
    derived: tuple[DerivedBand, ...] = ()
    """The bands among ``bands`` computed by an expression from the imagery's bands."""

    @property
    def source_bands(self) -> tuple[str, ...]:
        """The imagery's bands the model reads (:func:`source_bands`)."""
        return source_bands(self.bands, {d.name: d.reads for d in self.derived})


def source_bands(bands: Sequence[str], derived: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """The imagery's bands a model reads: its ``bands`` that are not derived, then those the
    derived ones read (``derived``: name → the bands its expression reads) that are not among
    them, in order of first use (the order of undescribed imagery's bands)."""
    sources = [b for b in bands if b not in derived]
    for band in bands:
        sources += [name for name in derived.get(band, ()) if name not in sources]
    return tuple(sources)


class ModelOutput(BaseModel):
    """One MLM output: its tasks, shape, classes and post-processing function."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    tasks: tuple[str, ...]
    shape: tuple[int, ...]
    dim_order: tuple[str, ...]
    data_type: str
    classes: tuple[ModelClass, ...] = ()
    post_processing_function: str | None = None
    entry_point: str | None = None
    """The package's entry point that turns the class mask into features, where
    ``post_processing_function`` has the format ``mlproject`` (None: geomlops' own)."""
    threshold: float | None = None
    """``geomlops:threshold``: the score above which a one-channel score is the positive class."""
    postprocessor_options: dict[str, Any] = {}
    """The output's ``geomlops:*`` objects, as the item gives them: the options a post-processor
    reads (``geomlops:buildings``)."""


class ModelSpec(BaseModel):
    """What the workflows need to know of a model, read from its MLM item."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    name: str
    title: str | None = None
    architecture: str
    tasks: tuple[str, ...]
    framework: str | None = None
    inputs: tuple[ModelInput, ...]
    outputs: tuple[ModelOutput, ...]
    hyperparameters: dict[str, Any] = {}
    package_uri: str | None = None
    training_image: str | None = None
    inference_image: str | None = None
    item_href: str | None = None
    accelerator: str | None = None
    batch_size: int | None = None
    """``mlm:batch_size_suggestion``: arrays per predict call."""


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in mapping or mapping[key] in (None, "", []):
        raise InvalidModelItemError(f"{where}: required field '{key}' is missing")
    return mapping[key]


def _band_names(raw: Mapping[str, Any], where: str) -> tuple[str, ...]:
    names = []
    for i, band in enumerate(raw.get("bands", []) or []):
        if isinstance(band, str):
            names.append(band)
        elif isinstance(band, Mapping) and "name" in band:
            names.append(str(band["name"]))
        else:
            raise InvalidModelItemError(f"{where}.bands[{i}]: expected a name or {{'name': ...}}")
    return tuple(names)


def _derived_bands(raw: Mapping[str, Any], where: str) -> tuple[DerivedBand, ...]:
    """The input's bands given by an ``expression`` (format and expression checked)."""
    from catalog_sync.band_expression import BandExpressionError, derived_bands

    bands = raw.get("bands", []) or []
    out = []
    for i, parsed in derived_bands(bands).items():
        if isinstance(parsed, BandExpressionError):
            raise InvalidModelItemError(f"{where}.bands[{i}]: {parsed}")
        out.append(DerivedBand(name=str(bands[i]["name"]), expression=parsed.text, reads=parsed.names))
    return tuple(out)


def _function(raw: Mapping[str, Any] | None, where: str) -> str | None:
    if not raw:
        return None
    if raw.get("format") != "python":
        return None
    expression = _require(raw, "expression", where)
    return str(expression)


def entry_point_fault(raw: Any) -> str | None:
    """What is wrong with a field naming one of the package's entry points (``geomlops:inference``,
    an ``mlproject`` expression), or None: absent, or a name."""
    if raw is None or (isinstance(raw, str) and raw.strip()):
        return None
    return f"the name of an MLproject entry point, got {raw!r}"


def _entry_point(raw: Any, where: str) -> str | None:
    fault = entry_point_fault(raw)
    if fault:
        raise InvalidModelItemError(f"{where}: expected {fault}")
    return raw.strip() if raw is not None else None


def _mlproject(raw: Mapping[str, Any] | None, where: str) -> str | None:
    """The entry point a ``post_processing_function`` of format ``mlproject`` names."""
    if not isinstance(raw, Mapping) or raw.get("format") != "mlproject":
        return None
    return _entry_point(raw.get("expression"), f"{where}.expression")


def _scaling(raw: Any, where: str) -> tuple[ValueScaling, ...]:
    if not raw:
        return ()
    if not isinstance(raw, list):
        raise InvalidModelItemError(f"{where}: expected a list of scaling objects, got {type(raw).__name__}")
    found = []
    for i, entry in enumerate(raw):
        w = f"{where}[{i}]"
        kind = entry.get("type") if isinstance(entry, Mapping) else None
        if kind not in SCALING_FIELDS:
            raise InvalidModelItemError(
                f"{w}.type: expected one of {', '.join(SCALING_FIELDS)}, got {kind!r}"
            )
        for field in SCALING_FIELDS[kind]:
            if not isinstance(entry.get(field), int | float) or isinstance(entry.get(field), bool):
                raise InvalidModelItemError(f"{w}.{field}: a number is required for type {kind!r}")
        known = {k: entry[k] for k in ValueScaling.model_fields if k in entry}
        found.append(ValueScaling.model_validate(known))
    return tuple(found)


def _halo(raw: Mapping[str, Any], where: str) -> int | None:
    value = raw.get("geomlops:halo")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidModelItemError(
            f"{where}['geomlops:halo']: expected a whole number of pixels >= 0, got {value!r}"
        )
    return value


def _threshold(raw: Mapping[str, Any], where: str) -> float | None:
    value = raw.get("geomlops:threshold")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidModelItemError(f"{where}['geomlops:threshold']: expected a number, got {value!r}")
    return float(value)


def _batch_size(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidModelItemError(
            f"{where}['mlm:batch_size_suggestion']: expected an integer >= 1, got {value!r}"
        )
    return value


def _asset_href(assets: Mapping[str, Any], role: str) -> str | None:
    for asset in assets.values():
        if role in (asset.get("roles") or []):
            return str(asset["href"])
    return None


def parse_model_item(item: Mapping[str, Any], href: str | None = None) -> ModelSpec:
    """Turn an MLM item into a :class:`ModelSpec`.

    Args:
        item: the STAC item as a dict.
        href: where the item was read from; relative asset hrefs are resolved against it.

    Returns:
        The typed model spec.

    Raises:
        InvalidModelItemError: naming the first missing or malformed MLM field.
    """
    item_id = _require(item, "id", "item")
    props = _require(item, "properties", f"item '{item_id}'")
    where = f"item '{item_id}' properties"
    for key in REQUIRED_PROPERTIES:
        _require(props, key, where)
    assets = item.get("assets") or {}
    if _asset_href(assets, "mlm:model") is None:
        raise InvalidModelItemError(f"item '{item_id}' assets: no asset has the required role 'mlm:model'")
    inputs = []
    for i, raw in enumerate(props["mlm:input"]):
        w = f"{where}['mlm:input'][{i}]"
        tensor = _require(raw, "input", w)
        inputs.append(
            ModelInput(
                name=str(_require(raw, "name", w)),
                bands=_band_names(raw, w),
                shape=tuple(_require(tensor, "shape", f"{w}.input")),
                dim_order=tuple(_require(tensor, "dim_order", f"{w}.input")),
                data_type=str(_require(tensor, "data_type", f"{w}.input")),
                value_scaling=_scaling(raw.get("value_scaling"), f"{w}.value_scaling"),
                resize_type=raw.get("resize_type"),
                halo=_halo(raw, w),
                entry_point=_entry_point(raw.get("geomlops:inference"), f"{w}['geomlops:inference']"),
                derived=_derived_bands(raw, w),
            )
        )
    outputs = []
    for i, raw in enumerate(props["mlm:output"]):
        w = f"{where}['mlm:output'][{i}]"
        result = _require(raw, "result", w)
        classes = tuple(
            ModelClass(name=str(c["name"]), value=int(c["value"]))
            for c in raw.get("classification:classes", []) or []
        )
        outputs.append(
            ModelOutput(
                name=str(_require(raw, "name", w)),
                tasks=tuple(_require(raw, "tasks", w)),
                shape=tuple(_require(result, "shape", f"{w}.result")),
                dim_order=tuple(_require(result, "dim_order", f"{w}.result")),
                data_type=str(_require(result, "data_type", f"{w}.result")),
                classes=classes,
                post_processing_function=_function(
                    raw.get("post_processing_function"), f"{w}.post_processing_function"
                ),
                entry_point=_mlproject(raw.get("post_processing_function"), f"{w}.post_processing_function"),
                threshold=_threshold(raw, w),
                postprocessor_options={
                    k: v for k, v in raw.items() if k.startswith("geomlops:") and isinstance(v, Mapping)
                },
            )
        )
    package = _asset_href(assets, "code")
    return ModelSpec(
        id=str(item_id),
        name=str(props["mlm:name"]),
        title=props.get("title"),
        architecture=str(props["mlm:architecture"]),
        tasks=tuple(props["mlm:tasks"]),
        framework=props.get("mlm:framework"),
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        hyperparameters=dict(props.get("mlm:hyperparameters") or {}),
        package_uri=_resolve(package, href),
        training_image=_asset_href(assets, "mlm:training-runtime"),
        inference_image=_asset_href(assets, "mlm:inference-runtime"),
        item_href=href,
        accelerator=props.get("mlm:accelerator"),
        batch_size=_batch_size(props.get("mlm:batch_size_suggestion"), where),
    )


def _resolve(target: str | None, base: str | None) -> str | None:
    if target is None or base is None or "://" in target or target.startswith("/"):
        return target
    from pathlib import Path

    base_path = Path(base.removeprefix("file://"))
    return str((base_path.parent / target).resolve())
