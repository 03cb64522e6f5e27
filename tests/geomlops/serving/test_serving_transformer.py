"""The serving transformer: a mask for a georeferenced chip -> RFC 7946 GeoJSON with lineage, the
post-processor chosen from the MLM output, the seldon-core wrapper interface, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import Transformer
from shapely.geometry import shape

from geomlops.errors import ChipError, PostprocessorError
from geomlops.serving.transformer import GeoJSONTransformer, Georeference
from postprocessing.finalize import polygon_areas, to_geometries
from postprocessing.vectorize import vectorize_array

#: a 30 m grid in UTM 16N near the demo scene
TRANSFORM = (30.0, 0.0, 460000.0, 0.0, -30.0, 3400000.0)
GEOREF = Georeference(crs="EPSG:32616", transform=TRANSFORM)
LINEAGE = {"model_name": "cloud-mask", "model_version": "4", "run_id": "r" * 32}


def _mask() -> np.ndarray:
    mask = np.zeros((12, 10), np.uint8)
    mask[1:4, 2:5] = 1  # 9 pixels
    mask[6:11, 6:9] = 1  # 15 pixels with a hole of class 0
    mask[8, 7] = 0
    mask[0, 9] = 255  # no data
    mask[10, 0:2] = 2
    return mask


def test_mask_becomes_wgs84_features_with_lineage() -> None:
    transformer = GeoJSONTransformer(
        **LINEAGE, classes=json.dumps({"0": "clear", "1": "cloud", "2": "shadow"})
    )
    fc = transformer.to_geojson(_mask(), GEOREF)
    assert fc["type"] == "FeatureCollection"
    props = [f["properties"] for f in fc["features"]]
    assert sorted((p["class"], p["area"]) for p in props) == [(1, 9 * 900.0), (1, 14 * 900.0), (2, 2 * 900.0)]
    assert {p["class_name"] for p in props} == {"cloud", "shadow"}
    for p in props:
        assert (p["model"], p["model_version"], p["mlflow_run_id"]) == ("cloud-mask", "4", "r" * 32)
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32616", always_xy=True)
    for feature in fc["features"]:
        geom = shape(feature["geometry"])
        assert geom.is_valid and geom.exterior.is_ccw  # RFC 7946 right-hand rule
        lon, lat = geom.exterior.coords[0]
        assert -88 < lon < -87 and 30 < lat < 31  # longitude first
        back = shapely.transform(geom, lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1])))
        assert back.area == pytest.approx(feature["properties"]["area"], rel=1e-6)
    holed = next(f for f in fc["features"] if f["properties"]["area"] == 14 * 900.0)
    assert len(holed["geometry"]["coordinates"]) == 2  # the hole survives
    west, south, east, north = fc["bbox"]
    assert west < east and south < north


def test_same_polygons_as_the_vectorizer() -> None:
    mask = _mask()
    polys = vectorize_array(mask, block_size=4, nodata=255)
    expected = to_geometries(polys, Affine(*TRANSFORM))
    areas = polygon_areas(polys, Affine(*TRANSFORM))
    fc = GeoJSONTransformer(**LINEAGE, background="").to_geojson(mask, GEOREF)
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32616", always_xy=True)
    got = [
        shapely.transform(
            shape(f["geometry"]), lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1]))
        )
        for f in fc["features"]
    ]
    assert len(got) == len(expected)
    for geom, want, area, feature in zip(got, expected, areas, fc["features"], strict=True):
        assert geom.symmetric_difference(want).area < 1e-3
        assert feature["properties"]["area"] == area


def test_batch_and_score_outputs() -> None:
    mask = _mask()
    transformer = GeoJSONTransformer(**LINEAGE)
    batch = transformer.to_geojson(mask[None], GEOREF)
    scores = np.stack([(mask == k).astype(np.float32) for k in (0, 1, 2)])
    assert transformer.to_geojson(scores, GEOREF)["features"][0]["properties"]["class"] == 1
    assert len(batch["features"]) == 3


def test_object_detection_uses_the_boxes_postprocessor() -> None:
    boxes = np.array([[1, 1, 3, 4, 0.9, 5], [0, 0, 1, 1, 0.2, 0]], np.float64)
    fc = GeoJSONTransformer(**LINEAGE, tasks="object-detection").to_geojson(boxes, GEOREF)
    [feature] = fc["features"]  # class 0 is background
    assert feature["properties"]["class"] == 5 and feature["properties"]["score"] == pytest.approx(0.9)
    assert feature["properties"]["area"] == pytest.approx(2 * 3 * 900.0)


def test_unknown_postprocessor_is_refused() -> None:
    with pytest.raises(PostprocessorError, match="not a registered post-processor"):
        GeoJSONTransformer(**LINEAGE, post_processing_function="evil.module:run")


def test_seldon_interface_reads_the_georeference_from_meta_tags() -> None:
    transformer = GeoJSONTransformer(**LINEAGE)
    tags = {"crs": "EPSG:32616", "transform": json.dumps(TRANSFORM)}
    fc = transformer.transform_output(_mask().tolist(), [], meta={"tags": tags})
    assert fc == transformer.to_geojson(_mask(), GEOREF) == json.loads(json.dumps(fc))
    assert transformer.tags() == {"model": "cloud-mask", "model_version": "4", "mlflow_run_id": "r" * 32}


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        (None, "tags.crs: missing"),
        ({"transform": list(TRANSFORM)}, "tags.crs: missing"),
        ({"crs": "EPSG:32616"}, "tags.transform: None; expected six numbers"),
        ({"crs": "EPSG:32616", "transform": "[1, 2"}, "is not JSON"),
        ({"crs": "EPSG:32616", "transform": [0, 0, 0, 0, 0, 0]}, "singular"),
        ({"crs": "EPSG:999999", "transform": list(TRANSFORM)}, "not a coordinate reference system"),
    ],
)
def test_bad_georeference_is_named(tags: dict[str, object] | None, message: str) -> None:
    with pytest.raises(ChipError, match=message):
        GeoJSONTransformer(**LINEAGE).transform_output(_mask(), None, meta={"tags": tags})


def test_non_numeric_output_is_refused() -> None:
    with pytest.raises(ChipError, match="model output: expected a numeric array"):
        GeoJSONTransformer(**LINEAGE).to_geojson(np.array(["a", "b"]), GEOREF)


def test_a_buildings_output_is_finished_as_batch_inference_finishes_it() -> None:
    """The MLM output's post-processor options reach the transformer: polygons under the minimum
    area are dropped and the rest squared, as publishing does; a bad option is named."""
    options = {"geomlops:buildings": {"simplify_m": 0.5, "square": True, "min_area_m2": 4.0}}
    georef = Georeference(crs="EPSG:32645", transform=(0.3, 0.0, 350000.0, 0.0, -0.3, 3060000.0))
    mask = np.zeros((64, 64), np.uint8)
    mask[8:48, 10:50] = 1  # 12 m x 12 m with a notch: a building
    mask[8:10, 10:12] = 0
    mask[56:60, 56:60] = 1  # 1.2 m x 1.2 m: under 4 m²

    def transformer(given: dict[str, object]) -> GeoJSONTransformer:
        return GeoJSONTransformer(**LINEAGE, post_processing_function="buildings", options=json.dumps(given))

    raw = transformer({"geomlops:buildings": {"simplify_m": 0, "square": False, "min_area_m2": 0}})
    finished = transformer(options)
    assert len(raw.to_geojson(mask, georef)["features"]) == 2
    [building] = finished.to_geojson(mask, georef)["features"]
    assert building["properties"]["class"] == 1
    assert 4.0 < building["properties"]["area"] < 12 * 12 * 1.01
    assert len(building["geometry"]["coordinates"][0]) <= 7  # simplified: the notch's corners, not pixels
    with pytest.raises(PostprocessorError, match=r"geomlops:buildings\.squre"):
        GeoJSONTransformer(
            **LINEAGE, post_processing_function="buildings", options='{"geomlops:buildings": {"squre": 1}}'
        )
    for bad in ("{not json", "[1]"):
        with pytest.raises(PostprocessorError, match=r"^options: "):
            GeoJSONTransformer(**LINEAGE, post_processing_function="buildings", options=bad)


def test_the_mlm_input_and_output_parameters_are_checked_when_the_transformer_is_made() -> None:
    """Seldon passes the MLM input and output as strings: a malformed one is named at start, not
    at the first request."""
    for name, bad, expected in (
        ("output", "{not json", r"^output: not JSON"),
        ("input", "[1]", r"^input: expected a JSON object of the MLM input"),
        ("output", '{"name": "x"}', r"^input/output: not an MLM input and output"),
        ("output", '{"name": "p", "tasks": ["semantic-segmentation"], "shape": [-1, 2, -1, -1], '
         '"dim_order": ["batch", "height", "width", "bands"], "data_type": "float32", "resize": 1}',
         r"^input/output: not an MLM input and output"),
    ):  # fmt: skip
        with pytest.raises(PostprocessorError, match=expected):
            GeoJSONTransformer(**LINEAGE, **{name: bad})
    # an output read by arg-max: class 1 where its channel scores higher
    output = {"name": "p", "tasks": ["semantic-segmentation"], "shape": [-1, 2, -1, -1],
              "dim_order": ["batch", "classes", "height", "width"], "data_type": "float32",
              "classes": [{"value": 0, "name": "clear"}, {"value": 1, "name": "cloud"}]}  # fmt: skip
    scores = np.zeros((1, 2, 20, 24), np.float32)
    scores[0, 0] = 0.6
    scores[0, 1, 2:7, 3:9] = 0.9
    tags = {"crs": "EPSG:32616", "transform": list(GEOREF.transform)}
    answer = GeoJSONTransformer(**LINEAGE, output=json.dumps(output)).transform_output(
        scores, meta={"tags": tags}
    )
    [feature] = answer["features"]
    assert feature["properties"]["class"] == 1 and feature["properties"]["area"] == pytest.approx(30 * 900.0)
