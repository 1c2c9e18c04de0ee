"""`python -m benchmarks run --backend`: one row set per client kind, and a zkpy worker that
runs on trio, on asyncio and as the blocking client (here in a thread, against an in-process
member, instead of a process of its own)."""

from __future__ import annotations

import functools
import math
import multiprocessing
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import trio

from benchmarks import run
from benchmarks.workers import Go, Tally, _run_threads, worker_entry
from zkpy.testing import RunningServer


def test_each_backend_is_a_row_set_of_its_own() -> None:
    args = run.parse_args(["--ops", "set", "--no-latency", "--backend", "trio,sync"])
    plan = run.workloads(args, "zkpy")
    assert [(w.op, w.backend) for w in plan] == [("set", "trio"), ("set", "sync")]
    assert [w.backend for w in run.workloads(args, "zookeeper")] == ["trio"]  # (kazoo: unused)
    assert run.parse_args(["--ops", "set"]).backends == ["trio"]
    with pytest.raises(SystemExit):
        run.parse_args(["--backend", "curio"])


@pytest.mark.parametrize("backend", ["trio", "asyncio", "sync"])
@pytest.mark.parametrize("workload", ["set", "watch", "pget"])
async def test_a_worker_runs_on_each_backend(
    server: RunningServer, backend: str, workload: str
) -> None:
    parent, child = multiprocessing.Pipe()
    spec: dict[str, Any] = {
        "system": "zkpy",
        "backend": backend,
        "workload": workload,
        "target": server.address,
        "base": f"/bench/{backend}-{workload}",
        "value_size": 10,
        "in_flight": 4,
        "multi_size": 2,
        "pipeline_slots": 2,
    }
    worker = threading.Thread(target=worker_entry, args=(child, spec))
    worker.start()
    try:
        receive = functools.partial(trio.to_thread.run_sync, parent.recv)
        assert await receive() == ("ready",)
        now = time.monotonic()
        parent.send(Go(now, now, math.inf, 20))
        kind, result = await receive()
    finally:
        await trio.to_thread.run_sync(worker.join)
    assert kind == "result", result
    assert result["errors"] == 0, result["error_samples"]
    assert result["ops"] >= 20  # (a pipeline's batch counts each of its requests)


def _run_until_it_breaks(op: Callable[[int], tuple[int, float, float]], slots: int) -> Tally:
    """Run `op` in `slots` threads for up to 100 operations; its client breaks (TimeoutError)."""
    now = time.monotonic()
    tally = Tally(Go(now, now, math.inf, 100))
    with pytest.raises(TimeoutError):
        _run_threads(tally, op, slots)
    return tally


def test_a_client_that_breaks_fails_the_workload() -> None:
    """A slot whose client broke (here a socket timeout) stops the workload and raises, so that
    the round is reported failed, not as a round that measured nothing; a ZkError is counted."""
    from zkpy.errors import NoNodeError

    calls = 0

    def op(_slot: int) -> tuple[int, float, float]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise NoNodeError("/gone")
        if calls == 3:
            raise TimeoutError("timed out")
        now = time.monotonic()
        return 1, now, now

    tally = _run_until_it_breaks(op, slots=1)
    assert (tally.errors, tally.ops, calls) == (1, 1, 3)


def test_a_broken_client_stops_the_other_slots() -> None:
    """Both slots are in an operation when slot 0's client breaks; slot 1 finishes its own and
    issues no other."""
    both_in = threading.Barrier(2)
    broke = threading.Event()
    failing: list[threading.Thread] = []
    ran: list[int] = []

    def op(slot: int) -> tuple[int, float, float]:
        ran.append(slot)
        if len(ran) <= 2:
            both_in.wait(10)
        if slot == 0:
            failing.append(threading.current_thread())
            broke.set()
            raise TimeoutError("timed out")
        assert broke.wait(10)
        failing[0].join(10)  # slot 0 has recorded its error and ended
        now = time.monotonic()
        return 1, now, now

    tally = _run_until_it_breaks(op, slots=2)
    assert sorted(ran) == [0, 1]
    assert tally.ops == 1
