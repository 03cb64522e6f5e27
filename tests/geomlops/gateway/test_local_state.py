"""How the gateway reports a local run from its state file."""

from __future__ import annotations

from pathlib import Path

from geomlops.argo.runner.model import RunState
from geomlops.gateway.backends._local_state import run_info
from pipelines._naming import template_name


def test_a_run_started_from_the_command_line_is_named_by_its_pipeline(tmp_path: Path) -> None:
    """A run the gateway did not start (``geomlops run promotion``) is reported under the
    pipeline's name, as the gateway's own runs are, so the web app lists it with them."""
    for pipeline in ("promotion", "batch-inference", "training"):
        state = RunState(f"{pipeline}-run", template_name(pipeline), "uid", "argo", "Suspended", "2026-12-07")
        assert run_info(state, tmp_path, {}, locked=False).pipeline == pipeline
        launched = {"pipeline": pipeline, "submitted_by": "ops"}
        assert run_info(state, tmp_path, launched, locked=False).pipeline == pipeline
    other = RunState("x", "hello-world-abc12", "uid", "argo", "Succeeded", "2026-12-07")
    assert run_info(other, tmp_path, {}, locked=False).pipeline == "hello-world-abc12"  # not one of ours


def test_the_tasks_of_an_interrupted_run_are_not_shown_running(tmp_path: Path) -> None:
    """A run whose runner process ended mid-run (Ctrl-C, a crash) is Interrupted, and so is
    every task its state still shows running: nothing runs them any more."""
    from geomlops.argo.runner.model import NodeState
    from geomlops.gateway.backends.base import Phase

    state = RunState("r", template_name("batch-inference"), "uid", "argo", "Running", "2026-12-07")
    state.nodes = {
        "plan-blocks": NodeState("plan-blocks", "plan-blocks", "Pod", "Succeeded", "2026-12-07"),
        "predict(0)": NodeState("predict(0)", "predict-blocks", "Pod", "Running", "2026-12-07"),
    }
    stopped = run_info(state, tmp_path, {}, locked=False)  # no runner holds it
    assert stopped.phase is Phase.INTERRUPTED
    assert {t.name: t.phase for t in stopped.tasks} == {
        "plan-blocks": Phase.SUCCEEDED,
        "predict(0)": Phase.INTERRUPTED,
    }
    running = run_info(state, tmp_path, {}, locked=True)  # its runner goes on
    assert {t.name: t.phase for t in running.tasks}["predict(0)"] is Phase.RUNNING


def test_a_task_s_own_progress_is_its_progress_and_adds_up_as_argo_adds_it(tmp_path: Path) -> None:
    """A predict task reports its blocks done (``N/M``); the gateway shows that, and the run's
    progress sums every pod's, as Argo's does."""
    from geomlops.argo.runner.model import NodeState

    state = RunState("r", template_name("batch-inference"), "uid", "argo", "Running", "2026-12-07")
    predict = NodeState("predict-blocks", "predict", "DAG", "Running", "2026-12-07")
    first = NodeState("predict-blocks(0:0)", "predict-blocks", "Pod", "Succeeded", "2026-12-07")
    second = NodeState("predict-blocks(1:1)", "predict-blocks", "Pod", "Running", "2026-12-07")
    first.progress, second.progress = "64/64", "23/64"
    state.nodes = {
        "plan-blocks": NodeState("plan-blocks", "plan-blocks", "Pod", "Succeeded", "2026-12-07"),
        "predict-blocks": predict,
        "predict-blocks(0:0)": first,
        "predict-blocks(1:1)": second,
        "publish": NodeState("publish", "publish-predictions", "Pod", "Pending"),
    }
    info = run_info(state, tmp_path, {}, locked=True)
    progress = {t.name: t.progress for t in info.tasks}
    assert progress["predict-blocks(1:1)"] == "23/64" and progress["plan-blocks"] == "1/1"
    assert progress["predict-blocks"] == "87/128" and progress["publish"] == "0/1"
    assert info.progress == "88/130"
