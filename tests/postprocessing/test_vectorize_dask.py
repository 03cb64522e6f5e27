"""The Dask layer: every scheduler gives the same polygons, in the same order."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from vector_checks import keys, reference, write_tif

from geomlops.errors import VectorizeError
from postprocessing._dask import BlockExecutor, check_scheduler
from postprocessing.vectorize import vectorize_array, vectorize_raster


@pytest.fixture(scope="module")
def mask() -> np.ndarray:
    rng = np.random.default_rng(11)
    m = np.kron(rng.integers(0, 4, (16, 20)), np.ones((4, 4), np.int64)).astype(np.uint8)
    m[rng.random(m.shape) < 0.1] = 2
    return m


@pytest.fixture(scope="module")
def expected(mask: np.ndarray) -> list[tuple[int, bytes]]:
    return keys(vectorize_array(mask, block_size=17, scheduler="synchronous", nodata=0))


@pytest.mark.parametrize("scheduler", ["synchronous", "threads", "processes"])
def test_local_schedulers_agree(mask: np.ndarray, expected: list[tuple[int, bytes]], scheduler: str) -> None:
    polys = vectorize_array(mask, block_size=17, scheduler=scheduler, workers=2, nodata=0)
    assert keys(polys) == expected == reference(mask, 0)
    assert polys.xy.tolist() == vectorize_array(mask, block_size=17, nodata=0).xy.tolist()  # same order too


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_local_schedulers_do_not_import_distributed(scheduler: str) -> None:
    # a fresh interpreter: this test process may have imported distributed already
    code = (
        "import sys; import numpy as np; from postprocessing.vectorize import vectorize_array; "
        "m = np.kron(np.eye(6, dtype=np.uint8), np.ones((5, 5), np.uint8)); "
        f"p = vectorize_array(m, block_size=7, scheduler={scheduler!r}, workers=2, nodata=0); "
        "print(len(p), 'distributed' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["6", "False"]


@pytest.fixture(scope="module")
def cluster_address() -> Iterator[str]:
    try:
        from distributed import LocalCluster
    except ImportError:
        pytest.fail("the 'distributed' package is not installed: add it to the project's dependencies")
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, protocol="tcp", dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


def test_distributed_scheduler_address(
    cluster_address: str, tmp_path: Path, mask: np.ndarray, expected: list[tuple[int, bytes]]
) -> None:
    assert cluster_address.startswith("tcp://127.0.0.1:")
    polys = vectorize_array(mask, block_size=17, scheduler=cluster_address, nodata=0)
    assert keys(polys) == expected
    tif = write_tif(tmp_path / "mask.tif", mask, nodata=0)  # workers read their own windows
    frame = vectorize_raster(tif, block_size=23, scheduler=cluster_address)
    assert len(frame) == len(expected)


def test_map_keeps_order_and_reports_progress() -> None:
    done: list[int] = []
    with BlockExecutor("threads", workers=2) as executor:
        assert executor.map(pow, [(2, k) for k in range(10)], lambda: done.append(1)) == [
            2**k for k in range(10)
        ]
        batches = list(executor.map_batches(pow, [[(3, 1)], [(3, 2), (3, 3)], []]))
    assert len(done) == 10 and batches == [[3], [9, 27], []]


def test_a_failing_block_stops_the_run() -> None:
    with BlockExecutor("threads", workers=2) as executor, pytest.raises(ZeroDivisionError):
        list(executor.map_batches(divmod, [[(1, 1)], [(1, 0)], [(2, 1)]]))


@pytest.mark.parametrize("bad", ["thread", "http://host:8786", ""])
def test_unknown_schedulers_are_refused(bad: str) -> None:
    with pytest.raises(VectorizeError, match="tcp://HOST:PORT"):
        check_scheduler(bad)


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_tracing_buffers_go_once_the_last_row_is_merged(scheduler: str) -> None:
    from postprocessing import kernel
    from postprocessing._memory import release_freed_memory

    rng = np.random.default_rng(5)
    mask = np.kron(rng.integers(0, 3, (30, 30)), np.ones((20, 20), np.int64)).astype(np.uint8)
    kernel.mask_to_polygons(mask[:300, :300], shared=(False, True, False, True))
    assert kernel._GRIDS and hasattr(kernel._LOCAL, "tracer")  # a block-sized tracer is kept
    polys = vectorize_array(mask, block_size=300, scheduler=scheduler, workers=2)
    assert keys(polys) == reference(mask, None)
    assert not kernel._GRIDS and not hasattr(kernel._LOCAL, "tracer")  # ... until the run ends
    assert release_freed_memory() is sys.platform.startswith("linux")  # glibc here
