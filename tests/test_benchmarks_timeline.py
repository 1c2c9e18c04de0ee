"""The timeline's analysis: steps named by process, kind and size, in median order."""

from __future__ import annotations

import pytest

from benchmarks.timeline import format_steps, steps

US = 1000  # events are in ns


def test_steps_in_median_order_with_repeats_numbered() -> None:
    sets = [(0, 1000 * US), (2000 * US, 3000 * US)]
    events = {
        "client": [
            (10 * US, "write", 70),
            (900 * US, "read", 60),
            (2010 * US, "write", 70),
            (2950 * US, "read", 60),
        ],
        "leader3": [
            (100 * US, "read", 130),
            (200 * US, "write", 150),
            (300 * US, "write", 150),  # a second write of the same size
            (2100 * US, "read", 130),
            (2220 * US, "write", 150),
            (2320 * US, "write", 150),
        ],
        "follower1": [
            (400 * US, "sync start", 1),
            (600 * US, "sync end", 1),
            (2500 * US, "read", 15),  # seen in one set of two: kept (half)
        ],
        "follower2": [(5000 * US, "read", 15)],  # after every set: in none
    }
    rows = steps(sets, events)
    assert [row[0] for row in rows] == [
        "client: write 70 B",
        "leader3: read 130 B",
        "leader3: write 150 B",
        "leader3: write 150 B #2",
        "follower1: sync start 1 records",
        "follower1: read 15 B",
        "follower1: sync end 1 records",
        "client: read 60 B",
    ]
    at = {step: median for step, median, _share in rows}
    assert at["leader3: write 150 B"] == pytest.approx(210.0)  # median of 200 and 220 us
    assert at["client: read 60 B"] == pytest.approx(925.0)
    share = {step: seen for step, _median, seen in rows}
    assert share["follower1: read 15 B"] == 0.5
    assert share["client: write 70 B"] == 1.0


def test_a_step_seen_in_fewer_than_half_of_the_sets_is_left_out() -> None:
    sets = [(0, 100), (200, 300), (400, 500)]
    events = {"leader3": [(50, "read", 15)], "client": [(10, "write", 1), (210, "write", 1)]}
    assert [row[0] for row in steps(sets, events)] == ["client: write 1 B"]


def test_the_report_shows_each_step_and_the_gap_before_it() -> None:
    report = format_steps(1000.0, [("client: write 70 B", 40.0, 1.0), ("leader3: read", 90.0, 0.5)])
    lines = report.splitlines()
    assert lines[0] == "one-at-a-time set, p50 1000 us"
    assert lines[2].split() == ["40", "40", "client:", "write", "70", "B"]
    assert lines[3].split()[:2] == ["90", "50"]
    assert "(in 50% of the sets)" in lines[3]
    assert lines[-1].split()[:2] == ["1000", "910"]
