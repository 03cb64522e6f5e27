"""Post-processor registry: which function turns a model's output for a block into features.

A model's MLM item says it per output: ``post_processing_function``
(``{"format": "python", "expression": "module:function"}``) if the model needs its own, else the
output's ``tasks`` pick a built-in: semantic segmentation -> ``polygons``, object detection ->
``boxes``, scene classification -> ``footprints``.

Catalogue data never imports code. An expression is looked up among the post-processors already
registered (by their ``module:function`` path or their registered name); an unknown one is an
error that names it. A model package registers its own with :func:`register_postprocessor` in a
module that the operator allows explicitly: ``GEOMLOPS_POSTPROCESSOR_MODULES`` (comma-separated
module names) or :func:`load_postprocessor_modules`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import numpy as np
import shapely
from affine import Affine
from numpy.typing import NDArray

from geomlops.errors import PostprocessorError
from postprocessing.features import BlockFeatures, BlockOutput
from postprocessing.kernel import mask_to_polygons

__all__ = [
    "MODULES_ENV",
    "TASK_DEFAULTS",
    "BlockFeatures",
    "BlockOutput",
    "Finisher",
    "PostProcessor",
    "load_postprocessor_modules",
    "register_finisher",
    "register_postprocessor",
    "registered_postprocessors",
    "resolve_finisher",
    "resolve_postprocessor",
]

#: environment variable naming the modules allowed to register post-processors
MODULES_ENV = "GEOMLOPS_POSTPROCESSOR_MODULES"

#: MLM task -> built-in post-processor
TASK_DEFAULTS = {
    "semantic-segmentation": "polygons",
    "segmentation": "polygons",
    "object-detection": "boxes",
    "detection": "boxes",
    "scene-classification": "footprints",
    "classification": "footprints",
}


PostProcessor = Callable[[BlockOutput], BlockFeatures]
P = TypeVar("P", bound=PostProcessor)

_REGISTRY: dict[str, PostProcessor] = {}

#: what happens to a post-processor's whole polygons once merged across block edges:
#: ``finish(geometries, geographic=..., options=the MLM output)`` -> geometries
Finisher = Callable[..., NDArray[np.object_]]
_FINISHERS: dict[PostProcessor, Finisher] = {}


def register_postprocessor(name: str) -> Callable[[P], P]:
    """Register a post-processor under ``name`` and under its ``module:function`` path.

    Args:
        name: a short name (``polygons``); must not be taken by another function.

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        PostprocessorError: when the name or path is already registered to another function.
    """

    def decorate(func: P) -> P:
        path = f"{func.__module__}:{func.__qualname__}"
        for key in (name, path):
            if _REGISTRY.get(key, func) is not func:
                raise PostprocessorError(f"post-processor {key!r} is already registered to another function")
        _REGISTRY[name] = _REGISTRY[path] = func
        return func

    return decorate


def register_finisher(postprocessor: PostProcessor) -> Callable[[Finisher], Finisher]:
    """Register what finishes ``postprocessor``'s merged polygons (a decorator)."""

    def decorate(func: Finisher) -> Finisher:
        _FINISHERS[postprocessor] = func
        return func

    return decorate


def resolve_finisher(
    output: Mapping[str, Any] | Any,
) -> Callable[[NDArray[np.object_], bool], NDArray[np.object_]] | None:
    """The finisher of the output's post-processor, bound to the output's options, or None.

    Args:
        output: the ``mlm:output`` entry as a dict, or a parsed ``ModelOutput`` (its
            ``postprocessor_options`` are the options).

    The returned function takes the merged geometries in the raster's CRS and whether that CRS is
    geographic. The output's options are checked here, so a bad one fails before any prediction.
    """
    if not isinstance(output, Mapping):
        output = dict(getattr(output, "postprocessor_options", None) or {}) | {
            "tasks": list(getattr(output, "tasks", ()) or ()),
            "post_processing_function": getattr(output, "post_processing_function", None),
        }
    finisher = _FINISHERS.get(resolve_postprocessor(output))
    if finisher is None:
        return None
    finisher(np.empty(0, dtype=object), geographic=False, options=output)  # checks the options

    def finish(geometries: NDArray[np.object_], geographic: bool) -> NDArray[np.object_]:
        return finisher(geometries, geographic=geographic, options=output)

    return finish


def registered_postprocessors() -> dict[str, PostProcessor]:
    """Every registered name and ``module:function`` path, with its function."""
    return dict(_REGISTRY)


def load_postprocessor_modules(modules: Iterable[str] | None = None) -> list[str]:
    """Import the allowed modules so that their post-processors register themselves.

    Args:
        modules: module names; default: ``$GEOMLOPS_POSTPROCESSOR_MODULES`` (comma-separated).

    Returns:
        The modules imported.

    Raises:
        PostprocessorError: naming a module that cannot be imported.
    """
    if modules is None:
        modules = os.environ.get(MODULES_ENV, "").split(",")
    names = [m.strip() for m in modules if m.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise PostprocessorError(f"post-processor module {name!r} cannot be imported: {err}") from err
    return names


def resolve_postprocessor(output: Mapping[str, Any] | Any) -> PostProcessor:
    """The post-processor for one MLM output (``mlm:output`` entry, or a parsed ``ModelOutput``).

    Args:
        output: the output as a dict (``tasks``, optional ``post_processing_function``) or an
            object with ``tasks`` and ``post_processing_function`` (an expression string).

    Returns:
        The registered function.

    Raises:
        PostprocessorError: when the expression names nothing registered (listing what is), its
            format is neither ``python`` nor ``mlproject`` (the package's own entry point, which
            batch inference runs; the task's default stands in elsewhere), or no task of the
            output has a default.
    """
    load_postprocessor_modules()
    if isinstance(output, Mapping):
        tasks = list(output.get("tasks") or [])
        function = output.get("post_processing_function")
        if isinstance(function, Mapping) and function.get("format") == "mlproject":
            # the package's own entry point, run by batch inference in the package's environment;
            # where it does not run (on-demand serving), the task's default stands in
            function = None
        elif isinstance(function, Mapping):
            if function.get("format") != "python":
                raise PostprocessorError(
                    f"post_processing_function format {function.get('format')!r}: expected 'python' "
                    "(a registered post-processor) or 'mlproject' (an entry point of the package)"
                )
            function = function.get("expression")
    else:
        tasks = list(getattr(output, "tasks", ()) or ())
        function = getattr(output, "post_processing_function", None)
    if function:
        expression = str(function)
        if expression not in _REGISTRY:
            raise PostprocessorError(
                f"post_processing_function {expression!r} is not a registered post-processor "
                f"(registered: {', '.join(sorted(_REGISTRY))}; a model package registers its own "
                f"in a module listed in {MODULES_ENV})"
            )
        return _REGISTRY[expression]
    for task in tasks:
        if task in TASK_DEFAULTS:
            return _REGISTRY[TASK_DEFAULTS[task]]
    raise PostprocessorError(
        f"no post-processor for tasks {tasks}: give the output a post_processing_function or one "
        f"of the tasks {', '.join(sorted(TASK_DEFAULTS))}"
    )


@register_postprocessor("polygons")
def polygons(output: BlockOutput) -> BlockFeatures:
    """Semantic segmentation: class map (H, W), (1, H, W), or scores (C, H, W) -> polygons."""
    data = np.asarray(output.data)
    if data.ndim == 3:
        data = data[0] if data.shape[0] == 1 else np.argmax(data, axis=0)
    block = output.block
    pieces = mask_to_polygons(data, block.offset, nodata=output.nodata, shared=block.shared)
    return BlockFeatures(pieces=pieces)


@register_postprocessor("boxes")
def boxes(output: BlockOutput) -> BlockFeatures:
    """Object detection: rows ``x0, y0, x1, y1, score, class`` in block pixels -> box polygons."""
    data = np.asarray(output.data, np.float64).reshape(-1, 6) if np.size(output.data) else np.zeros((0, 6))
    block = output.block
    t = output.transform @ Affine.translation(block.col_off, block.row_off)
    corners = [
        (data[:, 0], data[:, 1]),
        (data[:, 2], data[:, 1]),
        (data[:, 2], data[:, 3]),
        (data[:, 0], data[:, 3]),
    ]
    world = [(t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f) for x, y in corners]
    coords = np.stack([np.stack(pair, axis=-1) for pair in world], axis=1)
    geoms = shapely.polygons(coords) if len(data) else np.empty(0, dtype=object)
    return BlockFeatures(geometries=geoms, classes=data[:, 5].astype(np.int64), scores=data[:, 4].copy())


@register_postprocessor("footprints")
def footprints(output: BlockOutput) -> BlockFeatures:
    """Scene classification: class scores (C,) or a label -> the block's footprint, labelled."""
    data = np.asarray(output.data, np.float64).ravel()
    label = int(data[0]) if data.size == 1 else int(np.argmax(data))
    score = None if data.size == 1 else np.array([data[label]])
    block = output.block
    t = output.transform @ Affine.translation(block.col_off, block.row_off)
    ring = [t @ (0, 0), t @ (block.width, 0), t @ (block.width, block.height), t @ (0, block.height)]
    geoms = np.array([shapely.Polygon(ring)], dtype=object)
    return BlockFeatures(geometries=geoms, classes=np.array([label], np.int64), scores=score)


# built-ins kept in their own modules (which import nothing of this one)
from postprocessing.buildings import buildings, finish_buildings  # noqa: E402

register_finisher(register_postprocessor("buildings")(buildings))(finish_buildings)
