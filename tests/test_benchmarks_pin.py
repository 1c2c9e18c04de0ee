"""`--pin`: each member's process on one CPU by its role, the leader alone (0046)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
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
    with pytest.raises(ValueError, match="no member leads"):
        placement({1: "follower", 2: "?"}, [0, 1])


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


_SEVERAL_CPUS = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="pinning is seen only with Linux's sched_setaffinity and two CPUs or more",
)


@pytest.fixture
def threaded_child() -> Iterator[int]:
    """A process with two threads, both running: its pid."""
    child = subprocess.Popen(
        [sys.executable, "-c", _THREADED], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "up\n"  # its thread runs: start() has returned
        yield child.pid
    finally:
        child.kill()
        child.wait()


@_SEVERAL_CPUS
def test_every_thread_of_the_process_is_pinned(threaded_child: int) -> None:
    cpu = max(os.sched_getaffinity(0))
    before = _allowed(threaded_child)
    assert len(before) == 2
    assert set(before.values()) != {str(cpu)}
    pin_process(threaded_child, cpu)
    assert set(_allowed(threaded_child).values()) == {str(cpu)}


@_SEVERAL_CPUS
def test_a_thread_that_ends_meanwhile_is_passed_over(
    threaded_child: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu = max(os.sched_getaffinity(0))
    gone = max(_allowed(threaded_child))  # the started thread, as if it had just ended
    real = os.sched_setaffinity

    def setaffinity(thread: int, cpus: set[int]) -> None:
        if thread == gone:
            raise ProcessLookupError(thread)
        real(thread, cpus)

    monkeypatch.setattr(os, "sched_setaffinity", setaffinity)
    pin_process(threaded_child, cpu)
    assert _allowed(threaded_child)[threaded_child] == str(cpu)
    assert _allowed(threaded_child)[gone] != str(cpu)
