"""The benchmarks' lock workload: hand-offs are paired in the order the lock was held, and the
side-by-side runner reads its workload names."""

from __future__ import annotations

import pytest

from benchmarks.run import Workload, parse_args, workloads
from benchmarks.sidebyside import workload_of
from benchmarks.workers import lock_handoffs


def test_hand_offs_pair_each_release_with_the_next_holders_grant() -> None:
    # (position in the queue, granted, release started), recorded as the tasks finished
    records = [(30, 5.0, 5.1), (10, 1.0, 1.2), (20, 2.0, 2.5), (40, 5.05, 6.0)]
    assert lock_handoffs(records) == [(1.2, 2.0), (2.5, 5.0)]  # 5.1 -> 5.05 is left out


def test_workload_names() -> None:
    assert workload_of("set") == Workload("set", 1, 1)
    assert workload_of("lock32") == Workload("lock", 32, 1)
    assert workload_of("set256") == Workload("set", 256, 1)
    with pytest.raises(ValueError, match="not a workload"):
        workload_of("lock-4")


def test_the_latency_rows_include_lock_hand_offs_for_both_systems() -> None:
    for system in ("zkpy", "zookeeper"):
        plan = workloads(parse_args(["--ops", "none"]), system)
        assert [w for w in plan if w.op == "lock"] == [
            Workload("lock", 4, 1),
            Workload("lock", 32, 1),
        ]
