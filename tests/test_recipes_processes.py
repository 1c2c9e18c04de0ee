"""The recipes across real processes, against a real `zkpy server` process: the examples in
examples/ run as they would against `zkpy ensemble`, and check themselves."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.conftest import REPO_ROOT, ServerProcess, server_process
from zkpy.testing.ensemble import child_env

EXAMPLES = REPO_ROOT / "examples"


@pytest.fixture
def example_server(tmp_path: Path) -> Iterator[ServerProcess]:
    with server_process(tmp_path / "data") as proc:  # tick 100 ms: sessions of 0.2 .. 2 s
        proc.wait_ready_sync()
        yield proc


async def run_example(name: str, *args: str, timeout: float = 40) -> str:
    with trio.fail_after(timeout):
        result = await trio.run_process(
            [sys.executable, str(EXAMPLES / name), *args],
            capture_stdout=True,
            stderr=subprocess.STDOUT,
            env=child_env(),
            check=False,
        )
    output: str = result.stdout.decode()
    assert result.returncode == 0, output
    return output


async def test_lock_workers_in_separate_processes_count_exactly(
    example_server: ServerProcess, tmp_path: Path
) -> None:
    workers, increments = 4, 15
    output = await run_example(
        "lock_workers.py",
        *("--server", example_server.address, "--workers", str(workers)),
        *("--increments", str(increments), "--session-timeout", "2", "--dir", str(tmp_path)),
    )
    assert f"counter = {workers * increments} (expected {workers * increments})" in output
    assert "PROBLEM" not in output
    # The log the workers wrote under the lock: one line per critical section, in the order
    # they ran; every worker got its turns, and the tokens grew strictly.
    lines = (tmp_path / "tokens.log").read_text().splitlines()
    tokens = [int(line.split()[0]) for line in lines]
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == workers * increments
    assert sorted(int(line.split()[1]) for line in lines) == sorted(
        list(range(workers)) * increments
    )


async def test_election_example_new_leader_has_a_larger_token(
    example_server: ServerProcess,
) -> None:
    output = await run_example(
        "election.py", "--server", example_server.address, "--session-timeout", "1", "--rounds", "2"
    )
    leaders = [line for line in output.splitlines() if line.startswith("leader: ")]
    assert len(leaders) == 3, output
    tokens = [int(line.rsplit("token ", 1)[1].split()[0], 16) for line in leaders]
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 3
    assert "PROBLEM" not in output


async def test_fencing_example_rejects_the_paused_holders_write(
    example_server: ServerProcess,
) -> None:
    output = await run_example(
        "fencing.py", "--server", example_server.address, "--session-timeout", "1"
    )
    assert "the stale write was rejected" in output, output
    assert "stored value: 'from B'" in output
    assert "EXIT lost=True" in output  # and A's body was cancelled once it noticed


async def test_config_watch_example_reloads(example_server: ServerProcess) -> None:
    output = await run_example("config_watch.py", "--server", example_server.address, "--demo")
    assert "reloaded config version 3: {'workers': 8, 'final': True}" in output, output
