"""Parsing MLM items into typed model specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from catalog_sync.mlm import parse_model_item
from geomlops.errors import InvalidModelItemError


def test_fair_segmentation_item_parses(shared_data: Path) -> None:
    item = json.loads((shared_data / "fair-model-items" / "unet_segmentation.json").read_text())
    spec = parse_model_item(item)
    assert spec.id == "unet-segmentation"
    assert spec.tasks == ("semantic-segmentation",)
    assert spec.inputs[0].bands == ("red", "green", "blue")
    assert spec.inputs[0].shape == (-1, 3, 256, 256)
    assert [c.name for c in spec.outputs[0].classes] == ["background", "building"]
    assert spec.outputs[0].post_processing_function == "models.unet_segmentation.pipeline:postprocess"
    assert spec.training_image == "ghcr.io/hotosm/fair-models/unet_segmentation:latest"
    assert spec.inference_image == "ghcr.io/hotosm/fair-models/unet_segmentation:latest-inference"


@pytest.mark.parametrize("field", ["mlm:name", "mlm:architecture", "mlm:tasks", "mlm:input", "mlm:output"])
def test_missing_required_field_is_named(shared_data: Path, field: str) -> None:
    item = json.loads((shared_data / "fair-model-items" / "unet_segmentation.json").read_text())
    del item["properties"][field]
    with pytest.raises(InvalidModelItemError, match=f"'{field}' is missing"):
        parse_model_item(item)


def test_missing_model_asset_is_named(shared_data: Path) -> None:
    item = json.loads((shared_data / "mlm-examples" / "item_basic.json").read_text())
    for asset in item["assets"].values():
        asset["roles"] = [r for r in asset.get("roles", []) if r != "mlm:model"]
    with pytest.raises(InvalidModelItemError, match="mlm:model"):
        parse_model_item(item)


def test_missing_tensor_shape_is_named(shared_data: Path) -> None:
    item = json.loads((shared_data / "fair-model-items" / "unet_segmentation.json").read_text())
    del item["properties"]["mlm:input"][0]["input"]["shape"]
    with pytest.raises(InvalidModelItemError, match=r"\['mlm:input'\]\[0\]\.input: required field 'shape'"):
        parse_model_item(item)


def test_input_bands_are_the_items_own_or_derived_from_them(shared_data: Path) -> None:
    from catalog_sync.mlm_checks import mlm_faults

    # the MLM extension's example of an index computed from two declared bands: no fault
    derived = json.loads((shared_data / "mlm-examples" / "item_bands_expression.json").read_text())
    assert not [f for f in mlm_faults(derived) if ".bands[" in f[0]], mlm_faults(derived)
    # a band the item does not declare, named as if it did: a fault naming it and the declared ones
    named = next(
        b
        for b in derived["properties"]["mlm:input"][0]["bands"]
        if isinstance(b, str) or "expression" not in b
    )
    renamed = json.loads(json.dumps(derived).replace(json.dumps(named), json.dumps("B99")))
    faults = [f for f in mlm_faults(renamed) if ".bands[" in f[0]]
    assert len(faults) == 1 and faults[0][1].startswith("'B99' is not among the bands the item declares ("), (
        faults
    )
    # a derived band reading a band the item does not declare, or in a format geomlops does not
    # compute: a fault naming the band's field
    reads = json.loads(json.dumps(derived).replace("(B08 - B04) / (B08 + B04)", "(B08 - B77) / (B08 + B77)"))
    faults = [f for f in mlm_faults(reads) if ".bands[" in f[0]]
    assert [f[0] for f in faults] == ["$.properties['mlm:input'][0].bands[3].expression"], faults
    assert faults[0][1].startswith("reads B77, not among the bands the item declares (")
    other = json.loads(json.dumps(derived).replace('"rio-calc"', '"openeo"'))
    faults = [f for f in mlm_faults(other) if ".bands[" in f[0]]
    assert [f[0] for f in faults] == ["$.properties['mlm:input'][0].bands[3]"], faults
    assert faults[0][1].startswith("format 'openeo': geomlops computes derived bands written as infix")
