"""Names from parameters become folders and ids: refused before any work when unsafe."""

from __future__ import annotations

from pathlib import Path

import pytest

from geomlops.errors import ParameterError
from geomlops.names import check_name, check_output_folder, inside


@pytest.mark.parametrize("name", ["banepa", "kathmandu-2025.v2", "A_1", "9"])
def test_safe_names_pass(name: str) -> None:
    assert check_name(name, "parameter 'area'") == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../../../../somewhere/escaped",
        "a/b",
        "..",
        "a..b",
        ".hidden",
        "-rf",
        "x; rm -rf ~",
        "$(id)",
        "a b",
        "é",
        "x" * 129,
    ],
)
def test_unsafe_names_are_refused_naming_the_field(name: str) -> None:
    with pytest.raises(ParameterError, match=r"parameter 'area' .*expected a letter or digit"):
        check_name(name, "parameter 'area'")


def test_inside_keeps_paths_under_the_root(tmp_path: Path) -> None:
    assert inside(tmp_path, "m", "a", field="f") == tmp_path.resolve() / "m" / "a"
    (tmp_path / "link").symlink_to("/")
    with pytest.raises(ParameterError, match="resolves outside"):
        inside(tmp_path, "link", "etc", field="f")


def test_relative_output_folders_are_refused() -> None:
    assert check_output_folder("/data/out", "parameter 'output'") == Path("/data/out")
    with pytest.raises(ParameterError, match="parameter 'output' 'out': expected an absolute path"):
        check_output_folder("out", "parameter 'output'")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"area": "../../../../escaped"}, "parameter 'area'"),
        ({"area": "x;touch pwned"}, "parameter 'area'"),
        ({"model": "../m"}, "parameters 'model'/'area'"),
        ({"output": "relative/out"}, "parameter 'output'"),
    ],
)
def test_batch_plan_refuses_escaping_parameters_before_any_work(
    params: dict[str, str], message: str, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from geomlops.errors import PERMANENT_EXIT_CODE
    from templates.inference import plan_blocks

    args = {"model": "m", "model_version": "1", "imagery": str(tmp_path / "none.tif"), **params}
    before = {p for p in tmp_path.parent.rglob("*")}
    with pytest.raises(SystemExit) as stopped:  # the step template exits as a permanent error
        plan_blocks(**args)
    assert stopped.value.code == PERMANENT_EXIT_CODE
    assert isinstance(stopped.value.__cause__, ParameterError)
    assert message in capsys.readouterr().err
    # nothing written anywhere under the tests' base folder; other tests' SQLite sidecar files
    # (a gateway's -wal and -shm) may come and go meanwhile
    created = {p for p in tmp_path.parent.rglob("*")} - before
    assert not [p for p in created if not p.name.endswith(("-wal", "-shm", "-journal"))], created
