"""The MLM item drives what goes into a model and what its answer means (no model needed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from catalog_sync.mlm import ModelClass, ModelInput, ModelOutput, ModelSpec, ValueScaling, parse_model_item
from geomlops.errors import GeomlopsError, ImageryMismatchError, InvalidModelItemError
from steps.model_io import DEFAULT_HALO, ModelIO

INPUT = ModelInput(
    name="rgb",
    bands=("red", "green", "blue"),
    shape=(-1, 3, -1, -1),
    dim_order=("batch", "bands", "height", "width"),
    data_type="float32",
)
CLASSES = (ModelClass(name="background", value=0), ModelClass(name="building", value=7))


def _output(dim_order: tuple[str, ...], data_type: str = "float32", **extra: Any) -> ModelOutput:
    return ModelOutput(
        name="out",
        tasks=("semantic-segmentation",),
        shape=tuple(-1 for _ in dim_order),
        dim_order=dim_order,
        data_type=data_type,
        **extra,
    )


def test_per_class_scores_become_the_arg_max_in_the_items_class_order() -> None:
    io = ModelIO.from_parts(INPUT, _output(("batch", "classes", "height", "width"), classes=CLASSES))
    scores = np.zeros((2, 2, 3, 4), np.float32)
    scores[0, 1, 0, :2] = 0.9  # building wins in two pixels of the first array
    scores[:, 0] = 0.5
    classes = io.interpret(scores, 3, 4)
    assert classes.dtype == np.uint8 and classes.shape == (2, 3, 4)
    assert classes[0, 0, :2].tolist() == [7, 7]
    assert int(classes.sum()) == 14  # everywhere else: the first class, value 0
    with pytest.raises(GeomlopsError, match=r"3 class channels, but .*lists 2 classes"):
        io.interpret(np.zeros((1, 3, 3, 4), np.float32), 3, 4)


def test_a_model_logged_without_classes_is_read_from_its_item() -> None:
    """Raw probabilities: per-class channels (index = class) or one channel thresholded."""
    two = ModelIO.from_parts(INPUT, _output(("batch", "channels", "height", "width")))
    probabilities = np.stack([np.full((2, 2), 0.4), np.full((2, 2), 0.6)])[None]
    assert two.interpret(probabilities, 2, 2).tolist() == [[[1, 1], [1, 1]]]
    one = ModelIO.from_parts(INPUT, _output(("batch", "channel", "height", "width"), threshold=0.95))
    sigmoid = np.array([[[[0.93, 0.96], [1.0, 0.2]]]], np.float32)  # the 0.93 would be a building at 0.5
    assert one.interpret(sigmoid, 2, 2).tolist() == [[[0, 1], [1, 0]]]
    default = ModelIO.from_parts(INPUT, _output(("batch", "height", "width")))  # float: one score
    assert default.threshold == 0.5
    assert default.interpret(sigmoid[:, 0], 2, 2).tolist() == [[[1, 1], [1, 0]]]
    named = ModelIO.from_parts(INPUT, _output(("batch", "height", "width"), classes=CLASSES))
    assert named.interpret(sigmoid[:, 0], 2, 2).tolist() == [[[7, 7], [7, 0]]]


def test_class_values_are_taken_as_they_are_and_fractions_refused() -> None:
    io = ModelIO.from_parts(INPUT, _output(("batch", "height", "width"), "uint8", classes=CLASSES))
    assert io.interpret(np.array([[[0, 7]]], np.uint8), 1, 2).tolist() == [[[0, 7]]]
    with pytest.raises(GeomlopsError, match=r"fractional values .*declare a float data_type"):
        io.interpret(np.array([[[0.93, 1.0]]], np.float32), 1, 2)
    with pytest.raises(GeomlopsError, match=r"class values 0\.\.300; class values must be 0\.\.254"):
        io.interpret(np.array([[[0, 300]]], np.int32), 1, 2)
    with pytest.raises(GeomlopsError, match=r"returned 1 x 3 px for an input of 1 x 2 px"):
        io.interpret(np.zeros((1, 1, 3), np.uint8), 1, 2)


def test_values_read_for_the_call_alone_are_prepared_in_place_others_are_copied() -> None:
    io = ModelIO.from_parts(INPUT, None)  # float32 in, float32 to the model, no scaling
    values = np.array([[[1.0, 2.0]], [[3.0, 4.0]], [[5.0, 6.0]]], np.float32)
    mask = np.zeros(values.shape, bool)
    mask[1, 0, 1] = True
    kept, _ = io.prepare(np.ma.masked_array(values, mask=mask))
    assert values[:, 0, 1].tolist() == [2.0, 4.0, 6.0]  # the caller's array untouched
    owned, invalid = io.prepare(np.ma.masked_array(values, mask=mask), own=True)
    assert owned.base is values or owned is values  # no copy of a block's worth of memory
    assert np.array_equal(owned, kept) and kept[:, 0, 1].tolist() == [0, 0, 0]
    assert invalid.tolist() == [[False, True]]


def test_value_scaling_for_all_bands_and_per_band() -> None:
    data = np.ma.masked_array(
        np.array([[[0.0, 1000.0]], [[10.0, 30.0]], [[-5.0, 5.0]]], np.float32),
        mask=np.array([[[False, False]], [[False, True]], [[False, False]]]),
    )
    one = ModelIO.from_parts(
        INPUT.model_copy(update={"value_scaling": (ValueScaling(type="min-max", minimum=0, maximum=1000),)}),
        None,
    )
    array, invalid = one.prepare(data)
    assert invalid.tolist() == [[False, True]]
    assert array[:, 0, 0].tolist() == pytest.approx([0.0, 0.01, -0.005])
    assert array[:, 0, 1].tolist() == [0, 0, 0]  # no data in any band: 0 after scaling
    per_band = ModelIO.from_parts(
        INPUT.model_copy(
            update={
                "value_scaling": (
                    ValueScaling(type="scale", value=1000),
                    ValueScaling(type="z-score", mean=10, stddev=4),
                    ValueScaling(type="clip", minimum=-1, maximum=1),
                )
            }
        ),
        None,
    )
    array, _ = per_band.prepare(data)
    assert array[:, 0, 0].tolist() == pytest.approx([0.0, 0.0, -1.0])
    with pytest.raises(InvalidModelItemError, match=r"value_scaling: 2 objects for 3 bands"):
        ModelIO.from_parts(
            INPUT.model_copy(update={"value_scaling": (ValueScaling(type="scale", value=1),) * 2}), None
        )


def test_a_fixed_input_size_is_padded_or_resized_and_the_answer_brought_back() -> None:
    fixed = INPUT.model_copy(update={"shape": (-1, 3, 8, 8)})
    batch = np.arange(2 * 3 * 6 * 6, dtype=np.float32).reshape(2, 3, 6, 6)
    padded = ModelIO.from_parts(fixed.model_copy(update={"resize_type": "pad"}), None)
    assert padded.to_model_size(batch).shape == (2, 3, 8, 8)
    assert padded.interpret(np.ones((2, 8, 8), np.uint8), 6, 6).shape == (2, 6, 6)
    nearest = ModelIO.from_parts(fixed.model_copy(update={"resize_type": "interpolation-nearest"}), None)
    resized = nearest.to_model_size(np.ones((1, 3, 12, 12), np.float32))
    assert resized.shape == (1, 3, 8, 8)
    assert nearest.interpret(np.full((1, 8, 8), 3, np.uint8), 12, 12).tolist() == [[[3] * 12] * 12]
    with pytest.raises(ImageryMismatchError, match=r"takes 8 x 8 px .*resize_type is null"):
        ModelIO.from_parts(fixed, None).to_model_size(batch)
    with pytest.raises(InvalidModelItemError, match=r"resize_type: 'wrap-fill-outliers' is not applied"):
        ModelIO.from_parts(fixed.model_copy(update={"resize_type": "wrap-fill-outliers"}), None)


def test_band_order_follows_the_imagerys_band_descriptions() -> None:
    class Source:
        count = 4
        descriptions = ("nir", "blue", "green", "red")

    io = ModelIO.from_parts(INPUT, None)
    assert io.band_indexes(Source()) == [4, 3, 2]

    class Unnamed:
        count = 3
        descriptions = (None, None, None)

    assert io.band_indexes(Unnamed()) == [1, 2, 3]


def test_the_halo_comes_from_the_item_unless_the_workflow_gives_one() -> None:
    assert ModelIO.from_parts(INPUT, None).halo == DEFAULT_HALO
    assert ModelIO.from_parts(INPUT.model_copy(update={"halo": 40}), None).halo == 40
    assert ModelIO.from_parts(INPUT.model_copy(update={"halo": 40}), None, halo=8).halo == 8


def _item(input_extra: dict[str, Any], output_extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "m",
        "properties": {
            "mlm:name": "m",
            "mlm:architecture": "U-Net",
            "mlm:tasks": ["semantic-segmentation"],
            "mlm:accelerator": "cuda",
            "mlm:input": [
                {
                    "name": "rgb",
                    "bands": ["red", "green", "blue"],
                    "input": {
                        "shape": [-1, 3, 256, 256],
                        "dim_order": ["batch", "bands", "height", "width"],
                        "data_type": "float32",
                    },
                    **input_extra,
                }
            ],
            "mlm:output": [
                {
                    "name": "mask",
                    "tasks": ["semantic-segmentation"],
                    "result": {
                        "shape": [-1, 1, 256, 256],
                        "dim_order": ["batch", "channel", "height", "width"],
                        "data_type": "float32",
                    },
                    **output_extra,
                }
            ],
        },
        "assets": {"model": {"href": "model.pt", "roles": ["mlm:model"]}},
    }


def test_the_item_fields_are_parsed_and_bad_ones_named() -> None:
    spec: ModelSpec = parse_model_item(
        _item(
            {
                "value_scaling": [{"type": "min-max", "minimum": 0, "maximum": 255}],
                "resize_type": "interpolation-linear",
                "geomlops:halo": 64,
            },
            {"geomlops:threshold": 0.7},
        )
    )
    io = ModelIO.from_spec(spec)
    assert (io.halo, io.threshold, io.size, io.class_axis) == (64, 0.7, (256, 256), 1)
    assert spec.accelerator == "cuda"
    assert io.scaling[0].maximum == 255
    with pytest.raises(InvalidModelItemError, match=r"\['geomlops:halo'\]: expected a whole number"):
        parse_model_item(_item({"geomlops:halo": -3}, {}))
    with pytest.raises(InvalidModelItemError, match=r"value_scaling\[0\]\.stddev: a number is required"):
        parse_model_item(_item({"value_scaling": [{"type": "z-score", "mean": 1}]}, {}))
    with pytest.raises(InvalidModelItemError, match=r"\['geomlops:threshold'\]: expected a number"):
        parse_model_item(_item({}, {"geomlops:threshold": "high"}))
    with pytest.raises(InvalidModelItemError, match=r"'processing' runs the package's own code"):
        ModelIO.from_spec(
            parse_model_item(
                _item(
                    {"value_scaling": [{"type": "processing", "format": "python", "expression": "a:b"}]}, {}
                )
            )
        )
