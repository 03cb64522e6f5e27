"""DAG dependencies as the linter and the runner both read them: ``depends``, ``dependencies``, cycles."""

from __future__ import annotations

from typing import Any

import pytest

from geomlops.argo.dag import (
    check_dag,
    dag_dependencies,
    evaluate_depends,
    find_cycle,
    parse_depends,
)
from geomlops.errors import ManifestError


def test_depends_expressions() -> None:
    phases = {"a": "Succeeded", "b-1": "Failed", "c": "Skipped"}

    def result_of(task: str, result: str | None) -> bool:
        if result is None:
            return phases[task] in ("Succeeded", "Skipped")
        return phases[task] == result

    parsed = parse_depends("a && (b-1.Failed || !c)")
    assert parsed.tasks == frozenset({"a", "b-1", "c"})
    assert evaluate_depends(parsed, result_of)
    assert not evaluate_depends(parse_depends("a && b-1"), result_of)
    assert evaluate_depends(parse_depends("c.Skipped && !b-1.Succeeded"), result_of)
    with pytest.raises(ValueError, match=r"unknown task result '\.Done'"):
        parse_depends("a.Done")
    with pytest.raises(ValueError, match="missing"):
        parse_depends("(a && b")
    # Argo's own result: the grammar takes it (the linter passes it); the local runner refuses
    # it before running (check_supported, see test_runner_refusals)
    assert parse_depends("a.Daemoned").tasks == frozenset({"a"})


def dag(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "main", "dag": {"tasks": list(tasks)}}


def test_dependencies_and_depends_read_alike() -> None:
    graph = dag_dependencies(
        dag({"name": "a"}, {"name": "b", "dependencies": ["a"]}, {"name": "c", "depends": "a && b.Failed"})
    )
    assert {name: d.tasks for name, d in graph.items()} == {
        "a": frozenset(),
        "b": frozenset({"a"}),
        "c": frozenset({"a", "b"}),
    }


def test_every_problem_is_found_in_the_manifests_order() -> None:
    found = check_dag(
        dag(
            {"name": "a", "depends": "c"},
            {"depends": "a"},
            {"name": "a"},
            {"name": "b", "depends": "a &&"},
            {"name": "c", "depends": "a", "dependencies": ["a"]},
            {"name": "d", "dependencies": ["ghost"]},
            {"name": "e", "depends": "f"},
            {"name": "f", "depends": "e.Succeeded"},
        )
    )
    assert found.problems == [
        "a task of DAG 'main' has no name",
        "task 'a' appears twice in DAG 'main'",
        "task 'b' of DAG 'main': invalid depends expression 'a &&': unexpected end",
        "task 'c' of DAG 'main' uses both depends and dependencies",
        "task 'd' of DAG 'main' depends on unknown task 'ghost'",
        "dependency cycle in DAG 'main': e -> f -> e",
    ]
    assert sorted(found.dependencies) == ["a", "d", "e", "f"]  # 'c' is known, though unreadable
    with pytest.raises(ManifestError, match=r"^a task of DAG 'main' has no name$"):
        dag_dependencies(dag({"name": "a"}, {}))


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": [], "b": ["a"]}, None),
        ({"a": ["a"]}, ["a", "a"]),
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"]),
        ({"x": ["b"], "b": ["c"], "c": ["b"], "a": ["outside"]}, ["b", "c", "b"]),
        ({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}, None),  # a diamond is no cycle
    ],
)
def test_find_cycle(graph: dict[str, list[str]], cycle: list[str] | None) -> None:
    assert find_cycle(graph) == cycle


def test_a_long_chain_does_not_exhaust_the_stack() -> None:
    chain = {f"t{i}": [f"t{i + 1}"] for i in range(5000)}
    assert find_cycle(chain) is None
    chain["t5000"] = ["t0"]
    cycle = find_cycle(chain)
    assert cycle is not None and len(cycle) == 5002 and cycle[0] == cycle[-1]
