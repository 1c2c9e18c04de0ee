"""`--dir` puts an ensemble's data where the caller says (tmpfs takes the disk out, 0045)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import benchmarks.cpu_per_op


class _Chosen(Exception):
    """Raised by the stand-in ensemble with the parent directory it was given."""


def _recording_ensemble(size: int, base_dir: str | None) -> None:
    """Stands in for ZkpyEnsemble: says where the data would go, starts nothing."""
    raise _Chosen(base_dir)


def test_cpu_per_op_puts_the_members_data_under_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(benchmarks.cpu_per_op, "ZkpyEnsemble", _recording_ensemble)
    monkeypatch.setattr(sys, "argv", ["cpu-per-op", "--dir", str(tmp_path)])
    with pytest.raises(_Chosen) as chosen:
        benchmarks.cpu_per_op.main()
    assert chosen.value.args == (str(tmp_path),)
