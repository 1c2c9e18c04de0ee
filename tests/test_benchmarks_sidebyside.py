"""`python -m benchmarks sidebyside`'s table: per workload, each measure's median per system,
their ratio and the spread of the per-round ratios, including what each operation costs in CPU
and how busy the machine was (the ensembles are not started here)."""

from __future__ import annotations

import pytest

from benchmarks.run import Result
from benchmarks.sidebyside import MEASURES, report


def lock_round(system: str, ops: int, server_s: float, client_s: float, other_s: float) -> Result:
    return Result(
        system,
        "lock4",
        "lock",
        3,
        1,
        4,
        100,
        ops=ops,
        seconds=2.0,
        ops_per_s=ops / 2.0,
        p50_ms=2000 / ops if ops else None,
        server_cpu_s=server_s,
        client_cpu_s=client_s,
        other_cpu_s=other_s,
    )


def test_cpu_per_operation_counts_members_and_clients() -> None:
    result = lock_round("zkpy", 1000, server_s=2.5, client_s=0.75, other_s=0.05)
    assert result.cpu_us_per_op == pytest.approx(3250)
    assert result.cpus_busy == pytest.approx(1.65)


def test_an_empty_window_has_no_cpu_measures() -> None:
    result = Result("zkpy", "lock4", "lock", 3, 1, 4, 100)
    assert result.cpu_us_per_op is None
    assert result.cpus_busy is None


def test_the_table_shows_each_measure_with_its_ratio_and_spread(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = {
        ("lock4", "zkpy"): [
            lock_round("zkpy", 1000, 2.5, 0.75, 0.05),
            lock_round("zkpy", 1200, 2.6, 0.80, 0.00),
            lock_round("zkpy", 900, 2.4, 0.70, 0.10),
        ],
        ("lock4", "zookeeper"): [
            lock_round("zookeeper", 400, 2.4, 1.2, 0.0),
            lock_round("zookeeper", 500, 2.5, 1.3, 0.0),
            lock_round("zookeeper", 450, 2.2, 1.3, 0.0),
        ],
    }
    report(["lock4"], rows)
    table = {
        line.split()[1]: line.split()[2:]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("lock4")
    }
    assert list(table) == list(MEASURES)
    assert table["ops_per_s"][:3] == ["500", "225", "2.22"]
    # per round: 3,250 / 9,000, 2,833 / 7,600, 3,444 / 7,778 us
    assert table["cpu_us_per_op"] == ["3,250", "7,778", "0.42", "0.36..0.44"]
    assert table["cpus_busy"][:2] == ["1.650", "1.800"]


def test_a_failed_round_is_left_out(capsys: pytest.CaptureFixture[str]) -> None:
    failed = lock_round("zkpy", 0, 0.0, 0.0, 0.0)
    failed.failed = "the ensemble did not answer"
    rows = {
        ("lock4", "zkpy"): [failed, lock_round("zkpy", 1000, 2.5, 0.75, 0.05)],
        ("lock4", "zookeeper"): [
            lock_round("zookeeper", 400, 2.4, 1.2, 0.0),
            lock_round("zookeeper", 500, 2.5, 1.3, 0.0),
        ],
    }
    report(["lock4"], rows)
    line = next(x for x in capsys.readouterr().out.splitlines() if "cpu_us_per_op" in x)
    # medians 3,250 / 8,300 us; the one round with both: 3,250 / 7,600
    assert line.split()[2:] == ["3,250", "8,300", "0.39", "0.43..0.43"]
