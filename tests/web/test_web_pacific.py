"""Imagery across the antimeridian in the web app: the demo's Landsat scene placed over Taveuni,
Fiji, in UTM zone 60S, 180° through its middle. The run page opens over it (its bbox has
west > east), an area drawn across 180° is planned and run (sent cut at 180°, RFC 7946), the
run says which area it covered, and the results map opens over the predictions, not over the
whole world. Runs after tests/web/test_web_app.py, on the same gateway and work folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

from .conftest import WebGateway
from .test_web_app import MAP_IDLE, MODEL, accessible, drag_rectangle, shot, sign_in, start_run

pytestmark = pytest.mark.slow
CRS = "EPSG:32760"
#: the centre of the map, its width and height in degrees
VIEW = (
    "() => { const m = window.geomlopsMap; const c = m.getCenter(); const b = m.getBounds();"
    " return [c.lng, c.lat, b.getEast() - b.getWest(), b.getNorth() - b.getSouth()]; }"
)


def _from_180(lon: float) -> float:
    """Degrees east of 180° (negative: west of it), whichever copy of the world ``lon`` is in."""
    return (lon - 180 + 540) % 360 - 180


@pytest.fixture(scope="module")
def taveuni(web_gateway: WebGateway) -> Iterator[dict[str, Any]]:
    """The demo scene's pixels in a dataset folder of their own, over 180°E, 16.8°S."""
    datasets = web_gateway.home / "data" / "datasets"
    source = next(p for p in sorted(datasets.glob("*/image.tif")) if "pacific" not in str(p))
    folder = datasets / "pacific-taveuni"
    folder.mkdir()
    x180, y180 = Transformer.from_crs("EPSG:4326", CRS, always_xy=True).transform(180.0, -16.8)
    with rasterio.open(source) as src:
        profile = src.profile | {"crs": CRS}
        res = src.res[0]
        x0, y0 = x180 - res * (src.width // 2), y180 + res * (src.height // 2)
        profile["transform"] = Affine(res, 0, x0, 0, -res, y0)
        with rasterio.open(folder / "image.tif", "w", **profile) as dst:
            dst.write(src.read())
            dst.descriptions = src.descriptions
    with web_gateway.client("viewer") as viewer:
        listed = viewer.get("/api/v1/imagery").json()
    [item] = [i for i in listed if str(i["href"]).endswith("pacific-taveuni/image.tif")]
    yield item
    shutil.rmtree(folder)


def test_a_scene_across_180_is_run_and_its_results_open_over_it(
    web_gateway: WebGateway, app: Any, screenshots: Path, taveuni: dict[str, Any]
) -> None:
    west, south, east, north = taveuni["bbox"]
    assert 179.8 < west < 180 and -180 < east < -179.8  # across 180°, as transform_bounds gives it

    page = sign_in(app, web_gateway, "operator", "#/run")
    page.get_by_label("Model", exact=True).select_option(MODEL)
    page.get_by_label("Imagery", exact=True).select_option(taveuni["id"])
    version = page.get_by_label("Version or alias")
    # test_web_app's promotion gave version 1 the production alias, listed first
    assert version.locator("option").evaluate_all("os => os.map(o => o.value)")[0] == "alias:production"
    version.select_option("version:1")
    page.wait_for_function(MAP_IDLE)
    lng, lat, width, height = page.evaluate(VIEW)
    assert abs(_from_180(lng)) < 0.1 and south < lat < north  # over the scene, not the world
    assert width < 2 and height < 2

    # a rectangle from a quarter of the scene west of 180° to a quarter east of it, drawn with
    # the mouse where the map shows them (the map goes on past 180°: longitudes by the centre's)
    span = east + 360 - west
    aoi = [180 - span / 4, south + (north - south) * 0.2, 180 + span / 4, south + (north - south) * 0.8]
    turn = 360 * round((lng - 180) / 360)
    drag_rectangle(page, [aoi[0] + turn, aoi[1], aoi[2] + turn, aoi[3]])
    said = page.get_by_text("Area of interest: drawn, ")
    said.wait_for()
    box = [float(v) for v in said.inner_text().rsplit("drawn, ", 1)[1].split(",")]
    assert box == pytest.approx([aoi[0], aoi[1], aoi[2] - 360, aoi[3]], abs=span * 0.05)  # west > east
    page.get_by_label("Further parameters").fill("area=taveuni\nblock_size=160\ngroup_size=4")
    with page.expect_request(lambda r: r.url.endswith("/runs/batch-inference/plan")) as asked:
        page.get_by_role("button", name="Plan", exact=True).click()
    sent = asked.value.post_data_json["aoi"]
    assert sent["type"] == "MultiPolygon" and len(sent["coordinates"]) == 2  # cut at 180°
    lons = [x for part in sent["coordinates"] for x, _ in part[0]]
    assert min(lons) >= -180 and max(lons) <= 180 and 180 in lons and -180 in lons
    plan = page.locator(".plan[data-blocks]")
    plan.wait_for()
    assert int(plan.get_attribute("data-blocks")) > 0, plan.inner_text()
    page.wait_for_function(MAP_IDLE)
    accessible(page, "run form over 180°")
    shot(page, screenshots, "07-run-planned-across-180")

    run_id, run_box, _ = start_run(page)
    assert run_box == pytest.approx(box, abs=1e-3)  # west > east: the cut area's own bbox
    # the form below, for the next run, starts from this run's imagery and version (neither is
    # the first listed)
    imagery = page.get_by_label("Imagery", exact=True)
    assert imagery.locator("option").evaluate_all("os => os.map(o => o.value)")[0] != taveuni["id"]
    assert imagery.input_value() == taveuni["id"]
    assert version.input_value() == "version:1"

    page.get_by_role("link", name="See the results on the map").click()
    page.wait_for_selector(".in-view[data-count]")
    page.wait_for_function(MAP_IDLE)
    page.wait_for_timeout(500)
    page.wait_for_function(MAP_IDLE)
    lng, lat, width, height = page.evaluate(VIEW)
    assert abs(_from_180(lng)) < 0.2 and south < lat < north and width < 2  # over the predictions
    with web_gateway.client("viewer") as viewer:
        features = viewer.get(f"/api/v1/runs/{run_id}/predictions", params={"format": "geojson"}).json()
    assert features["features"], "no polygon predicted over the area"
    assert int(page.locator(".in-view").get_attribute("data-count")) > 0
    # polygons on both sides of 180° are drawn: the rendered ones reach either side of it
    sides = page.evaluate(
        "() => { const m = window.geomlopsMap; const xs = [];"
        " for (const f of m.queryRenderedFeatures({layers: ['predictions-fill']}))"
        "  for (const p of f.geometry.type === 'Polygon' ? [f.geometry.coordinates] : f.geometry.coordinates)"
        "   for (const [x] of p[0]) xs.push(((x - 180 + 540) % 360) - 180);"
        " return [Math.min(...xs), Math.max(...xs)]; }"
    )
    assert sides[0] < -0.01 and sides[1] > 0.01, sides
    accessible(page, "results over 180°")
    shot(page, screenshots, "08-results-across-180")
    page.close()


def test_a_box_typed_across_180_is_planned_and_a_bad_one_plans_nothing(
    web_gateway: WebGateway, app: Any, screenshots: Path, taveuni: dict[str, Any]
) -> None:
    west, south, east, north = taveuni["bbox"]
    page = sign_in(app, web_gateway, "operator", "#/run")
    page.get_by_label("Model", exact=True).select_option(MODEL)
    page.get_by_label("Imagery", exact=True).select_option(taveuni["id"])
    page.get_by_label("Version or alias").select_option("version:1")
    page.get_by_label("Further parameters").fill("block_size=160")
    typed = page.get_by_label("Or type the area of interest as west, south, east, north (degrees)")
    box = [round(west + 0.02, 4), round(south + 0.02, 4), round(east - 0.02, 4), round(north - 0.02, 4)]
    typed.fill(",".join(map(str, box)))  # west > east: across 180°
    page.get_by_role("button", name="Use box: use the typed area of interest").click()
    said = page.get_by_text("Area of interest: typed, ")
    said.wait_for()
    assert [float(v) for v in said.inner_text().rsplit("typed, ", 1)[1].split(",")] == pytest.approx(box)
    assert typed.input_value() == ""  # used: the field empties
    with page.expect_request(lambda r: r.url.endswith("/runs/batch-inference/plan")) as asked:
        page.get_by_role("button", name="Plan", exact=True).click()
    assert asked.value.post_data_json["aoi"]["type"] == "MultiPolygon"
    plan = page.locator(".plan[data-blocks]")
    plan.wait_for()
    planned = plan.inner_text()
    page.wait_for_function(MAP_IDLE)
    shot(page, screenshots, "09-typed-box-across-180")

    # a box that cannot be used leaves the one there before, and Plan refuses rather than
    # planning the whole imagery
    typed.fill("10,40,5,45")
    page.get_by_role("button", name="Use box: use the typed area of interest").click()
    page.wait_for_selector("text=west and east swapped?")
    assert [float(v) for v in said.inner_text().rsplit("typed, ", 1)[1].split(",")] == pytest.approx(box)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if r.url.endswith("/plan") else None)
    page.get_by_role("button", name="Plan", exact=True).click()
    page.wait_for_selector(".status.error:has-text('west and east swapped?')")
    assert requests == [] and page.locator(".plan").inner_text() in ("", planned)
    page.close()


def test_the_longitude_helpers_on_shapes_at_the_edges_of_the_world(web_gateway: WebGateway, app: Any) -> None:
    """The app's own functions (window.geomlopsLonLat), and the gateway's check of what they give."""
    from geomlops.errors import GeomlopsError
    from steps.aoi import aoi_geometry

    page = app.new_page()
    page.goto(f"{web_gateway.url}/")
    page.wait_for_function("() => !!window.geomlopsLonLat")

    def call(name: str, *args: Any) -> Any:
        return page.evaluate(
            "([name, args]) => { try { return {value: window.geomlopsLonLat[name](...args)}; }"
            " catch (err) { return {error: err.message}; } }",
            [name, list(args)],
        )

    # the bbox of an area of interest file: per polygon, across 180° only where narrower
    assert call("lonRange", [[-180, 180]])["value"] == [-180, 180]  # the whole world
    assert call("lonRange", [[-180, 170]])["value"] == [-180, 170]
    assert call("lonRange", [[-100, 100]])["value"] == [-100, 100]  # wide, across Greenwich
    assert call("lonRange", [[179, 180], [-180, -179]])["value"] == [179, -179]  # cut at 180°
    assert call("lonRange", [[170, 171], [-171, -170]])["value"] == [170, -170]  # islands across it

    # typed boxes: west > east is across 180°; one wider than half the world is a typo
    assert call("parseBox", "179.8,-17,-179.9,-16.6")["value"] == [179.8, -17, -179.9, -16.6]
    assert call("parseBox", "-180,-10,180,10")["value"] == [-180, -10, 180, 10]
    assert "swapped?" in call("parseBox", "10,40,5,45")["error"]
    assert "swapped?" in call("parseBox", "180,0,-180,10")["error"]  # no width at all
    assert "longitudes in [-180, 180]" in call("parseBox", "179,0,181,1")["error"]

    def box(w: float, e: float, s: float = 0.0, n: float = 10.0) -> dict[str, Any]:
        return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}

    def cut(polygon: dict[str, Any]) -> Any:
        got = call("cutAtAntimeridian", polygon)
        if "value" in got:
            try:
                aoi_geometry(got["value"], where="drawn")  # as the gateway checks it
            except GeomlopsError as err:
                raise AssertionError(f"{polygon} → {got['value']}: {err}") from err
        return got

    def parts(got: Any) -> list[list[float]]:
        import shapely.geometry

        return sorted(list(p.bounds) for p in getattr(shapely.geometry.shape(got["value"]), "geoms", []))

    assert parts(cut(box(179, 181))) == [[-180, 0, -179, 10], [179, 0, 180, 10]]
    assert parts(cut(box(-190, -170))) == [[-180, 0, -170, 10], [170, 0, 180, 10]]
    assert parts(cut(box(530, 550))) == [[-180, 0, -170, 10], [170, 0, 180, 10]]
    assert cut(box(540, 550))["value"]["coordinates"][0][0] == [-180, 0]  # one turn on: as is
    # a stretch of outline along 180° leaves no spike; a shape crossing it four times is refused
    step = [[170, 0], [180, 0], [180, 5], [190, 5], [190, 10], [170, 10], [170, 0]]
    assert parts(cut({"type": "Polygon", "coordinates": [step]})) == [[-180, 5, -170, 10], [170, 0, 180, 10]]
    c_shape = [[170, 0], [190, 0], [190, 2], [175, 2], [175, 8], [190, 8], [190, 10], [170, 10], [170, 0]]
    assert "crosses 180° more than twice" in cut({"type": "Polygon", "coordinates": [c_shape]})["error"]
    assert "more than the world" in cut(box(170, 550))["error"]
    page.close()
