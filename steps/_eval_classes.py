"""Which label value is which model class, and which value is ignored, for evaluation.

Sources, each overriding the one before, field by field: the defaults (values 0 and 1, 255
ignored), the example's ``dataset.json``, the dataset's STAC label item (``label-item.json``,
else a ``stac-item.json`` that declares the label extension), the evaluation parameters. The
result is matched against the model's MLM classes (``mlm:output`` ->
``classification:classes``), whose names then name the metrics. Reading the two JSON files is
:func:`read_label_sources`' job; everything else here is pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from catalog_sync.mlm import ModelClass
from geomlops.errors import InvalidDatasetError, ParameterError

METADATA_FILE = "dataset.json"
LABEL_ITEM_FILES = ("label-item.json", "stac-item.json")
LABEL_EXTENSION = "stac-extensions.github.io/label/"
DEFAULT_IGNORE = 255


class EvaluationParameters(BaseModel):
    """Evaluation parameters (the training workflow's ``eval_params``), all optional.

    ``label_value`` and ``background_value`` describe a two-class dataset (the value burnt for
    the object and for everything else); ``label_values`` names the value of every class (MLM
    class name -> value in the label rasters); ``ignore_value`` is the labels' nodata;
    ``positive_class`` names the class whose scores are the headline metrics.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    label_value: int | None = None
    background_value: int | None = None
    label_values: dict[str, int] | None = None
    ignore_value: int | None = None
    positive_class: str | None = None


class LabelSpec(BaseModel):
    """What the dataset (and the parameters) say about the label values, before matching."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    named: dict[str, int] | None = None
    """Class name -> label value."""
    values: list[int] | None = None
    """Label values without names: they are the model's class values."""
    label_value: int | None = None
    background_value: int | None = None
    ignore_value: int | None = DEFAULT_IGNORE
    ignore_stated: bool = False
    positive: str | int | None = None
    """A class name, or a label value."""
    sources: list[str] = []


class ClassScheme(BaseModel):
    """The classes evaluation scores, in confusion-matrix order."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    names: list[str]
    label_values: list[int | None]
    """Each class's value in the label rasters (None: the dataset never labels it)."""
    model_values: list[int]
    """Each class's value in the model's prediction."""
    positive_index: int
    ignore_value: int | None
    source: str


def parse_parameters(raw: Mapping[str, Any] | EvaluationParameters | None) -> EvaluationParameters:
    """Validate evaluation parameters; a wrong one is a :class:`ParameterError` naming it."""
    if isinstance(raw, EvaluationParameters):
        return raw
    given = dict(raw or {})
    allowed = sorted(EvaluationParameters.model_fields)
    if unknown := sorted(set(given) - set(allowed), key=str):
        raise ParameterError(
            f"parameter 'eval_params': {', '.join(repr(u) for u in unknown)} "
            f"{'is not an evaluation parameter' if len(unknown) == 1 else 'are not evaluation parameters'} "
            f"(it takes: {', '.join(allowed)})"
        )
    try:
        return EvaluationParameters.model_validate(given)
    except ValidationError as err:
        faults = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ParameterError(f"parameter 'eval_params': {faults}") from err


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InvalidDatasetError(f"{path}: not readable JSON ({err})") from err
    if not isinstance(data, dict):
        raise InvalidDatasetError(f"{path}: expected a JSON object")
    return data


def read_label_sources(root: Path) -> tuple[dict[str, Any] | None, tuple[Path, dict[str, Any]] | None]:
    """The dataset's ``dataset.json`` and its STAC label item (with its path), where present."""
    meta = _read_json(root / METADATA_FILE) if (root / METADATA_FILE).is_file() else None
    for name in LABEL_ITEM_FILES:
        path = root / name
        if not path.is_file():
            continue
        item = _read_json(path)
        extensions = item.get("stac_extensions") or []
        if name == LABEL_ITEM_FILES[0] or any(LABEL_EXTENSION in str(e) for e in extensions):
            return meta, (path, item)
    return meta, None


def _from_metadata(spec: dict[str, Any], meta: Mapping[str, Any], where: str) -> None:
    if meta.get("classes"):
        spec["named"] = {str(c.get("name", f"class_{c['value']}")): int(c["value"]) for c in meta["classes"]}
    if "positive_class" in meta:  # a class's name, or its value
        positive = meta["positive_class"]
        if isinstance(positive, bool) or not isinstance(positive, str | int):
            raise InvalidDatasetError(
                f"{where}: positive_class: expected a class name or value, got {positive!r}"
            )
        spec["positive"] = positive
    if "ignore_value" in meta:
        spec["ignore_value"], spec["ignore_stated"] = meta["ignore_value"], True
    spec["sources"].append(where)


def _labels_asset(item: Mapping[str, Any]) -> Mapping[str, Any]:
    assets: list[Mapping[str, Any]] = [
        a for a in (item.get("assets") or {}).values() if "labels" in (a.get("roles") or [])
    ]
    rasters = [a for a in assets if "tiff" in str(a.get("type", ""))]
    return (rasters or assets or [{}])[0]


def _from_label_item(spec: dict[str, Any], item: Mapping[str, Any], where: str) -> None:
    asset = _labels_asset(item)
    band: Mapping[str, Any] = next(
        (b[0] for b in (asset.get("raster:bands"), asset.get("bands")) if isinstance(b, list) and b), {}
    )
    classes = asset.get("classification:classes") or band.get("classification:classes")
    stated = False
    if classes:
        for c in classes:
            if not isinstance(c, Mapping) or not isinstance(c.get("value"), int):
                raise InvalidDatasetError(
                    f"{where}: classification:classes: each class needs an integer value"
                )
        if nodata := [c["value"] for c in classes if c.get("nodata")]:
            spec["ignore_value"], spec["ignore_stated"] = nodata[0], True
        kept = [c for c in classes if not c.get("nodata")]
        spec["named"] = {str(c.get("name") or f"class_{c['value']}"): c["value"] for c in kept}
        stated = True
    else:
        for entry in item.get("properties", {}).get("label:classes") or []:
            values = entry.get("classes") or []
            if entry.get("name") is None and values and all(str(v).lstrip("-").isdigit() for v in values):
                spec["named"], spec["values"] = None, [int(v) for v in values]
                stated = True
    for holder in (asset, band):
        if holder.get("nodata") is not None:
            spec["ignore_value"], spec["ignore_stated"], stated = int(holder["nodata"]), True, True
    if stated:
        spec["sources"].append(where)


def _from_parameters(spec: dict[str, Any], params: EvaluationParameters) -> None:
    given = params.model_dump(exclude_none=True)
    if params.label_values is not None:
        spec["named"], spec["values"] = dict(params.label_values), None
    if params.label_value is not None or params.background_value is not None:
        spec["named"], spec["values"] = None, None
        spec["label_value"], spec["background_value"] = params.label_value, params.background_value
    if params.ignore_value is not None:
        spec["ignore_value"], spec["ignore_stated"] = params.ignore_value, True
    if params.positive_class is not None:
        spec["positive"] = params.positive_class
    if given:
        spec["sources"].append("parameters (" + ", ".join(sorted(given)) + ")")


def label_spec(
    meta: Mapping[str, Any] | None,
    label_item: tuple[str, Mapping[str, Any]] | None,
    params: EvaluationParameters,
) -> LabelSpec:
    """Merge the sources (defaults < ``dataset.json`` < label item < parameters), field by field."""
    spec: dict[str, Any] = {"sources": []}
    if meta is not None:
        _from_metadata(spec, meta, METADATA_FILE)
    if label_item is not None:
        _from_label_item(spec, label_item[1], label_item[0])
    _from_parameters(spec, params)
    return LabelSpec.model_validate(spec)


def _binary(spec: LabelSpec, model: Sequence[ModelClass]) -> tuple[list[str], list[int | None], list[int]]:
    if model and len(model) != 2:
        raise ParameterError(
            f"label_value/background_value describe two classes; the model has {len(model)} "
            f"({', '.join(c.name for c in model)}): give label_values (class name -> label value)"
        )
    if not model:
        bg, fg = spec.background_value or 0, spec.label_value if spec.label_value is not None else 1
        return ["background", "foreground"], [bg, fg], [bg, fg]
    named_bg = [c for c in model if c.name.lower() == "background"]
    background = (named_bg or [c for c in model if c.value == 0] or [model[0]])[0]
    positive = next(c for c in model if c is not background)
    bg = spec.background_value if spec.background_value is not None else background.value
    fg = spec.label_value if spec.label_value is not None else positive.value
    return [background.name, positive.name], [bg, fg], [background.value, positive.value]


def _classes(spec: LabelSpec, model: Sequence[ModelClass]) -> tuple[list[str], list[int | None], list[int]]:
    by_name = {c.name: c for c in model}
    if spec.named is not None:
        if not model:
            return list(spec.named), list(spec.named.values()), list(spec.named.values())
        unknown = sorted(set(spec.named) - set(by_name))
        if unknown:
            raise InvalidDatasetError(
                f"{', '.join(spec.sources)}: classes {unknown} are not among the model's MLM classes "
                f"({', '.join(by_name)}); name the dataset's classes as the model does"
            )
        return [c.name for c in model], [spec.named.get(c.name) for c in model], [c.value for c in model]
    if spec.label_value is not None or spec.background_value is not None:
        return _binary(spec, model)
    values = spec.values if spec.values is not None else [0, 1]
    if not model:
        names = ["negative", "positive"] if values == [0, 1] else [f"class_{v}" for v in values]
        return names, list(values), list(values)
    unknown_values = sorted(set(values) - {c.value for c in model})
    if unknown_values:
        raise InvalidDatasetError(
            f"{', '.join(spec.sources) or 'default label values'}: label values {unknown_values} are not "
            f"the model's class values ({', '.join(f'{c.value} {c.name}' for c in model)}); "
            "give label_values or label_value/background_value"
        )
    return (
        [c.name for c in model],
        [c.value if c.value in values else None for c in model],
        [c.value for c in model],
    )


def class_scheme(spec: LabelSpec, model: Sequence[ModelClass] = ()) -> ClassScheme:
    """Match the dataset's label values with the model's classes (pure).

    Args:
        spec: the merged label description (:func:`label_spec`).
        model: the model's MLM classes; empty: the label values are the predicted values.

    Returns:
        Names (the model's where it has classes), label and predicted values per class, the
        positive class and the ignore value.

    Raises:
        InvalidDatasetError: named classes the model does not have, or values it does not predict.
        ParameterError: a positive class or ignore value that does not fit.
    """
    names, label_values, model_values = _classes(spec, model)
    if len(set(names)) != len(names):
        raise InvalidDatasetError(f"{', '.join(spec.sources)}: class names repeat: {names}")
    if spec.positive is None:
        positive = len(names) - 1
    elif isinstance(spec.positive, str) and spec.positive in names:
        positive = names.index(spec.positive)
    elif isinstance(spec.positive, int) and spec.positive in label_values:
        positive = label_values.index(spec.positive)
    else:
        raise ParameterError(f"positive class {spec.positive!r} is not among the classes {names}")
    ignore = spec.ignore_value
    if ignore is not None and ignore in label_values:
        if spec.ignore_stated:
            raise InvalidDatasetError(
                f"{', '.join(spec.sources)}: ignore value {ignore} is also the label value of class "
                f"'{names[label_values.index(ignore)]}'"
            )
        ignore = None  # the default 255 yields to a class burnt as 255
    return ClassScheme(
        names=names,
        label_values=label_values,
        model_values=model_values,
        positive_index=positive,
        ignore_value=ignore,
        source=", ".join(spec.sources) or "defaults",
    )
