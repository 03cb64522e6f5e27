"""Retries of steps/DAG templates, retryStrategy.expression and {{= }} templates, as Argo runs them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from runner_fixtures.build import dag, script, task, workflow

from geomlops.argo.runner import LocalRunner
from geomlops.argo.runner.expr import ExpressionError, build_env, evaluate, evaluate_bool, render
from geomlops.errors import UnsupportedFeatureError


def make_runner(tmp_path: Path, **options: Any) -> LocalRunner:
    options.setdefault("progress", False)
    return LocalRunner(tmp_path / "runs", **options)


#: fails (exit 1) until it has run <fails+1> times; counts its runs in <dir>/<tag>
FLAKY = """
    import pathlib, sys
    p = pathlib.Path("{{inputs.parameters.dir}}") / "{{inputs.parameters.tag}}"
    p.write_text(p.read_text() + "x" if p.exists() else "x")
    sys.exit(0 if len(p.read_text()) > int("{{inputs.parameters.fails}}") else 1)
"""
EXIT_WITH = """
    import pathlib, sys
    p = pathlib.Path("{{inputs.parameters.dir}}") / "exits"
    p.write_text(p.read_text() + "x" if p.exists() else "x")
    sys.exit(int("{{inputs.parameters.code}}"))
"""


def _flaky_dag(tmp_path: Path, fails: int, **extra: Any) -> list[dict[str, Any]]:
    flaky = script("flaky", FLAKY, inputs=["dir", "tag", "fails"])
    ok = script("ok", "print('ok')")
    args = {"dir": str(tmp_path), "tag": "flaky", "fails": str(fails)}
    inner = dag("inner", [task("first", "ok"), task("f", "flaky", args=args, depends="first")], **extra)
    main = dag("main", [task("sub", "inner")])
    return [main, inner, flaky, ok]


def test_retry_strategy_on_a_dag_template_reruns_the_whole_dag(tmp_path: Path) -> None:
    # Argo's executeTemplate: a template with a retry strategy becomes a Retry node whose
    # attempts sub(0), sub(1)... run the whole DAG again (the children re-run too)
    templates = _flaky_dag(tmp_path, fails=2, retryStrategy={"limit": 3})
    summary = make_runner(tmp_path).run(workflow(templates), {})

    assert summary.status == "Succeeded", summary.message
    nodes = make_runner(tmp_path).show(summary.run_id).nodes
    assert nodes["sub"].type == "Retry"
    assert [a.status for a in nodes["sub"].attempts] == ["Failed", "Failed", "Succeeded"]
    assert [nodes[f"sub({i})"].status for i in range(3)] == ["Failed", "Failed", "Succeeded"]
    assert {f"sub({i}).first" for i in range(3)} <= set(nodes)  # the first task ran in each attempt
    assert (tmp_path / "flaky").read_text() == "xxx"


def test_template_defaults_retry_reaches_steps_templates_and_stops_at_its_limit(tmp_path: Path) -> None:
    flaky = script("flaky", FLAKY, inputs=["dir", "tag", "fails"])
    args = {"dir": str(tmp_path), "tag": "flaky", "fails": "9"}
    inner = {"name": "inner", "steps": [[task("f", "flaky", args=args)]]}
    main = {"name": "main", "steps": [[task("sub", "inner")]]}
    manifest = workflow([main, inner, flaky], templateDefaults={"retryStrategy": {"limit": 1}})

    summary = make_runner(tmp_path).run(manifest, {})

    assert summary.status == "Failed"
    nodes = make_runner(tmp_path).show(summary.run_id).nodes
    # every template gets the default: main is a Retry node too (the root: "(0)"), sub, and
    # the pod itself retries once inside each attempt of sub
    assert nodes["(0)[0].sub"].type == "Retry"
    assert len(nodes["(0)[0].sub"].attempts) == 2
    assert (tmp_path / "flaky").read_text() == "x" * 2 * 2 * 2


def test_spec_retry_strategy_applies_to_dag_templates(tmp_path: Path) -> None:
    templates = _flaky_dag(tmp_path, fails=1)
    summary = make_runner(tmp_path).run(workflow(templates, retryStrategy={"limit": 1}), {})

    assert summary.status == "Succeeded", summary.message
    nodes = make_runner(tmp_path).show(summary.run_id).nodes
    # the root's Retry node is the workflow (not recorded); its attempt is "(0)"
    assert nodes["(0)"].type == "DAG" and nodes["(0).sub"].type == "Retry"
    assert nodes["(0).sub(0).f"].status == "Succeeded"  # the pod's own retry sufficed


@pytest.mark.parametrize(("code", "runs", "message"), [(3, 1, "evaluated to false"), (1, 3, "exit code 1")])
def test_retry_expression_stops_on_a_permanent_exit_code(
    tmp_path: Path, code: int, runs: int, message: str
) -> None:
    # Argo's processNodeRetries: policy, limit, then the expression; false ends the node
    retry = {"limit": 2, "expression": "asInt(lastRetry.exitCode) != 3"}
    exits = script("exits", EXIT_WITH, inputs=["dir", "code"], retryStrategy=retry)
    main = dag("main", [task("x", "exits", args={"dir": str(tmp_path), "code": str(code)})])

    summary = make_runner(tmp_path).run(workflow([main, exits]), {})

    assert summary.status == "Failed"
    node = make_runner(tmp_path).show(summary.run_id).nodes["x"]
    assert (tmp_path / "exits").read_text() == "x" * runs
    assert message in node.message


def test_argos_retry_conditional_example_expression(tmp_path: Path) -> None:
    # examples/retry-conditional.yaml: retries exit 2 (and > 1), not exit 1
    expression = (
        'asInt(lastRetry.exitCode) > 1 && lastRetry.status != "Error" && '
        "asInt(lastRetry.duration) < 120 && ({{inputs.parameters.safe}} == true || "
        "lastRetry.message matches 'imminent node shutdown|pod deleted')"
    )
    retry = {"limit": "2", "expression": expression}
    exits = script("exits", EXIT_WITH, inputs=["dir", "code", "safe"], retryStrategy=retry)
    main = dag("main", [task("x", "exits", args={"dir": str(tmp_path), "code": "2", "safe": "true"})])

    summary = make_runner(tmp_path).run(workflow([main, exits]), {})

    assert summary.status == "Failed"
    assert (tmp_path / "exits").read_text() == "xxx"


def test_retry_expression_that_fails_errors_the_node(tmp_path: Path) -> None:
    retry = {"limit": 2, "expression": "asInt(lastRetry.message) > 1"}
    exits = script("exits", EXIT_WITH, inputs=["dir", "code"], retryStrategy=retry)
    main = dag("main", [task("x", "exits", args={"dir": str(tmp_path), "code": "1"})])

    summary = make_runner(tmp_path).run(workflow([main, exits]), {})

    node = make_runner(tmp_path).show(summary.run_id).nodes["x"]
    assert node.status == "Error"
    assert "invalid operation: int(exit code 1)" in node.message


# --- the evaluator on Argo's examples ----------------------------------------------------------

CONFIG = '{"employees": [{"name": "Baris", "age":43},{"name": "Mo", "age": 42}, {"name": "Jai", "age" :44}]}'


@pytest.mark.parametrize(
    ("expression", "expected"),
    [  # examples/expression-destructure-json(-complex).yaml, as Argo writes them
        ("jsonpath(workflow.parameters.config, '$.employees[?(@.name==\"Baris\")].age')", "[43]"),
        ("jsonpath(workflow.parameters.config, '$.employees[?(@.age>42 && @.age<44)].age')", "[43]"),
        ("jsonpath(workflow.parameters.config, '$.employees[0:1]')", '[{"age":43,"name":"Baris"}]'),
        ("jsonpath(workflow.parameters.config, '$.employees[*].name')", '["Baris","Mo","Jai"]'),
        ("jsonpath(workflow.parameters.config, '$.employees[1].name')", "Mo"),
        ("toJson(filter([1, 3], {# > 1}))", "[3]"),  # expression-tag-template-workflow.yaml
        ("asInt('3') * 10", "30"),
        ("1 + 2 * 3 ** 2", "19"),  # ** gives a float; Go's JSON writes 19
        ("7 / 2", "3.5"),
        ("sprig.upper('a') + sprig.trim(' b ')", "Ab"),
        ("'x' in ['x', 'y'] ? 'yes' : 'no'", "yes"),
        ("nil ?? 'fallback'", "fallback"),
        ("string(1000000.0)", "1e+06"),  # Go's %v
        ("map([1, 2], {# * 2})", "[2,4]"),
    ],
)
def test_expressions_give_what_argo_writes(expression: str, expected: str) -> None:
    assert render(expression, {"workflow.parameters.config": CONFIG}) == expected


def test_reusing_verbose_snippets_example() -> None:
    # examples/expression-reusing-verbose-snippets.yaml: sprig.add gives an int64, / a float
    weather = '{"weekWeather": "eyJ0ZW1wcyI6IFszNCwgMjcsIDE1LCA1NywgNDZdfQo="}'
    snippet = """map([
          jsonpath(sprig.b64dec(jsonpath(workflow.parameters.weather, '$.weekWeather')), '$.temps')
        ], {
          toJson({
            avg: sprig.add(#[0], #[1], #[2], #[3], #[4]) / 5,
            min: sprig.min(#[0], #[1], #[2], #[3], #[4]),
            max: sprig.max(#[0], #[1], #[2], #[3], #[4])
          })
      })[0]"""
    temps = render(snippet, {"workflow.parameters.weather": weather})
    assert temps == '{"avg":35.8,"max":57,"min":15}'
    scope = {"inputs.parameters.week-temps": temps, "inputs.parameters": "[]"}
    assert render("jsonpath(inputs.parameters['week-temps'], '$.avg')", scope) == "35.8"


def test_retry_expression_variables_as_argo_builds_them() -> None:
    env = build_env({"lastRetry.exitCode": "3", "lastRetry.status": "Failed", "lastRetry.message": "m"})
    assert evaluate_bool("asInt(lastRetry.exitCode) != 3", env) is False
    assert evaluate_bool("lastRetry.status in ['Failed', 'Error'] && !(lastRetry.message matches '^x')", env)
    with pytest.raises(ExpressionError, match="to bool"):
        evaluate_bool("lastRetry.exitCode", env)
    with pytest.raises(ExpressionError, match="unknown name nope"):
        evaluate("nope == 1", env)
    with pytest.raises(ExpressionError, match="pipe"):
        evaluate("[1] | len()", env)


def test_expression_templates_run_in_a_workflow(tmp_path: Path) -> None:
    # examples/expression-tag-template-workflow.yaml and conditional-parameters.yaml
    pod = script(
        "pod",
        "print('hello {{=asInt(inputs.parameters.foo) * 10}}')",
        inputs=["foo"],
    )
    coin = script("coin", "print('tails')")
    heads = script("heads", "print('heads')")
    tails = script("tails", "print('tails')")
    steps = {
        "name": "choose",
        "steps": [
            [task("flip-coin", "coin")],
            [
                task("heads", "heads", when="{{steps.flip-coin.outputs.result}} == heads"),
                task("tails", "tails", when="{{steps.flip-coin.outputs.result}} == tails"),
            ],
        ],
        "outputs": {
            "parameters": [
                {
                    "name": "stepresult",
                    "valueFrom": {
                        "expression": "steps['flip-coin'].outputs.result == 'heads' ? "
                        "steps.heads.outputs.result : steps.tails.outputs.result"
                    },
                }
            ]
        },
    }
    fan = task("fan", "pod", args={"foo": "{{=item}}"}, withParam="{{=toJson(filter([1, 3], {# > 1}))}}")
    main = dag("main", [fan, task("choose", "choose")])

    summary = make_runner(tmp_path).run(workflow([main, pod, steps, coin, heads, tails]), {})

    assert summary.status == "Succeeded", summary.message
    nodes = make_runner(tmp_path).show(summary.run_id).nodes
    assert [n.result for k, n in nodes.items() if k.startswith("fan(")] == ["hello 30"]
    assert nodes["choose"].outputs == {"stepresult": "tails"}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("{{=sprig.env('HOME')}}", "function sprig.env"),
        ("{{=now()}}", "function now"),
        ("{{=[1] | len()}}", "pipe operator"),
        ("{{=let x = 1; x}}", "'let'"),
    ],
)
def test_unsupported_expressions_are_refused_before_the_run(tmp_path: Path, text: str, named: str) -> None:
    pod = script("pod", f"print('{text}')")
    with pytest.raises(UnsupportedFeatureError, match=named):
        make_runner(tmp_path).run(workflow([dag("main", [task("a", "pod")]), pod]), {})
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# --- fields that change nothing on one machine ---------------------------------------------------


def test_harmless_fields_are_accepted_and_reported_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hello = script(
        "hello",
        "print('hi')",
        nodeSelector={"gpu": "a100"},
        tolerations=[{"key": "gpu", "operator": "Exists"}],
        podSpecPatch='{"containers": [{"name": "main", "resources": {"limits": {"memory": "1Gi"}}}]}',
        annotations={"team": "geo"},
        pendingTimeout="1m",
        podResources={"requests": {"cpu": "1"}},
    )
    hello["script"]["resources"] = {"limits": {"cpu": "2"}}
    manifest = workflow(
        [dag("main", [task("a", "hello"), task("b", "hello")]), hello],
        podGC={"strategy": "OnPodCompletion"},
        podPriorityClassName="high",
        podResources={"requests": {"cpu": "1"}},
    )

    summary = make_runner(tmp_path, progress=True).run(manifest, {})

    assert summary.status == "Succeeded", summary.message
    lines = [line for line in capsys.readouterr().err.splitlines() if "Ignored" in line]
    assert lines == [
        "Ignored on one machine (no effect outside Kubernetes): container resources.limits, "
        "spec.podGC, spec.podPriorityClassName, spec.podResources, template annotations, "
        "template nodeSelector, template pendingTimeout, template podResources, "
        "template podSpecPatch, template tolerations"
    ]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda m, t: m["spec"].update(shutdown="Terminate"), "spec.shutdown"),
        (lambda m, t: t.update(podSpecPatch='{"containers": [{"name": "main", "env": []}]}'), "env"),
        (lambda m, t: t.update(podSpecPatch="volumes: []"), "podSpecPatch changing volumes"),
        (lambda m, t: t["script"].update(envFrom=[{"secretRef": {"name": "s"}}]), "envFrom"),
        (lambda m, t: t["script"].update(lifecycle={"postStart": {}}), "lifecycle hooks"),
        (lambda m, t: t.update(priority=3), "field 'priority'"),  # not in Argo's schema
    ],
)
def test_fields_that_change_results_stay_refused_by_name(tmp_path: Path, change: Any, named: str) -> None:
    hello = script("hello", "print('hi')")
    manifest = workflow([dag("main", [task("a", "hello")]), hello])
    change(manifest, hello)
    with pytest.raises(UnsupportedFeatureError, match=re.escape(named)):
        make_runner(tmp_path).run(manifest, {})
    assert not (tmp_path / "runs").exists()
