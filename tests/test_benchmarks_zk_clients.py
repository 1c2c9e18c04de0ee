"""`python -m benchmarks zk-clients`: what each system runs, the medians over rounds and the
verdict of the table (the ensembles and kazoo are not started here)."""

from __future__ import annotations

import pytest

from benchmarks.run import Result, tally_outcomes
from benchmarks.zk_clients import (
    ZKPY,
    ZKPY_ZK,
    ZOOKEEPER,
    medians,
    parse_args,
    plan,
    print_cpu_table,
    print_table,
)


def result(system: str, op: str, in_flight: int, ops_per_s: float, p50_ms: float) -> Result:
    return Result(system, op, op, 3, 1, in_flight, 100, ops=100, ops_per_s=ops_per_s, p50_ms=p50_ms)


def test_only_zkpys_client_runs_the_pipeline_workloads() -> None:
    ours = {(w.op, w.in_flight) for w in plan(ZKPY)}
    for system in (ZKPY_ZK, ZOOKEEPER):
        theirs = {(w.op, w.in_flight) for w in plan(system)}
        assert ours - theirs == {("pset", 256), ("pget", 256)}
        assert ("watch", 1) in theirs


def test_the_bare_jute_rows_run_on_both_zookeeper_protocol_servers_only() -> None:
    assert {w.op for w in plan(ZKPY)} & {"jset", "jwatch"} == set()
    for system in (ZKPY_ZK, ZOOKEEPER):
        assert {("jset", 1), ("jwatch", 1)} <= {(w.op, w.in_flight) for w in plan(system)}


def test_rows_pick_the_workloads_each_system_runs() -> None:
    args = parse_args(["--rows", "set1, jwatch1,pset256"])
    assert [(w.op, w.in_flight) for w in plan(ZKPY, args.rows)] == [("pset", 256), ("set", 1)]
    assert [(w.op, w.in_flight) for w in plan(ZOOKEEPER, args.rows)] == [
        ("set", 1),
        ("jwatch", 1),
    ]


def test_an_unknown_row_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--rows", "set1,lock4"])
    assert "unknown --rows ['lock4']" in capsys.readouterr().err


def test_the_help_describes_all_three_systems(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "side by side with kazoo against Apache ZooKeeper 3.8 and zkpy's own client" in help_text


def test_the_table_shows_only_the_rows_asked_for(capsys: pytest.CaptureFixture[str]) -> None:
    summary = medians({(ZKPY_ZK, "set", 1): [result(ZKPY_ZK, "set", 1, 600, 1.5)]})
    print_table(summary, ["set1"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split()[:2] for line in lines if " x" in line]
    # its p50 row, then its row in each CPU table: the members', with the client's, CPUs busy
    assert rows == [["set", "x1"]] * 4


def test_the_cpu_tables_show_the_cpu_per_operation_of_the_latency_rows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ours = result(ZKPY_ZK, "set", 1, 1000, 1.0)
    ours.ops, ours.server_cpu_s, ours.client_cpu_s = 1000, 1.4, 0.5
    ours.seconds, ours.other_cpu_s = 1.0, 0.1
    theirs = result(ZOOKEEPER, "set", 1, 1000, 1.0)
    theirs.ops, theirs.server_cpu_s, theirs.client_cpu_s = 1000, 0.9, 0.6
    throughput = result(ZKPY_ZK, "get", 256, 5000, 40.0)
    summary = medians(
        {
            (ZKPY_ZK, "set", 1): [ours],
            (ZOOKEEPER, "set", 1): [theirs],
            (ZKPY_ZK, "get", 256): [throughput],
        }
    )
    print_cpu_table(summary)
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if " x" in line]
    sets = [row for row in rows if row[:2] == ["set", "x1"]]
    assert sets[0] == ["set", "x1", "-", "1,400", "900"]  # the members' CPU
    assert sets[1] == ["set", "x1", "-", "1,900", "1,500"]  # with the client's
    # every process's CPU over the window: 2.0 of the machine's CPUs busy; unknown for the
    # round that did not measure what else ran
    assert sets[2] == ["set", "x1", "-", "2.00", "-"]
    assert not any(row[:2] == ["get", "x256"] for row in rows)


def test_medians_are_over_the_rounds_that_did_not_fail() -> None:
    failed = result(ZKPY_ZK, "set", 1, 0.0, 0.0)
    failed.failed = "RuntimeError: no answer"
    runs = [
        result(ZKPY_ZK, "set", 1, ops, p50) for ops, p50 in ((100, 3.0), (300, 1.0), (200, 2.0))
    ]
    summary = medians({(ZKPY_ZK, "set", 1): [*runs, failed]})
    assert summary[(ZKPY_ZK, "set", 1)]["ops_per_s"] == 200
    assert summary[(ZKPY_ZK, "set", 1)]["p50_ms"] == 2.0
    assert summary[(ZKPY_ZK, "set", 1)]["rounds"] == 3


def test_the_verdict_reads_higher_throughput_and_lower_latency_as_faster(
    capsys: pytest.CaptureFixture[str],
) -> None:
    summary = medians(
        {
            (ZKPY_ZK, "get", 256): [result(ZKPY_ZK, "get", 256, 5000, 40.0)],
            (ZOOKEEPER, "get", 256): [result(ZOOKEEPER, "get", 256, 4000, 60.0)],
            (ZKPY_ZK, "set", 1): [result(ZKPY_ZK, "set", 1, 600, 1.5)],
            (ZOOKEEPER, "set", 1): [result(ZOOKEEPER, "set", 1, 900, 1.0)],
        }
    )
    print_table(summary)
    lines = capsys.readouterr().out.splitlines()
    get_row = next(line for line in lines if line.startswith("get x256"))
    set_row = next(line for line in lines if line.startswith("set x1"))
    assert get_row.split()[-2:] == ["1.25", "yes"]
    assert set_row.split()[-2:] == ["1.50", "NO"]


def outcome(
    latencies: list[float], errors: int = 0, samples: tuple[str, ...] = ()
) -> dict[str, object]:
    return {
        "latencies": latencies,
        "ops": len(latencies),
        "elapsed": 2.0,
        "errors": errors,
        "error_samples": list(samples),
    }


def test_a_round_that_completed_operations_has_its_rate_and_percentiles() -> None:
    tallied = result(ZOOKEEPER, "set", 1, 0.0, 0.0)
    tally_outcomes(tallied, [outcome([0.001, 0.003, 0.002])], counted=False)
    assert (tallied.ops, tallied.ops_per_s, tallied.p50_ms) == (3, 1.5, 2.0)
    assert tallied.failed is None


def test_a_round_in_which_nothing_completed_fails_and_leaves_the_medians_alone() -> None:
    empty = result(ZOOKEEPER, "set", 1, 0.0, 0.0)
    tally_outcomes(empty, [outcome([], errors=4, samples=("ConnectionLoss",))], counted=False)
    assert empty.failed == "no operation completed (4 errors; samples: ConnectionLoss)"
    good = result(ZOOKEEPER, "set", 1, 0.0, 0.0)
    tally_outcomes(good, [outcome([0.001])], counted=False)
    summary = medians({(ZOOKEEPER, "set", 1): [empty, good]})
    assert summary[(ZOOKEEPER, "set", 1)]["p50_ms"] == 1.0
    assert summary[(ZOOKEEPER, "set", 1)]["rounds"] == 1
