"""Imports run one way and form no cycle: the layers contract of pyproject.toml, checked by
import-linter (``make lint``), and a cycle search over every import, function-level included."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

from geomlops.argo.dag import find_cycle
from geomlops.serving.isolated_env import OWN_PACKAGES

REPO = Path(__file__).resolve().parents[1]
ROOTS = OWN_PACKAGES  # geomlops' own top-level packages, as pyproject's root_packages
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_layers_contract_is_kept() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_a_reversed_function_level_import_breaks_the_contract(tmp_path: Path) -> None:
    # a copy of the packages where a step reaches up into the pipelines, inside a function
    for root in ROOTS:
        shutil.copytree(REPO / root, tmp_path / root, ignore=shutil.ignore_patterns("__pycache__", "*.yaml"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    aoi = tmp_path / "steps" / "aoi.py"
    aoi.write_text(aoi.read_text() + "\n\ndef _reversed() -> None:\n    import pipelines.training  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "1 broken" in result.stdout
    assert "steps.aoi -> pipelines.training" in result.stdout


def _import_cycle(graph: grimp.ImportGraph) -> list[str] | None:
    """A cycle of imports (``a -> b -> a``), found by the runner's own DAG cycle finder, or None."""
    return find_cycle({m: graph.find_modules_directly_imported_by(m) for m in graph.modules})


def test_no_import_cycles_not_even_through_function_level_imports() -> None:
    graph = grimp.build_graph(*ROOTS, cache_dir=None)
    assert len(graph.modules) > 100  # the whole code base was read
    assert _import_cycle(graph) is None


def test_the_cycle_search_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(module)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.z")
    graph.add_import(importer="a.z", imported="a.x")
    assert _import_cycle(graph) == ["a.x", "a.y", "a.z", "a.x"]


def test_the_contract_covers_every_own_package() -> None:
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert sorted(config["root_packages"]) == sorted(OWN_PACKAGES)
