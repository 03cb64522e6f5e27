"""DAG helpers shared by the linter: dependencies of a task and cycle detection."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z]+)?")


def task_dependencies(task: Mapping[str, Any]) -> set[str]:
    """Task names a DAG task waits for, from ``dependencies`` or a ``depends`` expression."""
    names = set(task.get("dependencies") or [])
    depends = task.get("depends")
    if depends:
        for token in _NAME.findall(str(depends)):
            names.add(token.split(".")[0])
    return names


def dag_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """A dependency cycle as a list of names (first repeated last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, set())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None
