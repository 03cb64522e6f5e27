"""docs/extending.md is executable: its files are written out, rendered, linted and run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"
BIN = Path(sys.executable).parent


def _files() -> dict[str, str]:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    files = {}
    for block in blocks:
        first, _, _ = block.partition("\n")
        assert first.startswith("# file: "), f"python block without a '# file:' line: {first}"
        files[first.removeprefix("# file: ").strip()] = block
    return files


def test_the_documented_step_template_and_pipeline_run(tmp_path: Path, schema_dir: Path) -> None:
    files = _files()
    assert sorted(files) == ["my_pipeline.py", "my_steps.py", "my_templates.py"]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOMLOPS_")}
    env.update(
        PYTHONPATH=str(tmp_path), GEOMLOPS_HOME=str(tmp_path / "home"), GEOMLOPS_SCHEMA_DIR=str(schema_dir)
    )

    def sh(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    # the page's plain-Python check of the step
    inline = re.search(r"`(assert tile_count\([^`]*)`", DOC.read_text())
    assert inline is not None
    assert sh(sys.executable, "-c", f"from my_steps import tile_count; {inline.group(1)}").returncode == 0

    rendered = sh(sys.executable, "-c", "from my_pipeline import workflow; print(workflow.to_yaml())")
    assert rendered.returncode == 0, rendered.stderr
    (tmp_path / "tile-count.yaml").write_text(rendered.stdout)

    lint = sh(str(BIN / "geomlops"), "lint", "tile-count.yaml")
    assert lint.returncode == 0 and "✓ tile-count.yaml" in lint.stdout, lint.stdout + lint.stderr

    run = sh(str(BIN / "geomlops"), "run", "tile-count.yaml", "-p", "width=1000", "-p", "height=600")
    assert run.returncode == 0, run.stdout + run.stderr
    run_id = re.search(r"run (\S+)", run.stdout).group(1)  # type: ignore[union-attr]
    shown = sh(str(BIN / "geomlops"), "runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    nodes = json.loads(shown.stdout)["nodes"]
    [node] = [n for name, n in nodes.items() if "count-tiles" in name]
    assert str(node["outputs"]["tiles"]) == "12"
