"""Mutexes and semaphores (Argo's ``synchronization``) held by the local runner with file locks.

Each task prints when it started and ended (its own clock readings, inside the process); the
tests check from those stamps how many ran at once, never how long the run took.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from runner_fixtures.build import dag, most_at_once, script, task, workflow

from geomlops.argo.runner import LocalRunner
from geomlops.argo.runner.synchronization import parse_limits
from geomlops.cli.main import main
from geomlops.errors import ManifestError, UnsupportedFeatureError

STAMP = """
    import time
    start = time.time()
    time.sleep(0.15)
    print(start, time.time())
"""


def spans(runner: LocalRunner, run_id: str, names: list[str]) -> list[tuple[float, float]]:
    nodes = runner.show(run_id).nodes
    return [tuple(float(x) for x in str(nodes[n].result).split()) for n in names]  # type: ignore[misc]


def fan(sync: dict[str, Any], width: int = 4, **spec: Any) -> dict[str, Any]:
    stamp = script("stamp", STAMP, inputs=["n"], synchronization=sync)
    tasks = [task(f"t{i}", "stamp", args={"n": str(i)}) for i in range(width)]
    return workflow([dag("main", tasks), stamp], **spec)


def runner(tmp_path: Path, **options: Any) -> LocalRunner:
    return LocalRunner(tmp_path / "runs", progress=False, max_workers=4, **options)


def test_mutex_runs_parallel_tasks_one_at_a_time(tmp_path: Path) -> None:
    local = runner(tmp_path)
    summary = local.run(fan({"mutexes": [{"name": "one-at-a-time"}]}))

    assert summary.status == "Succeeded", summary.message
    intervals = spans(local, summary.run_id, ["t0", "t1", "t2", "t3"])
    assert most_at_once(intervals) == 1


def test_semaphore_of_two_lets_at_most_two_run(tmp_path: Path) -> None:
    sync = {"semaphores": [{"configMapKeyRef": {"name": "my-config", "key": "template"}}]}
    local = runner(tmp_path, semaphores={"my-config/template": 2})
    summary = local.run(fan(sync))

    assert summary.status == "Succeeded", summary.message
    assert most_at_once(spans(local, summary.run_id, ["t0", "t1", "t2", "t3"])) <= 2


def test_workflow_level_mutex_is_shared_by_concurrent_runs(tmp_path: Path) -> None:
    """Two runs of one runs folder holding the same workflow-level mutex run one after the other."""
    manifest = workflow([script("main", STAMP)], synchronization={"mutexes": [{"name": "wf"}]})
    results: list[str] = []

    def run_once() -> None:
        results.append(runner(tmp_path).run(manifest).run_id)

    threads = [threading.Thread(target=run_once) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    local = runner(tmp_path)
    intervals = [spans(local, run_id, ["main"])[0] for run_id in results]
    assert [local.show(r).status for r in results] == ["Succeeded", "Succeeded"]
    assert most_at_once(intervals) == 1


def test_mutex_name_from_a_parameter_is_substituted(tmp_path: Path) -> None:
    sync = {"mutexes": [{"name": "{{workflow.parameters.lock}}"}]}
    local = runner(tmp_path)
    summary = local.run(fan(sync, width=3, arguments={"parameters": [{"name": "lock", "value": "p"}]}))

    assert summary.status == "Succeeded", summary.message
    assert most_at_once(spans(local, summary.run_id, ["t0", "t1", "t2"])) == 1
    assert any(p.name.startswith("default_Mutex_p-") for p in (tmp_path / "runs" / ".locks").iterdir())


def test_semaphore_without_a_limit_is_refused_before_anything_runs(tmp_path: Path) -> None:
    sync = {"semaphores": [{"configMapKeyRef": {"name": "my-config", "key": "wf"}}]}
    with pytest.raises(ManifestError, match=r"semaphore my-config/wf .*--semaphore my-config/wf=LIMIT"):
        runner(tmp_path).run(fan(sync))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_database_locks_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFeatureError, match="database-backed synchronization"):
        runner(tmp_path).run(fan({"mutexes": [{"name": "m", "database": True}]}))


def test_malformed_synchronization_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"template 'stamp'.*unknown field\(s\) mutex"):
        runner(tmp_path).run(fan({"mutex": {"name": "old-form"}}))
    with pytest.raises(ManifestError, match="configMapKeyRef needs a name and a key"):
        runner(tmp_path).run(fan({"semaphores": [{"configMapKeyRef": {"name": "c"}}]}))


def test_semaphore_options_parse_and_bad_ones_name_the_value() -> None:
    assert parse_limits(["my-config/workflow=2", "c/k=10"]) == {"my-config/workflow": 2, "c/k": 10}
    for bad in ["my-config=2", "c/k=two", "c/k", "c/k=0", "/k=1"]:
        with pytest.raises(ManifestError, match="--semaphore"):
            parse_limits([bad])


def test_cli_takes_semaphore_limits_and_names_a_bad_one(home: Path) -> None:
    sync = {"semaphores": [{"configMapKeyRef": {"name": "cli-config", "key": "k"}}]}
    path = home / "wf.yaml"
    path.write_text(yaml.safe_dump(fan(sync, width=2)))

    ran = CliRunner().invoke(main, ["run", str(path), "--semaphore", "cli-config/k=1"])
    missing = CliRunner().invoke(main, ["run", str(path)])
    malformed = CliRunner().invoke(main, ["run", str(path), "--semaphore", "cli-config=1"])

    assert ran.exit_code == 0, ran.output
    assert missing.exit_code != 0
    assert "locally pass --semaphore cli-config/k=LIMIT" in missing.output
    assert malformed.exit_code != 0
    assert "--semaphore 'cli-config=1': expected CONFIGMAP/KEY=LIMIT" in malformed.output
