"""The batch-inference benchmark runs on a tiny crop of the demo scene and prints its table."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "batch_inference.py"


def test_benchmark_prints_its_table_on_a_tiny_scene(work: dict[str, Any]) -> None:
    assert work["first"].returncode == 0, work["first"].stdout + work["first"].stderr
    runs = set((work["home"] / "runs").iterdir())
    args = ["--home", str(work["home"]), "--size", "200", "--block-size", "100", "--group-size", "2"]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--repeat", "1"],
        env=work["env"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "CPUs usable" in out and "GiB" in out  # the machine the figures came from
    assert "200 x 200 px (0.04 Mpx), 4 blocks of 100 px in 2 groups, halo 16 px, 1 block per call" in out
    assert "| what | seconds | Mpx/s | × model time |" in out
    for row in ("(reference)", "read and prepare", "predict step", "publish:", "end to end"):
        assert any(line.startswith("| ") and row in line for line in out.splitlines()), row
    assert "on cpu, model loaded in" in out  # the package environment's worker
    assert "(goal >= 0.8)" in out
    assert re.search(r"^round 1 of 1, the fastest:$", out, re.M), out
    assert re.search(r"\(goal >= 0\.8\); the ratio in each round: \d+\.\d\d$", out, re.M), out
    # costs paid once per predict task have no pixel rate
    assert re.search(
        r"^\| start the worker and load the model, once per predict task \| \d+\.\d+ \| — \|", out, re.M
    )
    assert "Downloading artifacts" not in out + result.stderr  # no progress bars amid the figures
    # the CPU the worker used counts as the model's: a parent only waiting on it uses next to none
    cpu = re.search(
        r"^CPU: the model \d+\.\d s in \d+\.\d s \((\d+\.\d\d) of \d+ cores busy\); end to end "
        r"\d+\.\d s in \d+\.\d s \(\d+\.\d\d cores busy\): spread over \d+ cores that work takes at "
        r"least \d+\.\d s, a ratio of at most \d+\.\d\d here$",
        out,
        re.M,
    )
    assert cpu and float(cpu.group(1)) > 0.2, out
    assert "identical outputs in every round: yes" in out
    # the workflow as a user runs it, on the same blocks: its time, ratio, and the same files
    line = next(x for x in out.splitlines() if x.startswith("the workflow (`geomlops run batch-inference`"))
    assert re.search(r"one round\): \d+\.\d s, \d+\.\d\d Mpx/s; ratio \d+\.\d\d;", line), line
    assert line.endswith("the same outputs as the rounds': yes"), line
    assert not list(work["home"].glob("bench-batch-*"))  # its scratch folder is gone
    # and nothing else it made stays in the work folder: no predictions item pointing at files
    # that are gone, no record of its workflow's run
    made = ("-run-0", "-benchmark-workflow")
    left = [p for p in (work["home"] / "catalog").rglob("*.json") if any(m in p.read_text() for m in made)]
    assert left == [] and set((work["home"] / "runs").iterdir()) == runs
