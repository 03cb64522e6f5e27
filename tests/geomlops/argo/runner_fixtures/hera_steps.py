"""Hera functions run through ``python -m hera.workflows.runner`` by the runner's tests."""

# No `from __future__ import annotations`: Hera reads the real annotations.
from typing import Annotated

from hera.workflows import DAG, Parameter, WorkflowTemplate, script


@script(constructor="runner", image="python:3.11")
def double(n: int) -> Annotated[int, Parameter(name="doubled")]:
    """Return twice ``n`` as the output parameter ``doubled``."""
    return n * 2


@script(constructor="runner", image="python:3.11")
def describe(a: int, b: int) -> str:
    """Return a sum as text; Hera prints it, so it becomes ``outputs.result``."""
    return f"{a}+{b}={a + b}"


def build() -> WorkflowTemplate:
    """Two parallel ``double`` tasks whose outputs ``describe`` combines."""
    with (
        WorkflowTemplate(
            name="hera-sum", entrypoint="main", arguments=Parameter(name="x", value="3")
        ) as template,
        DAG(name="main"),
    ):
        left = double(name="left", arguments={"n": "{{workflow.parameters.x}}"})
        right = double(name="right", arguments={"n": "5"})
        total = describe(
            name="total",
            arguments={"a": left.get_parameter("doubled"), "b": right.get_parameter("doubled")},
        )
        [left, right] >> total  # type: ignore[operator]
    return template
