"""What a finished node hands to the tasks after it: ``{{tasks.T.*}}`` / ``{{steps.S.*}}``.

A fan-out (``withItems``/``withParam``) aggregates its children's outputs the way Argo
does (``processAggregateNodeOutputs`` in Argo's ``workflow/controller/operator.go``):
``outputs.result`` and ``outputs.parameters`` become JSON lists over the children that
succeeded, and ``outputs.parameters.P`` the JSON list of every child's ``P``: a list of
strings (``["0","1"]``), unless every value is a JSON list or object, which are then nested
as they are (Argo's ``aggregatedJSONValueList``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .artifacts import reference_json
from .model import NodeState


@dataclass
class Outcome:
    """A node's final phase and outputs, as seen by the nodes that come after it."""

    name: str
    phase: str
    outputs: dict[str, str] = field(default_factory=dict)
    result: str | None = None
    message: str = ""
    exit_code: int | None = None
    started: str | None = None
    finished: str | None = None
    children: list[Outcome] | None = None
    #: output artifacts by name, each a reference (see :mod:`.artifacts`)
    artifacts: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_node(cls, node: NodeState) -> Outcome:
        """Rebuild the outcome of a node recorded by an earlier run."""
        return cls(
            name=node.name,
            phase=node.status,
            outputs=dict(node.outputs),
            result=node.result,
            message=node.message,
            exit_code=node.exit_code,
            started=node.started,
            finished=node.finished,
            artifacts=dict(node.artifacts),
        )


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def node_scope(kind: str, name: str, outcome: Outcome) -> dict[str, str]:
    """Return the variables ``{{<kind>.<name>.*}}`` that ``outcome`` provides.

    ``kind`` is ``tasks`` or ``steps``.
    """
    prefix = f"{kind}.{name}"
    scope = {f"{prefix}.status": outcome.phase, f"{prefix}.id": outcome.name}
    if outcome.started:
        scope[f"{prefix}.startedAt"] = outcome.started
    if outcome.finished:
        scope[f"{prefix}.finishedAt"] = outcome.finished
    if outcome.children is not None:
        scope.update(_aggregate(prefix, outcome.children))
        return scope
    if outcome.exit_code is not None:
        scope[f"{prefix}.exitCode"] = str(outcome.exit_code)
    if outcome.result is not None:
        scope[f"{prefix}.outputs.result"] = outcome.result
    for key, value in outcome.outputs.items():
        scope[f"{prefix}.outputs.parameters.{key}"] = value
    for key, reference in outcome.artifacts.items():
        scope[f"{prefix}.outputs.artifacts.{key}"] = reference_json(reference)
    return scope


def _aggregate(prefix: str, children: list[Outcome]) -> dict[str, str]:
    done = [c for c in children if c.phase == "Succeeded"]
    results = [_parsed(c.result) for c in done if c.result is not None]
    params = [dict(c.outputs) for c in done if c.outputs]
    per_name: dict[str, list[str]] = {}
    for child in done:
        for key, value in child.outputs.items():
            per_name.setdefault(key, []).append(value)
    scope = {
        f"{prefix}.outputs.result": _json(results),
        f"{prefix}.outputs.parameters": _json(params),
    }
    for key, values in per_name.items():
        scope[f"{prefix}.outputs.parameters.{key}"] = _json(_value_list(values))
    return scope


def _value_list(values: list[str]) -> list[Any]:
    """Return the values as Argo aggregates them: parsed only if each is a JSON list or object.

    A number, boolean or plain string anywhere keeps the whole list as strings, so ``0`` and
    ``1`` give ``["0","1"]``, never ``[0,1]``.
    """
    parsed = [_parsed(v) for v in values]
    if all(isinstance(p, list | dict) for p in parsed):
        return parsed
    return list(values)
