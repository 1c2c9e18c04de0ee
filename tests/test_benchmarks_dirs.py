"""`--dir` puts an ensemble's data where the caller says (tmpfs takes the disk out, 0045)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import TracebackType

import pytest

import benchmarks.cpu_per_op


class _Chosen(Exception):
    """Stops the command once it has made its ensemble."""


class _RecordingEnsemble:
    """Stands in for ZkpyEnsemble: notes where the data would go, starts nothing."""

    base_dirs: list[str | None] = []

    def __init__(self, size: int, base_dir: str | None) -> None:
        self.base_dirs.append(base_dir)

    def __enter__(self) -> _RecordingEnsemble:
        raise _Chosen

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None


def test_cpu_per_op_puts_the_members_data_under_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _RecordingEnsemble.base_dirs = []
    monkeypatch.setattr(benchmarks.cpu_per_op, "ZkpyEnsemble", _RecordingEnsemble)
    monkeypatch.setattr(sys, "argv", ["cpu-per-op", "--dir", str(tmp_path)])
    with pytest.raises(_Chosen):
        benchmarks.cpu_per_op.main()
    assert _RecordingEnsemble.base_dirs == [str(tmp_path)]


def test_the_timeline_takes_dir_too() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "timeline", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert "--dir DIR" in done.stdout
