"""The local runner matches Argo's controller where it used to differ (each test names the rule)."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from runner_fixtures.build import COUNTING, count, dag, script, task, workflow

from geomlops.argo.runner import LocalRunner


def make_runner(tmp_path: Path, **options: Any) -> LocalRunner:
    options.setdefault("progress", False)
    return LocalRunner(tmp_path / "runs", **options)


def test_fan_out_aggregates_output_parameters_as_json_strings(tmp_path: Path) -> None:
    # Argo's aggregatedJSONValueList: strings unless every value is a JSON list or object
    emit = script(
        "emit",
        "open('{{outputs.parameters.n.path}}', 'w').write('{{inputs.parameters.v}}')",
        inputs=["v"],
        outputs={"n": "/tmp/emit/n"},
    )
    gather = script("gather", "print('{{inputs.parameters.all}}')", inputs=["all"])
    fan = task("fan", "emit", args={"v": "{{item}}"}, withItems=[0, 1])
    objects = task("objects", "emit", args={"v": "{{item}}"}, withItems=[{"a": 1}, [2]])
    main = dag(
        "main",
        [
            fan,
            objects,
            task("g", "gather", args={"all": "{{tasks.fan.outputs.parameters.n}}"}, depends="fan"),
            task("h", "gather", args={"all": "{{tasks.objects.outputs.parameters.n}}"}, depends="objects"),
        ],
    )

    summary = make_runner(tmp_path).run(workflow([main, emit, gather]), {})

    assert summary.status == "Succeeded", summary.message
    nodes = make_runner(tmp_path).show(summary.run_id).nodes
    assert nodes["g"].result == '["0","1"]'
    assert nodes["h"].result == '[{"a":1},[2]]'


FAIL_ONCE_MORE = """
    import pathlib, sys
    p = pathlib.Path("{{inputs.parameters.dir}}") / "attempts"
    p.write_text(p.read_text() + "x" if p.exists() else "x")
    sys.exit(1)
"""


@pytest.mark.parametrize(
    ("policy", "exit_attempts", "no_start_attempts"),
    [("OnError", 1, 3), ("OnFailure", 3, 1), ("Always", 3, 3), ("OnTransientError", 1, 1)],
)
def test_retry_policy_tells_failures_from_errors(
    tmp_path: Path, policy: str, exit_attempts: int, no_start_attempts: int
) -> None:
    # Argo's processNodeRetries: OnError retries Error nodes only, OnFailure Failed nodes only
    retry = {"limit": 2, "retryPolicy": policy}
    exits = script("exits", FAIL_ONCE_MORE, inputs=["dir"], retryStrategy=retry)
    missing = script("missing", "print('never')", retryStrategy=retry)
    missing["script"]["command"] = [str(tmp_path / "no-such-interpreter")]
    main = dag("main", [task("exits", "exits", args={"dir": str(tmp_path)}), task("missing", "missing")])
    main["dag"]["failFast"] = False

    summary = make_runner(tmp_path).run(workflow([main, exits, missing]), {})

    assert summary.status == "Failed"
    nodes = make_runner(tmp_path).show(summary.run_id).nodes
    assert (nodes["exits"].status, len(nodes["exits"].attempts)) == ("Failed", exit_attempts)
    assert (tmp_path / "attempts").read_text() == "x" * exit_attempts
    assert (nodes["missing"].status, len(nodes["missing"].attempts)) == ("Error", no_start_attempts)
    assert "cannot start" in nodes["missing"].message


def test_cron_workflow_run_has_its_scheduled_time(tmp_path: Path) -> None:
    # Argo sets workflow.scheduledTime from the cron run's scheduled-time annotation (RFC 3339)
    show = script("show", "print('{{workflow.scheduledTime}}')")
    spec = workflow([show], entrypoint="show")["spec"]
    cron = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "CronWorkflow",
        "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 2 * * *", "workflowSpec": spec},
    }
    annotated = workflow([show], entrypoint="show")
    annotated["metadata"]["annotations"] = {"workflows.argoproj.io/scheduled-time": "2024-05-01T02:00:00Z"}
    runner = make_runner(tmp_path)

    from_cron = runner.run(cron, {})
    from_annotation = runner.run(annotated, {})

    assert from_cron.status == "Succeeded", from_cron.message
    scheduled = runner.show(from_cron.run_id).nodes["show"].result or ""
    assert datetime.strptime(scheduled, "%Y-%m-%dT%H:%M:%SZ")
    assert from_cron.started is not None
    assert scheduled == from_cron.started.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert runner.show(from_annotation.run_id).nodes["show"].result == "2024-05-01T02:00:00Z"


def test_dag_target_given_by_a_parameter_is_checked_once_substituted(tmp_path: Path) -> None:
    # Argo's validateDAGTargets skips parameters; the DAG runs the substituted target
    say = script("say", COUNTING, inputs=["dir", "tag"])
    args = {"dir": str(tmp_path)}
    main = dag("main", [task(t, "say", args={**args, "tag": t}) for t in ("a", "b")])
    main["dag"]["target"] = "{{workflow.parameters.target}}"
    manifest = workflow([main, say], parameters={"target": "b"})
    runner = make_runner(tmp_path)

    summary = runner.run(manifest, {})
    wrong = runner.run(manifest, {"target": "nope"})

    assert summary.status == "Succeeded", summary.message
    assert (count(tmp_path, "a"), count(tmp_path, "b")) == (0, 1)
    assert wrong.status == "Failed"
    assert "target 'nope' is not defined" in wrong.message


PICKY = """
    import pathlib, sys
    p = pathlib.Path("{{inputs.parameters.dir}}") / "{{inputs.parameters.tag}}.count"
    p.write_text("x")
    sys.exit(1 if "{{inputs.parameters.tag}}" == "bad" else 0)
"""


@pytest.mark.parametrize(("fail_fast", "ran"), [(True, 1), (False, 3), (None, 3)])
def test_fail_fast_template_starts_nothing_after_a_failure(
    tmp_path: Path, fail_fast: bool | None, ran: int
) -> None:
    # Argo's checkParallelism: failFast (off unless true) starts no child once one failed
    picky = script("picky", PICKY, inputs=["dir", "tag"])
    fan = task("fan", "picky", args={"dir": str(tmp_path), "tag": "{{item}}"}, withItems=["bad", "b", "c"])
    steps: dict[str, Any] = {"name": "main", "parallelism": 1, "steps": [[fan]]}
    if fail_fast is not None:
        steps["failFast"] = fail_fast

    summary = make_runner(tmp_path).run(workflow([steps, picky]), {})

    assert summary.status == "Failed"
    assert sum(count(tmp_path, t) for t in ("bad", "b", "c")) == ran
    nodes = make_runner(tmp_path).show(summary.run_id).nodes
    assert ("[0].fan(1:b)" in nodes) is (ran == 3)


def test_workflow_and_template_deadlines_kill_with_argos_message(tmp_path: Path) -> None:
    # spec.activeDeadlineSeconds: running pods are killed, later ones never start, both fail
    # with "Step exceeded its deadline" (Argo's exec_control.go); the exit handler still runs
    sleeper = {"name": "sleeper", "container": {"image": "busybox", "command": ["sleep", "60"]}}
    say = script("say", COUNTING, inputs=["dir", "tag"])
    args = {"dir": str(tmp_path)}
    steps = {
        "name": "main",
        "steps": [[task("long", "sleeper")], [task("later", "say", args={**args, "tag": "later"})]],
    }
    on_exit = task("bye", "say", args={**args, "tag": "bye"})
    manifest = workflow(
        [steps, sleeper, say, {"name": "bye", "steps": [[on_exit]]}],
        activeDeadlineSeconds=1,
        onExit="bye",
    )
    slow = script("slow", "import time; time.sleep(60)", activeDeadlineSeconds=1)
    runner = make_runner(tmp_path, allow_host_containers=True)
    began = time.monotonic()

    summary = runner.run(manifest, {})
    alone = runner.run(workflow([slow], entrypoint="slow"), {})

    assert time.monotonic() - began < 20
    assert summary.status == "Failed"
    nodes = runner.show(summary.run_id).nodes
    assert (nodes["[0].long"].status, nodes["[0].long"].message) == ("Failed", "Step exceeded its deadline")
    assert (count(tmp_path, "later"), count(tmp_path, "bye")) == (0, 1)
    assert alone.status == "Failed"
    assert runner.show(alone.run_id).nodes["slow"].message == "Step exceeded its deadline"
