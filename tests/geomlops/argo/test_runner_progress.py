"""A task reports its own progress as Argo reads it (``N/M`` in ``$ARGO_PROGRESS_FILE``): the
local runner reads it while the task runs and records it with the node."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from runner_fixtures.build import dag, script, task, workflow

from geomlops.argo.runner import LocalRunner

PROGRESS = """
    import os, pathlib, time
    progress = pathlib.Path(os.environ["ARGO_PROGRESS_FILE"])
    progress.write_text("3/10")
    time.sleep(2.5)  # read while the task runs
    {{inputs.parameters.end}}
"""


@pytest.mark.parametrize("sandbox", [True, False], ids=["sandboxed", "unisolated"])
def test_a_task_s_own_progress_is_read_while_it_runs_and_completed_when_it_succeeds(
    tmp_path: Path, sandbox: bool
) -> None:
    from geomlops.argo.runner.state_file import load_state

    work = script("work", PROGRESS, inputs=["end"])
    main = dag(
        "main",
        [
            task("ok", "work", args={"end": "pass"}),
            task("bad", "work", args={"end": "raise SystemExit(3)"}),
        ],
    )
    runner = LocalRunner(tmp_path / "runs", capacity={}, progress=False, sandbox=sandbox)
    seen: list[str | None] = []
    done = threading.Event()

    def watch() -> None:  # the run's state, as `geomlops runs show` and the gateway read it
        while not done.wait(0.2):
            for run in (tmp_path / "runs").glob("*/state.json"):
                try:
                    seen.append(load_state(run.parent).nodes["ok"].progress)
                except (KeyError, ValueError, OSError):
                    continue

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        summary = runner.run(workflow([main, work]), {})
    finally:
        done.set()
        watcher.join()
    assert summary.status == "Failed"
    nodes = load_state(summary.run_dir).nodes
    assert "3/10" in seen  # while it ran
    assert nodes["ok"].progress == "10/10"  # complete once it succeeded, as Argo completes it
    assert nodes["bad"].progress == "3/10"  # a failed task keeps what it reported


STEPS = """
    import os, pathlib, time
    progress = pathlib.Path(os.environ["ARGO_PROGRESS_FILE"])
    for done in (1, 2, 5, 9, 10):
        progress.write_text(f"{done}/10")
        time.sleep(1.0)  # each read several times (read every 0.1 s here)
"""


def test_the_console_says_each_tenth_a_running_task_reaches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("geomlops.argo.runner.progress.PROGRESS_READ_SECONDS", 0.1)
    runner = LocalRunner(tmp_path / "runs", capacity={}, progress=True, sandbox=False)
    summary = runner.run(workflow([script("steps", STEPS)], entrypoint="steps"), {})
    assert summary.status == "Succeeded", summary.message
    lines = capsys.readouterr().err.splitlines()
    said = [line for line in lines if line.startswith("· ")]
    # once per tenth reached while it runs; not at 10/10 (its ✓ line says it is done)
    assert said == [
        "· steps █░░░░░░░░░ 1/10 (10%)",
        "· steps ██░░░░░░░░ 2/10 (20%)",
        "· steps █████░░░░░ 5/10 (50%)",
        "· steps █████████░ 9/10 (90%)",
    ], lines
    assert lines.index(said[-1]) < next(i for i, line in enumerate(lines) if line.startswith("✓ steps"))


def test_a_retried_attempt_s_progress_is_said_again() -> None:
    import io

    from geomlops.argo.runner.progress import Reporter

    stream = io.StringIO()
    reporter = Reporter(True, stream)
    reporter.started("t", 1, 2)
    reporter.progressed("t", 5, 10)
    reporter.progressed("t", 5, 10)  # the same tenth: said once
    reporter.progressed("t", 3, 0)  # no total: nothing to say
    reporter.progressed("t", 10, 10)  # done: its ✓ line says so
    reporter.progressed("t", 20, 100)  # a new total: said again from its start
    reporter.progressed("t", 25, 100)
    reporter.started("t", 2, 2)
    reporter.progressed("t", 5, 10)
    assert stream.getvalue().splitlines() == [
        "▶ t",
        "· t █████░░░░░ 5/10 (50%)",
        "· t ██░░░░░░░░ 20/100 (20%)",
        "▶ t (attempt 2/2)",
        "· t █████░░░░░ 5/10 (50%)",
    ]
