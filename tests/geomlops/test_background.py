"""Bounded, in-order work in a thread of its own: order, the bound, results and failures."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from geomlops.background import InOrder, usable_cpus


def test_calls_are_made_in_order_in_one_other_thread_and_give_their_results() -> None:
    made: list[tuple[int, str]] = []

    def call(i: int) -> int:
        made.append((i, threading.current_thread().name))
        return i * i

    with InOrder("squares", ahead=3) as queue:
        futures = [queue.submit(call, i) for i in range(20)]
    assert [f.result() for f in futures] == [i * i for i in range(20)]
    assert [i for i, _ in made] == list(range(20))
    names = {name for _, name in made}
    assert len(names) == 1 and names.pop().startswith("squares")


def test_submit_waits_once_more_than_ahead_calls_wait() -> None:
    release = threading.Event()
    started = threading.Event()

    def blocked() -> None:
        started.set()
        release.wait(10)

    with InOrder("bounded", ahead=1) as queue:
        queue.submit(blocked)
        started.wait(10)
        queue.submit(lambda: None)  # one waiting: within the bound
        third = threading.Thread(target=queue.submit, args=(lambda: None,))
        third.start()
        third.join(0.3)
        assert third.is_alive()  # two would wait: the caller waits for the first
        release.set()
        third.join(10)
        assert not third.is_alive()


def test_a_failure_stops_the_calls_after_it_and_is_raised_on_leaving() -> None:
    made: list[int] = []

    def call(i: int) -> None:
        if i == 2:
            raise ValueError("block 2 could not be written")
        made.append(i)

    gate = threading.Event()
    with pytest.raises(ValueError, match="block 2 could not be written"), InOrder("fails", ahead=10) as queue:
        queue.submit(gate.wait, 10)  # everything below is queued before anything runs
        later = [queue.submit(call, i) for i in range(5)]
        gate.set()
    assert made == [0, 1]  # nothing was made after the failure
    with pytest.raises(RuntimeError, match="not made: an earlier call failed"):
        later[3].result()


def test_leaving_on_the_callers_error_makes_no_further_call_and_keeps_that_error() -> None:
    made: list[int] = []
    never = threading.Event()
    with pytest.raises(KeyError, match="the caller's"), InOrder("caller", ahead=10) as queue:
        queue.submit(never.wait, 1)  # the calls below wait behind this one until the block is left
        for i in range(3):
            queue.submit(made.append, i)
        raise KeyError("the caller's")
    assert made == []


def test_usable_cpus_follow_the_control_groups_cpu_limit(tmp_path: Path) -> None:
    here = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path) == here  # no cpu.max: no limit
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == here
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: still one thread
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text(f"{here * 300000} 100000\n")  # more than there are
    assert usable_cpus(tmp_path) == here


def test_queues_sharing_a_failure_stop_together() -> None:
    made: list[str] = []
    failed = threading.Event()
    gate = threading.Event()

    def fail() -> None:
        raise OSError("level 10 could not be cut")

    a, b = InOrder("a", 10, failed), InOrder("b", 10, failed)
    with pytest.raises(OSError, match="level 10"), a, b:  # b left first: a's error, not b's echo
        b.submit(gate.wait, 10)  # b's calls wait until a has failed
        b.submit(made.append, "b")
        a.submit(fail)
        a.submit(made.append, "a")
        while not failed.is_set():
            threading.Event().wait(0.01)
        gate.set()
    assert made == []  # neither queue made a call after the failure


def test_usable_cpus_follow_cgroup_v1_quotas(tmp_path: Path) -> None:
    here = len(os.sched_getaffinity(0))
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == here  # no quota
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == 1
