"""Post-processor registry: MLM outputs pick registered functions only, or a default by task."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import shapely
from affine import Affine

from catalog_sync.mlm import ModelOutput
from geomlops.errors import PostprocessorError
from postprocessing.grid import plan_blocks
from postprocessing.registry import (
    MODULES_ENV,
    BlockFeatures,
    BlockOutput,
    boxes,
    footprints,
    load_postprocessor_modules,
    polygons,
    register_postprocessor,
    registered_postprocessors,
    resolve_postprocessor,
)

TRANSFORM = Affine(10.0, 0.0, 1000.0, 0.0, -10.0, 5000.0)


@register_postprocessor("test-identity")
def _identity(output: BlockOutput) -> BlockFeatures:
    return BlockFeatures()


def _output(**fields: object) -> dict[str, object]:
    return {"name": "out", "tasks": ["semantic-segmentation"], **fields}


def test_registered_function_is_found_by_name_and_by_path() -> None:
    path = f"{_identity.__module__}:_identity"
    for expression in ("test-identity", path):
        found = resolve_postprocessor(
            _output(post_processing_function={"format": "python", "expression": expression})
        )
        assert found is _identity
    assert registered_postprocessors()[path] is _identity


def test_unregistered_expression_is_refused_with_its_name_and_never_imported() -> None:
    expression = "json:loads"  # importable, but catalogue data must never import code
    with pytest.raises(PostprocessorError) as err:
        resolve_postprocessor(
            _output(post_processing_function={"format": "python", "expression": expression})
        )
    assert "'json:loads' is not a registered post-processor" in str(err.value)
    assert "polygons" in str(err.value) and MODULES_ENV in str(err.value)
    before = set(sys.modules)
    with pytest.raises(PostprocessorError, match=r"evil_pkg\.mod:run"):
        resolve_postprocessor(
            _output(post_processing_function={"format": "python", "expression": "evil_pkg.mod:run"})
        )
    assert "evil_pkg" not in sys.modules and set(sys.modules) == before


def test_only_python_expressions() -> None:
    with pytest.raises(PostprocessorError, match="format 'docker'"):
        resolve_postprocessor(_output(post_processing_function={"format": "docker", "expression": "x"}))


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        (["semantic-segmentation"], polygons),
        (["regression", "segmentation"], polygons),
        (["object-detection"], boxes),
        (["scene-classification"], footprints),
        (["classification"], footprints),
    ],
)
def test_task_fallback(tasks: list[str], expected: object) -> None:
    assert resolve_postprocessor({"name": "out", "tasks": tasks}) is expected


def test_no_default_for_the_task() -> None:
    with pytest.raises(PostprocessorError, match="no post-processor for tasks \\['regression'\\]"):
        resolve_postprocessor({"name": "out", "tasks": ["regression"]})


def test_parsed_model_output_works_too() -> None:
    output = ModelOutput(
        name="mask",
        tasks=("semantic-segmentation",),
        shape=(-1, 1, 64, 64),
        dim_order=("batch", "channel", "height", "width"),
        data_type="uint8",
        post_processing_function="test-identity",
    )
    assert resolve_postprocessor(output) is _identity
    assert resolve_postprocessor(output.model_copy(update={"post_processing_function": None})) is polygons


def test_a_model_package_registers_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "flood_model"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "post.py").write_text(
        textwrap.dedent(
            """
            from postprocessing.registry import BlockFeatures, register_postprocessor

            @register_postprocessor("flood-extent")
            def flood_extent(output):
                return BlockFeatures()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    output = _output(
        post_processing_function={"format": "python", "expression": "flood_model.post:flood_extent"}
    )
    with pytest.raises(PostprocessorError, match=r"flood_model\.post:flood_extent"):
        resolve_postprocessor(output)  # not allowed yet: not imported
    monkeypatch.setenv(MODULES_ENV, "flood_model.post")
    found = resolve_postprocessor(output)
    assert found.__module__ == "flood_model.post" and found.__name__ == "flood_extent"
    assert "flood-extent" in registered_postprocessors()


def test_an_allowed_module_that_is_missing_is_named() -> None:
    with pytest.raises(PostprocessorError, match="'no_such_module_xyz' cannot be imported"):
        load_postprocessor_modules(["no_such_module_xyz"])


def test_a_name_cannot_be_taken_twice() -> None:
    with pytest.raises(PostprocessorError, match="'polygons' is already registered"):
        register_postprocessor("polygons")(_identity)


def test_builtin_polygons_takes_class_maps_and_scores() -> None:
    grid = plan_blocks(8, 8, 4)
    block = grid.blocks[0]
    scores = np.zeros((3, 4, 4))
    scores[2, :2, :2] = 1.0  # class 2 wins in the top-left, class 0 elsewhere
    features = polygons(BlockOutput(data=scores, block=block, transform=TRANSFORM, nodata=0))
    assert features.pieces is not None
    assert features.pieces.final.classes.tolist() == [2]  # away from the shared sides
    one_band = polygons(BlockOutput(data=np.ones((1, 4, 4), np.uint8), block=block, transform=TRANSFORM))
    assert one_band.pieces is not None and one_band.pieces.edge.classes.tolist() == [1]


def test_builtin_boxes_are_in_world_coordinates() -> None:
    block = plan_blocks(100, 100, 50).blocks[3]  # row 1, col 1: offset (50, 50)
    rows = np.array([[1, 2, 11, 7, 0.9, 3], [0, 0, 1, 1, 0.5, 1]])
    features = boxes(BlockOutput(data=rows, block=block, transform=TRANSFORM))
    assert features.classes.tolist() == [3, 1] and features.scores is not None
    assert features.scores.tolist() == [0.9, 0.5]
    assert shapely.equals(features.geometries[0], shapely.box(1510, 4430, 1610, 4480))
    empty = boxes(BlockOutput(data=np.zeros((0, 6)), block=block, transform=TRANSFORM))
    assert len(empty.geometries) == 0


def test_builtin_footprints_label_the_block() -> None:
    block = plan_blocks(100, 100, 50).blocks[1]  # offset (0, 50), 50 x 50
    features = footprints(BlockOutput(data=np.array([0.1, 0.7, 0.2]), block=block, transform=TRANSFORM))
    assert features.classes.tolist() == [1] and features.scores is not None
    assert features.scores.tolist() == [0.7]
    assert shapely.equals(features.geometries[0], shapely.box(1500, 4500, 2000, 5000))
    label = footprints(BlockOutput(data=np.array(4), block=block, transform=TRANSFORM))
    assert label.classes.tolist() == [4] and label.scores is None
