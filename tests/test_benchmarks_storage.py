"""`python -m benchmarks storage`: synced appends, alone and from several processes at once."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks.bench_storage import BATCH_SIZES, bench_side_by_side, main, parse_writers


def test_writers_are_a_list_of_positive_counts() -> None:
    assert parse_writers("1,2,3") == [1, 2, 3]
    assert parse_writers("2") == [2]
    for bad in ("0", "1,-1", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_writers(bad)


def test_each_writer_appends_to_its_own_log_and_reports_its_appends(tmp_path: Path) -> None:
    runs = bench_side_by_side(str(tmp_path), batch_size=4, batches=5, writers=2)
    assert len(runs) == 2
    for run in runs:
        assert run.batches_per_s > 0
        assert run.entries_per_s == pytest.approx(4 * run.batches_per_s)
        assert run.append_p50_us > 0
        assert run.cpu_us_per_batch > 0
    assert list(tmp_path.iterdir()) == []  # each writer's log went with its run


def test_the_table_has_a_row_per_writer_count_and_batch_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--batches", "3", "--dir", str(tmp_path), "--writers", "1,2"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[3:]]
    assert [(row[0], row[1]) for row in rows] == [
        (str(writers), str(size)) for writers in (1, 2) for size in BATCH_SIZES
    ]


def test_a_writer_that_fails_ends_the_run_instead_of_hanging_it(tmp_path: Path) -> None:
    with pytest.raises(EOFError):
        bench_side_by_side(str(tmp_path / "missing"), batch_size=1, batches=1, writers=2)
