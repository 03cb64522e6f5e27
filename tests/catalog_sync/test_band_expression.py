"""Derived input bands: the expressions an MLM item gives (an index such as NDVI), parsed
into arithmetic only and computed on arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from catalog_sync.band_expression import BandExpressionError, derived_band, parse
from catalog_sync.mlm import parse_model_item
from geomlops.errors import InvalidModelItemError


def test_an_index_is_computed_from_the_bands_it_names() -> None:
    ndvi = parse("(B08 - B04) / (B08 + B04)")
    assert ndvi.names == ("B08", "B04")
    nir = np.array([[0.5, 0.2], [0.0, 0.3]], np.float32)
    red = np.array([[0.1, 0.2], [0.0, 0.1]], np.float32)
    out = ndvi.evaluate({"B08": nir, "B04": red})
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_allclose(out[0], [(0.5 - 0.1) / 0.6, 0.0], rtol=1e-6)
    assert np.isnan(out[1, 0])  # 0 / 0: not finite, for the caller to mark as no data
    # functions, comparisons, powers and numbers
    masked = parse("where(B08 > 0.25, sqrt(B08 ** 2), -1.5 * abs(B04))").evaluate({"B08": nir, "B04": red})
    np.testing.assert_allclose(masked, [[0.5, -0.3], [-0.0, 0.3]], rtol=1e-6)
    # comparisons are numbers: negated, subtracted
    flags = parse("-(B04 > 0.05) + (B08 > 0.25)").evaluate({"B08": nir, "B04": red})
    np.testing.assert_array_equal(flags, [[0, -1], [0, 0]])
    # a constant expression of one band keeps the band's shape
    assert parse("B04 * 0 + 2").evaluate({"B04": red}).shape == (2, 2)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('true')", "system('true')\" is not allowed"),
        ("__import__('os')", "__import__() is not a function geomlops computes"),
        ("B08.real", "'B08.real' is not allowed"),
        ("(/ (- B08 B04) (+ B08 B04))", "is not infix arithmetic"),
        ("B08 // B04", "'B08 // B04' is not allowed"),
        ("median(B08)", "median() is not a function geomlops computes (sqrt, abs,"),
        ("sqrt(B08, B04)", "sqrt takes 1 argument"),
        ("sqrt + B04", "sqrt is a function; call it"),
        ("2 * 3", "names no band"),
        ("0 < B04 < 1", "'0 < B04 < 1' is not allowed"),
        ("'B04'", "\"'B04'\" is not allowed"),
        ("1" + "0" * 400 + " * B04", "is too large"),
        (" + ".join(["B04"] * 300), "characters; expected at most 1000"),
        ("-" * 900 + "B04", "nested more than 100 deep"),
    ],
)
def test_anything_but_arithmetic_is_refused_by_name(expression: str, message: str) -> None:
    with pytest.raises(BandExpressionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(expression)


def test_an_expression_reads_the_imagery_and_its_format_is_infix() -> None:
    bands = ["B04", {"name": "NDVI", "expression": "(B08 - B04) / (B08 + B04)"}]
    assert derived_band(bands[1], bands).names == ("B08", "B04")  # no format: read as infix
    with pytest.raises(BandExpressionError, match="format 'gdal-calc': geomlops computes derived bands"):
        derived_band({"name": "NDVI", "format": "gdal-calc", "expression": "(A - B) / (A + B)"}, bands)
    twice = [*bands, {"name": "NDVI2", "expression": "NDVI * 2"}]
    with pytest.raises(BandExpressionError, match="reads NDVI, a derived band"):
        derived_band(twice[2], twice)


def test_the_mlm_examples_derived_band_is_read_with_the_bands_it_needs(shared_data: Path) -> None:
    item = json.loads((shared_data / "mlm-examples" / "item_bands_expression.json").read_text())
    model_input = parse_model_item(item).inputs[0]
    assert model_input.bands == ("B04", "B03", "B02", "NDVI")
    assert [(d.name, d.reads) for d in model_input.derived] == [("NDVI", ("B08", "B04"))]
    assert model_input.source_bands == ("B04", "B03", "B02", "B08")  # the imagery's bands read
    item["properties"]["mlm:input"][0]["bands"][3]["expression"] = "(B08 - B04) / (B08 + B04"
    with pytest.raises(InvalidModelItemError, match=r"\['mlm:input'\]\[0\]\.bands\[3\]: .* is not infix"):
        parse_model_item(item)
