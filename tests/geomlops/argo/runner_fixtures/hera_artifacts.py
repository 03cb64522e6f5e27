"""Hera workflows passing artifacts, written as Hera's documentation examples are."""

# No `from __future__ import annotations`: Hera reads the real annotations.
from pathlib import Path
from typing import Annotated

from hera.workflows import (
    DAG,
    Artifact,
    ArtifactLoader,
    Container,
    NoneArchiveStrategy,
    Parameter,
    Step,
    Steps,
    Workflow,
    WorkflowTemplate,
    script,
)


@script(constructor="runner", image="python:3.11")
def measure(text: str) -> Annotated[str, Artifact(name="report")]:
    """Write a report (the returned text) as the output artifact ``report``."""
    return f"{text} has {len(text)} characters"


@script(constructor="runner", image="python:3.11")
def shout(report: Annotated[str, Artifact(name="report", loader=ArtifactLoader.file)]) -> str:
    """Read the report artifact's content; print it upper-cased (``outputs.result``)."""
    return report.upper()


@script(constructor="runner", image="python:3.11")
def size(report: Annotated[Path, Artifact(name="report")]) -> int:
    """Read the report artifact as a path."""
    return len(report.read_text())


def scripts() -> WorkflowTemplate:
    """measure -> (shout, size): Hera's artifact annotations on script functions."""
    with (
        WorkflowTemplate(
            name="hera-artifacts", entrypoint="main", arguments=Parameter(name="text", value="hello")
        ) as template,
        DAG(name="main"),
    ):
        made = measure(name="measure", arguments={"text": "{{workflow.parameters.text}}"})
        loud = shout(name="shout", arguments=made.get_artifact("report"))
        counted = size(name="size", arguments=made.get_artifact("report"))
        made >> [loud, counted]  # type: ignore[operator]
    return template


def containers() -> Workflow:
    """Argo's artifact-passing example as Hera writes it, with an unarchived and a folder artifact."""
    with Workflow(generate_name="artifact-passing-", entrypoint="artifact-example") as w:
        hello = Container(
            name="hello-world-to-file",
            image="busybox",
            command=["sh", "-c"],
            args=[
                "mkdir -p /tmp/tree/sub && echo one > /tmp/tree/a.txt && echo two > /tmp/tree/sub/b.txt"
                " && echo hello world | tee /tmp/hello_world.txt > /tmp/plain.txt"
            ],
            outputs=[
                Artifact(name="hello-art", path="/tmp/hello_world.txt"),
                Artifact(name="plain", path="/tmp/plain.txt", archive=NoneArchiveStrategy()),
                Artifact(name="tree", path="/tmp/tree"),
                Artifact(name="absent", path="/tmp/never-written", optional=True),
            ],
        )
        show = Container(
            name="print-message-from-files",
            image="alpine:latest",
            command=["sh", "-c"],
            args=["cat /tmp/message /tmp/plain && cat /tmp/tree-in/a.txt /tmp/tree-in/sub/b.txt"],
            inputs=[
                Artifact(name="message", path="/tmp/message"),
                Artifact(name="plain", path="/tmp/plain"),
                Artifact(name="tree", path="/tmp/tree-in"),
                Artifact(name="absent", path="/tmp/absent", optional=True),
            ],
        )
        with Steps(name="artifact-example"):
            Step(name="generate-artifact", template=hello)
            Step(
                name="consume-artifact",
                template=show,
                arguments=[
                    Artifact(name="message", from_="{{steps.generate-artifact.outputs.artifacts.hello-art}}"),
                    Artifact(name="plain", from_="{{steps.generate-artifact.outputs.artifacts.plain}}"),
                    Artifact(
                        name="tree", from_expression="steps['generate-artifact'].outputs.artifacts.tree"
                    ),
                    Artifact(name="absent", from_="{{steps.generate-artifact.outputs.artifacts.absent}}"),
                ],
            )
    return w
