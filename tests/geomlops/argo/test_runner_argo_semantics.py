"""The local runner matches Argo's controller where it used to differ (each test names the rule)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner_fixtures.build import dag, script, task, workflow

from geomlops.argo.runner import LocalRunner


def make_runner(tmp_path: Path, **options: Any) -> LocalRunner:
    options.setdefault("progress", False)
    return LocalRunner(tmp_path / "runs", **options)


def test_fan_out_aggregates_output_parameters_as_json_strings(tmp_path: Path) -> None:
    # Argo's aggregatedJSONValueList: strings unless every value is a JSON list or object
    emit = script(
        "emit",
        "open('{{outputs.parameters.n.path}}', 'w').write('{{inputs.parameters.v}}')",
        inputs=["v"],
        outputs={"n": "/tmp/emit/n"},
    )
    gather = script("gather", "print('{{inputs.parameters.all}}')", inputs=["all"])
    fan = task("fan", "emit", args={"v": "{{item}}"}, withItems=[0, 1])
    objects = task("objects", "emit", args={"v": "{{item}}"}, withItems=[{"a": 1}, [2]])
    main = dag(
        "main",
        [
            fan,
            objects,
            task("g", "gather", args={"all": "{{tasks.fan.outputs.parameters.n}}"}, depends="fan"),
            task("h", "gather", args={"all": "{{tasks.objects.outputs.parameters.n}}"}, depends="objects"),
        ],
    )

    summary = make_runner(tmp_path).run(workflow([main, emit, gather]), {})

    assert summary.status == "Succeeded", summary.message
    nodes = make_runner(tmp_path).show(summary.run_id).nodes
    assert nodes["g"].result == '["0","1"]'
    assert nodes["h"].result == '[{"a":1},[2]]'
