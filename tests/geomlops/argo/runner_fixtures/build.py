"""Small builders of Argo manifests for the local runner's tests (plain dicts, as YAML gives)."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent
#: Put on PYTHONPATH so ``python -m hera.workflows.runner -e runner_fixtures.x:f`` imports.
PYTHONPATH = os.pathsep.join([str(FIXTURES.parent), os.environ.get("PYTHONPATH", "")])


def workflow(
    templates: list[dict[str, Any]],
    *,
    entrypoint: str = "main",
    parameters: dict[str, Any] | None = None,
    name: str = "test-wf",
    kind: str = "Workflow",
    **spec: Any,
) -> dict[str, Any]:
    """Return a manifest with the given templates and workflow parameters."""
    body: dict[str, Any] = {"entrypoint": entrypoint, "templates": templates, **spec}
    if parameters is not None:
        body["arguments"] = {
            "parameters": [
                {"name": k} if v is None else {"name": k, "value": v} for k, v in parameters.items()
            ]
        }
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": body,
    }


def script(
    name: str,
    source: str,
    *,
    inputs: list[str] | tuple[str, ...] = (),
    outputs: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Return a Python script template; ``outputs`` maps output names to file paths."""
    template: dict[str, Any] = {
        "name": name,
        "script": {"image": "python:3.11", "command": ["python"], "source": textwrap.dedent(source)},
        **extra,
    }
    if inputs:
        template["inputs"] = {"parameters": [{"name": n} for n in inputs]}
    if outputs:
        template["outputs"] = {
            "parameters": [{"name": k, "valueFrom": {"path": v}} for k, v in outputs.items()]
        }
    return template


def dag(name: str, tasks: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """Return a DAG template."""
    return {"name": name, "dag": {"tasks": tasks}, **extra}


def task(name: str, template: str, *, args: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """Return a DAG task (or a step) calling ``template`` with string arguments."""
    call: dict[str, Any] = {"name": name, "template": template, **extra}
    if args:
        call["arguments"] = {"parameters": [{"name": k, "value": v} for k, v in args.items()]}
    return call


#: A script that appends "<tag>" to <dir>/<tag>.count: counts how often a task ran.
COUNTING = """
    import pathlib
    p = pathlib.Path("{{inputs.parameters.dir}}") / "{{inputs.parameters.tag}}.count"
    with p.open("a") as f:
        f.write("x")
    print("{{inputs.parameters.tag}}")
"""


def count(directory: Path, tag: str) -> int:
    """How many times the task tagged ``tag`` ran (see :data:`COUNTING`)."""
    path = directory / f"{tag}.count"
    return len(path.read_text()) if path.exists() else 0


def most_at_once(spans: Sequence[tuple[Any, ...]]) -> int:
    """The largest number of spans (start, end, …) that overlap at one instant."""
    points = sorted([(s[0], 1) for s in spans] + [(s[1], -1) for s in spans])
    best = current = 0
    for _, delta in points:
        current += delta
        best = max(best, current)
    return best
