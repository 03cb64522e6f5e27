"""Each task attempt sees its own filesystem, as a pod does: a private /tmp, the host read-only."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from runner_fixtures.build import dag, script, task, workflow

from geomlops.argo.runner import LocalRunner
from geomlops.argo.runner.sandbox import SANDBOX_ENV, bwrap_path, sandbox_wanted
from geomlops.cli.main import main as cli
from geomlops.errors import RunError

REPO = Path(__file__).resolve().parents[3]

#: writes its own value to a fixed path, slowly enough that its sibling writes it meanwhile
FIXED_PATH = """
    import pathlib, time
    out = pathlib.Path("/tmp/out.txt")
    out.write_text("{{inputs.parameters.value}}")
    time.sleep(1)
    print(out.read_text())
"""


def make_runner(tmp_path: Path, **options: Any) -> LocalRunner:
    options.setdefault("progress", False)
    return LocalRunner(tmp_path / "runs", **options)


def fixed_path_writer() -> dict[str, Any]:
    return script("write", FIXED_PATH, inputs=["value"], outputs={"written": "/tmp/out.txt"})


def test_parallel_tasks_writing_one_fixed_path_each_see_their_own_file(tmp_path: Path) -> None:
    gather = script("gather", "print('{{inputs.parameters.a}}+{{inputs.parameters.b}}')", inputs=["a", "b"])
    fan = task("fan", "write", args={"value": "{{item}}"}, withItems=["x", "y", "z"])
    main = dag(
        "main",
        [
            task("left", "write", args={"value": "left"}),
            task("right", "write", args={"value": "right"}),
            task(
                "both",
                "gather",
                args={
                    "a": "{{tasks.left.outputs.parameters.written}}",
                    "b": "{{tasks.right.outputs.parameters.written}}",
                },
                depends="left && right",
            ),
            fan,
        ],
    )

    summary = make_runner(tmp_path, max_workers=6).run(workflow([main, fixed_path_writer(), gather]))

    assert summary.status == "Succeeded", summary.message
    nodes = make_runner(tmp_path).show(summary.run_id).nodes
    assert nodes["both"].result == "left+right"
    assert (nodes["left"].result, nodes["right"].result) == ("left", "right")
    assert sorted(n.outputs["written"] for name, n in nodes.items() if name.startswith("fan(")) == [
        "x",
        "y",
        "z",
    ]
    assert not Path("/tmp/out.txt").exists() or Path("/tmp/out.txt").read_text() not in ("left", "right")


@pytest.mark.parametrize(
    "target",
    [
        f"/opt/geomlops-sandbox-{uuid.uuid4().hex}",  # the host's root
        str(REPO / f"geomlops-sandbox-{uuid.uuid4().hex}"),  # the checkout
        str(Path.home() / f".geomlops-sandbox-{uuid.uuid4().hex}"),
    ],
)
def test_a_task_cannot_write_the_host_outside_the_allowed_folders(tmp_path: Path, target: str) -> None:
    writer = script(
        "escape",
        f"""
        import pathlib
        pathlib.Path("{target}").write_text("escaped")
        """,
    )

    summary = make_runner(tmp_path).run(workflow([writer], entrypoint="escape"))

    assert not Path(target).exists()
    assert summary.status == "Failed"
    log = (summary.run_dir / "logs" / "escape.log").read_text()
    assert "Read-only file system" in log


def test_allowed_folders_are_writable(tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    writer = script(
        "write",
        f"""
        import pathlib
        pathlib.Path("{tmp_path / "home-file"}").write_text("home")  # the folder holding the runs
        pathlib.Path("{extra / "extra-file"}").write_text("extra")
        pathlib.Path("own-folder-file").write_text("own")
        """,
    )

    summary = make_runner(tmp_path, writable_paths=[extra]).run(workflow([writer], entrypoint="write"))

    assert summary.status == "Succeeded", summary.message
    assert (tmp_path / "home-file").read_text() == "home"
    assert (extra / "extra-file").read_text() == "extra"
    assert (summary.run_dir / "work" / "write" / "attempt-1" / "own-folder-file").read_text() == "own"


def test_unisolated_fallback_is_reported_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main = dag("main", [task("a", "write", args={"value": "a"}), task("b", "write", args={"value": "b"})])

    summary = make_runner(tmp_path, sandbox=False, progress=True).run(workflow([main, fixed_path_writer()]))

    assert summary.status == "Succeeded", summary.message
    assert capsys.readouterr().err.count("tasks run unisolated (GEOMLOPS_SANDBOX=off)") == 1


def test_sandbox_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SANDBOX_ENV, "off")
    assert (sandbox_wanted(None), sandbox_wanted(True)) == (False, True)
    monkeypatch.delenv(SANDBOX_ENV)
    assert (sandbox_wanted(None), sandbox_wanted(False)) == (True, False)


@pytest.fixture
def no_bwrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    bwrap_path.cache_clear()
    yield
    bwrap_path.cache_clear()


@pytest.mark.usefixtures("no_bwrap")
def test_missing_bubblewrap_is_named_with_the_fallback_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(RunError, match=r"bubblewrap \(bwrap\), which is not installed.*GEOMLOPS_SANDBOX=off"):
        make_runner(tmp_path).run(workflow([fixed_path_writer()], entrypoint="write"))
    assert not (tmp_path / "runs").exists()


def test_paths_given_as_parameters_are_seen_as_volumes_would_be(tmp_path: Path) -> None:
    given = Path(f"/tmp/geomlops-given-{uuid.uuid4().hex}")  # under the host's /tmp
    given.mkdir()
    (given / "in.txt").write_text("input")
    out = given / "out"  # not there yet: an output folder
    (given / "repo").mkdir()
    repo = f"git+file://{given / 'repo'}@0123abc"  # a local repository, as a package source
    write = script(
        "write",
        "import pathlib; pathlib.Path('{{inputs.parameters.out}}', 'o.txt')"
        ".write_text(pathlib.Path('{{inputs.parameters.data}}').read_text() + '+written')",
        inputs=["data", "out"],
    )
    read = script(
        "read",
        "import os; print(open('{{inputs.parameters.out}}/o.txt').read(), "
        "os.path.isdir('{{inputs.parameters.repo}}'.split('file://')[1].split('@')[0]))",
        inputs=["out", "repo"],
    )
    args = {"data": "{{workflow.parameters.data}}", "out": "{{workflow.parameters.out}}"}
    main = dag(
        "main",
        [
            task("write", "write", args=args),
            task(
                "read",
                "read",
                args={"out": "{{workflow.parameters.out}}", "repo": "{{workflow.parameters.repo}}"},
                depends="write",
            ),
        ],
    )
    manifest = workflow([main, write, read], parameters={"data": None, "out": None, "repo": None})
    try:
        summary = make_runner(tmp_path).run(
            manifest, {"data": str(given / "in.txt"), "out": str(out), "repo": repo}
        )
        assert summary.status == "Succeeded", summary.message
        assert make_runner(tmp_path).show(summary.run_id).nodes["read"].result == "input+written True"
        assert (out / "o.txt").read_text() == "input+written"
    finally:
        shutil.rmtree(given)


def test_a_mistyped_input_path_leaves_no_folder_and_the_failure_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path that does not exist is made a folder for the run's outputs (its parent exists);
    a run that wrote nothing there (it was an input, mistyped) leaves no folder behind, and its
    failure says what happened to the path."""
    given = Path(f"/tmp/geomlops-given-{uuid.uuid4().hex}")
    given.mkdir()
    typo = given / "notse.txt"  # meant: notes.txt
    read = script("read", "print(open('{{inputs.parameters.data}}').read())", inputs=["data"])
    main = dag("main", [task("read", "read", args={"data": "{{workflow.parameters.data}}"})])
    out = given / "out"
    write = script(
        "write",
        "import pathlib; pathlib.Path('{{inputs.parameters.out}}', 'o.txt').write_text('x')",
        inputs=["out"],
    )
    written = dag("main", [task("write", "write", args={"out": "{{workflow.parameters.out}}"})])
    try:
        summary = make_runner(tmp_path).run(
            workflow([main, read], parameters={"data": None}), {"data": str(typo)}
        )
        assert summary.status == "Failed"
        assert not typo.exists() and list(given.iterdir()) == []
        assert (
            f"note: {typo} did not exist; it was made as an empty folder for the run's outputs "
            "and removed again" in summary.message
        ), summary.message
        # the command line says a resume would not help: it keeps the mistyped path
        manifest = tmp_path / "read.yaml"
        manifest.write_text(yaml.safe_dump(workflow([main, read], parameters={"data": None})))
        monkeypatch.setenv("GEOMLOPS_HOME", str(tmp_path / "home"))
        ran = CliRunner().invoke(cli, ["run", str(manifest), "-p", f"data={typo}"])
        assert ran.exit_code != 0 and not typo.exists(), ran.output
        assert "a resume keeps the run's parameters, so run again with the path corrected" in ran.output
        assert "resume with:" not in ran.output, ran.output
        # an output folder the run wrote into stays
        summary = make_runner(tmp_path).run(
            workflow([written, write], parameters={"out": None}), {"out": str(out)}
        )
        assert summary.status == "Succeeded", summary.message
        assert (out / "o.txt").read_text() == "x" and "note:" not in (summary.message or "")
    finally:
        shutil.rmtree(given)


def test_the_folders_of_a_sqlite_tracking_store_elsewhere_are_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from geomlops.argo.runner.sandbox import settings_writable_paths
    from geomlops.settings import Settings

    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    absolute = Settings(home=home, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'tracking' / 'mlflow.db'}")
    assert (tmp_path / "tracking").resolve() in settings_writable_paths(absolute)
    # a relative SQLite path is the working folder's, as SQLAlchemy reads it: not the root's
    relative = Settings(home=home, mlflow_tracking_uri="sqlite:///stores/mlflow.db")
    paths = settings_writable_paths(relative)
    assert (tmp_path / "stores").resolve() in paths and Path("/stores") not in paths
