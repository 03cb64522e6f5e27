"""What geomlops ships is found through the import system, never through a path into a checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from geomlops.cli import demo
from geomlops.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[3]


def test_the_demo_finds_its_example_package_as_package_data() -> None:
    import examples

    package = demo.default_package()
    assert package == Path(examples.__file__).parent / "cloud-mask"
    assert (package / "MLproject").is_file() and (package / "stac-item.json").is_file()


def test_a_missing_example_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(demo.resources, "files", missing)
    with pytest.raises(ConfigurationError, match=r"examples/cloud-mask/MLproject not found.*--package"):
        demo.default_package()


def test_the_wheel_ships_the_example_package_and_the_golden_files(tmp_path: Path) -> None:
    uv = str(Path(sys.executable).parent / "uv")
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    build = subprocess.run(
        [uv, "build", "--wheel", "-o", str(tmp_path), "--python", sys.executable],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("geomlops-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in (
        "examples/cloud-mask/MLproject",
        "examples/cloud-mask/stac-item.json",
        "examples/cloud-mask/cloud_mask/train.py",
        "pipelines/training.yaml",
        "geomlops/argo/runner/engine.py",
        "geomlops/serving/runtime.py",
    ):
        assert shipped in names
    assert not any(name.startswith("tests/") for name in names)
