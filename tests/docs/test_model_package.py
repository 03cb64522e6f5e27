"""docs/model-package.md is checked: its package passes `package check`, its model predicts as
the page says, and its lists are the code's."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from catalog_sync.mlm_assets import CODE_ROLE, MODEL_ROLE, TRAINING_RUNTIME_ROLE
from geomlops.cli.package import EXIT_FAULTS
from steps.package import ENTRY_POINTS, ITEM_FILES, SKIPPED_FOLDERS
from steps.package_check import PASSED_PARAMETERS, check_package, prediction_faults

DOC = Path(__file__).resolve().parents[2] / "docs" / "model-package.md"


def _write_package(root: Path) -> None:
    blocks = re.findall(r"```(yaml|python|dockerfile|json)\n(.*?)```", DOC.read_text(), flags=re.S)
    names = []
    for language, text in blocks:
        first = text.partition("\n")[0]
        name = "stac-item.json" if language == "json" else first.removeprefix("# file: ").strip()
        assert language == "json" or first.startswith("# file: "), f"block without a '# file:' line: {first}"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
        names.append(name)
    assert sorted(names) == [
        "Dockerfile",
        "MLproject",
        "python_env.yaml",
        "stac-item.json",
        "water_mask/model.py",
    ]


def test_the_documented_package_passes_and_its_model_predicts_as_documented(
    tmp_path: Path, schema_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_package(tmp_path)
    result = check_package(tmp_path, schema_dir)
    assert result.faults == [], [str(f) for f in result.faults]
    assert result.spec is not None
    monkeypatch.syspath_prepend(str(tmp_path))
    model: Any = importlib.import_module("water_mask.model").WaterModel(0.0)
    try:
        assert prediction_faults(result.spec, lambda x: model.predict(None, x)) == []
    finally:
        sys.modules.pop("water_mask.model", None)
        sys.modules.pop("water_mask", None)


def test_the_page_lists_what_the_code_checks() -> None:
    text = DOC.read_text()
    for name in [*ENTRY_POINTS, "evaluate"]:
        assert f"| `{name}` |" in text, name
    for entry_point, passed in PASSED_PARAMETERS.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{entry_point}` |"))
        assert all(f"`{p}`" in row for p in passed), row
    for folder in SKIPPED_FOLDERS:
        assert f"`{folder}`" in text, folder
    assert "`*.egg-info`" in text
    for name in ITEM_FILES:
        assert f"`{name}`" in text, name
    for role in (MODEL_ROLE, TRAINING_RUNTIME_ROLE, CODE_ROLE):
        assert f"| `{role}` |" in text, role
    assert f"`{EXIT_FAULTS}` it has faults" in text
