"""`benchmarks.bare_jute`: the bare ZooKeeper-protocol client of the zk-clients benchmark's
jset and jwatch rows, run against a member's ZooKeeper port."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import AsyncIterator
from multiprocessing import Pipe
from pathlib import Path
from typing import Any

import pytest
import trio

import zkpy
from benchmarks import bare_jute
from benchmarks.workers import Go, worker_entry
from zkpy.core.requests import SetDataRequest
from zkpy.errors import NoNodeError
from zkpy.testing import RunningServer, running_server
from zkpy.testing.ports import free_port
from zkpy.wire.jute import OP_SET_DATA

pytestmark = pytest.mark.trio


@pytest.fixture
async def member(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "data", tick_ms=50, zk_port=free_port()) as server:
        yield server


def address(server: RunningServer) -> str:
    return f"127.0.0.1:{server.config.zk_port}"


def run_worker(server: RunningServer, workload: str, count: int) -> dict[str, Any]:
    """Drive a worker (in a thread) as benchmarks.run drives a worker process, for `count`
    operations."""
    parent, child = Pipe()
    spec = {"workload": workload, "target": address(server), "base": "/b/r1/p0", "value_size": 10}
    worker = threading.Thread(target=worker_entry, args=(child, spec))
    worker.start()
    assert parent.recv() == ("ready",)
    now = time.monotonic()
    parent.send(Go(now, now, math.inf, count))
    kind, result = parent.recv()
    worker.join()
    assert kind == "result"
    assert isinstance(result, dict)
    return result


async def node_version(server: RunningServer) -> int:
    async with zkpy.connect(server.address) as zk:
        data, stat = await zk.get("/b/r1/p0/k0")
    assert data == b"v" * 10
    return stat.version


async def test_the_set_row_sets_the_node_one_at_a_time(member: RunningServer) -> None:
    result = await trio.to_thread.run_sync(run_worker, member, "jset", 25)
    assert (result["ops"], result["errors"]) == (25, 0)
    assert len(result["latencies"]) == 25
    assert min(result["latencies"]) > 0
    assert await node_version(member) == 25


async def test_the_watch_row_times_each_set_to_its_event(member: RunningServer) -> None:
    result = await trio.to_thread.run_sync(run_worker, member, "jwatch", 10)
    assert (result["ops"], result["errors"]) == (10, 0)
    assert all(latency > 0 for latency in result["latencies"])
    assert await node_version(member) == 10


async def test_an_error_reply_raises_zookeepers_error(member: RunningServer) -> None:
    def set_missing() -> None:
        client = bare_jute.BareClient(address(member), 5.0)
        try:
            client.call(OP_SET_DATA, SetDataRequest("/missing", b"x"))
        finally:
            client.close()

    with pytest.raises(NoNodeError):
        await trio.to_thread.run_sync(set_missing)


async def test_an_unknown_workload_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot run workload 'set'"):
        bare_jute.BareWorkload({"workload": "set"}, 1.0)
