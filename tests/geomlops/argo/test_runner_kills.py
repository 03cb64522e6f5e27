"""Stopping ``geomlops run`` with a signal: no task process survives, the run resumes the same."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from runner_fixtures.build import dag, script, task, workflow

from geomlops.argo.runner import LocalRunner
from geomlops.argo.runner.execute import process_start

REPO = Path(__file__).resolve().parents[3]
#: how long the task's child sleeps: a number no other process of this machine uses
NAP = f"{3000 + os.getpid() % 1000}"
GEOMLOPS = Path(sys.executable).with_name("geomlops")

#: Starts a child ``sleep`` (as a task that started a tool would), says so in ``<dir>/started``,
#: then waits while ``<dir>/go`` is missing.
SLOW = """
    import pathlib, subprocess, time
    d = pathlib.Path("{{inputs.parameters.dir}}")
    child = subprocess.Popen(["sleep", "{{inputs.parameters.nap}}"])
    (d / "started").open("a").write("x")
    while not (d / "go").exists():
        time.sleep(0.05)
    child.kill()
    print("slow made " + "{{inputs.parameters.seed}}" * 3 + " from " + open("/tmp/in/note").read())
"""


def manifest(data: Path) -> dict[str, Any]:
    """first -> slow (killed here) -> last, each with outputs to compare after resuming; slow
    reads first's output artifact, so the resumed run loads it from the first run's repository."""
    quick = script(
        "quick",
        "t = '{{inputs.parameters.tag}}-' + str(6 * 7); open('/tmp/note', 'w').write(t); print(t)",
        inputs=["tag"],
    )
    quick["outputs"] = {"artifacts": [{"name": "note", "path": "/tmp/note"}]}
    slow = script("slow", SLOW, inputs=["dir", "seed", "nap"])
    slow["retryStrategy"] = {"limit": 2, "backoff": {"duration": "2s"}}  # as geomlops' steps retry
    slow["inputs"]["artifacts"] = [{"name": "note", "path": "/tmp/in/note"}]
    first = "{{tasks.first.outputs.result}}"
    main = dag(
        "main",
        [
            task("first", "quick", args={"tag": "first"}),
            task(
                "slow",
                "slow",
                depends="first",
                arguments={
                    "parameters": [
                        {"name": "dir", "value": str(data)},
                        {"name": "seed", "value": first},
                        {"name": "nap", "value": NAP},
                    ],
                    "artifacts": [{"name": "note", "from": "{{tasks.first.outputs.artifacts.note}}"}],
                },
            ),
            task("last", "quick", args={"tag": "{{tasks.slow.outputs.result}}"}, depends="slow"),
        ],
    )
    return workflow([main, quick, slow], name="killme")


def geomlops(home: Path, *args: str, **popen: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "GEOMLOPS_HOME": str(home)}
    return subprocess.Popen(
        [str(GEOMLOPS), *args],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def run_processes(runs: Path) -> list[int]:
    """Host pids of the run's processes: its task (a script in the run folder), its ``sleep``.

    Tasks run in a PID namespace of their own, so the pids they see are not the host's:
    the processes are found by their command lines.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        task = "python" in cmdline and str(runs) in cmdline and "bwrap" not in cmdline
        if (task or f"sleep {NAP}" in cmdline) and process_start(int(entry.name)) is not None:
            found.append(int(entry.name))
    return found


def outputs(runs: Path, run_id: str) -> str:
    """Every node's outputs and result, as bytes to compare between runs."""
    state = LocalRunner(runs, progress=False).show(run_id)
    return json.dumps(
        {name: [n.status, n.outputs, n.result] for name, n in sorted(state.nodes.items())}, sort_keys=True
    )


def only_run(runs: Path) -> str:
    (run_dir,) = [p for p in runs.iterdir() if (p / "state.json").exists()]
    return run_dir.name


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The outputs of the same workflow run without interruption."""
    root = tmp_path_factory.mktemp("reference")
    data = root / "home" / "data"  # tasks may write $GEOMLOPS_HOME
    data.mkdir(parents=True)
    (data / "go").touch()
    (root / "wf.yaml").write_text(yaml.safe_dump(manifest(data)))
    proc = geomlops(root / "home", "run", str(root / "wf.yaml"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    runs = root / "home" / "runs"
    return outputs(runs, only_run(runs))


def start_and_wait_for_slow(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, Path]:
    data = tmp_path / "home" / "data"
    data.mkdir(parents=True)
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(manifest(data)))
    proc = geomlops(tmp_path / "home", "run", str(tmp_path / "wf.yaml"))
    deadline = time.monotonic() + 60
    while not (data / "started").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the slow task never started"
        time.sleep(0.05)
    return proc, data, tmp_path / "home" / "runs"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_every_task_process_and_resume_gives_the_same_outputs(
    tmp_path: Path, reference: str, sig: signal.Signals, code: int
) -> None:
    proc, data, runs = start_and_wait_for_slow(tmp_path)
    pids = run_processes(runs)
    assert len(pids) == 2, "the task and its sleep are found"

    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == code, out + err
    assert [p for p in pids if process_start(p) is not None] == [], "a task process survived"
    assert run_processes(runs) == []
    run_id = only_run(runs)
    resume_lines = [line for line in err.splitlines() if f"geomlops run --resume {run_id}" in line]
    assert len(resume_lines) == 1, err
    assert "retrying" not in err, err  # a run being stopped retries nothing, and says nothing of it
    state = json.loads((runs / run_id / "state.json").read_text())
    assert state["status"] == "Interrupted"
    assert state["nodes"]["first"]["status"] == "Succeeded"
    assert "last" not in state["nodes"]
    listing = geomlops(tmp_path / "home", "runs", "list").communicate(timeout=60)[0]
    assert listing.split()[:2] == [run_id, "Interrupted"], listing

    (data / "go").touch()
    resumed = geomlops(tmp_path / "home", "run", "--resume", run_id)
    out, err = resumed.communicate(timeout=120)

    assert resumed.returncode == 0, out + err
    assert outputs(runs, run_id) == reference
    assert json.loads((runs / run_id / "state.json").read_text())["status"] == "Succeeded"


def test_run_whose_runner_was_killed_shows_as_interrupted_not_running(tmp_path: Path) -> None:
    proc, _, runs = start_and_wait_for_slow(tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 30  # the sandbox dies with its parent, and its tasks with it
    while run_processes(runs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run_processes(runs) == []
    run_id = only_run(runs)
    assert json.loads((runs / run_id / "state.json").read_text())["status"] == "Running"

    listing = geomlops(tmp_path / "home", "runs", "list").communicate(timeout=60)[0]
    shown = geomlops(tmp_path / "home", "runs", "show", run_id).communicate(timeout=60)[0]

    assert listing.split()[:2] == [run_id, "Interrupted"], listing
    assert shown.splitlines()[0] == f"run {run_id}: Interrupted", shown


def test_a_live_runner_is_shown_running_and_a_reused_pid_is_not(tmp_path: Path) -> None:
    proc, _, runs = start_and_wait_for_slow(tmp_path)
    run_id = only_run(runs)
    try:
        assert LocalRunner(runs, progress=False).show(run_id).status == "Running"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    state_file = runs / run_id / "state.json"
    state = json.loads(state_file.read_text())
    # a live process (this one) holding the recorded pid, but started at another time
    state.update(status="Running", pid=os.getpid(), pid_started=state["pid_started"] + 1)
    state_file.write_text(json.dumps(state))

    assert LocalRunner(runs, progress=False).show(run_id).status == "Interrupted"


#: Stops cleanly on SIGTERM, writing what a pod's process would flush before it ends.
GRACEFUL = """
    import pathlib, signal, sys, time
    d = pathlib.Path("{{inputs.parameters.dir}}")
    def stop(signum, frame):
        time.sleep(0.5)  # some cleanup: a SIGKILL now would leave no file
        (d / "stopped").write_text(signal.Signals(signum).name)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    (d / "started").write_text("x")
    time.sleep(300)
"""


def test_a_task_gets_sigterm_and_its_grace_period(tmp_path: Path) -> None:
    data = tmp_path / "home" / "data"
    data.mkdir(parents=True)
    graceful = script("graceful", GRACEFUL, inputs=["dir"])
    (tmp_path / "wf.yaml").write_text(
        yaml.safe_dump(
            workflow(
                [graceful],
                entrypoint="graceful",
                arguments={"parameters": [{"name": "dir", "value": str(data)}]},
            )
        )
    )
    proc = geomlops(tmp_path / "home", "run", str(tmp_path / "wf.yaml"))
    deadline = time.monotonic() + 60
    while not (data / "started").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 143, out + err
    assert (data / "stopped").read_text() == "SIGTERM"
