"""The Argo Server backend against a local server that speaks Argo Server's API: the exact
requests it makes (submit from the installed WorkflowTemplate, get, list, logs, stop, set the
gate's supplied outputs and resume it, refuse), how it reads Argo's Workflow JSON, its errors;
then train → batch inference → promotion → approve through the gateway's HTTP API."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from geomlops.errors import ConfigurationError, ParameterError
from geomlops.gateway.app import create_app
from geomlops.gateway.auth import create_key
from geomlops.gateway.backends.argo import ArgoBackend, pod_name
from geomlops.gateway.backends.base import (
    BackendUnavailableError,
    GateNotWaitingError,
    Phase,
    RunBackend,
    RunNotFoundError,
    RunStateError,
)
from geomlops.gateway.settings import GatewaySettings
from geomlops.settings import Settings
from pipelines import render

from .conftest import MODEL, _clean_env, serve_in_thread
from .fake_argo import FakeArgo, fake_argo

TOKEN = "argo-token-never-shown"


@pytest.fixture
def argo() -> Iterator[FakeArgo]:
    with fake_argo() as server:
        yield server


def _backend(url: str, monkeypatch: pytest.MonkeyPatch) -> ArgoBackend:
    monkeypatch.setenv("GEOMLOPS_ARGO_SERVER", url)
    monkeypatch.setenv("GEOMLOPS_ARGO_NAMESPACE", "geomlops")
    monkeypatch.setenv("GEOMLOPS_ARGO_TOKEN", TOKEN)
    return ArgoBackend(Settings())


def _template(pipeline: str) -> str:
    return str(render(pipeline)["metadata"]["name"])


@contextmanager
def _argo_gateway(
    argo: FakeArgo, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> Iterator[tuple[str, dict[str, str]]]:
    """The gateway on the Argo backend over real HTTP; an operator's and an approver's keys."""
    backend = _backend(argo.url, monkeypatch)
    app = create_app(Settings(), GatewaySettings(backend="argo"), backend)
    keys = {
        role: create_key(app.state.gateway.db, f"{role}-{suffix}", role).token
        for role in ("operator", "approver")
    }
    url, server, thread = serve_in_thread(app)
    try:
        yield url, keys
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.gateway.db.dispose()


AOI = {
    "type": "Polygon",
    "coordinates": [[[-87.45, 30.68], [-87.35, 30.68], [-87.35, 30.78], [-87.45, 30.78], [-87.45, 30.68]]],
}
INLINE_AOI = json.dumps(AOI, separators=(",", ":"))


def test_it_is_a_run_backend_and_needs_a_server(home: Path) -> None:
    with pytest.raises(ConfigurationError, match="GEOMLOPS_ARGO_SERVER: not set"):
        ArgoBackend(Settings())
    assert isinstance(ArgoBackend(Settings(argo_server="http://127.0.0.1:9")), RunBackend)


def test_submit_asks_argo_to_run_the_installed_template(
    argo: FakeArgo, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _backend(argo.url, monkeypatch)
    run = backend.submit("training", {"model": MODEL, "dataset_path": "d/x"}, submitted_by="ada@example.org")
    [sent] = argo.requests
    assert (sent["method"], sent["path"], sent["auth"]) == (
        "POST",
        "/api/v1/workflows/geomlops/submit",
        f"Bearer {TOKEN}",
    )
    assert sent["body"] == {
        "namespace": "geomlops",
        "resourceKind": "WorkflowTemplate",
        "resourceName": _template("training"),
        "submitOptions": {
            "parameters": [f"model={MODEL}", "dataset_path=d/x"],
            "labels": "geomlops.io/pipeline=training",
            "annotations": "geomlops.io/submitted-by=ada@example.org",
        },
    }
    assert run.run_id == f"{_template('training')}-00001" and run.phase == Phase.RUNNING
    assert (run.pipeline, run.submitted_by) == ("training", "ada@example.org")
    assert run.parameters["model"] == MODEL and run.parameters["dataset_rev"] == "HEAD"
    assert TOKEN not in run.model_dump_json()


def test_a_gate_is_approved_by_setting_its_outputs_and_resuming_it(
    argo: FakeArgo, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _backend(argo.url, monkeypatch)
    run = backend.submit(
        "retrain", {"model": MODEL, "repository": "r", "commit": "a" * 40}, submitted_by="ci"
    )
    with pytest.raises(GateNotWaitingError, match="is not waiting at an approval gate"):
        backend.approve(run.run_id, approver="Ada Lovelace", reason="early")
    argo.advance(run.run_id)
    waiting = backend.get(run.run_id)
    assert waiting.phase == Phase.SUSPENDED and waiting.waiting_gate == "approval"
    assert waiting.outputs["register"] == {"version": "register-version"}
    assert [t.name for t in waiting.tasks][:3] == ["checkout", "validate-package", "build-image"]
    assert "promote" not in {t.name for t in waiting.tasks}
    with pytest.raises(ParameterError, match="the gate 'approval' supplies no colour"):
        backend.approve(run.run_id, approver="Ada Lovelace", reason="x", outputs={"colour": "red"})
    before = len(argo.requests)
    approved = backend.approve(
        run.run_id, approver="Ada Lovelace", reason="checked the report", override=True
    )
    set_request, resume = argo.requests[before + 1 :]  # after one GET of the workflow
    assert argo.requests[before]["method"] == "GET"
    assert (set_request["method"], set_request["path"]) == (
        "PUT",
        f"/api/v1/workflows/geomlops/{run.run_id}/set",
    )
    values = json.loads(set_request["body"].pop("outputParameters"))
    assert set_request["body"] == {
        "name": run.run_id,
        "namespace": "geomlops",
        "nodeFieldSelector": "displayName=approval",
    }
    approved_at = values.pop("approved_at")
    assert values == {
        "approver": "Ada Lovelace",
        "reason": "checked the report",
        "override": "true",
        "decision": "approved",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", approved_at), approved_at
    assert (resume["method"], resume["path"]) == ("PUT", f"/api/v1/workflows/geomlops/{run.run_id}/resume")
    assert resume["body"] == {
        "name": run.run_id,
        "namespace": "geomlops",
        "nodeFieldSelector": "displayName=approval",
    }
    assert approved.waiting_gate is None
    assert argo.node(run.run_id, "approval")["outputs"]["parameters"][0] == {
        "name": "approver",
        "value": "Ada Lovelace",
    }
    argo.advance(run.run_id)
    done = backend.get(run.run_id)
    assert done.phase == Phase.SUCCEEDED and "serve" in done.outputs


def test_refusing_passes_the_refusal_to_the_promotion_and_fails_any_other_gate(
    argo: FakeArgo, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _backend(argo.url, monkeypatch)
    # the promotion's gate supplies a decision: it passes the refusal on, for promote to record
    run = backend.submit("promotion", {"model": MODEL, "candidate": "2"}, submitted_by="ops")
    argo.advance(run.run_id)
    refused = backend.refuse(run.run_id, approver="Grace Hopper", reason="misses clouds")
    put, resume = argo.requests[-2:]
    values = json.loads(put["body"]["outputParameters"])
    assert values.pop("approved_at")
    assert values == {
        "approver": "Grace Hopper",
        "reason": "misses clouds",
        "override": "false",
        "decision": "refused",
    }
    assert resume["path"] == f"/api/v1/workflows/geomlops/{run.run_id}/resume"
    assert refused.waiting_gate is None
    gate = argo.node(run.run_id, "approval")
    assert {"name": "decision", "value": "refused"} in gate["outputs"]["parameters"]
    shown = next(t for t in backend.get(run.run_id).tasks if t.name == "approval")
    assert shown.approval is not None and shown.approval.decision == "refused"

    # a gate that supplies no decision is failed, with who and why
    installed = next(
        t for t in argo.templates.values() if t["metadata"]["name"].startswith("geomlops-promotion")
    )
    suspend = next(t for t in installed["spec"]["templates"] if "suspend" in t)
    suspend["outputs"]["parameters"] = [
        p for p in suspend["outputs"]["parameters"] if p["name"] != "decision"
    ]
    run = backend.submit("promotion", {"model": MODEL, "candidate": "2"}, submitted_by="ops")
    argo.advance(run.run_id)
    refused = backend.refuse(run.run_id, approver="Grace Hopper", reason="misses clouds")
    assert argo.requests[-1]["body"] == {
        "name": run.run_id,
        "namespace": "geomlops",
        "nodeFieldSelector": "displayName=approval",
        "phase": "Failed",
        "message": "refused by Grace Hopper: misses clouds",
    }
    assert refused.phase == Phase.FAILED
    gate = next(t for t in refused.tasks if t.name == "approval")
    assert gate.phase == Phase.FAILED and gate.message == "refused by Grace Hopper: misses clouds"
    with pytest.raises(RunStateError, match="has already finished"):
        backend.stop(run.run_id)
    assert argo.requests[-1]["method"] == "GET"  # nothing sent to stop a finished run


def test_list_logs_stop_and_errors(argo: FakeArgo, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = _backend(argo.url, monkeypatch)
    first = backend.submit("training", {"model": MODEL, "dataset_path": "d"}, submitted_by="a")
    second = backend.submit("promotion", {"model": MODEL, "candidate": "1"}, submitted_by="b")
    argo.advance(first.run_id)
    listed = backend.list()
    assert {r.run_id for r in listed} == {first.run_id, second.run_id} and all(r.tasks == [] for r in listed)
    assert argo.requests[-1]["query"] == {"listOptions.labelSelector": "geomlops.io/pipeline"}

    node = argo.node(first.run_id, "train")
    text = backend.logs(first.run_id, "train")
    assert argo.requests[-1]["query"] == {
        "logOptions.container": "main",
        "podName": pod_name(first.run_id, node),
    }
    assert text == f"{pod_name(first.run_id, node)}: train done\n"
    assert pod_name(first.run_id, node).startswith(f"{first.run_id}-train-")
    pods = [n for n in argo.workflows[first.run_id]["status"]["nodes"].values() if n["type"] == "Pod"]
    assert len(pods) >= 6 and backend.logs(first.run_id).count(" done\n") == len(pods)
    with pytest.raises(RunNotFoundError, match="has no task 'nope'"):
        backend.logs(first.run_id, "nope")

    stopped = backend.stop(second.run_id)
    assert argo.requests[-1]["path"] == f"/api/v1/workflows/geomlops/{second.run_id}/stop"
    assert argo.requests[-1]["body"] == {"name": second.run_id, "namespace": "geomlops"}
    assert stopped.phase == Phase.FAILED and "Stopped" in stopped.message

    with pytest.raises(RunNotFoundError, match="no run 'missing' in namespace geomlops"):
        backend.get("missing")
    with pytest.raises(ParameterError, match="pipeline: unknown 'nope'"):
        backend.submit("nope", {}, submitted_by="a")
    with pytest.raises(ParameterError, match="Argo Server refused the request"):
        backend.submit("training", {"colour": "red"}, submitted_by="a")
    down = _backend("http://127.0.0.1:9", monkeypatch)
    with pytest.raises(BackendUnavailableError, match="cannot be reached") as caught:
        down.get("x")
    assert TOKEN not in str(caught.value)


def test_train_batch_inference_promotion_and_approval_through_the_gateway(
    argo: FakeArgo, catalogued: Path, schema_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded flow's API calls, against Argo: each becomes the Argo Server request it
    should (submit from the template with the request's parameters, get, set and resume the
    gate, stop), and the gateway reports what the server answers."""
    _clean_env(monkeypatch, catalogued, schema_dir)
    imagery = catalogued / "scene.tif"
    imagery.write_bytes(b"")  # the gateway checks that it exists; the cluster reads it
    train_params = '{"max_iter": 5}'
    with _argo_gateway(argo, monkeypatch, "argo") as (url, keys):
        with httpx.Client(base_url=url, timeout=60) as client:

            def call(role: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
                headers = {"Authorization": f"Bearer {keys[role]}"}
                answer = client.request("GET" if body is None else "POST", path, json=body, headers=headers)
                assert answer.status_code in (200, 202), answer.text
                found: dict[str, Any] = answer.json()
                return found

            trained = call(
                "operator",
                "/api/v1/runs/training",
                {
                    "model": MODEL,
                    "dataset_path": "datasets/x",
                    "dataset_rev": "v2",
                    "parameters": {"train_params": train_params},
                },
            )
            assert (trained["phase"], trained["submitted_by"]) == ("Running", "operator-argo")
            argo.advance(trained["run_id"])
            shown = call("approver", f"/api/v1/runs/{trained['run_id']}")
            served = argo.workflows[trained["run_id"]]
            assert shown["phase"] == "Succeeded" and shown["finished"] == served["status"]["finishedAt"]
            nodes = sorted(served["status"]["nodes"].values(), key=lambda n: n["startedAt"])
            assert [t["name"] for t in shown["tasks"]] == [n["displayName"] for n in nodes]
            assert all(t["phase"] == "Succeeded" for t in shown["tasks"])
            assert shown["outputs"]["register"] == {"version": "register-version"}
            assert shown["parameters"] == {
                p["name"]: p["value"] for p in served["spec"]["arguments"]["parameters"]
            }
            assert shown["parameters"]["dataset_rev"] == "v2"

            batch = call(
                "operator",
                "/api/v1/runs/batch-inference",
                {
                    "model": MODEL,
                    "alias": "production",
                    "imagery": str(imagery),
                    "aoi": AOI,
                    "parameters": {"area": "gateway"},
                },
            )
            argo.advance(batch["run_id"])
            assert call("operator", f"/api/v1/runs/{batch['run_id']}")["phase"] == "Succeeded"

            promotion = call("operator", "/api/v1/runs/promotion", {"model": MODEL, "candidate": "1"})
            argo.advance(promotion["run_id"])
            shown = call("approver", f"/api/v1/runs/{promotion['run_id']}")
            assert shown["phase"] == "Suspended" and shown["waiting_gate"] == "approval"
            assert shown["message"] == "waiting for approval"
            approved = call(
                "approver", f"/api/v1/runs/{promotion['run_id']}/approve", {"reason": "looks right"}
            )
            assert approved["waiting_gate"] is None
            resumed_at = len(argo.requests)
            argo.advance(promotion["run_id"])
            done = call("approver", f"/api/v1/runs/{promotion['run_id']}")
            assert done["phase"] == "Succeeded" and "serve" in done["outputs"]
            gate = next(t for t in done["tasks"] if t["name"] == "approval")
            assert gate["approval"]["approver"] == "approver-argo"

            running = call("operator", "/api/v1/runs/training", {"model": MODEL, "dataset_path": "d"})
            stopped = call("operator", f"/api/v1/runs/{running['run_id']}/stop", {})
            assert stopped["phase"] == "Failed" and stopped["message"] == "Stopped with strategy 'Stop'"
    submits = [r for r in argo.requests if r["path"].endswith("/submit")]
    assert [s["body"]["resourceName"] for s in submits] == [
        _template("training"),
        _template("batch-inference"),
        _template("promotion"),
        _template("training"),
    ]
    assert [s["body"]["submitOptions"]["parameters"] for s in submits[:3]] == [
        [f"model={MODEL}", "dataset_path=datasets/x", "dataset_rev=v2", f"train_params={train_params}"],
        [
            f"model={MODEL}",
            "model_version=production",
            f"imagery={imagery}",
            f"aoi={INLINE_AOI}",
            "area=gateway",
        ],
        [f"model={MODEL}", "candidate=1"],
    ]
    assert all(
        s["body"]["submitOptions"]["annotations"] == "geomlops.io/submitted-by=operator-argo" for s in submits
    )
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in argo.requests)
    # a pod reads no file of the gateway's machine: the AOI travels as GeoJSON, which the run reads
    from steps.aoi import read_aoi

    assert read_aoi(INLINE_AOI) == AOI
    set_request = next(r for r in argo.requests if r["path"].endswith("/set"))
    values = json.loads(set_request["body"]["outputParameters"])
    assert (
        values["approver"] == "approver-argo"
        and values["reason"] == "looks right"
        and values["override"] == "false"
    )
    assert argo.requests[resumed_at - 1]["path"].endswith(f"/{promotion['run_id']}/resume")
    stop = [r for r in argo.requests if r["path"].endswith("/stop")]
    assert [(r["method"], r["body"]) for r in stop] == [
        ("PUT", {"name": running["run_id"], "namespace": "geomlops"})
    ]
    for run_id in (trained["run_id"], batch["run_id"], promotion["run_id"]):
        assert argo.workflows[run_id]["status"]["phase"] == "Succeeded"


def test_approving_what_the_policy_refused_needs_an_explicit_override(
    argo: FakeArgo, catalogued: Path, schema_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report task said the candidate is worse than production: an approval without
    ``override: true`` is refused (409, naming the field) before anything reaches Argo."""
    _clean_env(monkeypatch, catalogued, schema_dir)
    with _argo_gateway(argo, monkeypatch, "policy") as (url, keys):
        with httpx.Client(base_url=url, timeout=60) as client:
            operator = {"Authorization": f"Bearer {keys['operator']}"}
            approver = {"Authorization": f"Bearer {keys['approver']}"}
            started = client.post(
                "/api/v1/runs/promotion", json={"model": MODEL, "candidate": "1"}, headers=operator
            )
            run_id = started.json()["run_id"]
            argo.advance(run_id)
            for parameter in argo.node(run_id, "report")["outputs"]["parameters"]:
                parameter["value"] = {"worse": "true", "summary": "test_iou fell by 0.2"}.get(
                    parameter["name"], parameter["value"]
                )
            before = len(argo.requests)
            refused = client.post(f"/api/v1/runs/{run_id}/approve", json={"reason": "fine"}, headers=approver)
            sent = [r["method"] for r in argo.requests[before:]]
            overridden = client.post(
                f"/api/v1/runs/{run_id}/approve", json={"reason": "fine", "override": True}, headers=approver
            )
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith("override: the promotion policy refused the candidate")
    assert "test_iou fell by 0.2" in refused.json()["detail"]
    assert set(sent) == {"GET"}  # nothing set or resumed
    assert overridden.status_code == 200, overridden.text
    values = json.loads(
        next(r for r in argo.requests if r["path"].endswith("/set"))["body"]["outputParameters"]
    )
    assert values["override"] == "true" and values["reason"] == "fine"


def test_a_batch_runs_predictions_by_range_download_and_lineage(
    argo: FakeArgo, catalogued: Path, schema_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch run whose outputs the gateway can read (its item and files on this machine): the
    PMTiles archive whole and by ranges (206), each download, the lineage, the progress."""
    import geopandas
    import shapely

    from postprocessing.tiles import write_prediction_tiles

    _clean_env(monkeypatch, catalogued, schema_dir)
    out = tmp_path / "predictions"
    out.mkdir()
    frame = geopandas.GeoDataFrame(
        {"class": [1, 1, 1], "area": [3600.0] * 3, "block_id": ["r0c0", "r0c0", "r0c1"]},
        geometry=[shapely.box(460000 + 100 * i, 3396000, 460060 + 100 * i, 3396060) for i in range(3)],
        crs="EPSG:32616",
    )
    frame.to_parquet(out / "predictions.parquet")
    (out / "predictions.geojson").write_text(frame.to_crs(4326).to_json())
    write_prediction_tiles(
        out / "predictions.parquet", out / "predictions.pmtiles", crs="EPSG:32616", zooms=(10, 14)
    )
    item = {
        "id": f"{MODEL}-v1-area",
        "assets": {
            "geoparquet": {"href": str(out / "predictions.parquet")},
            "geojson": {"href": str(out / "predictions.geojson")},
        },
    }
    (out / "item.json").write_text(json.dumps(item))
    imagery = catalogued / "scene.tif"
    imagery.write_bytes(b"")
    archive = (out / "predictions.pmtiles").read_bytes()
    with _argo_gateway(argo, monkeypatch, "outputs") as (url, keys):
        with httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": keys["approver"]}) as client:
            body = {
                "model": MODEL,
                "alias": "production",
                "imagery": str(imagery),
                "parameters": {"area": "area"},
            }
            started = client.post(
                "/api/v1/runs/batch-inference", json=body, headers={"X-API-Key": keys["operator"]}
            )
            run_id = started.json()["run_id"]
            argo.advance(run_id)
            outputs = {
                "plan-blocks": {
                    "groups": "[0, 1, 2]",
                    "output": "/in/a/pod",
                    "lineage": json.dumps({"model": MODEL, "model_version": "1", "run_id": "abc123"}),
                },
                "publish-predictions": {"item": str(out / "item.json"), "features": "3"},
            }
            for task, values in outputs.items():
                for parameter in argo.node(run_id, task)["outputs"]["parameters"]:
                    parameter["value"] = values.get(parameter["name"], parameter["value"])
            run = client.get(f"/api/v1/runs/{run_id}").json()
            found = client.get(f"/api/v1/runs/{run_id}/predictions").json()
            whole = client.get(found["links"]["pmtiles"])
            head = client.get(found["links"]["pmtiles"], headers={"Range": "bytes=0-126"})
            middle = client.get(found["links"]["pmtiles"], headers={"Range": "bytes=200-299"})
            beyond = client.get(found["links"]["pmtiles"], headers={"Range": f"bytes={len(archive) + 10}-"})
            geojson = client.get(found["links"]["geojson"])
            parquet = client.get(found["links"]["geoparquet"])
            lineage = client.get(found["links"]["lineage"]).json()
    assert run["blocks"] == {**run["blocks"], "done": 3, "total": 3, "unit": "groups", "eta_s": 0}
    assert found["features"] == 3 and found["assets"]["pmtiles"] == str(out / "predictions.pmtiles")
    assert whole.status_code == 200 and whole.content == archive
    assert head.status_code == 206 and head.content == archive[:127]
    assert head.headers["content-range"] == f"bytes 0-126/{len(archive)}"
    assert middle.status_code == 206 and middle.content == archive[200:300]
    assert beyond.status_code == 416
    assert geojson.status_code == 200 and geojson.json()["features"][0]["properties"]["block_id"] == "r0c0"
    assert geojson.headers["content-type"] == "application/geo+json"
    assert parquet.status_code == 200 and parquet.content == (out / "predictions.parquet").read_bytes()
    assert 'filename="' in parquet.headers["content-disposition"]
    assert (lineage["model"], lineage["model_version"], lineage["mlflow_run_id"]) == (MODEL, "1", "abc123")
    item_id = json.loads((out / "item.json").read_text())["id"]
    assert lineage["predictions_item_url"] == f"/api/v1/stac/collections/predictions/items/{item_id}"
    assert lineage["model_item_url"] == f"/api/v1/stac/collections/model-versions/items/{MODEL}-v1"
