"""Tasks are placed on one node the size of this machine by their resource requests, as
Kubernetes places pods: a task that does not fit waits (pending) until running ones end."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from runner_fixtures.build import dag, most_at_once, script, task, workflow

from geomlops.argo.lint import semantic_errors
from geomlops.argo.runner import LocalRunner
from geomlops.argo.runner.node import Node, parse_quantity, pod_requests, this_machine
from geomlops.errors import ManifestError

#: each task records when it ran: start, end and its tag
RECORD = """
    import pathlib, time
    folder = pathlib.Path("{{workflow.parameters.dir}}")
    start = time.time()
    (folder / "here-{{inputs.parameters.tag}}").touch()
    # tasks that may run together wait (up to 20 s) until they all run, whatever the machine's load
    while len(list(folder.glob("here-*"))) < {{workflow.parameters.together}} and time.time() < start + 20:
        time.sleep(0.05)
    time.sleep({{workflow.parameters.hold}})
    with (folder / "events.txt").open("a") as f:
        f.write(f"{start} {time.time()} {{inputs.parameters.tag}}\\n")
"""


def fan_out(
    tmp_path: Path,
    resources: dict[str, Any],
    sidecar: dict[str, Any] | None = None,
    together: int = 1,
    hold: float = 0.3,
) -> dict[str, Any]:
    """Three tasks of a template whose container (and sidecar) ask for ``resources``; each holds
    its room ``hold`` seconds."""
    record = script("record", RECORD, inputs=["tag"])
    record["script"]["resources"] = resources
    if sidecar is not None:
        sleep = ["python", "-c", "import time; time.sleep(60)"]  # stopped when the task ends
        record["sidecars"] = [
            {"name": "helper", "image": "python:3.11", "command": sleep, "resources": sidecar}
        ]
    fan = task("fan", "record", args={"tag": "{{item}}"}, withItems=[1, 2, 3])
    return workflow(
        [dag("main", [fan]), record], parameters={"dir": str(tmp_path), "together": together, "hold": hold}
    )


def ran_at_once(tmp_path: Path) -> int:
    """The most tasks that ran at once, as they recorded their times."""
    rows = [line.split() for line in (tmp_path / "events.txt").read_text().splitlines()]
    return most_at_once([(float(start), float(end)) for start, end, _ in rows])


def run(tmp_path: Path, manifest: dict[str, Any], capacity: dict[str, float], **options: Any) -> Any:
    runner = LocalRunner(
        tmp_path / "runs", capacity=capacity, max_workers=4, progress=False, sandbox=False, **options
    )
    return runner.run(manifest, {})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", 0.1),
        ("2", 2.0),
        ("1.5", 1.5),
        ("2Gi", 2 * 2**30),
        ("512Mi", 512 * 2**20),
        ("1G", 1e9),
        ("1e3", 1000.0),
        ("250k", 250e3),
        (4, 4.0),
    ],
)
def test_kubernetes_quantities_are_read(text: Any, value: float) -> None:
    assert parse_quantity(text, "x") == pytest.approx(value)


def test_a_request_that_is_no_quantity_names_the_template_container_and_field() -> None:
    template = {"name": "predict", "script": {"image": "i"}, "sidecars": [{"name": "model"}]}
    template["sidecars"][0]["resources"] = {"requests": {"cpu": "two"}}
    with pytest.raises(
        ValueError, match=r"template 'predict', sidecar 'model' resources.requests.cpu: 'two'"
    ):
        pod_requests(template)


def test_a_pod_requests_its_containers_and_sidecars_together_limits_standing_in() -> None:
    template = {
        "name": "predict",
        "script": {"resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "8Gi"}}},
        "sidecars": [
            {"name": "model", "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}},
            {"name": "plain"},
        ],
    }
    assert pod_requests(template) == {"cpu": 1.5, "memory": 3 * 2**30}
    assert pod_requests({"name": "bare", "script": {}}) == {"cpu": 0.0, "memory": 0.0}


def test_this_machine_is_a_node_of_its_cpus_and_memory() -> None:
    node = this_machine()
    assert node["cpu"] >= 1 and node["memory"] > 2**20


def test_tasks_that_each_ask_for_the_whole_node_run_one_at_a_time(tmp_path: Path) -> None:
    summary = run(tmp_path, fan_out(tmp_path, {"requests": {"cpu": "2"}}), {"cpu": 2})
    assert summary.status == "Succeeded", summary.message
    assert ran_at_once(tmp_path) == 1


def test_tasks_that_fit_together_run_together(tmp_path: Path) -> None:
    summary = run(tmp_path, fan_out(tmp_path, {"requests": {"cpu": "500m"}}, together=3), {"cpu": 2})
    assert summary.status == "Succeeded", summary.message
    assert ran_at_once(tmp_path) == 3


def test_a_sidecar_s_request_counts_with_its_task_s(tmp_path: Path) -> None:
    # 1 CPU for the script and 1 for its sidecar: on a node of 3 CPUs, one task at a time
    manifest = fan_out(tmp_path, {"requests": {"cpu": "1"}}, {"requests": {"cpu": "1"}})
    summary = run(tmp_path, manifest, {"cpu": 3}, image_environment=lambda image, env: dict(env))
    assert summary.status == "Succeeded", summary.message
    assert ran_at_once(tmp_path) == 1


def test_memory_places_tasks_as_cpus_do(tmp_path: Path) -> None:
    summary = run(
        tmp_path, fan_out(tmp_path, {"requests": {"memory": "3Gi"}}), {"cpu": 8, "memory": 4 * 2**30}
    )
    assert summary.status == "Succeeded", summary.message
    assert ran_at_once(tmp_path) == 1


def test_a_task_larger_than_the_node_runs_alone_and_waits_are_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = fan_out(tmp_path, {"requests": {"cpu": "16"}}, hold=1.0)
    runner = LocalRunner(tmp_path / "runs", capacity={"cpu": 2}, max_workers=4, progress=True, sandbox=False)
    summary = runner.run(manifest, {})
    assert summary.status == "Succeeded", summary.message
    assert ran_at_once(tmp_path) == 1
    lines = capsys.readouterr().err.splitlines()
    pending = [line for line in lines if "pending" in line]
    assert len(pending) == 2  # the first starts at once; the other two wait
    told = "pending: requests 16 CPUs, more than all 2 CPUs tasks are placed on: runs once nothing else does"
    assert pending[0].endswith(told)
    # the task that was placed says so before another says it waits for it
    assert lines.index(next(line for line in lines if line.startswith("▶ fan("))) < lines.index(pending[0])
    # each task's time is its own, not the time it waited: the last one waited while the other
    # two held the node (at least 2 s), so counted from when it was asked for it would be at
    # least a whole hold longer than from its own start
    rows = sorted(
        (float(start), float(end), tag)
        for start, end, tag in map(str.split, (tmp_path / "events.txt").read_text().splitlines())
    )
    first_start, (_, last_end, last_tag) = rows[0][0], rows[-1]
    printed = {
        line.split()[1]: float(line.rsplit(" ", 1)[1].rstrip("s"))
        for line in lines
        if line.startswith("✓ fan(")
    }
    assert len(printed) == 3, lines
    own = printed[f"fan({int(last_tag) - 1}:{last_tag})"]
    assert own < last_end - first_start - 1.0, (own, rows, lines)


def test_a_request_written_wrong_is_refused_before_anything_runs(tmp_path: Path) -> None:
    named = r"script.resources.requests.cpu: 'lots' is not a Kubernetes quantity"
    with pytest.raises(ManifestError, match=named):
        run(tmp_path, fan_out(tmp_path, {"requests": {"cpu": "lots"}}), {"cpu": 2})
    with pytest.raises(ManifestError, match=r"resources.limits.memory: '-1Gi' is negative"):
        run(tmp_path, fan_out(tmp_path, {"limits": {"memory": "-1Gi"}}), {"cpu": 2})
    assert not (tmp_path / "events.txt").exists()
    errors = semantic_errors(fan_out(tmp_path, {"requests": {"cpu": "lots", "memory": "{{x}}"}}))
    assert errors == [
        "$.spec.templates[1].script.resources.requests.cpu: 'lots' is not a Kubernetes quantity "
        "(a number, with a suffix such as m, k, M, G, Ki, Mi or Gi)"
    ]


def test_a_request_given_wrong_by_a_parameter_errors_its_task_before_it_runs_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = fan_out(tmp_path, {"requests": {"cpu": "{{workflow.parameters.cpu}}"}})
    manifest["spec"]["arguments"]["parameters"].append({"name": "cpu", "value": "lots"})
    runner = LocalRunner(tmp_path / "runs", capacity={"cpu": 2}, progress=True, sandbox=False)
    summary = runner.run(manifest, {})
    assert summary.status in ("Failed", "Error")
    assert "resources.requests.cpu: 'lots' is not a Kubernetes quantity" in summary.message
    assert not (tmp_path / "events.txt").exists()
    failed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("✗ fan(")]
    assert failed and "'lots' is not a Kubernetes quantity" in failed[0]  # said when it happens


def test_an_earlier_pod_goes_first_and_a_smaller_one_fills_the_room_left() -> None:
    node = Node({"cpu": 2}, threading.Event())
    order: list[str] = []
    release = {name: threading.Event() for name in "ABCD"}

    def pod(name: str, cpu: float) -> None:
        with node.place({"cpu": cpu}) as placed:
            assert placed
            order.append(name)
            release[name].wait(5)

    def start(name: str, cpu: float, waiting: int) -> threading.Thread:
        """Start a pod and wait until it runs or is the ``waiting``-th pod waiting."""
        thread = threading.Thread(target=pod, args=(name, cpu))
        thread.start()
        deadline = time.monotonic() + 5
        while name not in order and len(node._waiting) < waiting and time.monotonic() < deadline:
            time.sleep(0.01)
        return thread

    a = start("A", 1.5, 0)
    b = start("B", 1.0, 1)  # waits: 0.5 left
    c = start("C", 1.0, 2)  # waits behind B
    d = start("D", 0.5, 3)  # fits in the room left: goes past both (placed, it waits no more)
    assert order == ["A", "D"]
    release["A"].set()
    deadline = time.monotonic() + 5
    while len(order) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert order == ["A", "D", "B"]  # B before C, which still does not fit beside B and D
    for event in release.values():
        event.set()
    for thread in (a, b, c, d):
        thread.join(5)
    assert order == ["A", "D", "B", "C"]
    assert node.held() == {"cpu": 0.0}


def test_a_pending_pod_gives_up_when_the_run_is_stopped() -> None:
    aborted = threading.Event()
    node = Node({"cpu": 1}, aborted)
    outcome: list[bool] = []
    with node.place({"cpu": 1}) as first:
        assert first
        waiter = threading.Thread(target=lambda: outcome.append(node.place({"cpu": 1}).__enter__()))
        waiter.start()
        time.sleep(0.1)
        assert outcome == []
        aborted.set()
        waiter.join(5)
    assert outcome == [False]
    assert node.held() == {"cpu": 0.0}
