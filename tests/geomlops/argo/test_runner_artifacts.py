"""Artifacts between tasks: Hera's annotations and Argo's artifact-passing example, run unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from runner_fixtures.build import PYTHONPATH, dag, script, task, workflow

from geomlops.argo.runner import LocalRunner, check_supported
from geomlops.argo.runner.artifacts import LocalRepository, S3Repository
from geomlops.errors import UnsupportedFeatureError


@pytest.fixture(scope="module")
def s3_bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The artifact bucket ``geomlops install`` renders, in moto's server as ``geomlops dev up`` starts it."""
    from geomlops.cli.install import artifact_repository
    from geomlops.devstack import s3store, stack

    home = tmp_path_factory.mktemp("s3-home")
    config = stack.DevConfig(dev_dir=home / "dev", s3_port=0, mlflow_port=0, stac_port=0)
    with pytest.MonkeyPatch.context() as env:
        config, _ = stack.up(config, ["s3"])
        try:
            for key, value in stack.s3_environment(config).items():
                env.setenv(key, value)
            rendered = artifact_repository("argo", "argo-artifacts", config.s3_url, insecure=True)
            bucket = yaml.safe_load(rendered["data"]["geomlops"])["s3"]["bucket"]
            s3store.ensure_buckets(config.s3_url, [bucket])
            yield bucket, config.s3_url
        finally:
            stack.down(config.dev_dir)


def make_runner(tmp_path: Path, **options: Any) -> LocalRunner:
    options.setdefault("progress", False)
    return LocalRunner(tmp_path / "runs", env={"PYTHONPATH": PYTHONPATH}, **options)


def test_hera_artifact_annotations_pass_a_file_between_script_tasks(tmp_path: Path) -> None:
    from runner_fixtures.hera_artifacts import scripts

    manifest = scripts().to_dict()
    check_supported(manifest)

    summary = make_runner(tmp_path).run(manifest, {"text": "geo"})

    assert summary.status == "Succeeded", summary.message
    state = make_runner(tmp_path).show(summary.run_id)
    assert state.nodes["shout"].result == "GEO HAS 3 CHARACTERS"
    assert state.nodes["size"].result == str(len("geo has 3 characters"))
    reference = state.nodes["measure"].artifacts["report"]
    # Argo's default key <workflow name>/<pod name>/<artifact>.tgz, a gzip tarball of the file
    assert reference["key"] == f"{summary.run_id}/measure/report.tgz"
    stored = summary.run_dir / "artifacts" / reference["key"]
    with tarfile.open(stored, "r:gz") as tar:
        assert tar.getnames() == ["report"]
        member = tar.extractfile("report")
        assert member is not None and member.read() == b"geo has 3 characters"


def test_argo_artifact_passing_example_with_archives_folders_and_optional(tmp_path: Path) -> None:
    from runner_fixtures.hera_artifacts import containers

    manifest = containers().to_dict()

    summary = make_runner(tmp_path, allow_host_containers=True).run(manifest)

    assert summary.status == "Succeeded", summary.message
    state = make_runner(tmp_path).show(summary.run_id)
    produced = state.nodes["[0].generate-artifact"]
    assert sorted(produced.artifacts) == ["hello-art", "plain", "tree"]  # the optional one is absent
    assert produced.artifacts["plain"]["archive"] == "none"
    base = summary.run_dir / "artifacts"
    plain_key = produced.artifacts["plain"]["key"]
    assert plain_key.startswith(f"{summary.run_id}/") and plain_key.endswith(
        "generate-artifact-bbfce8/plain.txt"
    )
    assert (base / plain_key).read_text() == "hello world\n"  # archive none: the file as it is
    assert produced.artifacts["tree"]["key"].endswith("generate-artifact-bbfce8/tree.tgz")
    log = (summary.run_dir / str(state.nodes["[1].consume-artifact"].log)).read_text()
    assert log == "hello world\nhello world\none\ntwo\n"


def test_dag_passes_artifacts_through_inputs_and_global_names(tmp_path: Path) -> None:
    writer = script(
        "writer",
        "open('{{outputs.artifacts.out.path}}', 'w').write('{{inputs.parameters.word}}')",
        inputs=["word"],
    )
    writer["outputs"] = {"artifacts": [{"name": "out", "path": "out.txt", "globalName": "kept"}]}
    reader = script(
        "reader",
        "print(open('{{inputs.artifacts.data.path}}').read() + '!')",
    )
    reader["inputs"] = {"artifacts": [{"name": "data", "path": "/tmp/geomlops-test-in/data.txt"}]}
    # a nested DAG receiving the artifact as its own input and handing it on
    inner = dag(
        "inner",
        [
            task(
                "read",
                "reader",
                arguments={"artifacts": [{"name": "data", "from": "{{inputs.artifacts.data}}"}]},
            )
        ],
    )
    inner["inputs"] = {"artifacts": [{"name": "data"}]}
    raw = task("raw", "reader", arguments={"artifacts": [{"name": "data", "raw": {"data": "inline"}}]})
    main = dag(
        "main",
        [
            task("write", "writer", args={"word": "hi"}),
            task(
                "nested",
                "inner",
                depends="write",
                arguments={"artifacts": [{"name": "data", "from": "{{tasks.write.outputs.artifacts.out}}"}]},
            ),
            raw,
        ],
    )

    summary = make_runner(tmp_path).run(workflow([main, inner, writer, reader]))

    assert summary.status == "Succeeded", summary.message
    nodes = make_runner(tmp_path).show(summary.run_id).nodes
    assert nodes["nested.read"].result == "hi!"
    assert nodes["raw"].result == "inline!"


def test_missing_output_artifact_errors_the_task_and_names_it(tmp_path: Path) -> None:
    lazy = script("lazy", "print('wrote nothing')")
    lazy["outputs"] = {"artifacts": [{"name": "model", "path": "/tmp/geomlops-test-never/model.bin"}]}

    summary = make_runner(tmp_path).run(workflow([lazy], entrypoint="lazy"))

    assert summary.status == "Failed"
    assert "output artifact 'model': /tmp/geomlops-test-never/model.bin does not exist" in summary.message
    assert not (summary.run_dir / "artifacts").exists()


def test_unresolvable_artifact_sources_are_named(tmp_path: Path) -> None:
    reader = script("reader", "print(1)")
    reader["inputs"] = {"artifacts": [{"name": "data", "path": "/tmp/x"}]}
    http = workflow(
        [
            dag(
                "main",
                [task("r", "reader", arguments={"artifacts": [{"name": "data", "http": {"url": "x"}}]})],
            ),
            reader,
        ]
    )
    summary = make_runner(tmp_path).run(http)
    assert summary.status == "Failed"
    assert "argument artifact 'data': needs from, fromExpression or raw" in summary.message
    with pytest.raises(UnsupportedFeatureError, match="workflow input artifacts"):
        check_supported(workflow([reader], entrypoint="reader", arguments={"artifacts": [{"name": "data"}]}))


def test_repositories_round_trip_files_and_folders(tmp_path: Path, s3_bucket: tuple[str, str]) -> None:
    folder = tmp_path / "tree"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "sub" / "b.txt").write_text("b")
    bucket, endpoint = s3_bucket
    for repository in (LocalRepository(tmp_path / "repo"), S3Repository(bucket, endpoint)):
        repository.put_file("k/a.txt", folder / "a.txt")
        repository.put_file("k/tree/a.txt", folder / "a.txt")
        repository.put_file("k/tree/sub/b.txt", folder / "sub" / "b.txt")
        got = tmp_path / f"got-{type(repository).__name__}"
        assert repository.get("k/a.txt", got / "file")
        assert repository.get("k/tree", got / "tree")
        assert not repository.get("k/none", got / "none")
        assert (got / "file").read_text() == "a"
        assert sorted(p.relative_to(got / "tree").as_posix() for p in (got / "tree").rglob("*.txt")) == [
            "a.txt",
            "sub/b.txt",
        ]
        assert json.dumps(repository.describe("k")).startswith('{"key": "k"')


def test_artifacts_pass_through_the_services_profile_bucket(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    from runner_fixtures.hera_artifacts import scripts

    from geomlops.cli.install import artifact_repository
    from geomlops.devstack.s3store import client

    bucket, endpoint = s3_bucket
    rendered = yaml.safe_load(
        artifact_repository("argo", bucket, endpoint, insecure=True)["data"]["geomlops"]
    )
    repository = S3Repository(bucket, endpoint, key_format=rendered["s3"]["keyFormat"])
    runner = make_runner(tmp_path, artifact_repository=repository)

    summary = runner.run(scripts().to_dict(), {"text": "s3"})

    assert summary.status == "Succeeded", summary.message
    state = runner.show(summary.run_id)
    assert state.nodes["shout"].result == "S3 HAS 2 CHARACTERS"
    key = f"workflows/{summary.run_id}/measure/report.tgz"
    assert state.nodes["measure"].artifacts["report"] == {
        "name": "report",
        "path": "/tmp/hera-outputs/artifacts/report",
        "archive": "tgz",
        "key": key,
        "bucket": bucket,
    }
    body = client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body[:2] == b"\x1f\x8b"  # gzip
    assert not (summary.run_dir / "artifacts").exists()


def conditional_artifacts(side: str) -> dict[str, Any]:
    """Argo's conditional-artifacts example: a steps template's output artifact chosen by a
    fromExpression, handed on by a DAG's output artifact (``from``), read by the last task."""
    flip = script("flip-coin", f"print('{side}')")
    heads = script("heads", "open('/tmp/heads.txt', 'w').write('it was heads')")
    heads["outputs"] = {"artifacts": [{"name": "headsresult", "path": "/tmp/heads.txt"}]}
    tails = script("tails", "open('/tmp/tails.txt', 'w').write('it was tails')")
    tails["outputs"] = {"artifacts": [{"name": "tailsresult", "path": "/tmp/tails.txt"}]}
    choose = {
        "name": "choose",
        "steps": [
            [{"name": "flip-coin", "template": "flip-coin"}],
            [
                {"name": "heads", "template": "heads", "when": "{{steps.flip-coin.outputs.result}} == heads"},
                {"name": "tails", "template": "tails", "when": "{{steps.flip-coin.outputs.result}} == tails"},
            ],
        ],
        "outputs": {
            "artifacts": [
                {
                    "name": "result",
                    "fromExpression": "steps['flip-coin'].outputs.result == 'heads' ? "
                    "steps.heads.outputs.artifacts.headsresult : steps.tails.outputs.artifacts.tailsresult",
                }
            ]
        },
    }
    inner = dag("inner", [task("choose", "choose")])
    inner["outputs"] = {
        "artifacts": [{"name": "chosen", "from": "{{tasks.choose.outputs.artifacts.result}}"}]
    }
    show = script("show", "print(open('/tmp/in.txt').read())")
    show["inputs"] = {"artifacts": [{"name": "in", "path": "/tmp/in.txt"}]}
    main = dag(
        "main",
        [
            task("inner", "inner"),
            task(
                "show",
                "show",
                depends="inner",
                arguments={"artifacts": [{"name": "in", "from": "{{tasks.inner.outputs.artifacts.chosen}}"}]},
            ),
        ],
    )
    return workflow([main, inner, choose, flip, heads, tails, show])


@pytest.mark.parametrize("side", ["heads", "tails"])
def test_dag_and_steps_output_artifacts_with_a_conditional_from_expression(tmp_path: Path, side: str) -> None:
    summary = make_runner(tmp_path).run(conditional_artifacts(side))

    assert summary.status == "Succeeded", summary.message
    nodes = make_runner(tmp_path).show(summary.run_id).nodes
    assert nodes["show"].result == f"it was {side}"
    assert (
        nodes["inner"]
        .artifacts["chosen"]["key"]
        .endswith(f"{side}resulttgz".replace("resulttgz", "result.tgz"))
    )


def test_geomlops_run_on_the_services_profile_keeps_artifacts_in_its_bucket(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    from runner_fixtures.hera_artifacts import scripts

    from geomlops.devstack.s3store import client

    bucket, endpoint = s3_bucket
    manifest = tmp_path / "wf.yaml"
    manifest.write_text(yaml.safe_dump(scripts().to_dict()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOMLOPS_", "MLFLOW_"))}
    env |= {
        "GEOMLOPS_HOME": str(tmp_path / "home"),
        "GEOMLOPS_PROFILE": "services",
        "GEOMLOPS_MLFLOW_TRACKING_URI": "http://127.0.0.1:9",  # not used by this workflow
        "GEOMLOPS_S3_ENDPOINT_URL": endpoint,
        "PYTHONPATH": PYTHONPATH,
    }
    command = [str(Path(sys.executable).with_name("geomlops")), "run", str(manifest), "-p", "text=cli"]
    command += ["--artifact-bucket", bucket]

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)

    assert done.returncode == 0, done.stdout + done.stderr
    (run_dir,) = (tmp_path / "home" / "runs").iterdir()
    key = f"workflows/{run_dir.name}/measure/report.tgz"
    assert client(endpoint).head_object(Bucket=bucket, Key=key)["ContentLength"] > 0
    assert not (run_dir / "artifacts").exists()
    state = json.loads((run_dir / "state.json").read_text())
    assert state["nodes"]["shout"]["result"] == "CLI HAS 3 CHARACTERS"
