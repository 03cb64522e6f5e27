"""What the MLM schema cannot say about a model item: its inputs, outputs and assets agree.

Pure checks on an item dict; each fault is ``(JSON path, what was expected)``. The schema check
(`catalog_sync.validation`) comes first; these add the consistency rules geomlops relies on
when it builds inputs for a model and reads its outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from catalog_sync.band_expression import BandExpression, BandExpressionError, derived_bands
from catalog_sync.mlm import MLM_SCHEMA, entry_point_fault
from catalog_sync.mlm_assets import CODE_ROLE, MODEL_ROLE, TRAINING_RUNTIME_ROLE

#: tasks whose outputs are class values, so the output must list its classes
CLASS_TASKS = frozenset({"classification", "scene-classification", "semantic-segmentation", "segmentation"})
#: ``dim_order`` names of an output's class dimension (scores or probabilities per class)
CLASS_DIMENSIONS = frozenset({"class", "classes", "channel", "channels"})

Fault = tuple[str, str]


def _dtype(name: Any) -> np.dtype[Any] | None:
    try:
        return np.dtype(str(name))
    except TypeError:
        return None


def _tensor(raw: Any, where: str, what: str) -> list[Fault]:
    if not isinstance(raw, Mapping):
        return [(where, f"expected an object with shape, dim_order and data_type ({what})")]
    faults: list[Fault] = []
    shape, order = raw.get("shape"), raw.get("dim_order")
    if not isinstance(shape, list) or not all(isinstance(n, int) and (n > 0 or n == -1) for n in shape):
        faults.append(
            (f"{where}.shape", f"expected a list of sizes (positive, or -1 for any), got {shape!r}")
        )
    if not isinstance(order, list) or not all(isinstance(n, str) for n in order):
        faults.append((f"{where}.dim_order", f"expected a list of dimension names, got {order!r}"))
    elif isinstance(shape, list) and len(shape) != len(order):
        faults.append(
            (
                f"{where}.dim_order",
                f"{len(order)} dimension name(s) for a shape of {len(shape)}: {order} vs {shape}",
            )
        )
    if _dtype(raw.get("data_type")) is None:
        faults.append(
            (f"{where}.data_type", f"expected a numeric data type name, got {raw.get('data_type')!r}")
        )
    return faults


def _size(raw: Mapping[str, Any], dimension: str) -> int | None:
    shape, order = raw.get("shape"), raw.get("dim_order")
    if (
        isinstance(shape, list)
        and isinstance(order, list)
        and dimension in order
        and len(shape) == len(order)
    ):
        size = shape[order.index(dimension)]
        return size if isinstance(size, int) and size > 0 else None
    return None


def _input_faults(raw: Any, where: str) -> list[Fault]:
    if not isinstance(raw, Mapping):
        return [(where, "expected an MLM input object")]
    tensor = raw.get("input")
    faults = _tensor(tensor, f"{where}.input", "the model's input tensor")
    bands = raw.get("bands") or []
    if isinstance(tensor, Mapping) and isinstance(bands, list):
        size = _size(tensor, "bands")
        derived = raw.get("pre_processing_function") is not None  # e.g. NDVI from two bands
        if size is not None and bands and size != len(bands) and not derived:
            faults.append(
                (f"{where}.input.shape", f"bands dimension is {size}, but {len(bands)} band(s) are listed")
            )
    faults += _entry_point_name(raw, "geomlops:inference", f"{where}['geomlops:inference']")
    return faults


def _declared_bands(item: Mapping[str, Any]) -> set[str] | None:
    """The names (and common names) of the bands the item declares: in its properties or on
    an asset (STAC 1.1 ``bands``, or 1.0's ``eo:bands``); None where it declares none."""
    props = item.get("properties")
    assets = item.get("assets")
    lists = [props] if isinstance(props, Mapping) else []
    lists += [a for a in assets.values() if isinstance(a, Mapping)] if isinstance(assets, Mapping) else []
    names: set[str] | None = None
    for holder in lists:
        for key in ("bands", "eo:bands"):
            bands = holder.get(key)
            if not isinstance(bands, list):
                continue
            names = names or set()
            for band in bands:
                if isinstance(band, Mapping):
                    names |= {str(band[k]) for k in ("name", "eo:common_name", "common_name") if band.get(k)}
    return names


def _parsed_derived(raw: Any) -> dict[int, BandExpression | BandExpressionError]:
    """Each derived band of an ``mlm:input`` object, by index (:func:`derived_bands`)."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("bands"), list):
        return {}
    return derived_bands(raw["bands"])


def _input_bands_faults(raw: Any, declared: set[str], where: str) -> list[Fault]:
    """Each input band the item's bands do not name: what the model reads would be guessed."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("bands"), list):
        return []
    derived = _parsed_derived(raw)  # derived from the declared bands (an index such as NDVI)
    faults = []
    for i, band in enumerate(raw["bands"]):
        expression = derived.get(i)
        unknown = (
            [n for n in expression.names if n not in declared]
            if isinstance(expression, BandExpression)
            else []
        )
        if unknown:
            faults.append(
                (
                    f"{where}.bands[{i}].expression",
                    f"reads {', '.join(unknown)}, not among the bands the item declares "
                    f"({', '.join(sorted(declared))})",
                )
            )
        name = band.get("name") if isinstance(band, Mapping) else band
        if i not in derived and isinstance(name, str) and name not in declared:
            faults.append(
                (
                    f"{where}.bands[{i}]",
                    f"{name!r} is not among the bands the item declares ({', '.join(sorted(declared))}): "
                    "name each input band as the item's bands name it (name or eo:common_name)",
                )
            )
    return faults


def _derived_faults(raw: Any, where: str) -> list[Fault]:
    """Each derived input band whose format or expression geomlops does not compute."""
    return [
        (f"{where}.bands[{i}]", str(why))
        for i, why in _parsed_derived(raw).items()
        if isinstance(why, BandExpressionError)
    ]


def _entry_point_name(raw: Mapping[str, Any], key: str, where: str) -> list[Fault]:
    """A field naming one of the package's entry points: a name, where given."""
    fault = entry_point_fault(raw.get(key))
    return [(where, fault)] if fault else []


def _output_faults(raw: Any, where: str) -> list[Fault]:
    if not isinstance(raw, Mapping):
        return [(where, "expected an MLM output object")]
    result = raw.get("result")
    faults = _tensor(result, f"{where}.result", "the model's result tensor")
    tasks = raw.get("tasks") or []
    classes = raw.get("classification:classes") or []
    if CLASS_TASKS.intersection(tasks) and not classes:
        faults.append(
            (
                f"{where}['classification:classes']",
                f"a {'/'.join(tasks)} output lists the classes it predicts",
            )
        )
    values = [c.get("value") for c in classes if isinstance(c, Mapping)]
    if len(values) != len(set(map(str, values))):
        faults.append((f"{where}['classification:classes']", f"class values must be unique, got {values}"))
    if isinstance(result, Mapping):
        order = result.get("dim_order") or []
        class_dim = next((d for d in order if d in CLASS_DIMENSIONS), None)
        size = _size(result, class_dim) if class_dim else None
        binary = size == 1 and len(classes) == 2  # one score for the second class
        if size is not None and classes and size != len(classes) and not binary:
            faults.append(
                (
                    f"{where}.result.shape",
                    f"'{class_dim}' dimension is {size}, but {len(classes)} classes are listed",
                )
            )
        dtype = _dtype(result.get("data_type"))
        valued = CLASS_TASKS.intersection(tasks) and class_dim is None
        if valued and classes and dtype is not None and dtype.kind not in "iub":
            faults.append(
                (
                    f"{where}.result.data_type",
                    f"class values need an integer type, got {dtype} (scores need a 'classes' dimension)",
                )
            )
    function = raw.get("post_processing_function")
    if isinstance(function, Mapping) and function.get("format") == "mlproject":
        # (a missing expression is the MLM schema's to name)
        faults += _entry_point_name(function, "expression", f"{where}.post_processing_function.expression")
    return faults


def _role_faults(assets: Mapping[str, Any]) -> list[Fault]:
    faults: list[Fault] = []
    roles = [
        (key, role)
        for key, asset in assets.items()
        if isinstance(asset, Mapping)
        for role in asset.get("roles") or []
    ]
    for role, why in (
        (MODEL_ROLE, "an asset with role 'mlm:model' (the model artifact, with its mlm:artifact_type)"),
        (
            TRAINING_RUNTIME_ROLE,
            "an asset with role 'mlm:training-runtime' (the image to build and train in)",
        ),
        (CODE_ROLE, "an asset with role 'code' (the package itself: './' or git+URL@COMMIT)"),
    ):
        if not any(r == role for _, r in roles):
            faults.append(("$.assets", f"expected {why}"))
    return faults


def mlm_faults(item: Mapping[str, Any]) -> list[Fault]:
    """Every consistency fault of an MLM item's inputs, outputs and asset roles.

    Args:
        item: the STAC item (already checked against its schemas or not: malformed parts are
            reported, never raised).

    Returns:
        ``(JSON path, what was expected)`` for each fault, in item order; empty when none.
    """
    faults: list[Fault] = []
    extensions = item.get("stac_extensions")
    if not isinstance(extensions, list) or not any("/mlm/" in str(uri) for uri in extensions):
        faults.append(("$.stac_extensions", f"the MLM extension's schema, e.g. {MLM_SCHEMA}"))
    props = item.get("properties")
    if not isinstance(props, Mapping):
        return [*faults, ("$.properties", "expected an object holding the mlm:* fields")]
    for key in ("mlm:name", "mlm:architecture", "mlm:tasks", "mlm:input", "mlm:output"):
        if props.get(key) in (None, "", []):
            faults.append((f"$.properties['{key}']", "required by the MLM extension, missing or empty"))
    declared = _declared_bands(item)
    for i, raw in enumerate(props.get("mlm:input") or []):
        faults += _input_faults(raw, f"$.properties['mlm:input'][{i}]")
        faults += _derived_faults(raw, f"$.properties['mlm:input'][{i}]")
        if declared:
            faults += _input_bands_faults(raw, declared, f"$.properties['mlm:input'][{i}]")
    for i, raw in enumerate(props.get("mlm:output") or []):
        faults += _output_faults(raw, f"$.properties['mlm:output'][{i}]")
    assets = item.get("assets")
    assets = assets if isinstance(assets, Mapping) else {}
    faults += _role_faults(assets)
    if props.get("bands") and not any(isinstance(a, Mapping) and a.get("bands") for a in assets.values()):
        faults.append(
            (
                "$.properties.bands",
                "STAC 1.1 allows bands in properties only when an asset has them too: "
                "put them on the mlm:model asset",
            )
        )
    return faults
