"""The vectorization benchmark: its streamed mask generator and a run on a tiny mask."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import rasterio

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "vectorize.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vectorize_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mask_is_generated_strip_by_strip_into_a_tiled_compressed_geotiff(
    bench: ModuleType, tmp_path: Path
) -> None:
    size = bench.STRIP + 700  # a whole strip and a partial one
    path = tmp_path / "mask.tif"
    bench.generate_mask(path, size)
    with rasterio.open(path) as ds:
        assert (ds.width, ds.height, ds.dtypes[0], ds.nodata) == (size, size, "uint8", 0)
        assert ds.profile["tiled"] and ds.compression is not None
        mask = ds.read(1)
    assert set(np.unique(mask).tolist()) == {0, 1, 2}
    # the river crosses every 1024-pixel row band, joined at alternate ends
    assert all((mask[r : r + 1024] == 2).any(axis=0).all() for r in range(0, size - 1024, 1024))
    again = tmp_path / "again.tif"
    bench.generate_mask(again, size)
    with rasterio.open(again) as ds:
        assert np.array_equal(ds.read(1), mask)  # seeded: the same mask every time
    assert not list(tmp_path.glob(".*.tmp"))


def test_whole_raster_methods_are_skipped_where_they_cannot_fit(bench: ModuleType) -> None:
    fits, why = bench.baseline_fits(100_000)
    assert not fits and "needs about 42 GB" in why and "available" in why
    assert bench.baseline_fits(1024) == (True, "")


def test_benchmark_run_on_a_tiny_mask_reports_both_memories_and_equality(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["--sizes", "1024", "--block-size", "256", "--scheduler", "synchronous", "--dir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any("start-up MB" in line and "working MB" in line and "% working" in line for line in lines)
    table = [line.split() for line in lines if line.split()[:1] == ["1024"] and len(line.split()) == 11]
    rows = {parts[1]: parts for parts in table}
    for method in ("rasterio", "geomlops"):
        peak, startup, working = (float(v) for v in rows[method][4:7])
        assert 0 < startup < peak and working == pytest.approx(peak - startup, abs=1)
    assert "1024 geomlops output identical to rasterio's: True" in result.stdout
    assert not list(tmp_path.glob("*.parquet"))  # outputs removed once compared
