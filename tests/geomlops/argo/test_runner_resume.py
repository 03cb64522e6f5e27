"""Suspend gates, approvals, and resuming failed, suspended or killed runs of the local runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from runner_fixtures.build import COUNTING, FIXTURES, count, dag, script, task, workflow

from geomlops.argo.runner import Approval, LocalRunner
from geomlops.argo.runner.suspend import APPROVE_QUESTION
from geomlops.errors import ParameterError, RunError

REPO = Path(__file__).resolve().parents[3]


def make_runner(tmp_path: Path, **options: Any) -> LocalRunner:
    options.setdefault("progress", False)
    return LocalRunner(tmp_path / "runs", **options)


def gated(tmp_path: Path) -> dict[str, Any]:
    """build -> approve (suspend) -> deploy, which receives the approver's name."""
    say = script("say", COUNTING, inputs=["dir", "tag"])
    approve = {
        "name": "approve",
        "suspend": {},
        "outputs": {
            "parameters": [
                {"name": "approver", "valueFrom": {"supplied": {}}},
                {"name": "reason", "valueFrom": {"supplied": {}}},
            ]
        },
    }
    args = {"dir": str(tmp_path)}
    main = dag(
        "main",
        [
            task("build", "say", args={**args, "tag": "build"}),
            task("approve", "approve", depends="build"),
            task(
                "deploy",
                "say",
                args={**args, "tag": "deploy-by-{{tasks.approve.outputs.parameters.approver}}"},
                depends="approve",
            ),
        ],
    )
    return workflow([main, say, approve], name="promote")


def test_suspend_stops_the_run_and_resume_with_approval_continues(tmp_path: Path) -> None:
    summary = make_runner(tmp_path).run(gated(tmp_path), {})

    assert summary.status == "Suspended"
    assert "approve" in summary.message and "approval" in summary.message
    assert count(tmp_path, "build") == 1
    assert not list(tmp_path.glob("deploy*"))

    approval = Approval(approver="alice", reason="metrics look good")
    resumed = make_runner(tmp_path, approval=approval).resume(summary.run_id)

    assert resumed.status == "Succeeded", resumed.message
    assert count(tmp_path, "build") == 1, "build had succeeded: it must not run again"
    assert count(tmp_path, "deploy-by-alice") == 1
    node = make_runner(tmp_path).show(summary.run_id).nodes["approve"]
    assert node.approval is not None
    assert node.approval["approver"] == "alice" and node.approval["reason"] == "metrics look good"
    assert node.approval["at"]
    assert node.outputs == {"approver": "alice", "reason": "metrics look good"}


def test_interactive_prompt_approves_or_rejects(tmp_path: Path) -> None:
    answers = iter(["yse", "y", "bob", "ship it"])  # a typo is asked again
    asked: list[str] = []

    def prompt(question: str) -> str:
        asked.append(question)
        return next(answers)

    summary = make_runner(tmp_path, interactive=True, prompt=prompt).run(gated(tmp_path), {})

    assert summary.status == "Succeeded", summary.message
    assert asked == [APPROVE_QUESTION, APPROVE_QUESTION, "Approver name: ", "Reason: "]
    approval = make_runner(tmp_path).show(summary.run_id).nodes["approve"].approval
    assert approval is not None and (approval["approver"], approval["via"]) == ("bob", "prompt")
    assert count(tmp_path, "deploy-by-bob") == 1

    said = iter(["n", "Carol", "the scene is cloudy"])
    rejected = make_runner(tmp_path, interactive=True, prompt=lambda _: next(said)).run(gated(tmp_path), {})

    assert rejected.status == "Failed"
    assert "refused by Carol: the scene is cloudy" in rejected.message
    refusal = make_runner(tmp_path).show(rejected.run_id).nodes["approve"].approval
    assert refusal is not None and refusal["decision"] == "refused"  # who and why, kept with the gate
    assert (refusal["approver"], refusal["reason"], refusal["via"]) == (
        "Carol",
        "the scene is cloudy",
        "prompt",
    )
    assert count(tmp_path, "deploy-by-bob") == 1
    # a person's "no" is final for the run: it is not resumed (nor its record overwritten)
    with pytest.raises(
        RunError, match=r"was refused at gate approve by Carol \(the scene is cloudy\); a refused run"
    ):
        make_runner(tmp_path, approval=Approval("Dan", "changed my mind")).resume(rejected.run_id)
    with pytest.raises(RunError, match="a refused run is not resumed"):
        make_runner(tmp_path).resume(rejected.run_id)
    assert make_runner(tmp_path).show(rejected.run_id).nodes["approve"].approval == refusal
    # input that ends after the "no" (a pipe): refused all the same, by this user
    ended = iter(["n"])

    def then_nothing(_: str) -> str:
        try:
            return next(ended)
        except StopIteration:
            raise EOFError from None

    refused = make_runner(tmp_path, interactive=True, prompt=then_nothing).run(gated(tmp_path), {})
    assert refused.status == "Failed" and "refused by " in refused.message


def test_a_gate_supplying_a_decision_passes_a_refusal_on_to_the_workflow(tmp_path: Path) -> None:
    """A gate with a supplied ``decision`` output passes on a "no" (``decision: refused``, who and
    why), so that its later tasks record the refusal; an approval gives its default."""
    flow = gated(tmp_path)
    gate = next(t for t in flow["spec"]["templates"] if t["name"] == "approve")
    # a decision the person gives: refused among its values (here on the output; Hera puts them on the input)
    decision = {"name": "decision", "enum": ["approved", "refused"], "valueFrom": {"supplied": {}}}
    gate["outputs"]["parameters"].append(decision)
    deploy = next(t for t in flow["spec"]["templates"] if t["name"] == "main")["dag"]["tasks"][2]
    deploy["arguments"]["parameters"][1]["value"] = (
        "{{tasks.approve.outputs.parameters.decision}}-by-{{tasks.approve.outputs.parameters.approver}}"
    )
    said = iter(["n", "Carol", "the scene is cloudy"])
    refused = make_runner(tmp_path, interactive=True, prompt=lambda _: next(said)).run(flow, {})

    assert refused.status == "Succeeded", refused.message  # the workflow decides what a "no" means
    node = make_runner(tmp_path).show(refused.run_id).nodes["approve"]
    assert node.status == "Succeeded" and node.message == "refused by Carol: the scene is cloudy"
    assert node.outputs == {"approver": "Carol", "reason": "the scene is cloudy", "decision": "refused"}
    assert node.approval is not None and node.approval["decision"] == "refused"
    assert count(tmp_path, "refused-by-Carol") == 1

    said = iter(["y", "bob", "ship it"])
    approved = make_runner(tmp_path, interactive=True, prompt=lambda _: next(said)).run(flow, {})
    assert approved.status == "Succeeded", approved.message
    assert count(tmp_path, "approved-by-bob") == 1


def test_no_answer_at_the_prompt_leaves_the_run_waiting_for_an_approval(tmp_path: Path) -> None:
    # issue 17: declining to answer must not fail the run; --resume --approve then works
    waiting = make_runner(tmp_path, interactive=True, prompt=lambda _: "").run(gated(tmp_path), {})

    assert waiting.status == "Suspended", waiting.message
    assert make_runner(tmp_path).show(waiting.run_id).nodes["approve"].status == "Suspended"
    approval = Approval(approver="carol", reason="looked at it later")
    resumed = make_runner(tmp_path, approval=approval).resume(waiting.run_id)
    assert resumed.status == "Succeeded", resumed.message
    assert count(tmp_path, "deploy-by-carol") == 1


def test_suspend_duration_waits_then_continues(tmp_path: Path) -> None:
    wait = {"name": "wait", "suspend": {"duration": "0.3s"}}
    began = time.monotonic()

    summary = make_runner(tmp_path).run(workflow([wait], entrypoint="wait"), {})

    assert summary.status == "Succeeded"
    assert time.monotonic() - began >= 0.3


def test_resume_reruns_only_what_failed(tmp_path: Path) -> None:
    say = script("say", COUNTING, inputs=["dir", "tag"])
    gate = script(
        "gate",
        """
        import pathlib, sys
        d = pathlib.Path("{{inputs.parameters.dir}}")
        (d / "gate.count").open("a").write("x")
        sys.exit(1 if (d / "broken").exists() else 0)
        """,
        inputs=["dir"],
    )
    args = {"dir": str(tmp_path)}
    main = dag(
        "main",
        [
            task("first", "say", args={**args, "tag": "first"}),
            task("fan", "say", args={**args, "tag": "fan-{{item}}"}, withItems=["a", "b"], depends="first"),
            task("gate", "gate", args=args, depends="first"),
            task("last", "say", args={**args, "tag": "last"}, depends="gate && fan"),
        ],
    )
    manifest = workflow([main, say, gate])
    (tmp_path / "broken").touch()

    failed = make_runner(tmp_path).run(manifest, {})
    assert failed.status == "Failed"
    assert "task 'gate'" in failed.message
    (tmp_path / "broken").unlink()

    resumed = make_runner(tmp_path).resume(failed.run_id)

    assert resumed.status == "Succeeded", resumed.message
    assert resumed.run_id == failed.run_id
    assert [count(tmp_path, t) for t in ("first", "fan-a", "fan-b", "gate", "last")] == [1, 1, 1, 2, 1]
    state = make_runner(tmp_path).show(failed.run_id)
    assert [a.log for a in state.nodes["gate"].attempts] == ["logs/gate.log", "logs/gate.2.log"]
    assert len(state.resumed) == 1

    again = make_runner(tmp_path).resume(failed.run_id)
    assert again.status == "Succeeded" and "nothing to resume" in again.message
    assert count(tmp_path, "last") == 1


def test_resume_unknown_run_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="unknown run id 'nope'"):
        make_runner(tmp_path).resume("nope")
    with pytest.raises(RunError, match="unknown run id"):
        make_runner(tmp_path).show("../escape")


@pytest.fixture
def detached(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_resume_after_the_runner_is_killed(tmp_path: Path, detached: list[subprocess.Popen[bytes]]) -> None:
    say = script("say", COUNTING, inputs=["dir", "tag"])
    slow = script(
        "slow",
        """
        import os, pathlib, time
        d = pathlib.Path("{{inputs.parameters.dir}}")
        first_time = not (d / "slow.count").exists()
        (d / "slow.count").open("a").write("x")
        if first_time:
            (d / "marker").write_text(str(os.getpid()))
            time.sleep(60)
        """,
        inputs=["dir"],
    )
    args = {"dir": str(tmp_path)}
    main = dag(
        "main",
        [
            task("first", "say", args={**args, "tag": "first"}),
            task("slow", "slow", args=args, depends="first"),
            task("last", "say", args={**args, "tag": "last"}, depends="slow"),
        ],
    )
    manifest_file = tmp_path / "wf.yaml"
    manifest_file.write_text(yaml.safe_dump(workflow([main, say, slow], name="killme")))
    runs = tmp_path / "runs"
    command = [
        sys.executable,
        str(FIXTURES / "run_detached.py"),
        str(manifest_file),
        str(runs),
        "killme-1",
        "{}",
    ]
    proc = subprocess.Popen(command, cwd=REPO)
    detached.append(proc)
    deadline = time.monotonic() + 30
    while not (tmp_path / "marker").exists():
        assert proc.poll() is None, "the runner exited before the slow task started"
        assert time.monotonic() < deadline, "the slow task never started"
        time.sleep(0.05)

    proc.send_signal(signal.SIGKILL)
    proc.wait()
    os.kill(int((tmp_path / "marker").read_text()), signal.SIGKILL)  # its orphaned task

    runner = make_runner(tmp_path)
    state = runner.show("killme-1")
    assert state.status == "Interrupted"  # recorded Running, but its runner is dead
    assert (state.nodes["first"].status, state.nodes["slow"].status) == ("Succeeded", "Running")
    (listed,) = runner.list_runs()
    assert listed.run_id == "killme-1" and "interrupted" in listed.message

    resumed = runner.resume("killme-1")

    assert resumed.status == "Succeeded", resumed.message
    assert [count(tmp_path, t) for t in ("first", "slow", "last")] == [1, 2, 1]
    nodes = runner.show("killme-1").nodes
    assert [a.status for a in nodes["slow"].attempts] == ["Error", "Succeeded"]
    assert nodes["slow"].attempts[0].message == "interrupted: the runner stopped"


def test_list_runs_newest_first_and_show_every_node(tmp_path: Path) -> None:
    hello = script("hello", "print('hi')")
    runner = make_runner(tmp_path)
    older = runner.run(workflow([hello], entrypoint="hello", name="one"), {}, run_id="one-1")
    newer = runner.run(workflow([hello], entrypoint="hello", name="two"), {})

    listed = runner.list_runs()

    assert [s.run_id for s in listed] == [newer.run_id, older.run_id]
    assert newer.run_id.startswith("two-") and len(newer.run_id.split("-")) == 4
    node = runner.show("one-1").nodes["hello"]
    assert (node.status, node.template, node.result, node.log) == (
        "Succeeded",
        "hello",
        "hi",
        "logs/hello.log",
    )
    assert node.started and node.finished and node.attempts[0].exit_code == 0
    data = json.loads((older.run_dir / "state.json").read_text())
    assert data["status"] == "Succeeded" and data["nodes"]["hello"]["result"] == "hi"
    with pytest.raises(RunError, match="already exists"):
        runner.run(workflow([hello], entrypoint="hello"), {}, run_id="one-1")


# --- the state file's format -------------------------------------------------------------------

#: The layout of state.json before formats were recorded (format 1), field by field.
FORMAT_1_RUN = (
    "run_id", "workflow_name", "workflow_uid", "argo_name", "status", "started", "finished",
    "message", "pid", "resumed", "nodes",
)  # fmt: skip
FORMAT_1_NODE = (
    "name", "template", "type", "status", "started", "finished", "inputs", "outputs", "result",
    "exit_code", "message", "log", "attempts", "approval",
)  # fmt: skip
FORMAT_1_ATTEMPT = ("number", "started", "finished", "status", "exit_code", "message", "log")


def as_format_1(state: dict[str, Any]) -> dict[str, Any]:
    """The state as the release before formats wrote it: no "format", only the fields it had."""

    def node(data: dict[str, Any]) -> dict[str, Any]:
        attempts = [{k: a[k] for k in FORMAT_1_ATTEMPT} for a in data["attempts"]]
        return {**{k: data[k] for k in FORMAT_1_NODE}, "attempts": attempts}

    nodes = {name: node(n) for name, n in state["nodes"].items()}
    return {**{k: state[k] for k in FORMAT_1_RUN}, "nodes": nodes}


def failed_run(tmp_path: Path) -> tuple[LocalRunner, Path, str]:
    """A run whose 'gate' task failed (until tmp_path/broken is removed): runner, state file, id."""
    say = script("say", COUNTING, inputs=["dir", "tag"])
    gate = script(
        "gate",
        """
        import pathlib, sys
        sys.exit(1 if pathlib.Path("{{inputs.parameters.dir}}", "broken").exists() else 0)
        """,
        inputs=["dir"],
    )
    args = {"dir": str(tmp_path)}
    main = dag(
        "main",
        [
            task("first", "say", args={**args, "tag": "first"}),
            task("gate", "gate", args=args, depends="first"),
            task("last", "say", args={**args, "tag": "last"}, depends="gate"),
        ],
    )
    (tmp_path / "broken").touch()
    runner = make_runner(tmp_path)
    failed = runner.run(workflow([main, say, gate]), {})
    assert failed.status == "Failed"
    return runner, failed.run_dir / "state.json", failed.run_id


def test_a_state_file_of_the_previous_format_resumes(tmp_path: Path) -> None:
    runner, state_file, run_id = failed_run(tmp_path)
    written = json.loads(state_file.read_text())
    assert written["format"] == 2
    state_file.write_text(json.dumps(as_format_1(written), indent=2) + "\n")
    (tmp_path / "broken").unlink()

    resumed = runner.resume(run_id)

    assert resumed.status == "Succeeded", resumed.message
    assert [count(tmp_path, t) for t in ("first", "last")] == [1, 1]
    upgraded = json.loads(state_file.read_text())
    assert upgraded["format"] == 2 and len(upgraded["resumed"]) == 1
    assert [a["status"] for a in upgraded["nodes"]["gate"]["attempts"]] == ["Failed", "Succeeded"]


def test_fields_the_release_does_not_know_are_ignored(tmp_path: Path) -> None:
    runner, state_file, run_id = failed_run(tmp_path)
    data = json.loads(state_file.read_text())
    data["added_later"] = {"x": 1}
    data["nodes"]["gate"]["added_later"] = 1
    data["nodes"]["gate"]["attempts"][0]["added_later"] = 1
    state_file.write_text(json.dumps(data))
    (tmp_path / "broken").unlink()

    assert runner.show(run_id).nodes["gate"].status == "Failed"
    assert runner.resume(run_id).status == "Succeeded"


@pytest.mark.parametrize(
    ("found", "message"),
    [
        (3, r"has format 3, newer than this release reads \(formats 1, 2\)"),
        ("2", r"has unknown format '2'; this release reads formats 1, 2"),
        (0, r"has unknown format 0; this release reads formats 1, 2"),
    ],
)
def test_a_state_file_of_a_newer_or_unknown_format_is_refused(
    tmp_path: Path, found: object, message: str
) -> None:
    runner, state_file, run_id = failed_run(tmp_path)
    data = json.loads(state_file.read_text())
    data["format"] = found
    data["nodes"]["gate"]["a_new_required_field"] = "?"
    state_file.write_text(json.dumps(data))
    before = state_file.read_text()

    for read in (runner.resume, runner.show):
        with pytest.raises(RunError, match=message) as refused:
            read(run_id)
        assert str(state_file) in str(refused.value)
    assert state_file.read_text() == before, "a refused state file is left as it was"
    assert count(tmp_path, "first") == 1


def test_a_decision_is_not_given_as_an_output_of_an_approval(tmp_path: Path) -> None:
    flow = gated(tmp_path)
    gate = next(t for t in flow["spec"]["templates"] if t["name"] == "approve")
    # a decision the person gives: refused among its values (here on the output; Hera puts them on the input)
    decision = {"name": "decision", "enum": ["approved", "refused"], "valueFrom": {"supplied": {}}}
    gate["outputs"]["parameters"].append(decision)
    waiting = make_runner(tmp_path).run(flow, {})
    approval = Approval("alice", "fine", outputs={"decision": "refused"})
    with pytest.raises(
        ParameterError, match="-o decision: an approval's decision is 'approved'; to refuse, answer 'n'"
    ):
        make_runner(tmp_path, approval=approval).resume(waiting.run_id)
    assert make_runner(tmp_path).show(waiting.run_id).nodes["approve"].status == "Suspended"


def test_a_decision_output_of_other_values_is_a_value_like_others(tmp_path: Path) -> None:
    """An output named decision whose values do not include refused (promote, hold) is asked
    for like any supplied value; a "no" at the prompt fails the gate, as at any gate."""
    flow = gated(tmp_path)
    gate = next(t for t in flow["spec"]["templates"] if t["name"] == "approve")
    gate["outputs"]["parameters"].append(
        {"name": "decision", "enum": ["promote", "hold"], "valueFrom": {"supplied": {}}}
    )
    said = iter(["n", "Carol", "not now"])
    refused = make_runner(tmp_path, interactive=True, prompt=lambda _: next(said)).run(flow, {})
    assert refused.status == "Failed" and "refused by Carol: not now" in refused.message
    asked: list[str] = []
    answers = iter(["y", "bob", "fine", "hold"])

    def prompt(question: str) -> str:
        asked.append(question)
        return next(answers)

    held = make_runner(tmp_path, interactive=True, prompt=prompt).run(flow, {})
    assert held.status == "Succeeded", held.message
    assert asked[-1] == "decision (one of promote, hold): "
    assert make_runner(tmp_path).show(held.run_id).nodes["approve"].outputs["decision"] == "hold"
