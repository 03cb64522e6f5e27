"""The promotion workflow end to end on the embedded defaults: MLflow on SQLite, the static
catalogue, the local runner.

The module trains its own two versions in its own work folder (the demo's version 1, and a
version 2 trained with two boosting iterations on 300 pixels, honestly worse), so other
modules' version counts are left alone. Tests run in order and share that folder: version 1
is promoted through the gate, version 2 is refused and then promoted with an override, then
rolled back; bad inputs follow and must change nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from geomlops.cli.demo import DATASET, MODEL

pytestmark = pytest.mark.slow
GEOMLOPS = str(Path(sys.executable).parent / "geomlops")
WORSE = '{"max_iter": 2, "max_samples": 300, "learning_rate": 0.05}'


@pytest.fixture(scope="module")
def promo(tmp_path_factory: pytest.TempPathFactory, schema_dir: Path) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("promotion-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOMLOPS_", "MLFLOW_"))}
    env |= {"GEOMLOPS_HOME": str(home), "GEOMLOPS_SCHEMA_DIR": str(schema_dir)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GEOMLOPS, *args], env=env, capture_output=True, text=True, cwd=home, timeout=900
        )

    demo = cli("demo")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    worse = cli(
        "run",
        "training",
        "-p",
        f"model={MODEL}",
        "-p",
        f"dataset_path={DATASET}",
        "-p",
        f"train_params={WORSE}",
    )
    assert worse.returncode == 0, worse.stdout + worse.stderr
    return {"home": home, "env": env, "cli": cli}


@pytest.fixture
def inproc(promo: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """This process pointed at the module's work folder (for direct step calls)."""
    for key in list(os.environ):
        if key.startswith("GEOMLOPS_") and key not in ("GEOMLOPS_TEST_SCHEMA_DIR", "GEOMLOPS_TEST_SHARED"):
            monkeypatch.delenv(key)
    for key in ("GEOMLOPS_HOME", "GEOMLOPS_SCHEMA_DIR"):
        monkeypatch.setenv(key, promo["env"][key])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{promo['home'] / 'mlflow.db'}")
    return promo


def _client(promo: dict[str, Any]) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{promo['home'] / 'mlflow.db'}")


def _alias(promo: dict[str, Any], alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(_client(promo).get_model_version_by_alias(MODEL, alias).version)
    except MlflowException:
        return None


def _item(promo: dict[str, Any], version: str) -> dict[str, Any]:
    path = promo["home"] / "catalog" / "model-versions" / f"{MODEL}-v{version}" / f"{MODEL}-v{version}.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _audit(promo: dict[str, Any]) -> list[dict[str, Any]]:
    tags = _client(promo).get_registered_model(MODEL).tags
    return [json.loads(v) for k, v in sorted(tags.items()) if k.startswith("geomlops.audit.")]


def _decision(promo: dict[str, Any], version: str, tag: str = "geomlops.promotion") -> dict[str, Any]:
    client = _client(promo)
    mv = client.get_model_version(MODEL, version)
    on_version = json.loads(mv.tags[tag])
    assert json.loads(client.get_run(mv.run_id).data.tags[tag]) == on_version  # the run holds the same record
    return on_version


def _run_id(out: subprocess.CompletedProcess[str]) -> str:
    return re.search(r"(?:Succeeded|Suspended|Failed): run (\S+)", out.stdout).group(1)  # type: ignore[union-attr]


def _valid(item: dict[str, Any], schema_dir: Path) -> None:
    from catalog_sync.validation import validate_stac

    result = validate_stac(item, schema_dir)
    assert result.status == "valid", result.summary()


def test_promotion_stops_at_the_gate_and_an_approval_moves_the_alias(
    promo: dict[str, Any], schema_dir: Path
) -> None:
    out = promo["cli"]("run", "promotion", "-p", f"model={MODEL}", "-p", "candidate=1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Suspended" in out.stdout and "--approve NAME" in out.stdout
    run_id = _run_id(out)
    state = json.loads((promo["home"] / "runs" / run_id / "state.json").read_text())
    assert state["nodes"]["approval"]["status"] == "Suspended"
    assert "promote" not in state["nodes"]
    assert _alias(promo, "production") is None  # nothing moves before the approval

    resumed = promo["cli"](
        "run", "--resume", run_id, "--approve", "Ada Lovelace", "--reason", "checked the report"
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert _alias(promo, "production") == "1" and _alias(promo, "previous") is None

    decision = _decision(promo, "1")
    assert decision["action"] == "promote" and decision["approver"] == "Ada Lovelace"
    assert decision["reason"] == "checked the report" and decision["override"] is False
    assert decision["previous_version"] is None and decision["approved_at"]
    assert "compared with nothing" in decision["summary"]
    report_dir = Path(decision["report"].removeprefix("file://")).parent
    assert report_dir.parent.name == "v1-vs-none"  # then a folder of this comparison's own
    assert "no production version yet" in (report_dir / "report.md").read_text()
    assert (report_dir / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((report_dir / "report.json").read_text())
    assert report["evaluation"]["production"] is None and report["worse"] is False

    item = _item(promo, "1")
    assert item["properties"]["mlflow:aliases"] == ["production"]
    assert item["properties"]["geomlops:promotion"] == decision
    _valid(item, schema_dir)
    final = json.loads((promo["home"] / "runs" / run_id / "state.json").read_text())
    manifests = json.loads(final["nodes"]["serve"]["outputs"]["manifests"])
    assert manifests and all(Path(p).is_file() for p in manifests)


def test_worse_candidate_is_refused_without_override_and_the_refusal_recorded(promo: dict[str, Any]) -> None:
    before = len(_audit(promo))
    out = promo["cli"](
        "run",
        "promotion",
        "-p",
        f"model={MODEL}",
        "-p",
        "candidate=2",
        "--approve",
        "ada@example.org",
        "--reason",
        "try",
    )
    assert out.returncode == 1, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert "refused" in text and "WORSE than production" in text and "--override" in text
    # the same inputs give the same refusal: not retried, no resume suggested
    assert "a permanent error (exit code 3" in text and "geomlops run --resume" not in text, text
    assert "Traceback" not in text
    assert _alias(promo, "production") == "1" and _alias(promo, "previous") is None
    audit = _audit(promo)
    assert len(audit) == before + 1
    # resumed all the same, the refusal is given again and recorded once
    again = promo["cli"]("run", "--resume", _run_id(out))
    assert again.returncode == 1 and "WORSE than production" in again.stdout + again.stderr
    assert _audit(promo) == audit
    refusal = audit[-1]
    assert refusal["action"] == "refused" and refusal["version"] == "2" and refusal["override"] is False
    assert _decision(promo, "2", "geomlops.promotion.refused") == refusal
    item = _item(promo, "2")
    assert item["properties"]["geomlops:promotion_refused"] == refusal
    assert item["properties"]["mlflow:aliases"] == []
    report_dir = Path(refusal["report"].removeprefix("file://")).parent
    markdown = (report_dir / "report.md").read_text()
    assert "| test_iou |" in markdown and "production v1" in markdown and "## Per class" in markdown
    assert re.search(rf"- production v1 scored as its item `\S*/{MODEL}-v1\.json` says", markdown), markdown
    report = json.loads((report_dir / "report.json").read_text())
    assert report["worse"] is True and report["delta"] < -report["tolerance"]
    # the evaluate step's log says what it scored, as which item, and how it came out
    run_dir = promo["home"] / "runs" / _run_id(out)
    node = json.loads((run_dir / "state.json").read_text())["nodes"]["evaluate"]
    log = (run_dir / node["log"]).read_text()
    iou = report["evaluation"]["production"]["metrics"]["test_iou"]
    assert f"production v1 (run {report['evaluation']['production']['run_id']}): test_iou {iou:.4f}" in log, (
        log
    )
    assert f"{MODEL}-v2.json says" in log and f"{MODEL}-v1.json says" in log, log


def test_a_person_refusing_at_the_gate_is_recorded_in_the_audit_trail(promo: dict[str, Any]) -> None:
    before = len(_audit(promo))
    out = subprocess.run(
        [GEOMLOPS, "run", "promotion", "-p", f"model={MODEL}", "-p", "candidate=2", "--interactive"],
        env=promo["env"],
        cwd=promo["home"],
        input="n\nCarol Shaw\nthe labels are outdated\n",
        capture_output=True,
        text=True,
        timeout=900,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "refused by Carol Shaw: the labels are outdated. Nothing moved; the refusal is recorded" in text
    assert "a person refused at an approval gate: start a new run to ask again" in text
    assert "geomlops run --resume" not in text and "Traceback" not in text
    assert _alias(promo, "production") == "1"
    audit = _audit(promo)
    assert len(audit) == before + 1
    refusal = audit[-1]
    assert (refusal["action"], refusal["version"], refusal["approver"]) == ("refused", "2", "Carol Shaw")
    assert refusal["reason"] == "the labels are outdated" and refusal["summary"].startswith(
        "refused by the approver"
    )
    assert _decision(promo, "2", "geomlops.promotion.refused") == refusal
    assert _item(promo, "2")["properties"]["geomlops:promotion_refused"] == refusal
    shown = promo["cli"]("promote", "status", MODEL)
    assert (
        shown.returncode == 0 and "Carol Shaw" in shown.stdout and "the labels are outdated" in shown.stdout
    )
    # the gate passed the refusal on: the promote step recorded it and failed, and nothing after ran
    state = json.loads((promo["home"] / "runs" / _run_id(out) / "state.json").read_text())
    assert state["nodes"]["approval"]["outputs"]["decision"] == "refused"
    assert state["nodes"]["promote"]["status"] == "Failed"
    assert {state["nodes"][n]["status"] for n in ("update-catalogue", "serve")} == {"Omitted"}, state["nodes"]


def test_worse_candidate_with_override_is_promoted_and_recorded(
    promo: dict[str, Any], schema_dir: Path
) -> None:
    out = promo["cli"](
        "run", "promotion", "-p", f"model={MODEL}", "-p", "candidate=2",
        "--approve", "ada@example.org", "--reason", "flood response needs the new scene", "--override",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert _alias(promo, "production") == "2" and _alias(promo, "previous") == "1"
    decision = _decision(promo, "2")
    assert decision["override"] is True and decision["previous_version"] == "1"
    assert decision["approver"] == "ada@example.org" and "overridden" in decision["summary"]
    assert _audit(promo)[-1] == decision
    new, old = _item(promo, "2"), _item(promo, "1")
    assert new["properties"]["mlflow:aliases"] == ["production"]
    assert new["properties"]["geomlops:promotion"]["override"] is True
    assert old["properties"]["mlflow:aliases"] == ["previous"]
    _valid(new, schema_dir)
    _valid(old, schema_dir)


def test_rollback_is_recorded_the_same_way(promo: dict[str, Any], schema_dir: Path) -> None:
    out = promo["cli"](
        "promote", "rollback", MODEL, "--approver", "Grace Hopper", "--reason", "v2 misses clouds"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "rolled back from v2 to v1" in out.stdout
    assert _alias(promo, "production") == "1" and _alias(promo, "previous") is None
    decision = _decision(promo, "1")
    assert decision["action"] == "rollback" and decision["approver"] == "Grace Hopper"
    assert decision["previous_version"] == "2" and decision["reason"] == "v2 misses clouds"
    assert _decision(promo, "2", "geomlops.rolled_back") == decision
    restored, demoted = _item(promo, "1"), _item(promo, "2")
    assert restored["properties"]["mlflow:aliases"] == ["production"]
    assert restored["properties"]["geomlops:promotion"] == decision
    assert (
        demoted["properties"]["mlflow:aliases"] == []
        and demoted["properties"]["geomlops:rolled_back"] == decision
    )
    _valid(restored, schema_dir)

    status = promo["cli"]("promote", "status", MODEL, "--json")
    assert status.returncode == 0, status.stderr
    trail = json.loads(status.stdout)
    assert trail["production"] == "1" and trail["previous"] is None
    assert [(d["action"], d["version"]) for d in trail["audit"]] == [
        ("promote", "1"),
        ("refused", "2"),  # by the policy
        ("refused", "2"),  # by a person at the gate
        ("promote", "2"),
        ("rollback", "1"),
    ]
    again = promo["cli"]("promote", "rollback", MODEL, "--approver", "Grace Hopper", "--reason", "again")
    assert again.returncode == 2 and "no previous version to roll back to" in again.stderr


def test_unknown_approver_format_is_refused_before_anything_runs(promo: dict[str, Any]) -> None:
    runs = set((promo["home"] / "runs").iterdir())
    for bad in ("x1", "root; rm -rf /", "<script>", "12345", "ada@"):
        out = promo["cli"]("run", "promotion", "-p", f"model={MODEL}", "-p", "candidate=2", "--approve", bad)
        assert out.returncode == 2, (bad, out.stdout, out.stderr)
        assert (
            "--approve: approver" in out.stderr and "a person's name" in out.stderr and "email" in out.stderr
        )
    assert set((promo["home"] / "runs").iterdir()) == runs
    out = promo["cli"]("promote", "rollback", MODEL, "--approver", "<b>", "--reason", "x")
    assert out.returncode == 2 and "expected a person's name" in out.stderr
    assert _alias(promo, "production") == "1"


def test_approving_a_run_that_waits_at_no_gate_says_so(promo: dict[str, Any]) -> None:
    done = sorted(
        p.name for p in (promo["home"] / "runs").iterdir() if p.name.startswith("geomlops-promotion")
    )
    finished = [
        r
        for r in done
        if json.loads((promo["home"] / "runs" / r / "state.json").read_text())["status"] != "Suspended"
    ]
    out = promo["cli"]("run", "--resume", finished[0], "--approve", "Ada Lovelace", "--reason", "late")
    assert out.returncode == 2
    assert "is not waiting at an approval gate" in out.stderr, out.stderr
    out = promo["cli"]("run", "promotion", "-p", f"model={MODEL}", "-p", "candidate=2", "--override")
    assert out.returncode == 2 and "--override needs --approve" in out.stderr


def _latest_report(promo: dict[str, Any]) -> str:
    refusal = next(d for d in _audit(promo) if d["action"] == "refused")
    return str(refusal["report"]).rsplit("/", 1)[0] + "/report.json"


def _catalog(promo: dict[str, Any]) -> str:
    return str(promo["home"] / "catalog" / "catalog.json")


def test_missing_stac_item_fails_before_anything_moves(inproc: dict[str, Any], tmp_path: Path) -> None:
    from geomlops.errors import PromotionError
    from steps.promotion import promote

    folder = inproc["home"] / "catalog" / "model-versions" / f"{MODEL}-v2"
    audit = _audit(inproc)
    shutil.move(folder, tmp_path / "kept")
    try:
        with pytest.raises(
            PromotionError, match=r"version 2 of 'cloud-mask' has no STAC item .* nothing was changed"
        ):
            promote(
                MODEL, "2", approver="Ada Lovelace", reason="x", approved_at="2026-01-01T00:00:00Z",
                override=True, report_uri=_latest_report(inproc), catalog=_catalog(inproc),
            )  # fmt: skip
    finally:
        shutil.move(tmp_path / "kept", folder)
    assert _alias(inproc, "production") == "1" and _audit(inproc) == audit


def test_catalogue_refusing_the_item_leaves_alias_tags_and_items_as_they_were(inproc: dict[str, Any]) -> None:
    """A base item whose geometry is invalid makes the version item invalid: the catalogue
    write is refused after the tags were written, and everything is undone."""
    from geomlops.errors import PromotionError
    from steps.promotion import promote

    base = inproc["home"] / "catalog" / "models" / MODEL / f"{MODEL}.json"
    original = base.read_text()
    broken = json.loads(original)
    broken["geometry"]["coordinates"] = [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]  # a self-crossing bow tie
    tags_before = dict(_client(inproc).get_model_version(MODEL, "2").tags)
    items_before = (_item(inproc, "1"), _item(inproc, "2"))
    audit = _audit(inproc)
    base.write_text(json.dumps(broken))
    try:
        with pytest.raises(PromotionError, match="not recorded, nothing moved"):
            promote(
                MODEL, "2", approver="Ada Lovelace", reason="x", approved_at="2026-01-01T00:00:00Z",
                override=True, report_uri=_latest_report(inproc), catalog=_catalog(inproc),
            )  # fmt: skip
    finally:
        base.write_text(original)
    assert _alias(inproc, "production") == "1" and _alias(inproc, "previous") is None
    assert dict(_client(inproc).get_model_version(MODEL, "2").tags) == tags_before
    assert _audit(inproc) == audit
    assert (_item(inproc, "1"), _item(inproc, "2")) == items_before


def test_each_version_is_scored_as_its_own_item_reads_its_input(inproc: dict[str, Any]) -> None:
    """Version 1 (production) whose item scales its input otherwise than version 2's (as when
    the package was registered again with other scaling): the comparison scores version 1 as
    its own item says, not as the candidate's does."""
    from geomlops.settings import get_settings
    from steps.dataset import materialize_dataset
    from steps.evaluation import mlm_classes, recorded_parameters, score_segmentation
    from steps.model_spec import fetch_model_spec
    from steps.promotion_report import evaluate_versions, version_dataset, version_run

    catalog = _catalog(inproc)
    path = inproc["home"] / "catalog" / "model-versions" / f"{MODEL}-v1" / f"{MODEL}-v1.json"
    original = path.read_text()
    item = json.loads(original)
    item["properties"]["mlm:input"][0]["value_scaling"] = [{"type": "scale", "value": 3}]
    data = str(materialize_dataset(version_dataset(MODEL, "2"), get_settings().home_dir / "datasets"))
    path.write_text(json.dumps(item))
    try:
        own = fetch_model_spec(MODEL, catalog, "1")
        evaluation = evaluate_versions(MODEL, "2", data, catalog)
    finally:
        path.write_text(original)
    assert own.inputs[0].value_scaling  # the edited item is what version 1 is read with
    assert _alias(inproc, "production") == "1" and evaluation.production is not None

    parameters = recorded_parameters(_client(inproc).get_run(version_run(MODEL, "2")))

    def confusion(version: str, spec: Any) -> list[list[int]]:
        scored = score_segmentation(
            version_run(MODEL, version),
            data,
            parameters=parameters,
            model_classes=mlm_classes(spec),
            model_spec=spec,
        )
        return scored.report.confusion_matrix  # counts: the metrics may be NaN (nothing predicted)

    candidate_spec = fetch_model_spec(MODEL, catalog, "2")
    assert evaluation.production.confusion_matrix == confusion("1", own)
    # read as the candidate's item says, version 1 answers otherwise
    assert evaluation.production.confusion_matrix != confusion("1", candidate_spec)
    assert evaluation.candidate.confusion_matrix == confusion("2", candidate_spec)
    # the report says which item each version was read with
    assert evaluation.production.item == own.item_href and evaluation.production.item.endswith(
        f"{MODEL}-v1.json"
    )
    assert evaluation.candidate.item == candidate_spec.item_href
    assert evaluation.candidate.item.endswith(f"{MODEL}-v2.json")


def test_versions_whose_items_name_other_classes_are_not_compared(inproc: dict[str, Any]) -> None:
    """Each version's answer is read with its own classes: where version 1's item names them
    otherwise, the comparison is refused (naming both), not reported under the candidate's."""
    from geomlops.errors import IncomparableVersionsError
    from geomlops.settings import get_settings
    from steps.dataset import materialize_dataset
    from steps.promotion_report import evaluate_versions, version_dataset

    path = inproc["home"] / "catalog" / "model-versions" / f"{MODEL}-v1" / f"{MODEL}-v1.json"
    original = path.read_text()
    item = json.loads(original)
    item["properties"]["mlm:output"][0]["classification:classes"][1]["name"] = "cloudy"
    data = str(materialize_dataset(version_dataset(MODEL, "2"), get_settings().home_dir / "datasets"))
    path.write_text(json.dumps(item))
    try:
        with pytest.raises(IncomparableVersionsError) as refused:
            evaluate_versions(MODEL, "2", data, _catalog(inproc))
    finally:
        path.write_text(original)
    message = str(refused.value)
    assert "versions 2 and 1 of 'cloud-mask' name their classes differently" in message
    assert "(version 2: ['clear', 'cloud']; version 1: ['clear', 'cloudy'])" in message


def test_promoting_the_production_version_is_refused_before_a_run_starts(promo: dict[str, Any]) -> None:
    assert _alias(promo, "production") == "1"
    runs = sorted((promo["home"] / "runs").iterdir())
    out = promo["cli"]("run", "promotion", "-p", f"model={MODEL}", "-p", "candidate=1")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "parameter 'candidate': version 1 of 'cloud-mask' already is the production version" in out.stderr
    assert "(no run was started)" in out.stderr and "Traceback" not in out.stderr
    assert sorted((promo["home"] / "runs").iterdir()) == runs
