"""DAG dependencies, for the linter and the runner alike: ``depends``, ``dependencies``, cycles.

A task waits for the tasks its ``depends`` expression names (Argo's task-result logic:
``a && (b.Failed || !c)``), or for those of the legacy ``dependencies: [a, b]`` (``a && b``).
:func:`check_dag` reads every task of a DAG template and reports each problem Argo's
validator refuses: a nameless or repeated task, a malformed expression, both forms at once,
an unknown dependency, a cycle. The linter lists them all; the runner refuses the first
(:func:`dag_dependencies`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from geomlops.errors import ManifestError

from ._parsing import Parser, Token, tokenize

_DEPENDS_TOKEN = re.compile(
    r"\s*(?:(?P<op>&&|\|\||[!()])|(?P<ref>[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z]+)?))"
)

#: Every result a ``depends`` term may test (``task.Result``), as Argo defines them. Whether
#: an executor supports each is its own business (the local runner refuses ``Daemoned``).
TASK_RESULTS = frozenset(
    {"Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned", "AnySucceeded", "AllFailed"}
)

# ("ref", task, result | None) | ("not", node) | ("and"|"or", left, right) | ("true",)
DependsNode = tuple[object, ...]


@dataclass(frozen=True)
class Depends:
    """A parsed ``depends`` expression and the tasks it names."""

    text: str
    tree: DependsNode
    tasks: frozenset[str]


class _DependsParser(Parser):
    def __init__(self, tokens: list[Token], text: str) -> None:
        super().__init__(tokens, text, "depends")
        self.tasks: set[str] = set()

    def parse_or(self) -> DependsNode:
        left = self.parse_and()
        while self.accept("||"):
            left = ("or", left, self.parse_and())
        return left

    def parse_and(self) -> DependsNode:
        left = self.parse_not()
        while self.accept("&&"):
            left = ("and", left, self.parse_not())
        return left

    def parse_not(self) -> DependsNode:
        if self.accept("!"):
            return ("not", self.parse_not())
        if self.accept("("):
            node = self.parse_or()
            if not self.accept(")"):
                raise self.error("missing ')'")
            return node
        token = self.take()
        if token.kind != "ref":
            raise self.error(f"unexpected {token.text!r}")
        task, _, result = token.text.partition(".")
        if result and result not in TASK_RESULTS:
            raise self.error(f"unknown task result '.{result}'")
        self.tasks.add(task)
        return ("ref", task, result or None)


def parse_depends(text: str) -> Depends:
    """Parse a ``depends`` expression.

    Raises:
        ValueError: the expression is malformed or tests an unknown task result.
    """
    parser = _DependsParser(tokenize(text, _DEPENDS_TOKEN, "depends"), text)
    tree = parser.parse_or()
    parser.finish()
    return Depends(text, tree, frozenset(parser.tasks))


def depends_from_dependencies(names: list[str]) -> Depends:
    """Express Argo's legacy ``dependencies: [a, b]`` as the ``depends`` ``a && b``.

    Raises:
        ValueError: a name is not a task name.
    """
    return parse_depends(" && ".join(names)) if names else Depends("", ("true",), frozenset())


def evaluate_depends(depends: Depends, result_of: Callable[[str, str | None], bool]) -> bool:
    """Evaluate ``depends``; ``result_of(task, result)`` answers one ``task.Result`` term.

    ``result`` is ``None`` for a bare task name; the caller expands it as Argo does
    (``Succeeded || Skipped``, plus ``Failed``/``Errored`` under ``continueOn``).
    """

    def walk(node: DependsNode) -> bool:
        kind = node[0]
        if kind == "true":
            return True
        if kind == "ref":
            return result_of(str(node[1]), node[2] if isinstance(node[2], str) else None)
        if kind == "not":
            return not walk(node[1])  # type: ignore[arg-type]
        left, right = node[1], node[2]
        if kind == "and":
            return walk(left) and walk(right)  # type: ignore[arg-type]
        return walk(left) or walk(right)  # type: ignore[arg-type]

    return walk(depends.tree)


def task_depends(task: Mapping[str, Any], where: str) -> Depends:
    """Return a DAG task's dependencies (its ``depends`` or ``dependencies``).

    Args:
        task: the task as the manifest has it.
        where: how errors name the task (``task 'a' of DAG 'main'``).

    Raises:
        ManifestError: a malformed expression, or both forms given.
    """
    if "depends" in task and task.get("dependencies"):
        raise ManifestError(f"{where} uses both depends and dependencies")
    try:
        if task.get("depends"):
            return parse_depends(str(task["depends"]))
        return depends_from_dependencies([str(d) for d in task.get("dependencies") or []])
    except ValueError as err:
        raise ManifestError(f"{where}: {err}") from err


@dataclass(frozen=True)
class DagCheck:
    """What :func:`check_dag` found in one DAG template.

    ``dependencies`` holds every named task whose dependencies could be read (the first of
    a repeated name); ``problems`` says, in the manifest's order, what Argo would refuse.
    """

    dependencies: dict[str, Depends]
    problems: list[str]


def check_dag(template: Mapping[str, Any]) -> DagCheck:
    """Read the dependencies of every task of a DAG template and find what is wrong with them.

    Nothing is raised for the template's content: every problem goes in the result.
    """
    tname = template.get("name")
    tasks = (template.get("dag") or {}).get("tasks") or []
    found: dict[str, Depends] = {}
    named: set[str] = set()
    problems: list[str] = []
    for task in tasks if isinstance(tasks, list) else []:
        name = task.get("name") if isinstance(task, Mapping) else None
        if not isinstance(name, str) or not name:
            problems.append(f"a task of DAG {tname!r} has no name")
        elif name in named:
            problems.append(f"task {name!r} appears twice in DAG {tname!r}")
        else:
            named.add(name)
            try:
                found[name] = task_depends(task, f"task {name!r} of DAG {tname!r}")
            except ManifestError as err:
                problems.append(str(err))
    for name, depends in found.items():
        for dep in sorted(depends.tasks - named):
            problems.append(f"task {name!r} of DAG {tname!r} depends on unknown task {dep!r}")
    cycle = find_cycle({name: depends.tasks for name, depends in found.items()})
    if cycle:
        problems.append(f"dependency cycle in DAG {tname!r}: {' -> '.join(cycle)}")
    return DagCheck(found, problems)


def dag_dependencies(template: Mapping[str, Any]) -> dict[str, Depends]:
    """Return each task's dependencies in a DAG template, checked as :func:`check_dag` does.

    Raises:
        ManifestError: the first problem :func:`check_dag` found.
    """
    checked = check_dag(template)
    if checked.problems:
        raise ManifestError(checked.problems[0])
    return checked.dependencies


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """Return a cycle of ``graph`` (node -> the nodes it depends on), or None.

    The cycle lists its nodes in dependency order, the first repeated last (``a -> b -> a``).
    Nodes are visited in sorted order, so the same graph always gives the same cycle; a name
    that is not a key of ``graph`` depends on nothing.
    """
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path = [root]
        todo = [iter(sorted(graph[root]))]  # per node on the path: its dependencies left to visit
        while todo:
            dep = next(todo[-1], None)
            if dep is None:
                todo.pop()
                done.add(path.pop())
            elif dep in path:
                return [*path[path.index(dep) :], dep]
            elif dep not in done:
                path.append(dep)
                todo.append(iter(sorted(graph.get(dep, ()))))
    return None


def ancestors(graph: Mapping[str, Depends], task: str) -> set[str]:
    """Return every task ``task`` depends on, directly or not (``graph`` from :func:`check_dag`)."""
    seen: set[str] = set()
    todo = list(graph[task].tasks)
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo.extend(graph[dep].tasks)
    return seen
