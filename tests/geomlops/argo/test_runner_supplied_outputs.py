"""Suspend gates whose outputs the approver supplies (Argo's valueFrom.supplied), run, resumed and asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from runner_fixtures.build import dag, script, task, workflow

from geomlops.argo.runner import Approval, LocalRunner
from geomlops.cli.main import main
from geomlops.errors import ParameterError


def make_runner(tmp_path: Path, **options: Any) -> LocalRunner:
    options.setdefault("progress", False)
    return LocalRunner(tmp_path / "runs", **options)


def gated() -> dict[str, Any]:
    supplied: dict[str, Any] = {"supplied": {}}
    gate = {
        "name": "gate",
        "suspend": {},
        "outputs": {
            "parameters": [
                {"name": "approver", "valueFrom": supplied},
                {"name": "decision", "enum": ["promote", "hold"], "valueFrom": supplied},
                {"name": "note", "valueFrom": {"supplied": {}, "default": "none"}},
            ]
        },
    }
    show = script("show", "print('{{inputs.parameters.d}}/{{inputs.parameters.n}}')", inputs=["d", "n"])
    args = {"d": "{{tasks.gate.outputs.parameters.decision}}", "n": "{{tasks.gate.outputs.parameters.note}}"}
    main_dag = dag("main", [task("gate", "gate"), task("show", "show", args=args, depends="gate")])
    return workflow([main_dag, gate, show])


@pytest.mark.parametrize(
    ("outputs", "named"),
    [
        ({"decison": "promote"}, "-o decison: no waiting suspend gate supplies an output 'decison'"),
        ({}, "output 'decision' of suspend template 'gate' is supplied by the approver and has no default"),
        ({"decision": "maybe"}, "-o decision=maybe: not one of its allowed values: promote, hold"),
    ],
)
def test_bad_supplied_outputs_are_refused_before_the_run_resumes(
    tmp_path: Path, outputs: dict[str, str], named: str
) -> None:
    waiting = make_runner(tmp_path).run(gated(), {})
    assert waiting.status == "Suspended"
    before = (tmp_path / "runs" / waiting.run_id / "state.json").read_text()

    approval = Approval("alice", "ok", outputs=outputs)
    with pytest.raises(ParameterError, match=named):
        make_runner(tmp_path, approval=approval).resume(waiting.run_id)

    assert (tmp_path / "runs" / waiting.run_id / "state.json").read_text() == before


def test_supplied_outputs_reach_the_tasks_after_the_gate(tmp_path: Path) -> None:
    waiting = make_runner(tmp_path).run(gated(), {})
    approval = Approval("alice", "ok", outputs={"decision": "hold"})

    resumed = make_runner(tmp_path, approval=approval).resume(waiting.run_id)

    assert resumed.status == "Succeeded", resumed.message
    nodes = make_runner(tmp_path).show(waiting.run_id).nodes
    assert nodes["gate"].outputs == {"approver": "alice", "decision": "hold", "note": "none"}
    assert nodes["show"].result == "hold/none"


def test_an_approval_given_up_front_is_checked_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="decision"):
        make_runner(tmp_path, approval=Approval("alice", "ok")).run(gated(), {})
    assert not (tmp_path / "runs").exists()


def test_the_prompt_asks_for_supplied_outputs_with_their_enum_and_default(tmp_path: Path) -> None:
    answers = iter(["y", "bob", "fine", "perhaps", "promote", ""])
    asked: list[str] = []

    def prompt(question: str) -> str:
        asked.append(question)
        return next(answers)

    summary = make_runner(tmp_path, interactive=True, prompt=prompt).run(gated(), {})

    assert summary.status == "Succeeded", summary.message
    assert asked[3:] == ["decision (one of promote, hold): "] * 2 + ["note [none]: "]
    assert make_runner(tmp_path).show(summary.run_id).nodes["show"].result == "promote/none"


def test_cli_approve_with_supplied_outputs(home: Path) -> None:
    path = home / "gated.yaml"
    path.write_text(yaml.safe_dump(gated()))
    first = CliRunner().invoke(main, ["run", str(path), "--no-interactive"])
    assert first.exit_code == 0, first.output
    run_id = first.output.split("run ")[1].split()[0]

    typo = ["run", "--resume", run_id, "--approve", "alice", "--reason", "ok", "-o", "decison=hold"]
    refused = CliRunner().invoke(main, typo)
    assert refused.exit_code != 0 and "decison" in refused.output

    good = ["run", "--resume", run_id, "--approve", "alice", "--reason", "ok", "-o", "decision=hold"]
    done = CliRunner().invoke(main, good)
    assert done.exit_code == 0, done.output
    shown = yaml.safe_load(CliRunner().invoke(main, ["runs", "show", run_id, "--json"]).output)
    assert shown["nodes"]["show"]["result"] == "hold/none"
