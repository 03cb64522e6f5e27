"""The whole analyst's path in a real browser, on the embedded default: sign in, search the
catalogue, draw an AOI, plan and run batch inference on the demo scene, follow it to the end,
count the polygons the map renders against the GeoParquet, click one and read its lineage; an
approver approves a promotion; a viewer sees no approve button and the API refuses it anyway.
Every page is screenshotted (tests/web/screenshots) and checked with axe-core.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from postprocessing.pmtiles import read_archive

from .conftest import APPROVER, WebGateway

pytestmark = pytest.mark.slow
MODEL = "cloud-mask"
FIELDS = ("Class", "Area", "Model", "Version", "MLflow run", "Dataset hash", "Code commit", "Block")
FIELDS += ("Feature",)
AXE = Path(__import__("axe_playwright_python").__file__).parent / "axe.min.js"
#: the map has loaded what it shows and stopped moving
MAP_IDLE = (
    "() => { const m = window.geomlopsMap; return !!m && m.loaded() && m.areTilesLoaded() && !m.isMoving(); }"
)


def sign_in(context: Any, web: WebGateway, role: str, where: str = "") -> Any:
    page = context.new_page()
    page.goto(f"{web.url}/{where}")
    page.get_by_label("API key").fill(web.keys[role])
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_selector(f"[data-role='{role}']")
    page.wait_for_selector("main[data-ready]")
    return page


def accessible(page: Any, what: str) -> None:
    """axe-core (bundled with axe-playwright-python, run offline): no serious or critical violation."""
    page.evaluate(AXE.read_text(encoding="utf-8"))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:5]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not bad, f"{what}: " + "\n".join(bad)
    # a control's accessible name holds its visible text (WCAG 2.5.3), so it can be said or found by it
    mismatched = page.evaluate(
        """() => [...document.querySelectorAll('button[aria-label], a[aria-label]')]
            .filter((b) => b.textContent.trim()
                && !b.getAttribute('aria-label').toLowerCase().includes(b.textContent.trim().toLowerCase()))
            .map((b) => `${b.textContent.trim()} / ${b.getAttribute('aria-label')}`)"""
    )
    assert not mismatched, f"{what}: names without their visible text: {mismatched}"


def search(page: Any) -> list[str]:
    """Click Search; the ids of the models the API answered, once the page says how many."""
    with page.expect_response(lambda r: r.url.split("?")[0].endswith("/api/v1/models")) as answer:
        page.get_by_role("button", name="Search", exact=True).click()
    found = [m["id"] for m in answer.value.json()]
    page.wait_for_selector(f"text={len(found)} model{'' if len(found) == 1 else 's'} found")
    cards = page.locator(".card[data-model]")
    page.wait_for_function(f"document.querySelectorAll('.card[data-model]').length === {len(found)}")
    assert sorted(cards.evaluate_all("cs => cs.map(c => c.dataset.model)")) == sorted(found)
    return found


def shot(page: Any, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def drag_rectangle(page: Any, bbox: list[float]) -> None:
    """Draw a rectangle over ``bbox`` (W,S,E,N) with the mouse: rectangle mode, two clicks."""
    page.get_by_role("button", name="Rectangle", exact=False).first.click()
    box = page.locator(".map canvas").bounding_box()
    corners = page.evaluate(
        "([w, s, e, n]) => [window.geomlopsMap.project([w, n]), window.geomlopsMap.project([e, s])]"
        ".map(p => [p.x, p.y])",
        bbox,
    )
    (x1, y1), (x2, y2) = corners
    page.mouse.move(box["x"] + x1, box["y"] + y1)
    page.mouse.click(box["x"] + x1, box["y"] + y1)
    for i in range(1, 6):
        page.mouse.move(box["x"] + x1 + (x2 - x1) * i / 5, box["y"] + y1 + (y2 - y1) * i / 5)
    page.mouse.click(box["x"] + x2, box["y"] + y2)


def start_run(page: Any) -> tuple[str, list[float], Any]:
    """Start the planned run, read the area of interest its page says it covers (the form below
    is for a new run), wait until it ends and check it succeeded: its id, that box and the
    progress bar's text."""
    page.get_by_role("button", name="Start batch inference").click()
    page.wait_for_selector(".progress-text[data-phase]")
    run_id = page.url.rsplit("/", 1)[1]
    said = page.get_by_text(f"Area of interest of run {run_id}: ")
    said.wait_for()
    box = [float(v) for v in said.inner_text().rsplit(": ", 1)[1].split(",")]
    phases = ("Succeeded", "Failed", "Error", "Interrupted")
    page.wait_for_selector(", ".join(f".progress-text[data-phase='{p}']" for p in phases), timeout=600_000)
    progress = page.locator(".progress-text")
    assert progress.get_attribute("data-phase") == "Succeeded", page.locator("main").inner_text()
    return run_id, box, progress


def test_a_wrong_key_is_refused_and_not_kept(web_gateway: WebGateway, app: Any, screenshots: Path) -> None:
    page = app.new_page()
    page.goto(f"{web_gateway.url}/")
    accessible(page, "sign-in page")
    page.get_by_label("API key").fill("gmk_nothere_wrong")
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_selector(".status.error")
    assert "401" in page.locator(".status.error").inner_text()
    assert page.evaluate("sessionStorage.getItem('geomlops.apiKey')") is None
    shot(page, screenshots, "01-sign-in-refused")
    page.close()


def test_catalogue_search_by_text_task_and_drawn_box(
    web_gateway: WebGateway, app: Any, screenshots: Path
) -> None:
    page = sign_in(app, web_gateway, "operator")
    assert page.evaluate("sessionStorage.getItem('geomlops.apiKey')") == web_gateway.keys["operator"]
    assert page.evaluate("localStorage.length") == 0
    card = page.locator(f".card[data-model='{MODEL}']")
    card.wait_for()
    assert "clear" in card.inner_text() and "cloud" in card.inner_text()  # classes with colours
    with web_gateway.client("viewer") as viewer:  # the tasks offered: those of the catalogued models
        ids = [m["id"] for m in viewer.get("/api/v1/models").json()]
        tasks = sorted({t for i in ids for t in viewer.get(f"/api/v1/models/{i}").json()["tasks"]})
    assert page.get_by_label("Task").locator("option").all_inner_texts() == ["any task", *tasks]
    page.get_by_label("Text").fill("cloud")
    page.get_by_label("Task").select_option("semantic-segmentation")
    found = search(page)  # the other workflow tests add models to the shared work folder
    assert MODEL in found and "building-footprints" not in found
    with web_gateway.client("viewer") as viewer:
        asked = viewer.get("/api/v1/models", params={"q": "cloud", "task": "semantic-segmentation"})
    assert sorted(found) == sorted(m["id"] for m in asked.json())
    with web_gateway.client("viewer") as viewer:
        model = viewer.get(f"/api/v1/models/{MODEL}").json()
    w, s, e, n = model["bbox"]
    # a box drawn within the model's extent finds it; one far away finds nothing
    card.get_by_role("button", name=f"Show extent on map: {MODEL}").click()
    page.wait_for_function(MAP_IDLE)
    drag_rectangle(page, [w + (e - w) / 4, s + (n - s) / 4, e - (e - w) / 4, n - (n - s) / 4])
    assert page.get_by_label("Only models over the drawn box").is_checked()
    assert MODEL in search(page)
    page.wait_for_function(MAP_IDLE)
    accessible(page, "catalogue")
    shot(page, screenshots, "02-catalogue")
    page.evaluate("window.geomlopsMap.jumpTo({center: [60, -40], zoom: 8})")
    page.wait_for_function(MAP_IDLE)
    drag_rectangle(page, [59.9, -40.1, 60.1, -39.9])
    assert search(page) == []
    page.close()


def test_draw_plan_run_and_trace_a_polygon(web_gateway: WebGateway, app: Any, screenshots: Path) -> None:
    page = sign_in(app, web_gateway, "operator", "#/run")
    imagery = page.get_by_label("Imagery", exact=True)
    registered = [o for o in imagery.locator("option").all_inner_texts() if "path" not in o]
    assert registered, "no registered imagery listed"
    with web_gateway.client("viewer") as viewer:
        items = viewer.get("/api/v1/imagery").json()
    scene = items[0]
    # imagery with another number of bands than a model reads is offered disabled, saying why
    with web_gateway.client("viewer") as viewer:
        reads = {
            m["id"]: viewer.get(f"/api/v1/models/{m['id']}").json()["reads"]
            for m in viewer.get("/api/v1/models").json()
        }
    for model_id, wanted in reads.items():
        page.get_by_label("Model", exact=True).select_option(model_id)
        for item in items:
            option = imagery.locator(f"option[value='{item['id']}']")
            # read by name where the imagery names every band the model reads, else by count
            misfit = len(item["bands"]) != len(wanted) and not set(wanted) <= set(item["bands"])
            expect_text = f"the model reads {len(wanted)}" if misfit else ""
            page.wait_for_function(
                "([id, misfit]) => { const o = [...document.querySelectorAll('select[name=imagery] option')]"
                ".find((x) => x.value === id); return o && o.disabled === misfit; }",
                arg=[item["id"], misfit],
            )
            assert (expect_text in option.inner_text()) if misfit else ("reads" not in option.inner_text())
    page.get_by_label("Model", exact=True).select_option(MODEL)  # not the first one listed
    imagery.select_option(scene["id"])
    page.get_by_label("Version or alias").select_option("version:1")
    page.wait_for_function(MAP_IDLE)
    w, s, e, n = scene["bbox"]
    aoi = [w + (e - w) * 0.2, s + (n - s) * 0.2, w + (e - w) * 0.8, s + (n - s) * 0.8]
    # a dropped file that is no GeoJSON area is refused, naming the file; a GeoJSON one is taken
    area = page.get_by_label("Area of interest from a GeoJSON file")
    area.set_input_files(files=[{"name": "notes.json", "mimeType": "application/json", "buffer": b"[1, 2]"}])
    page.wait_for_selector("text=notes.json: GeoJSON type undefined")
    polygon = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    body = json.dumps(polygon).encode()
    area.set_input_files(files=[{"name": "aoi.geojson", "mimeType": "application/geo+json", "buffer": body}])
    page.wait_for_selector("text=Area of interest: from the file")
    drag_rectangle(page, aoi)  # a drawn area replaces the file's
    page.wait_for_selector("text=Area of interest: drawn")
    page.get_by_label("Further parameters").fill("area=web\nblock_size=160\ngroup_size=4")
    # a malformed typed box is refused by name, not planned as the whole imagery
    typed = page.get_by_label("Or type the area of interest as west, south, east, north (degrees)")
    typed.fill(f"{w}, {s}, {w}")
    page.get_by_role("button", name="Plan", exact=True).click()
    page.wait_for_selector("text=area of interest: expected W,S,E,N in degrees")
    assert page.locator(".plan[data-blocks]").count() == 0
    typed.fill("")  # the drawn rectangle stands
    page.get_by_role("button", name="Plan", exact=True).click()
    plan = page.locator(".plan[data-blocks]")
    plan.wait_for()
    blocks = int(plan.get_attribute("data-blocks"))
    assert blocks > 0, plan.inner_text()
    accessible(page, "run form")
    shot(page, screenshots, "03-run-planned")

    run_id, box, progress = start_run(page)
    assert box == pytest.approx(aoi, abs=(e - w) * 0.05), (box, aoi)
    # the form below, for the next run, starts from this run's model (not the first listed; its
    # version and imagery are the only ones here: test_web_pacific checks those where they are not)
    assert page.get_by_label("Model", exact=True).input_value() == MODEL
    assert progress.get_attribute("data-done") == progress.get_attribute("data-total")
    assert int(progress.get_attribute("data-total")) == blocks  # the plan said how many
    assert page.locator(".logs").inner_text().strip()
    shot(page, screenshots, "04-run-done")
    web_gateway.state["run_id"] = run_id

    page.get_by_role("link", name="See the results on the map").click()
    page.wait_for_selector(".in-view[data-count]")
    page.wait_for_function(MAP_IDLE)
    page.wait_for_timeout(500)
    page.wait_for_function(MAP_IDLE)
    # the opening view (the AOI, at the archive's most detailed level or deeper): every polygon
    # in view is drawn whole, as the GeoParquet has it
    archive = web_gateway.home / f"web-{run_id}.pmtiles"
    with web_gateway.client("viewer") as viewer:
        archive.write_bytes(viewer.get(f"/api/v1/runs/{run_id}/predictions.pmtiles").content)
    header = read_archive(archive).header
    assert page.evaluate("() => window.geomlopsMap.getZoom()") >= header["max_zoom"]
    counts = page.locator(".in-view")
    assert counts.get_attribute("data-grouped") == "0"
    rendered = page.evaluate(
        "() => { const m = window.geomlopsMap; const b = m.getBounds();"
        " const ids = [...new Set(m.queryRenderedFeatures({layers: ['predictions-fill']})"
        ".map(f => f.properties.feature_id))];"
        " return {ids, bounds: [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]}; }"
    )
    in_view = _parquet_ids_in(web_gateway, run_id, rendered["bounds"])
    assert in_view, "the demo scene's AOI has no predicted polygon in view"
    assert sorted(rendered["ids"]) == sorted(in_view)
    assert page.locator(".in-view").get_attribute("data-count") == str(len(in_view))

    # a click on a polygon tells where it came from
    point = _find_on_map(page, "f.length")
    assert point is not None
    page.mouse.click(point[0], point[1])
    picked = page.locator(".picked dl")
    picked.wait_for()
    with web_gateway.client("viewer") as viewer:
        lineage = viewer.get(f"/api/v1/runs/{run_id}/lineage").json()
    shown = {name: picked.locator(f"dd[data-field='{name}']").inner_text() for name in FIELDS}
    assert shown["Model"] == MODEL and shown["Version"] == lineage["model_version"] == "1"
    assert shown["MLflow run"] == lineage["mlflow_run_id"]
    assert shown["Dataset hash"] == str(lineage["dataset_hash"]) and lineage["dataset_hash"]
    assert shown["Code commit"] == str(lineage["code_commit"] or "–")
    assert shown["Feature"] == str(point[2]["feature_id"])
    row = _parquet_row(web_gateway, run_id, point[2]["feature_id"])
    assert shown["Block"] == str(row["block_id"]) and shown["Class"].startswith(str(row["class"]))
    accessible(page, "results")
    shot(page, screenshots, "05-results-lineage")

    # the STAC items are the gateway's own (no STAC API here): opened with the key, as JSON
    for name, collection in (
        ("The run's STAC item", "predictions"),
        ("The model version's STAC item", "model-versions"),
    ):
        with page.context.expect_page() as opened:
            page.get_by_role("link", name=name).click()
        tab = opened.value
        tab.wait_for_load_state()
        tab.wait_for_function("() => document.body && document.body.innerText.includes('stac_version')")
        item = json.loads(tab.evaluate("() => (document.querySelector('pre') ?? document.body).innerText"))
        assert item["type"] == "Feature" and item["collection"] == collection
        if collection == "predictions":
            assert item["properties"]["mlflow:run_id"] == lineage["mlflow_run_id"]
        tab.close()

    # zoomed out to the coarsest level: the small polygons are drawn as the cells they fall in,
    # and the count in view still counts every polygon of the scene
    bounds = [header[k] / 1e7 for k in ("min_lon_e7", "min_lat_e7", "max_lon_e7", "max_lat_e7")]
    coarsest = header["min_zoom"] + 0.5
    page.evaluate(
        f"() => {{ window.geomlopsMap.fitBounds({bounds}, {{animate: false, maxZoom: {coarsest}}}); }}"
    )
    page.wait_for_function(MAP_IDLE)
    page.wait_for_timeout(500)
    page.wait_for_function(MAP_IDLE)
    grouped = int(counts.get_attribute("data-grouped"))
    assert grouped > 0 and int(counts.get_attribute("data-whole")) > 0
    assert int(counts.get_attribute("data-count")) == len(_parquet(web_gateway, run_id))
    # a cell is under a screen pixel: the map's click is dispatched at the centre of one
    cell = page.evaluate(
        "() => { const m = window.geomlopsMap; const layers = ['predictions-fill'];"
        " for (const f of m.queryRenderedFeatures({layers})) {"
        "  if (f.properties.feature_id >= 0 || f.geometry.type !== 'Polygon') continue;"
        "  const r = f.geometry.coordinates[0];"
        "  const p = m.project([(r[0][0] + r[2][0]) / 2, (r[0][1] + r[2][1]) / 2]);"
        "  const under = m.queryRenderedFeatures(p, {layers});"
        "  if (under.length && under[0].properties.feature_id < 0) {"
        "   m.fire('click', {point: p, lngLat: m.unproject(p), originalEvent: new MouseEvent('click')});"
        "   return under[0].properties; } }"
        " return null; }"
    )
    assert cell is not None
    page.wait_for_selector("dd[data-field='Polygons']")
    assert (
        page.locator("dd[data-field='Polygons']")
        .inner_text()
        .startswith(f"{cell['features']}, each too small")
    )
    area = page.locator("dd[data-field='Area']").inner_text()
    assert area.startswith(f"{cell['area']:,.1f}".removesuffix(".0")) and area.endswith(" in all"), area
    assert " m²" in area and (" ha)" in area) == (cell["area"] >= 10000)
    shot(page, screenshots, "06-results-overview")

    # zoomed out past the coarsest level nothing is drawn, and the page says why
    page.evaluate(f"() => {{ window.geomlopsMap.jumpTo({{zoom: {header['min_zoom'] - 1.5}}}); }}")
    page.wait_for_function(MAP_IDLE)
    page.wait_for_selector(".in-view[data-below='true']")
    assert (
        counts.inner_text() == f"Zoom in to see the polygons: they are drawn from zoom {header['min_zoom']}."
    )
    assert "imagery:" not in page.locator("[role=status]").first.inner_text()

    # imagery the gateway may not read (outside its imagery folders): the page says so once and
    # draws the polygons all the same
    refused = {"detail": "path '/elsewhere/scene.tif': outside the folders the gateway reads imagery from"}
    page.route(
        "**/api/v1/imagery/tiles/22/0/0.png*",
        lambda route: route.fulfill(status=422, content_type="application/json", body=json.dumps(refused)),
    )
    page.reload()
    page.wait_for_selector("text=imagery: 422: path '/elsewhere/scene.tif': outside the folders")
    assert page.get_by_text("the polygons are shown without it").count() == 1
    page.wait_for_selector(".in-view[data-count]")
    shot(page, screenshots, "06b-results-imagery-refused")
    page.close()


def _find_on_map(page: Any, test: str, step: int = 3) -> tuple[int, int, dict[str, Any]] | None:
    """The first whole pixel of the page over the map (scanned in rows) where ``test`` holds of
    the rendered polygons ``f`` under it, with the first one's properties. A page's mouse events
    land on whole pixels while the map's canvas may start at a fraction of one: a polygon
    smaller than a pixel is found where a click will hit it."""
    box = page.locator(".map canvas").bounding_box()
    found = page.evaluate(
        "([x0, y0, test, step]) => { const m = window.geomlopsMap; const c = m.getCanvas();"
        " const judge = new Function('f', 'return ' + test);"
        " for (let y = Math.ceil(y0) + 4; y < y0 + c.clientHeight - 4; y += step)"
        "  for (let x = Math.ceil(x0) + 4; x < x0 + c.clientWidth - 4; x += step) {"
        "   const f = m.queryRenderedFeatures([x - x0, y - y0], {layers: ['predictions-fill']});"
        "   if (judge(f)) return [x, y, f[0].properties]; } return null; }",
        [box["x"], box["y"], test, step],
    )
    return None if found is None else (found[0], found[1], found[2])


def _parquet(web: WebGateway, run_id: str) -> Any:
    import geopandas as gpd

    cache = web.state.setdefault("parquet", {})
    if run_id not in cache:
        with web.client("viewer") as viewer:
            answer = viewer.get(f"/api/v1/runs/{run_id}/predictions", params={"format": "geoparquet"})
        assert answer.status_code == 200, answer.text
        path = web.home / f"web-{run_id}.parquet"
        path.write_bytes(answer.content)
        frame = gpd.read_parquet(path).to_crs(4326).reset_index(drop=True)
        frame["feature_id"] = frame.index  # a tile feature's feature_id is its row here
        cache[run_id] = frame
    return cache[run_id]


def _parquet_ids_in(web: WebGateway, run_id: str, bounds: list[float]) -> list[Any]:
    from shapely.geometry import box

    frame = _parquet(web, run_id)
    return [int(fid) for fid in frame[frame.intersects(box(*bounds))]["feature_id"].tolist()]


def _parquet_row(web: WebGateway, run_id: str, feature_id: Any) -> dict[str, Any]:
    frame = _parquet(web, run_id)
    [row] = frame[frame["feature_id"] == feature_id].to_dict("records")
    return row


def test_an_approver_approves_a_promotion_a_viewer_cannot(
    web_gateway: WebGateway, app: Any, screenshots: Path
) -> None:
    with web_gateway.client("operator") as operator:
        started = operator.post("/api/v1/runs/promotion", json={"model": MODEL, "candidate": "1"})
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        deadline = time.monotonic() + 600
        while (run := operator.get(f"/api/v1/runs/{run_id}").json())["phase"] == "Running":
            assert time.monotonic() < deadline, run
            time.sleep(1)
    assert run["waiting_gate"] == "approval", run

    viewer_context = app.browser.new_context(viewport={"width": 1400, "height": 900})
    page = sign_in(viewer_context, web_gateway, "viewer", f"#/promotions/{run_id}")
    page.wait_for_selector(".decision")
    page.wait_for_selector("text=may not approve or refuse")
    assert page.get_by_role("button", name="Approve", exact=True).count() == 0
    accessible(page, "promotions (viewer)")
    shot(page, screenshots, "06-promotion-viewer")
    viewer_context.close()
    with web_gateway.client("viewer") as viewer:
        refused = viewer.post(f"/api/v1/runs/{run_id}/approve", json={"reason": "I only read"})
    assert refused.status_code == 403, refused.text

    approver_context = app.browser.new_context(viewport={"width": 1400, "height": 900})
    page = sign_in(approver_context, web_gateway, "approver", f"#/promotions/{run_id}")
    page.wait_for_selector(".verdict")
    approve = page.get_by_role("button", name="Approve", exact=True)
    approve.wait_for()
    # the comparison picture, and a link to it full size (its titles are small in the page)
    picture = page.locator("figure.report-picture img")
    picture.wait_for()
    assert picture.evaluate("img => img.complete && img.naturalWidth > 0")
    assert page.get_by_role("link", name="open it full size").get_attribute("href").startswith("blob:")
    accessible(page, "promotions (approver)")
    shot(page, screenshots, "07-promotion-approver")
    approve.click()  # no reason yet: refused in the page, nothing sent
    page.wait_for_selector("text=reason: give a reason")
    page.get_by_label("Reason (recorded with the decision)").fill("report checked in the web app")
    if page.get_by_label("Override: approve although the policy refused").count():
        page.get_by_label("Override: approve although the policy refused").check()
    approve.click()
    page.wait_for_selector("text=Approved: run")
    # the page says at once that the run no longer waits: its phase line and the list
    assert page.get_by_text("waiting at the approval gate").count() == 0
    entry = page.get_by_role("list", name="Promotion runs").get_by_role("listitem").filter(has_text=run_id)
    assert "waiting for a decision" not in entry.inner_text(), entry.inner_text()
    approver_context.close()
    with web_gateway.client("viewer") as viewer:
        deadline = time.monotonic() + 600
        while (done := viewer.get(f"/api/v1/runs/{run_id}").json())["phase"] in ("Suspended", "Running"):
            assert time.monotonic() < deadline, done
            time.sleep(1)
        assert done["phase"] == "Succeeded", done
        gate = next(t for t in done["tasks"] if t["name"] == "approval")
        assert gate["approval"]["approver"] == APPROVER
        assert gate["approval"]["reason"] == "report checked in the web app"
        # the approved version is production now (the Pacific tests run after, with this alias)
        assert viewer.get(f"/api/v1/models/{MODEL}").json()["production"] == "1"

    admin_context = app.browser.new_context(viewport={"width": 1400, "height": 900})
    page = sign_in(admin_context, web_gateway, "admin", "#/promotions")
    audit = page.locator("table.audit")
    audit.locator("tbody tr").first.wait_for()
    assert f"approved run {run_id}" in audit.inner_text()
    assert page.get_by_role("button", name="Roll back production to the previous version").count() == 1
    # only a model with a version behind production is offered for a rollback
    with web_gateway.client("viewer") as viewer:
        models = viewer.get("/api/v1/models").json()
    behind = [m["id"] for m in models if m["aliases"].get("production") and m["aliases"].get("previous")]
    assert MODEL not in behind  # its first production version: nothing behind it
    if not behind:
        page.wait_for_selector("text=No model has a previous version to roll back to.")
    offered = page.get_by_label("Model", exact=True).locator("option")
    assert offered.evaluate_all("os => os.map(o => o.value)") == behind
    accessible(page, "promotions (admin)")
    shot(page, screenshots, "08-admin-audit")
    admin_context.close()
    print(json.dumps({"promotion": run_id}))
