"""Conformance: workflows modelled on Argo's and Hera's examples, judged as Argo defines them.

Each ``workflows/<case>.yaml`` holds a Workflow (or CronWorkflow) first, then any
WorkflowTemplates, ClusterWorkflowTemplates and ConfigMaps it needs (read as ``--templates``
would read them). ``<case>.expect.yaml`` says what Argo does with it:

- ``phase``: the workflow's phase; ``nodes``: node name -> phase (Skipped, Omitted...);
- ``results``: node -> ``outputs.result``; ``outputs``: node -> output parameters;
- ``attempts``: node -> how many times it ran (retries); ``expansions``: fan-out -> children;
- ``absent``: nodes Argo never creates; ``messages``: node -> words its message holds;
- ``approve``: approve every gate up front, supplying these output values (``-o name=value``);
- ``at_once``: fan-out -> the most children running at one instant (synchronization), from the
  attempts' recorded start and end;
- ``refused``: a feature the local runner does not run yet. The run must be refused up front,
  naming it; the other keys are what Argo does, checked once the feature lands;
- ``wrong``: why the local runner's result differs from Argo's today: the case is expected to
  fail (strictly: once the runner is right, the marker must go).

Container commands run on this host (``allow_host_containers``): only echo, sh, bash, python.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from geomlops.argo.runner import Approval, LocalRunner, RunState
from geomlops.argo.template_library import TemplateLibrary
from geomlops.errors import UnsupportedFeatureError

WORKFLOWS = Path(__file__).resolve().parent / "workflows"
CASES = sorted(p for p in WORKFLOWS.glob("*.yaml") if not p.name.endswith(".expect.yaml"))


def expectation(path: Path) -> dict[str, Any]:
    """The expected result of a case, from its sidecar."""
    data: dict[str, Any] = yaml.safe_load(path.with_name(f"{path.stem}.expect.yaml").read_text())
    return data


def most_at_once(state: RunState, fan_out: str) -> int:
    """The most children of ``fan_out`` whose attempts overlapped at one instant."""
    pattern = re.compile(re.escape(fan_out) + r"\(\d+:")
    points: list[tuple[datetime, int]] = []
    for name, node in state.nodes.items():
        if pattern.match(name):
            for attempt in node.attempts:
                points.append((_time(attempt.started), 1))
                points.append((_time(str(attempt.finished)), -1))
    best = current = 0
    for _, delta in sorted(points):
        current += delta
        best = max(best, current)
    return best


def _time(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")


def test_every_case_has_an_expectation() -> None:
    assert len(CASES) >= 25
    for path in CASES:
        expected = expectation(path)
        assert "phase" in expected or "refused" in expected, path.name


def _case(path: Path) -> Any:
    wrong = expectation(path).get("wrong")
    marks = [pytest.mark.xfail(strict=True, reason=wrong)] if wrong else []
    return pytest.param(path, id=path.stem, marks=marks)


@pytest.mark.parametrize("path", [_case(p) for p in CASES])
def test_case_runs_as_argo_defines(path: Path, tmp_path: Path) -> None:
    manifest = next(yaml.safe_load_all(path.read_text()))
    expected = expectation(path)
    library = TemplateLibrary.load([path])
    runner = LocalRunner(
        tmp_path / "runs",
        allow_host_containers=True,
        template_resolver=library,
        semaphores=library.semaphore_limits(),
        approval=Approval("conformance", "up front", outputs=expected["approve"])
        if "approve" in expected
        else None,
        progress=False,
    )
    if "refused" in expected:
        with pytest.raises(UnsupportedFeatureError, match=re.escape(expected["refused"])):
            runner.run(manifest)
        return

    summary = runner.run(manifest)

    state = runner.show(summary.run_id)
    nodes = state.nodes
    assert summary.status == expected["phase"], summary.message
    for name, phase in (expected.get("nodes") or {}).items():
        assert nodes[name].status == phase, name
    for name, result in (expected.get("results") or {}).items():
        assert nodes[name].result == result, name
    for name, outputs in (expected.get("outputs") or {}).items():
        assert nodes[name].outputs == outputs, name
    for name, count in (expected.get("attempts") or {}).items():
        assert len(nodes[name].attempts) == count, name
    for name, words in (expected.get("messages") or {}).items():
        assert words in nodes[name].message, name
    for name in expected.get("absent") or []:
        assert name not in nodes, name
    for fan_out, count in (expected.get("expansions") or {}).items():
        children = [n for n in nodes if re.match(re.escape(fan_out) + r"\(\d+:", n)]
        assert len(children) == count, fan_out
    for fan_out, limit in (expected.get("at_once") or {}).items():
        assert most_at_once(state, fan_out) == limit, fan_out
