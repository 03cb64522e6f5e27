"""The local runner executes Argo manifests with real processes: order, parameters, outputs."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from runner_fixtures.build import COUNTING, PYTHONPATH, count, dag, most_at_once, script, task, workflow

from geomlops.argo.runner import LocalRunner, check_supported
from geomlops.errors import ManifestError


def make_runner(tmp_path: Path, **options: Any) -> LocalRunner:
    options.setdefault("progress", False)
    return LocalRunner(tmp_path / "runs", **options)


RECORD = """
    import pathlib, time
    d = pathlib.Path("{{workflow.parameters.dir}}")
    start = time.time()
    time.sleep(float("{{inputs.parameters.sleep}}"))
    with (d / "events.txt").open("a") as f:
        f.write(f"{start} {time.time()} {{inputs.parameters.tag}}\\n")
    print("{{inputs.parameters.tag}}:{{workflow.name}}")
"""


def events(directory: Path) -> list[tuple[float, float, str]]:
    rows = [line.split() for line in (directory / "events.txt").read_text().splitlines()]
    return [(float(a), float(b), tag) for a, b, tag in rows]


def test_dag_runs_tasks_in_dependency_order_with_parameters(tmp_path: Path) -> None:
    record = script("record", RECORD, inputs=["tag", "sleep"])
    main = dag(
        "main",
        [
            task("a", "record", args={"tag": "a", "sleep": "0.2"}),
            task("b", "record", args={"tag": "{{workflow.parameters.word}}", "sleep": "0.3"}, depends="a"),
            task("c", "record", args={"tag": "c", "sleep": "0.3"}, dependencies=["a"]),
            task("d", "record", args={"tag": "{{tasks.b.outputs.result}}", "sleep": "0"}, depends="b && c"),
        ],
    )
    manifest = workflow([main, record], parameters={"dir": None, "word": "default-word"})

    summary = make_runner(tmp_path).run(manifest, {"dir": str(tmp_path), "word": "given"})

    assert summary.status == "Succeeded", summary.message
    spans = {tag: (s, e) for s, e, tag in events(tmp_path)}
    assert set(spans) == {"a", "given", "c", "given:test-wf"}
    assert spans["a"][1] <= spans["given"][0] and spans["a"][1] <= spans["c"][0]
    b, c = spans["given"], spans["c"]
    assert b[0] < c[1] and c[0] < b[1], "b and c should run at the same time"
    state = make_runner(tmp_path).show(summary.run_id)
    assert state.nodes["d"].inputs == {"tag": "given:test-wf", "sleep": "0"}
    assert state.nodes["d"].result == "given:test-wf:test-wf"
    assert [state.nodes[n].status for n in "abcd"] == ["Succeeded"] * 4
    run_dir = summary.run_dir
    assert yaml.safe_load((run_dir / "manifest.yaml").read_text()) == manifest
    assert json.loads((run_dir / "params.json").read_text()) == {"dir": str(tmp_path), "word": "given"}
    assert (run_dir / "logs" / "a.log").read_text() == "a:test-wf\n"


def test_hera_runner_outputs_are_sandboxed_per_task(tmp_path: Path) -> None:
    from runner_fixtures.hera_steps import build

    manifest = build().to_dict()
    check_supported(manifest)

    summary = make_runner(tmp_path, env={"PYTHONPATH": PYTHONPATH}).run(manifest, {"x": "4"})

    assert summary.status == "Succeeded", summary.message
    # both `double` tasks wrote /tmp/hera-outputs/parameters/doubled at the same time
    assert summary.outputs["left"] == {"doubled": "8"}
    assert summary.outputs["right"] == {"doubled": "10"}
    state = make_runner(tmp_path).show(summary.run_id)
    assert state.nodes["total"].inputs == {"a": "8", "b": "10"}
    assert state.nodes["total"].result == "8+10=18"
    # in the attempt's private /tmp
    written = summary.run_dir / "work" / "left" / "attempt-1" / "tmp" / "hera-outputs"
    assert (written / "parameters" / "doubled").read_text() == "8"


def test_output_parameters_default_and_missing_file(tmp_path: Path) -> None:
    writer = script(
        "writer",
        """
        import os
        open("{{outputs.parameters.written.path}}", "w").write("hello\\n")
        """,
        outputs={"written": "/tmp/out/written.txt", "fallback": "/tmp/out/never.txt"},
    )
    writer["outputs"]["parameters"][1]["valueFrom"]["default"] = "dflt"
    strict = script("strict", "print('no file')", outputs={"missing": "/tmp/out/missing.txt"})
    main = dag("main", [task("w", "writer"), task("s", "strict")])

    summary = make_runner(tmp_path).run(workflow([main, writer, strict]), {})

    assert summary.status == "Failed"
    assert summary.outputs["w"] == {"written": "hello", "fallback": "dflt"}
    assert "'s'" in summary.message and "output parameter 'missing'" in summary.message
    assert "/tmp/out/missing.txt" in summary.message


def test_with_items_fan_out_is_bounded_by_max_workers(tmp_path: Path) -> None:
    record = script("record", RECORD, inputs=["tag", "sleep"])
    fan = task("fan", "record", args={"tag": "{{item}}", "sleep": "0.25"}, withItems=list("abcdef"))
    manifest = workflow([dag("main", [fan]), record], parameters={"dir": str(tmp_path)})

    summary = make_runner(tmp_path, max_workers=2).run(manifest, {})

    assert summary.status == "Succeeded", summary.message
    spans = events(tmp_path)
    assert sorted(tag.split(":")[0] for _, _, tag in spans) == list("abcdef")
    assert most_at_once(spans) == 2
    state = make_runner(tmp_path).show(summary.run_id)
    assert state.nodes["fan"].type == "TaskGroup" and state.nodes["fan"].status == "Succeeded"
    assert state.nodes["fan(0:a)"].inputs["tag"] == "a" and "fan(5:f)" in state.nodes


def test_spec_parallelism_lowers_the_bound(tmp_path: Path) -> None:
    record = script("record", RECORD, inputs=["tag", "sleep"])
    fan = task("fan", "record", args={"tag": "{{item}}", "sleep": "0.15"}, withItems=[1, 2, 3])
    manifest = workflow([dag("main", [fan]), record], parameters={"dir": str(tmp_path)}, parallelism=1)

    assert make_runner(tmp_path, max_workers=4).run(manifest, {}).status == "Succeeded"
    assert most_at_once(events(tmp_path)) == 1


def test_with_param_fans_out_over_a_json_output_and_aggregates(tmp_path: Path) -> None:
    plan = script("plan", 'import json; print(json.dumps([{"id": 1, "tile": "a"}, {"id": 2, "tile": "b"}]))')
    work = script(
        "work",
        """
        name = "{{inputs.parameters.tile}}{{inputs.parameters.id}}"
        open("{{outputs.parameters.name.path}}", "w").write(name)
        print({{inputs.parameters.id}} * 10)
        """,
        inputs=["tile", "id"],
        outputs={"name": "/tmp/w/out"},
    )
    gather = script(
        "gather",
        "print('{{inputs.parameters.results}}|{{inputs.parameters.names}}')",
        inputs=["results", "names"],
    )
    main = dag(
        "main",
        [
            task("plan", "plan"),
            task(
                "work",
                "work",
                args={"tile": "{{item.tile}}", "id": "{{item.id}}"},
                withParam="{{tasks.plan.outputs.result}}",
                depends="plan",
            ),
            task(
                "gather",
                "gather",
                args={
                    "results": "{{tasks.work.outputs.result}}",
                    "names": "{{tasks.work.outputs.parameters.name}}",
                },
                depends="work",
            ),
        ],
    )

    summary = make_runner(tmp_path).run(workflow([main, plan, work, gather]), {})

    assert summary.status == "Succeeded", summary.message
    assert summary.outputs["work(0:id:1,tile:a)"] == {"name": "a1"}
    assert summary.outputs["work(1:id:2,tile:b)"] == {"name": "b2"}
    state = make_runner(tmp_path).show(summary.run_id)
    assert state.nodes["gather"].result == '[10,20]|["a1","b2"]'


def test_when_skips_tasks_and_dependents_still_run(tmp_path: Path) -> None:
    flip = script("flip", "print('heads')")
    say = script("say", COUNTING, inputs=["dir", "tag"])
    args = {"dir": str(tmp_path)}
    main = dag(
        "main",
        [
            task("flip", "flip"),
            task(
                "heads",
                "say",
                args={**args, "tag": "heads"},
                depends="flip",
                when="{{tasks.flip.outputs.result}} == heads",
            ),
            task(
                "tails",
                "say",
                args={**args, "tag": "tails"},
                depends="flip",
                when="'{{tasks.flip.outputs.result}}' == 'tails'",
            ),
            task("after", "say", args={**args, "tag": "after"}, depends="heads && tails"),
            task(
                "only-if-skipped",
                "say",
                args={**args, "tag": "only"},
                depends="tails.Skipped && heads.Succeeded",
            ),
        ],
    )

    summary = make_runner(tmp_path).run(workflow([main, flip, say]), {})

    assert summary.status == "Succeeded", summary.message
    state = make_runner(tmp_path).show(summary.run_id)
    assert state.nodes["tails"].status == "Skipped"
    assert "evaluated false" in state.nodes["tails"].message
    assert (count(tmp_path, "heads"), count(tmp_path, "tails")) == (1, 0)
    assert (count(tmp_path, "after"), count(tmp_path, "only")) == (1, 1)


def test_depends_on_failure_runs_handler_and_fails_workflow(tmp_path: Path) -> None:
    boom = script("boom", "import sys; print('about to fail'); sys.exit(3)")
    say = script("say", COUNTING, inputs=["dir", "tag"])
    args = {"dir": str(tmp_path)}
    main = dag(
        "main",
        [
            task("boom", "boom"),
            task("on-failure", "say", args={**args, "tag": "handler"}, depends="boom.Failed"),
            task("next", "say", args={**args, "tag": "next"}, depends="boom"),
        ],
    )

    summary = make_runner(tmp_path).run(workflow([main, boom, say]), {})

    assert summary.status == "Failed"
    assert (count(tmp_path, "handler"), count(tmp_path, "next")) == (1, 0)
    state = make_runner(tmp_path).show(summary.run_id)
    assert state.nodes["next"].status == "Omitted"
    assert state.nodes["boom"].exit_code == 3
    assert "task 'boom'" in summary.message and "exit code 3" in summary.message
    assert "about to fail" in summary.message  # the end of its log


FLAKY = """
    import pathlib, sys
    p = pathlib.Path("{{inputs.parameters.dir}}") / "attempts"
    n = len(p.read_text()) + 1 if p.exists() else 1
    p.write_text("x" * n)
    print(f"attempt {n} (retries={{retries}})")
    sys.exit(0 if n > 2 else 1)
"""


def test_retry_strategy_retries_with_backoff_until_success(tmp_path: Path) -> None:
    retry = {"limit": "3", "retryPolicy": "OnFailure", "backoff": {"duration": "0.1s", "factor": 2}}
    flaky = script("flaky", FLAKY, inputs=["dir"], retryStrategy=retry)
    manifest = workflow([dag("main", [task("flaky", "flaky", args={"dir": str(tmp_path)})]), flaky])

    began = time.monotonic()
    summary = make_runner(tmp_path).run(manifest, {})

    assert summary.status == "Succeeded", summary.message
    assert time.monotonic() - began >= 0.3  # waited 0.1s then 0.2s
    node = make_runner(tmp_path).show(summary.run_id).nodes["flaky"]
    assert [a.status for a in node.attempts] == ["Failed", "Failed", "Succeeded"]
    assert [a.log for a in node.attempts] == ["logs/flaky.log", "logs/flaky.2.log", "logs/flaky.3.log"]
    assert (summary.run_dir / "logs" / "flaky.2.log").read_text() == "attempt 2 (retries=1)\n"
    assert node.result == "attempt 3 (retries=2)"


def test_retry_limit_exhausted_fails_with_every_attempt_recorded(tmp_path: Path) -> None:
    retry = {"limit": 1, "backoff": {"duration": "0.05", "factor": "2"}}
    flaky = script("flaky", FLAKY, inputs=["dir"], retryStrategy=retry)
    manifest = workflow([dag("main", [task("flaky", "flaky", args={"dir": str(tmp_path)})]), flaky])

    summary = make_runner(tmp_path).run(manifest, {})

    assert summary.status == "Failed"
    node = make_runner(tmp_path).show(summary.run_id).nodes["flaky"]
    assert [a.status for a in node.attempts] == ["Failed", "Failed"]
    assert "after 2 attempts" in summary.message and "attempt 2 (retries=1)" in summary.message


def test_template_ref_resolves_through_the_resolver(tmp_path: Path) -> None:
    library = workflow(
        [script("shout", "print('{{inputs.parameters.word}}'.upper())", inputs=["word"])],
        name="lib",
        kind="WorkflowTemplate",
    )
    del library["spec"]["entrypoint"]
    ref = {"name": "lib", "template": "shout"}
    main = dag("main", [task("call", "", templateRef=ref, args={"word": "quiet"})])
    del main["dag"]["tasks"][0]["template"]
    manifest = workflow([main])

    summary = make_runner(tmp_path, template_resolver={"lib": library}.__getitem__).run(manifest, {})

    assert summary.status == "Succeeded", summary.message
    assert make_runner(tmp_path).show(summary.run_id).nodes["call"].result == "QUIET"
    assert yaml.safe_load((summary.run_dir / "refs.yaml").read_text()) == {"lib": library}
    with pytest.raises(ManifestError, match=r"'lib'.*no template_resolver"):
        make_runner(tmp_path).run(manifest, {})
    with pytest.raises(ManifestError, match="'lib' not found"):
        make_runner(tmp_path, template_resolver={}.__getitem__).run(manifest, {})
    ref["template"] = "whisper"
    with pytest.raises(ManifestError, match="template 'whisper' not found in WorkflowTemplate 'lib'"):
        make_runner(tmp_path, template_resolver={"lib": library}.__getitem__).run(manifest, {})


@pytest.mark.parametrize("code", [0, 1])
def test_exit_handler_runs_after_success_and_failure(tmp_path: Path, code: int) -> None:
    main = script("main", f"import sys; sys.exit({code})")
    handler = script(
        "cleanup",
        """
        import pathlib
        pathlib.Path("{{workflow.parameters.dir}}", "status").write_text("{{workflow.status}}")
        pathlib.Path("{{workflow.parameters.dir}}", "failures").write_text('{{workflow.failures}}')
        """,
    )
    manifest = workflow([main, handler], parameters={"dir": str(tmp_path)}, onExit="cleanup")

    summary = make_runner(tmp_path).run(manifest, {})

    expected = "Succeeded" if code == 0 else "Failed"
    assert summary.status == expected
    assert (tmp_path / "status").read_text() == expected
    failures = json.loads((tmp_path / "failures").read_text())
    assert [f["displayName"] for f in failures] == ([] if code == 0 else ["main"])
    assert make_runner(tmp_path).show(summary.run_id).nodes["onExit"].status == "Succeeded"


def test_plain_argo_steps_workflow_runs(tmp_path: Path) -> None:
    manifest = yaml.safe_load(
        """
        apiVersion: argoproj.io/v1alpha1
        kind: Workflow
        metadata: {generateName: steps-}
        spec:
          entrypoint: hello-hello-hello
          templates:
          - name: hello-hello-hello
            steps:
            - - name: hello1
                template: print-message
                arguments: {parameters: [{name: message, value: "hello1"}]}
            - - name: hello2a
                template: print-message
                arguments: {parameters: [{name: message, value: "{{steps.hello1.outputs.result}}-2a"}]}
              - name: hello2b
                template: print-message
                arguments: {parameters: [{name: message, value: "hello2b"}]}
          - name: print-message
            inputs: {parameters: [{name: message}]}
            script:
              image: python:alpine3.6
              command: [python]
              source: |
                print("{{inputs.parameters.message}}")
        """
    )

    summary = make_runner(tmp_path).run(manifest, {})

    assert summary.status == "Succeeded", summary.message
    assert summary.run_id.startswith("steps-")
    nodes = make_runner(tmp_path).show(summary.run_id).nodes
    assert nodes["[1].hello2a"].result == "hello1-2a"
    assert {"[0].hello1", "[1].hello2a", "[1].hello2b"} <= set(nodes)


def test_plain_argo_script_with_literal_output_path(tmp_path: Path) -> None:
    literal = f"/tmp/geomlops-runner-{uuid.uuid4().hex}.txt"
    manifest = yaml.safe_load(
        f"""
        apiVersion: argoproj.io/v1alpha1
        kind: Workflow
        metadata: {{name: scripts-python}}
        spec:
          entrypoint: gen-random-int
          templates:
          - name: gen-random-int
            outputs:
              parameters:
              - name: hello-param
                valueFrom: {{path: {literal}}}
            script:
              image: python:alpine3.6
              command: [python]
              source: |
                import random
                i = random.randint(1, 100)
                with open("{literal}", "w") as f:
                    f.write(f"hello world {{i}}")
                print(i)
        """
    )
    try:
        summary = make_runner(tmp_path).run(manifest, {})
    finally:
        Path(literal).unlink(missing_ok=True)

    assert summary.status == "Succeeded", summary.message
    number = make_runner(tmp_path).show(summary.run_id).nodes["gen-random-int"].result
    assert summary.outputs["gen-random-int"] == {"hello-param": f"hello world {number}"}


def test_container_template_runs_on_the_host_only_when_allowed(tmp_path: Path) -> None:
    container = {
        "name": "echo",
        "container": {"image": "alpine", "command": ["sh", "-c"], "args": ["echo {{workflow.name}}"]},
    }
    manifest = workflow([container], entrypoint="echo")

    summary = make_runner(tmp_path, allow_host_containers=True).run(manifest, {})

    assert summary.status == "Succeeded"
    assert make_runner(tmp_path).show(summary.run_id).nodes["echo"].result == "test-wf"


def test_secret_env_is_passed_but_never_recorded(tmp_path: Path) -> None:
    secret = "s3cr3t-" + uuid.uuid4().hex
    probe = script(
        "probe",
        """
        import hashlib, os, sys
        token = os.environ.get("API_TOKEN")
        print("token=" + token, file=sys.stderr) if token else None
        print(hashlib.sha256(token.encode()).hexdigest() if token else "unset")
        """,
        env=[{"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}}],
    )
    probe["script"]["env"] = probe.pop("env")
    manifest = workflow([probe], entrypoint="probe")

    summary = make_runner(tmp_path, env={"API_TOKEN": secret}).run(manifest, {})
    missing = make_runner(tmp_path).run(manifest, {})

    state = make_runner(tmp_path).show(summary.run_id)
    assert state.nodes["probe"].result == hashlib.sha256(secret.encode()).hexdigest()
    assert make_runner(tmp_path).show(missing.run_id).nodes["probe"].result == "unset"
    log = (summary.run_dir / "logs" / "probe.log").read_text()
    assert "token=***" in log
    for path in summary.run_dir.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path


def test_active_deadline_kills_a_slow_task(tmp_path: Path) -> None:
    slow = script("slow", "import time; time.sleep(30)", activeDeadlineSeconds=1)
    began = time.monotonic()

    summary = make_runner(tmp_path).run(workflow([slow], entrypoint="slow"), {})

    assert summary.status == "Failed"
    assert time.monotonic() - began < 15
    assert "exceeded its deadline" in summary.message


def test_progress_lines_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    retry = {"limit": 2, "backoff": {"duration": "0.05s"}}
    flaky = script("flaky", FLAKY, inputs=["dir"], retryStrategy=retry)
    manifest = workflow([dag("main", [task("flaky", "flaky", args={"dir": str(tmp_path)})]), flaky])

    summary = LocalRunner(tmp_path / "runs").run(manifest, {})

    err = capsys.readouterr().err.splitlines()
    assert summary.status == "Succeeded"
    assert err[0].startswith("Running test-wf as run test-wf-")
    assert err[1:6] == [
        "▶ flaky",
        "✗ flaky (attempt 1/3): exit code 1, retrying in 0.05s",
        "▶ flaky (attempt 2/3)",
        "✗ flaky (attempt 2/3): exit code 1, retrying in 0.05s",
        "▶ flaky (attempt 3/3)",
    ]
    assert err[6].startswith("✓ flaky ") and err[6].endswith("s")
    assert err[7].startswith("✓ test-wf Succeeded in ")


def test_steps_continue_on_failure_and_when(tmp_path: Path) -> None:
    boom = script("boom", "import sys; sys.exit(1)")
    say = script("say", COUNTING, inputs=["dir", "tag"])
    args = {"dir": str(tmp_path)}
    steps = {
        "name": "main",
        "steps": [
            [task("tolerated", "boom", continueOn={"failed": True})],
            [
                task(
                    "after", "say", args={**args, "tag": "after"}, when="{{steps.tolerated.status}} == Failed"
                ),
                task(
                    "never",
                    "say",
                    args={**args, "tag": "never"},
                    when="{{steps.tolerated.status}} == Succeeded",
                ),
            ],
        ],
    }

    summary = make_runner(tmp_path).run(workflow([steps, boom, say]), {})

    assert summary.status == "Succeeded", summary.message
    assert (count(tmp_path, "after"), count(tmp_path, "never")) == (1, 0)
    nodes = make_runner(tmp_path).show(summary.run_id).nodes
    assert (nodes["[0].tolerated"].status, nodes["[1].never"].status) == ("Failed", "Skipped")


def test_each_attempt_has_a_private_tmp_and_the_host_outside_it(tmp_path: Path) -> None:
    hidden = Path(f"/tmp/geomlops-runner-{uuid.uuid4().hex}.csv")  # the host's /tmp: hidden
    hidden.write_text("a,b\n")
    shared = tmp_path / "data.csv"  # in the folder holding the runs: visible, as a volume is
    shared.write_text("c,d\n")
    probe = script(
        "probe",
        """
        import os, pathlib
        out = pathlib.Path(os.environ["OUT_DIR"])
        out.mkdir(exist_ok=True)
        seen = pathlib.Path(os.environ["HIDDEN"]).exists()
        (out / "rows").write_text(pathlib.Path(os.environ["DATA"]).read_text().strip() + f" {seen}")
        print(os.environ["OUT_DIR"])
        """,
        outputs={"rows": "/tmp/probe-out/rows"},
    )
    probe["script"]["env"] = [
        {"name": "OUT_DIR", "value": "/tmp/probe-out"},
        {"name": "DATA", "value": str(shared)},
        {"name": "HIDDEN", "value": str(hidden)},
    ]
    try:
        summary = make_runner(tmp_path).run(workflow([probe], entrypoint="probe"), {})
    finally:
        hidden.unlink()

    assert summary.status == "Succeeded", summary.message
    assert summary.outputs["probe"] == {"rows": "c,d False"}
    assert make_runner(tmp_path).show(summary.run_id).nodes["probe"].result == "/tmp/probe-out"
    private = summary.run_dir / "work" / "probe" / "attempt-1" / "tmp" / "probe-out" / "rows"
    assert private.read_text() == "c,d False"
    assert not Path("/tmp/probe-out/rows").exists()


def test_workflow_template_ref_and_cron_workflow_run_the_referenced_spec(tmp_path: Path) -> None:
    greet = script("greet", "print('hello {{workflow.parameters.who}}')")
    library = workflow(
        [greet], entrypoint="greet", parameters={"who": "world"}, name="greeter", kind="WorkflowTemplate"
    )
    submitted = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": "greeter-"},
        "spec": {
            "workflowTemplateRef": {"name": "greeter"},
            "arguments": {"parameters": [{"name": "who", "value": "argo"}]},
        },
    }
    cron = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "CronWorkflow",
        "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 2 * * *", "workflowSpec": library["spec"]},
    }
    runner = make_runner(tmp_path, template_resolver={"greeter": library}.__getitem__)

    from_ref = runner.run(submitted, {})
    from_cron = runner.run(cron, {"who": "cron"})

    assert (from_ref.status, from_cron.status) == ("Succeeded", "Succeeded")
    assert runner.show(from_ref.run_id).nodes["greet"].result == "hello argo"
    assert runner.show(from_cron.run_id).nodes["greet"].result == "hello cron"
    assert from_cron.run_id.startswith("nightly-")
