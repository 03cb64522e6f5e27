"""Time to fail on bad input: each case of the bad-input suite, run as a user runs it.

Runs every case of ``tests/geomlops/cli/test_bad_input.py`` as a real ``geomlops`` process in a
work folder where the demo trained ``cloud-mask`` (``--home``; the demo runs there first when it
has no model yet), alternating with ``geomlops --version`` so both see the same load. Prints,
per case, the exit status, the seconds to fail and the ratio to the CLI's own start-up time, then
the slowest case against the goal (an input error fails in under 10 s).

    .venv/bin/python benchmarks/bad_input.py [--home /tmp/bad-input-home] [--repeat 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GEOMLOPS = str(Path(sys.executable).parent / "geomlops")
GOAL_S = 10.0


def _suite() -> object:
    spec = importlib.util.spec_from_file_location(
        "bad_input_cases", REPO / "tests/geomlops/cli/test_bad_input.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timed(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, float]:
    start = time.perf_counter()
    done = subprocess.run([GEOMLOPS, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    return done.returncode, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "geomlops-bad-input")
    parser.add_argument("--repeat", type=int, default=1, help="Runs of each case (the median is shown).")
    args = parser.parse_args()
    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOMLOPS_", "MLFLOW_"))}
    env["GEOMLOPS_HOME"] = str(home)
    if not list((home / "datasets").glob("*/image.tif")):
        print(f"training the demo model in {home} first …", flush=True)
        subprocess.run([GEOMLOPS, "demo"], env=env, cwd=home, check=True, capture_output=True)
    suite = _suite()
    inputs = suite.make_inputs(home, Path(tempfile.mkdtemp(prefix="bad-inputs-")))  # type: ignore[attr-defined]
    rows: list[tuple[str, list[int], float, float]] = []
    for name, make_args, _ in suite.CASES:  # type: ignore[attr-defined]
        fails: list[float] = []
        starts: list[float] = []
        codes: set[int] = set()
        for _ in range(args.repeat):
            code, seconds = _timed(make_args(inputs), env, home)
            _, startup = _timed(["--version"], env, home)
            fails.append(seconds)
            starts.append(startup)
            codes.add(code)
        rows.append((name, sorted(codes), statistics.median(fails), statistics.median(starts)))
    print(f"{'case':32} {'exit':>5} {'fail s':>8} {'start s':>8} {'ratio':>6}")
    for name, exits, fail, start in rows:
        print(f"{name:32} {','.join(map(str, exits)):>5} {fail:8.2f} {start:8.2f} {fail / start:6.1f}")
    worst = max(rows, key=lambda r: r[2])
    print(
        f"slowest: {worst[0]} {worst[2]:.2f} s ({worst[2] / worst[3]:.1f}x start-up); goal < {GOAL_S:.0f} s: "
        + ("met" if worst[2] < GOAL_S else "NOT met")
    )
    print(f"cases exiting 2: {sum(r[1] == [2] for r in rows)} of {len(rows)}")


if __name__ == "__main__":
    main()
