"""The approval gate's override, as the promotion workflow uses it, on the local runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from runner_fixtures.build import COUNTING, count, dag, script, task, workflow

from geomlops.argo.runner import Approval, LocalRunner
from geomlops.errors import GeomlopsError, RunError


def _names_only(approver: str) -> str:
    """A stand-in for the caller's approver rule (the engine has none of its own)."""
    if not approver.replace(" ", "").isalpha() and "@" not in approver:
        raise GeomlopsError(f"approver {approver!r}: expected a person's name or an email address")
    return approver


def _runner(tmp_path: Path, **options: Any) -> LocalRunner:
    return LocalRunner(tmp_path / "runs", progress=False, **options)


def _gated(tmp_path: Path) -> dict[str, Any]:
    """approval (suspend with approver, reason, override) -> deploy, which receives the override."""
    say = script("say", COUNTING, inputs=["dir", "tag"])
    gate = {
        "name": "approval",
        "suspend": {},
        "inputs": {"parameters": [{"name": "override", "default": "false", "enum": ["false", "true"]}]},
        "outputs": {
            "parameters": [
                {"name": "approver", "valueFrom": {"supplied": {}}},
                {"name": "reason", "valueFrom": {"supplied": {}}},
                {"name": "override", "valueFrom": {"supplied": {}}},
            ]
        },
    }
    tag = "deploy-{{tasks.approval.outputs.parameters.override}}"
    main = dag(
        "main",
        [
            task("approval", "approval"),
            task("deploy", "say", args={"dir": str(tmp_path), "tag": tag}, depends="approval"),
        ],
    )
    return workflow([main, say, gate], name="gate")


@pytest.mark.parametrize("override", [False, True])
def test_the_override_reaches_the_gate_outputs_and_is_recorded(tmp_path: Path, override: bool) -> None:
    waiting = _runner(tmp_path).run(_gated(tmp_path), {})
    assert waiting.status == "Suspended"
    approval = Approval(approver="Ada Lovelace", reason="checked", override=override)
    done = _runner(tmp_path, approval=approval).resume(waiting.run_id)
    assert done.status == "Succeeded", done.message
    flag = "true" if override else "false"
    node = _runner(tmp_path).show(waiting.run_id).nodes["approval"]
    assert node.outputs == {"approver": "Ada Lovelace", "reason": "checked", "override": flag}
    assert node.approval is not None and node.approval["override"] == flag
    assert count(tmp_path, f"deploy-{flag}") == 1


def test_the_prompt_asks_for_an_override_only_where_the_gate_has_one(tmp_path: Path) -> None:
    answers = iter(["y", "Bob Marley", "ship it", "y"])
    asked: list[str] = []

    def prompt(question: str) -> str:
        asked.append(question)
        return next(answers)

    done = _runner(tmp_path, interactive=True, prompt=prompt).run(_gated(tmp_path), {})
    assert done.status == "Succeeded", done.message
    assert asked[-1] == "Override the policy? [y/N] "
    assert count(tmp_path, "deploy-true") == 1


def test_approving_a_run_that_waits_at_no_gate_is_refused(tmp_path: Path) -> None:
    approval = Approval(approver="Ada Lovelace", reason="ok")
    done = _runner(tmp_path, approval=approval).run(_gated(tmp_path), {})
    assert done.status == "Succeeded"
    with pytest.raises(
        RunError, match=r"is not waiting at an approval gate \(status Succeeded\).*no run waits at one"
    ):
        _runner(tmp_path, approval=approval).resume(done.run_id)
    assert count(tmp_path, "deploy-false") == 1  # nothing ran again
    waiting = _runner(tmp_path).run(_gated(tmp_path), {})  # another run, stopped at its gate
    assert waiting.status == "Suspended"
    with pytest.raises(RunError, match=rf"runs waiting at one: {waiting.run_id}$"):  # which one to approve
        _runner(tmp_path, approval=approval).resume(done.run_id)


def test_an_approver_of_unknown_format_at_the_prompt_fails_the_gate_and_a_resume_asks_again(
    tmp_path: Path,
) -> None:
    bad = iter(["y", "x1", "ok", "n"])
    asking = {"interactive": True, "approver_check": _names_only}
    failed = _runner(tmp_path, prompt=lambda _: next(bad), **asking).run(_gated(tmp_path), {})
    assert failed.status == "Failed"
    assert "approver 'x1': expected a person's name" in failed.message
    assert count(tmp_path, "deploy-false") == 0
    good = iter(["y", "ada@example.org", "ok", "n"])
    done = _runner(tmp_path, prompt=lambda _: next(good), **asking).resume(failed.run_id)
    assert done.status == "Succeeded", done.message
    assert count(tmp_path, "deploy-false") == 1


def test_a_waiting_gate_shows_what_is_to_be_approved_not_what_the_person_supplies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _gated(tmp_path)
    gate = next(t for t in manifest["spec"]["templates"] if t["name"] == "approval")
    gate["inputs"]["parameters"].append({"name": "report"})
    main = next(t for t in manifest["spec"]["templates"] if t["name"] == "main")
    main["dag"]["tasks"][0]["arguments"] = {
        "parameters": [{"name": "report", "value": "s3://runs/1/promotion/report.html"}]
    }
    waiting = LocalRunner(tmp_path / "runs").run(manifest, {})
    assert waiting.status == "Suspended"
    shown = capsys.readouterr().err
    assert "    report: s3://runs/1/promotion/report.html" in shown, shown
    assert "override:" not in shown  # supplied by the person, not shown as something to approve

    answers = iter(["n", "Ada", "not now"])
    asking = LocalRunner(tmp_path / "runs", interactive=True, prompt=lambda _: next(answers))
    refused = asking.run(manifest, {})
    assert refused.status == "Failed"
    assert "    report: s3://runs/1/promotion/report.html" in capsys.readouterr().err


def test_a_refusal_stands_whatever_the_name_given(tmp_path: Path) -> None:
    said = iter(["n", "ci_runner", "wrong scene"])
    asking = {"interactive": True, "approver_check": _names_only}
    refused = _runner(tmp_path, prompt=lambda _: next(said), **asking).run(_gated(tmp_path), {})
    assert refused.status == "Failed"
    record = _runner(tmp_path).show(refused.run_id).nodes["approval"].approval
    assert record is not None and record["decision"] == "refused" and record["approver"] == "ci_runner"
    assert record["reason"].startswith("wrong scene (not an approver's name: approver 'ci_runner'")
    assert count(tmp_path, "deploy-false") == 0


def test_a_refusal_at_the_prompt_says_who_and_why_and_suggests_no_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml
    from click.testing import CliRunner

    from geomlops.cli.main import main

    monkeypatch.setenv("GEOMLOPS_HOME", str(tmp_path / "home"))
    manifest = tmp_path / "gate.yaml"
    manifest.write_text(yaml.safe_dump(_gated(tmp_path)))
    result = CliRunner().invoke(
        main, ["run", str(manifest), "--interactive"], input="n\nAda Lovelace\nthe labels are outdated\n"
    )
    assert result.exit_code == 1, result.output
    assert "refused by Ada Lovelace: the labels are outdated" in result.output
    assert "a person refused at an approval gate: start a new run to ask again" in result.output
    assert "resume with" not in result.output
    assert count(tmp_path, "deploy-false") == 0
