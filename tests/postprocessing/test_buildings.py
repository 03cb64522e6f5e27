"""The buildings post-processor: squaring, cleaning, the item's options, selection by the item."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from shapely import affinity
from shapely.geometry import Point, Polygon, box

from geomlops.errors import PostprocessorError
from postprocessing.buildings import (
    METRES_PER_DEGREE,
    BuildingOptions,
    buildings,
    finish_buildings,
    orthogonalize,
)
from postprocessing.grid import plan_blocks
from postprocessing.registry import BlockOutput, resolve_finisher, resolve_postprocessor

ITEM_OUTPUT = {
    "name": "building probability",
    "tasks": ["semantic-segmentation"],
    "post_processing_function": {"format": "python", "expression": "buildings"},
    "geomlops:buildings": {"simplify_m": 0.5, "square": True, "min_area_m2": 4.0},
}


def corner_angles(polygon: Polygon) -> list[float]:
    """Interior angle at every vertex of the exterior, in degrees (independent of the code)."""
    ring = np.asarray(polygon.exterior.coords)[:-1]
    angles = []
    for i in range(len(ring)):
        a, b, c = ring[i - 1], ring[i], ring[(i + 1) % len(ring)]
        u, v = a - b, c - b
        cos = float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))
        angles.append(math.degrees(math.acos(max(-1.0, min(1.0, cos)))))
    return angles


def skewed_rectangle(angle: float = 27.0) -> Polygon:
    """A 20 x 10 m building traced with one corner 0.8 m off, turned by ``angle`` degrees."""
    return affinity.rotate(Polygon([(0, 0), (20, 0), (20.8, 10), (0, 10.3)]), angle, origin=(0, 0))


@pytest.mark.parametrize("angle", [0.0, 27.0, 63.0, 90.0])
def test_a_skewed_rectangle_becomes_right_angled_with_its_area(angle: float) -> None:
    traced = skewed_rectangle(angle)
    assert max(abs(a - 90) for a in corner_angles(traced)) > 3  # the input is not square
    squared = orthogonalize(traced)
    assert len(squared.exterior.coords) == 5
    assert max(abs(a - 90) for a in corner_angles(squared)) < 0.01
    assert squared.area == pytest.approx(traced.area, rel=0.03)
    assert squared.is_valid
    # its long side keeps the building's orientation
    ring = np.asarray(squared.exterior.coords)
    sides = np.diff(ring, axis=0)
    longest = sides[np.argmax(np.hypot(sides[:, 0], sides[:, 1]))]
    direction = math.degrees(math.atan2(longest[1], longest[0])) % 180
    assert min(abs(direction - angle % 180), 180 - abs(direction - angle % 180)) < 3


def test_an_l_shaped_pixel_outline_keeps_six_right_angled_corners() -> None:
    # an L traced from pixels with a one-pixel stair step along one side (0.3 m pixels)
    outline = Polygon([(0, 0), (12, 0), (12, 4.8), (6, 4.8), (6, 9.3), (5.7, 9.3), (5.7, 12), (0, 12)])
    squared = orthogonalize(outline, min_edge=1.0)
    assert len(squared.exterior.coords) == 7
    assert max(abs(a - 90) for a in corner_angles(squared)) < 0.01
    assert squared.area == pytest.approx(outline.area, rel=0.03)


def test_a_round_outline_is_left_as_it_is() -> None:
    disc = Point(0, 0).buffer(8, quad_segs=8)
    assert orthogonalize(disc).equals(disc)


def test_geographic_polygons_are_squared_on_the_ground() -> None:
    # the skewed rectangle placed in Banepa in degrees: right angles in metres, not in degrees
    lon0, lat0 = 85.52, 27.63
    x_scale = METRES_PER_DEGREE * math.cos(math.radians(lat0))
    metres = skewed_rectangle(35.0)
    degrees = affinity.affine_transform(metres, [1 / x_scale, 0, 0, 1 / METRES_PER_DEGREE, lon0, lat0])
    [done] = finish_buildings(np.array([degrees], dtype=object), geographic=True, options=ITEM_OUTPUT)
    back = affinity.affine_transform(
        done, [x_scale, 0, 0, METRES_PER_DEGREE, -lon0 * x_scale, -lat0 * METRES_PER_DEGREE]
    )
    assert max(abs(a - 90) for a in corner_angles(back)) < 0.05
    assert back.area == pytest.approx(metres.area, rel=0.03)
    assert max(abs(a - 90) for a in corner_angles(done)) > 1  # in degrees they are not


def test_finishing_drops_small_buildings_fills_small_holes_and_repairs_invalid_ones() -> None:
    courtyard = Polygon(box(0, 0, 20, 20).exterior, [box(5, 5, 15, 15).exterior])
    pinhole = Polygon(box(30, 0, 40, 10).exterior, [box(34, 4, 35, 5).exterior])
    tiny = box(50, 0, 51, 1)
    bowtie = Polygon([(60, 0), (70, 10), (70, 0), (60, 10)])  # self-intersecting
    done = finish_buildings(
        np.array([courtyard, pinhole, tiny, bowtie], dtype=object), geographic=False, options=ITEM_OUTPUT
    )
    assert all(g.is_valid for g in done)
    assert not any(g.intersects(tiny) for g in done)
    assert len(next(g for g in done if g.intersects(box(0, 0, 1, 1))).interiors) == 1  # 100 m² kept
    assert len(next(g for g in done if g.intersects(box(30, 0, 31, 1))).interiors) == 0  # 1 m² filled
    assert sum(g.area for g in done if g.intersects(box(60, 0, 70, 10))) == pytest.approx(50, rel=0.05)


def test_the_item_selects_the_post_processor_and_its_options() -> None:
    assert resolve_postprocessor(ITEM_OUTPUT) is buildings
    path = {
        **ITEM_OUTPUT,
        "post_processing_function": {"format": "python", "expression": "postprocessing.buildings:buildings"},
    }
    assert resolve_postprocessor(path) is buildings
    finish = resolve_finisher(ITEM_OUTPUT)
    assert finish is not None
    [squared] = finish(np.array([skewed_rectangle()], dtype=object), False)
    assert max(abs(a - 90) for a in corner_angles(squared)) < 0.01
    unsquared = resolve_finisher({**ITEM_OUTPUT, "geomlops:buildings": {"square": False, "simplify_m": 0}})
    assert unsquared is not None
    [kept] = unsquared(np.array([skewed_rectangle()], dtype=object), False)
    assert kept.equals(skewed_rectangle())
    # the built-in polygons post-processor has no finisher
    assert resolve_finisher({"name": "x", "tasks": ["semantic-segmentation"]}) is None


def test_the_example_items_parsed_output_keeps_the_options_that_finish_its_polygons() -> None:
    from catalog_sync.mlm import parse_model_item

    example = Path(__file__).parents[2] / "examples" / "building-footprints" / "stac-item.json"
    item = json.loads(example.read_text())
    [output] = parse_model_item(item).outputs
    assert (
        output.postprocessor_options["geomlops:buildings"]
        == item["properties"]["mlm:output"][0]["geomlops:buildings"]
    )
    from_parsed, from_item = resolve_finisher(output), resolve_finisher(item["properties"]["mlm:output"][0])
    assert from_parsed is not None and from_item is not None
    shape = np.array([skewed_rectangle()], dtype=object)
    assert [g.wkb for g in from_parsed(shape, False)] == [g.wkb for g in from_item(shape, False)]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"squre": True}, "geomlops:buildings.squre"),
        ({"square": "yes"}, "geomlops:buildings.square"),
        ({"simplify_m": -1}, "geomlops:buildings.simplify_m"),
        ({"min_area_m2": "4"}, "geomlops:buildings.min_area_m2"),
    ],
)
def test_a_bad_option_is_named_before_anything_runs(options: dict[str, object], named: str) -> None:
    with pytest.raises(PostprocessorError, match=named.replace(".", r"\.")):
        resolve_finisher({**ITEM_OUTPUT, "geomlops:buildings": options})
    assert BuildingOptions.from_item(ITEM_OUTPUT).square is True


def test_the_block_post_processor_traces_buildings_only() -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[1:4, 1:5] = 1
    mask[6:8, 6:8] = 255  # no data
    [block] = plan_blocks(8, 8, 8).blocks
    features = buildings(BlockOutput(data=mask[None], block=block, transform=Affine.identity(), nodata=255))
    assert features.pieces is not None
    assert len(features.pieces.final.poly_offsets) - 1 == 1
    with pytest.raises(PostprocessorError, match="class map"):
        buildings(BlockOutput(data=np.zeros((1, 8, 8), np.float32), block=block, transform=Affine.identity()))
