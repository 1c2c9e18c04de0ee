"""A short chaos run in CI (fixed seeds), and the proof that the checks can fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from zkpy.testing.chaos import Report
from zkpy.testing.history import check_register_durability, check_sequences


def _chaos(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    workdir = tmp_path / "chaos"
    done = subprocess.run(
        [sys.executable, "-m", "zkpy", "chaos", "--workdir", str(workdir), *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    report = json.loads((workdir / "report.json").read_text())
    return done.returncode, report, done.stdout


def test_a_short_chaos_run_finds_nothing_wrong(tmp_path: Path) -> None:
    code, report, output = _chaos(
        tmp_path, "--size", "3", "--time", "20", "--nemesis", "kill,pause,partition", "--seed", "1"
    )
    assert code == 0, output
    assert report["ok"]
    assert not report["violations"]
    assert not report["lost_writes"]
    assert len(report["faults"]) >= 2  # faults were really injected
    outcomes = report["outcomes"]
    assert isinstance(outcomes, dict)
    assert outcomes.get("ok", 0) > 1000
    assert report["checked_keys"] == 5  # five registers (sequences: check_sequences)
    assert "OK" in output


def test_a_short_reconfig_run_loses_nothing(tmp_path: Path) -> None:
    """Five members shrunk to three and grown back, again and again, under the workload."""
    code, report, output = _chaos(
        tmp_path, "--size", "5", "--time", "20", "--nemesis", "reconfig,kill", "--seed", "1"
    )
    assert code == 0, output
    assert not report["violations"]
    assert not report["lost_writes"]
    changes = [f for f in report["faults"] if "voters now" in f]
    assert any("voters now [1, 2, 3, 4, 5]" in f for f in changes), report["faults"]
    assert len(changes) >= 2, report["faults"]
    assert report["outcomes"].get("ok", 0) > 1000


def test_without_fsync_a_power_cut_loses_writes_and_the_run_says_so(tmp_path: Path) -> None:
    code, report, output = _chaos(
        tmp_path,
        "--size",
        "3",
        "--time",
        "8",
        "--nemesis",
        "power",
        "--seed",
        "2",
        "--unsafe-no-fsync",
    )
    assert code == 1, output
    assert report["lost_writes"], output
    assert "FAILED" in output


def test_the_history_checks_catch_hand_made_losses() -> None:
    report = Report(seed=0, workdir="-")
    writes = [
        {"kind": "write", "key": "k0", "input": "a", "output": [3, 10], "outcome": "ok"},
        {"kind": "cas", "key": "k1", "input": [0, "b"], "output": [1, 11], "outcome": "ok"},
    ]
    final = {"registers": {"k0": ["older", 2, 9], "k1": ["other", 1, 12]}}
    check_register_durability(report, writes, final)
    assert len(report.lost_writes) == 2
    creates = [
        {
            "kind": "create",
            "output": "s-0000000005",
            "outcome": "ok",
            "call": 0.0,
            "return": 1.0,
            "process": 0,
        },
        {
            "kind": "create",
            "output": "s-0000000003",
            "outcome": "ok",
            "call": 2.0,
            "return": 3.0,
            "process": 1,
        },
    ]
    check_sequences(report, creates, {"sequences": ["s-0000000003"]})
    assert any("smaller counter" in v for v in report.violations)
    assert any("s-0000000005" in lost for lost in report.lost_writes)
