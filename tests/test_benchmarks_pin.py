"""`--pin`: each member's process on one CPU by its role, the leader alone (0046)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.ensembles import pin_process, placement


def test_the_leader_is_alone_and_the_others_share_the_rest() -> None:
    roles = {1: "follower", 2: "follower", 3: "leader"}
    assert placement(roles, [0, 1]) == {3: 0, 1: 1, 2: 1}
    assert placement(roles, [2, 5, 7, 9]) == {3: 2, 1: 5, 2: 7}
    five = {1: "follower", 2: "leader", 3: "follower", 4: "follower", 5: "observer"}
    assert placement(five, [0, 1, 2]) == {2: 0, 1: 1, 3: 2, 4: 1, 5: 2}
    assert placement(roles, [4]) == {1: 4, 2: 4, 3: 4}
    assert placement({1: "standalone"}, [0, 1]) == {1: 0}


_THREADED = (
    "import sys, threading\n"
    "threading.Thread(target=sys.stdin.read, daemon=True).start()\n"
    "print('up', flush=True)\n"
    "sys.stdin.read()\n"
)


def _allowed(pid: int) -> dict[int, str]:
    """Each thread of `pid` and the CPUs it may run on."""
    allowed = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                allowed[int(task.name)] = line.split(":", 1)[1].strip()
    return allowed


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux's sched_setaffinity")
def test_every_thread_of_the_process_is_pinned() -> None:
    cpu = max(os.sched_getaffinity(0))
    child = subprocess.Popen(
        [sys.executable, "-c", _THREADED],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "up\n"
        deadline = time.monotonic() + 10
        while len(_allowed(child.pid)) < 2:  # the main thread and the one it started
            assert time.monotonic() < deadline, "the child's thread never showed"
        pin_process(child.pid, cpu)
        assert set(_allowed(child.pid).values()) == {str(cpu)}
    finally:
        child.kill()
        child.wait()
