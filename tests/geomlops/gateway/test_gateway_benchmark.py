"""The gateway benchmark runs on a small catalogue and prints its table (speed is not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "gateway.py"


def test_benchmark_prints_search_and_status_beside_the_stac_api(tmp_path: Path) -> None:
    args = ["--items", "200", "--runs", "5", "--queries", "3", "--static-queries", "1"]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "catalogue items: 200; runs: 5" in out
    assert "| what | requests | p50 ms | p95 ms | p50 / STAC API |" in out
    for row in (
        "STAC API search",
        "model search (STAC API",
        "model search (static",
        "run status",
        "run list (5",
    ):
        assert any(line.startswith("| ") and row in line for line in out.splitlines()), row
    assert "same models as the STAC API's answer: 4/4 searches" in out
