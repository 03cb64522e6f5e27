"""Bad input over real HTTP: a 4xx naming the field, nothing started, only the audit line written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import MODEL, Served

IMAGERY = "/nonexistent/scene.tif"
BOX = {
    "type": "Polygon",
    "coordinates": [[[-87.4, 30.7], [-87.3, 30.7], [-87.3, 30.8], [-87.4, 30.8], [-87.4, 30.7]]],
}


def _nothing_started(home: Path) -> None:
    runs = home / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())
    launches = home / "gateway" / "runs"
    assert not launches.exists() or not any(launches.iterdir())
    assert not (home / "gateway" / "aoi").exists()


def _detail(answer: httpx.Response) -> str:
    return json.dumps(answer.json()["detail"])


@pytest.fixture
def imagery(catalogued: Path, tmp_path: Path) -> Iterator[str]:
    """A file in the gateway's work folder, where it reads imagery by path."""
    path = catalogued / f"{tmp_path.name}.tif"
    path.write_bytes(b"not read: every request here is refused before")
    yield str(path)
    path.unlink()


CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    (
        "unknown model",
        "training",
        {"model": "no-such-model", "dataset_path": "d"},
        404,
        "model 'no-such-model'",
    ),
    ("model id malformed", "training", {"model": "../etc", "dataset_path": "d"}, 422, '"model"'),
    ("missing field", "training", {"model": MODEL}, 422, '"dataset_path"'),
    ("unknown field", "training", {"model": MODEL, "dataset_path": "d", "gpu": 1}, 422, '"gpu"'),
    (
        "undeclared parameter",
        "training",
        {"model": MODEL, "dataset_path": "d", "parameters": {"epochs": "3"}},
        422,
        "does not declare parameter(s) epochs",
    ),
    (
        "parameter repeating a field",
        "training",
        {"model": MODEL, "dataset_path": "d", "parameters": {"model": "other"}},
        422,
        "parameters: model are fields of the request",
    ),
    (
        "unknown alias",
        "batch-inference",
        {"model": MODEL, "alias": "staging", "imagery": "IMG"},
        422,
        "alias 'staging'",
    ),
    (
        "unknown version",
        "batch-inference",
        {"model": MODEL, "version": "7", "imagery": "IMG"},
        422,
        "version '7'",
    ),
    (
        "version and alias",
        "batch-inference",
        {"model": MODEL, "version": "1", "alias": "production", "imagery": "IMG"},
        422,
        "version, alias: give exactly one",
    ),
    (
        "no imagery file",
        "batch-inference",
        {"model": MODEL, "alias": "production", "imagery": IMAGERY},
        422,
        "imagery",
    ),
    (
        "imagery outside the readable folders",
        "batch-inference",
        {"model": MODEL, "alias": "production", "imagery": "/etc/passwd"},
        422,
        "outside the folders the gateway reads imagery from",
    ),
    (
        "aoi not closed",
        "batch-inference",
        {
            "model": MODEL,
            "alias": "production",
            "imagery": "IMG",
            "aoi": {
                "type": "Polygon",
                "coordinates": [[[-87.4, 30.7], [-87.3, 30.7], [-87.3, 30.8], [-87.4, 30.8]]],
            },
        },
        422,
        "aoi",
    ),
    (
        "aoi latitude out of range",
        "batch-inference",
        {
            "model": MODEL,
            "alias": "production",
            "imagery": "IMG",
            "aoi": {
                "type": "Polygon",
                "coordinates": [[[-87.4, 95.0], [-87.3, 95.0], [-87.3, 96.0], [-87.4, 95.0]]],
            },
        },
        422,
        "aoi",
    ),
    (
        "aoi not GeoJSON",
        "batch-inference",
        {"model": MODEL, "alias": "production", "imagery": "IMG", "aoi": {"type": "Circle", "radius": 3}},
        422,
        "aoi",
    ),
    (
        "the command line's model_version",
        "batch-inference",
        {"model": MODEL, "model_version": "1", "imagery": "IMG"},
        422,
        "Extra inputs are not permitted: here it is 'version' (a number) or 'alias'",
    ),
    (
        "a pipeline parameter beside the fields",
        "batch-inference",
        {"model": MODEL, "alias": "production", "imagery": "IMG", "area": "north"},
        422,
        "Extra inputs are not permitted: a pipeline's parameter goes in 'parameters'",
    ),
    ("unknown candidate", "promotion", {"model": MODEL, "candidate": "9"}, 422, "candidate '9'"),
    (
        "undeclared promotion parameter",
        "promotion",
        {"model": MODEL, "candidate": "1", "parameters": {"approver": "me"}},
        422,
        "does not declare parameter(s) approver",
    ),
]


@pytest.mark.parametrize(("label", "pipeline", "body", "status", "named"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_request_names_the_field_and_starts_nothing(
    gateway: Served,
    catalogued: Path,
    imagery: str,
    label: str,
    pipeline: str,
    body: dict[str, Any],
    status: int,
    named: str,
) -> None:
    if body.get("imagery") == "IMG":
        body = {**body, "imagery": imagery}
    with gateway.client("operator") as operator:
        answer = operator.post(f"/api/v1/runs/{pipeline}", json=body)
    assert answer.status_code == status, answer.text
    assert named in _detail(answer), answer.text
    _nothing_started(catalogued)
    with gateway.client("admin") as admin:
        last = admin.get("/api/v1/audit", params={"limit": 1}).json()[0]
    assert (last["action"], last["status"], last["actor"]) == (
        f"POST /api/v1/runs/{pipeline}",
        status,
        "operator-key",
    )


def test_an_oversized_body_is_refused_with_413_whole_or_streamed(gateway: Served, catalogued: Path) -> None:
    big = {"model": MODEL, "dataset_path": "d", "parameters": {"train_params": "x" * 70_000}}
    with gateway.client("operator") as operator:
        whole = operator.post("/api/v1/runs/training", json=big)
        assert whole.status_code == 413 and "request body" in whole.json()["detail"]

        def chunks() -> Any:
            data = json.dumps(big).encode()
            for start in range(0, len(data), 8192):
                yield data[start : start + 8192]

        streamed = operator.post(
            "/api/v1/runs/training", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
    _nothing_started(catalogued)
    with gateway.client("admin") as admin:
        last = admin.get("/api/v1/audit", params={"limit": 2}).json()
    assert [a["status"] for a in last] == [413, 413]


def test_decisions_on_unknown_runs_and_bad_queries(gateway: Served, catalogued: Path) -> None:
    with gateway.client("approver") as approver:
        missing = approver.post("/api/v1/runs/no-such-run/approve", json={"reason": "fine"})
        assert missing.status_code == 404 and "no-such-run" in missing.json()["detail"]
        refused = approver.post("/api/v1/runs/no-such-run/refuse", json={"reason": "no"})
        assert refused.status_code == 404  # and no launch file written for it (below)
        extra = approver.post("/api/v1/runs/no-such-run/refuse", json={"reason": "no", "decision": "refused"})
        assert extra.status_code == 422 and extra.json()["detail"][0]["msg"] == (
            "Extra inputs are not permitted: this request takes reason"
        ), extra.text
        blank = approver.post("/api/v1/runs/no-such-run/approve", json={"reason": "  "})
        assert blank.status_code == 422 and blank.json()["detail"][0]["loc"] == ["body", "reason"]
        traversal = approver.get("/api/v1/runs/..%2F..%2Fetc/logs")
        assert traversal.status_code == 404
    with gateway.client("viewer") as viewer:
        bbox = viewer.get("/api/v1/models", params={"bbox": "1,2,3"})
        assert bbox.status_code == 422 and "bbox '1,2,3'" in bbox.json()["detail"]
        upside_down = viewer.get("/api/v1/models", params={"bbox": "85.51,27.64,85.53,27.62"})
        assert upside_down.status_code == 422
        assert "south (27.64) is above north (27.62); expected W,S,E,N" in upside_down.json()["detail"]
        unknown = viewer.get("/api/v1/models/no-such-model")
        assert unknown.status_code == 404 and "no-such-model" in unknown.json()["detail"]
    _nothing_started(catalogued)


def test_models_are_searched_and_shown_with_versions_and_aliases(gateway: Served) -> None:
    with gateway.client("viewer") as viewer:
        found = viewer.get(
            "/api/v1/models", params={"task": "semantic-segmentation", "framework": "SCIKIT-LEARN"}
        )
        assert [m["id"] for m in found.json()] == [MODEL]
        assert found.json()[0]["aliases"] == {"production": "1"} and found.json()[0]["versions"] == ["1"]
        assert viewer.get("/api/v1/models", params={"task": "object-detection"}).json() == []
        assert [m["id"] for m in viewer.get("/api/v1/models", params={"bbox": "-88,30,-87,31"}).json()] == [
            MODEL
        ]
        assert viewer.get("/api/v1/models", params={"bbox": "10,10,11,11"}).json() == []
        # a box across the antimeridian (west > east): from 170°E eastwards to 80°W holds 87°W
        across = viewer.get("/api/v1/models", params={"bbox": "170,30,-80,31"}).json()
        assert [m["id"] for m in across] == [MODEL]
        assert viewer.get("/api/v1/models", params={"bbox": "170,30,-170,31"}).json() == []
        assert [m["id"] for m in viewer.get("/api/v1/models", params={"q": "cloud landsat"}).json()] == [
            MODEL
        ]
        assert viewer.get("/api/v1/models", params={"q": "buildings"}).json() == []
        one = viewer.get(f"/api/v1/models/{MODEL}").json()
    assert one["item"]["id"] == MODEL and one["framework"] == "scikit-learn"
    # the imagery's bands it reads: its input bands, none of them derived
    assert one["reads"] == [b["name"] for b in one["bands"]] and len(one["reads"]) == 10
    assert one["version_details"][0]["version"] == "1" and one["version_details"][0]["aliases"] == [
        "production"
    ]


def test_a_model_over_the_antimeridian_is_found_by_boxes_on_either_side_of_it() -> None:
    from geomlops.gateway.catalogue import _intersects

    fiji = {"bbox": [177.0, -19.2, -178.2, -16.0]}  # west > east: across 180°
    assert _intersects(fiji, [179.0, -17.0, 179.5, -16.5])  # Vanua Levu, east of 179°
    assert _intersects(fiji, [-179.9, -17.0, -179.0, -16.5])  # the Lau islands, west of -179°
    assert _intersects(fiji, [170.0, -18.0, -170.0, -17.0])  # a box across 180° too
    assert not _intersects(fiji, [-170.0, -18.0, 170.0, -17.0])  # the rest of the world
    assert not _intersects(fiji, [179.0, -10.0, 179.5, -9.0])  # north of it
    high = {"bbox": [177.0, -19.2, 0.0, -178.2, -16.0, 1500.0]}  # with heights: W,S,min,E,N,max
    assert _intersects(high, [-179.9, -17.0, -179.0, -16.5])
    assert not _intersects(high, [-170.0, -18.0, 170.0, -17.0])


def test_a_model_reads_the_bands_its_derived_bands_are_computed_from(shared_data: Path) -> None:
    """The MLM extension's example derives NDVI from B08 and B04: the imagery must hold B08."""
    from geomlops.gateway.routes_models import _reads

    item = json.loads((shared_data / "mlm-examples" / "item_bands_expression.json").read_text())
    assert _reads(item) == ["B04", "B03", "B02", "B08"]
    assert _reads({"id": "broken", "properties": {}}) == []  # an item geomlops cannot read


def test_a_body_that_is_not_json_is_refused_after_the_caller_is_known(
    gateway: Served, catalogued: Path
) -> None:
    """A body that cannot be read: an unknown caller gets 401, as for any request; a known one
    gets 422, and the audit trail names the caller and says why it was refused."""
    broken = {"content": b'{"model": "cloud-mask",', "headers": {"Content-Type": "application/json"}}
    with gateway.client() as nobody:
        anonymous = nobody.post("/api/v1/runs/training", **broken)  # type: ignore[arg-type]
    assert anonymous.status_code == 401, anonymous.text
    with gateway.client("operator") as operator:
        known = operator.post("/api/v1/runs/training", **broken)  # type: ignore[arg-type]
    assert known.status_code == 422 and known.json()["detail"][0]["type"] == "json_invalid", known.text
    _nothing_started(catalogued)
    with gateway.client("admin") as admin:
        first, second = admin.get("/api/v1/audit", params={"limit": 2}).json()
    assert (first["actor"], first["status"]) == ("operator-key", 422)
    assert first["detail"].startswith("refused: body.") and "JSON decode error" in first["detail"], first
    assert (second["actor"], second["status"]) == ("anonymous", 401)
    assert second["detail"].startswith("refused: no credentials"), second
