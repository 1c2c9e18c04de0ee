"""The A/B comparison's summary: medians per side, and latency per us of the client's CPU."""

from __future__ import annotations

import pytest

from benchmarks.ab import summarize


def run(set_p50: float, set_client: float, get_p50: float = 0.15) -> dict[str, object]:
    return {
        "results": {
            "set": {"p50_ms": set_p50, "members_cpu_us": 1000.0, "client_cpu_us": set_client},
            "get": {"p50_ms": get_p50, "members_cpu_us": 80.0, "client_cpu_us": 80.0},
        }
    }


def test_medians_and_the_ratio_to_the_clients_cpu() -> None:
    summary = summarize([run(1.0, 100.0), run(1.2, 150.0), run(0.9, 90.0)])
    assert summary["set"]["p50_ms"] == 1.0
    assert summary["set"]["client_cpu_us"] == 100.0
    # 10, 8 and 10 us of latency per us of client CPU: a slow round is slower on both
    assert summary["set"]["p50_per_client_us"] == pytest.approx(10.0)
    assert summary["get"]["members_cpu_us"] == 80.0


def test_a_side_without_runs_has_no_rows() -> None:
    assert summarize([]) == {}


def test_a_lock_row_is_summarized_where_the_runs_have_one() -> None:
    lock = {"p50_ms": 1.6, "members_cpu_us": 1900.0, "client_cpu_us": 500.0}
    runs = [{"results": {"lock": lock}}, {"results": {"lock": {**lock, "p50_ms": 2.0}}}]
    summary = summarize(runs)
    assert list(summary) == ["lock"]
    assert summary["lock"]["p50_ms"] == pytest.approx(1.8)
