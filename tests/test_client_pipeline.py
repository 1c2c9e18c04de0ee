"""The pipeline batch API: many requests, one wake-up, results in order, not atomic."""

from __future__ import annotations

import pytest

import zkpy
from zkpy.errors import BadArgumentsError, NodeExistsError, NoNodeError
from zkpy.testing import RunningServer


async def test_results_come_back_in_order(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        async with zk.pipeline() as pipe:
            for index in range(500):
                pipe.create(f"/p{index:03d}", str(index).encode())
        assert pipe.results == [f"/p{index:03d}" for index in range(500)]
        batch = zk.pipeline()
        for index in range(500):
            batch.set(f"/p{index:03d}", b"v2")
        batch.get("/p007")
        batch.exists("/nothing")
        batch.get_children("/")
        results = await batch.execute()
        assert all(stat.version == 1 for stat in results[:500])
        data, stat = results[500]
        assert data == b"v2"
        assert stat.version == 1
        assert results[501] is None
        assert len(results[502]) == 500 + 1  # and /zookeeper


async def test_errors_are_per_request_and_not_atomic(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        pipe = zk.pipeline()
        pipe.create("/a", b"")
        pipe.create("/a", b"")  # fails
        pipe.create("/b", b"")  # still happens: a pipeline is not a transaction
        pipe.get("bad path")  # refused before sending
        pipe.delete("/missing")
        results = await pipe.execute(raise_on_error=False)
        assert results[0] == "/a"
        assert results[2] == "/b"
        assert isinstance(results[1], NodeExistsError)
        assert isinstance(results[3], BadArgumentsError)
        assert isinstance(results[4], NoNodeError)
        assert await zk.exists("/b") is not None
        pipe.create("/a", b"")
        with pytest.raises(NodeExistsError):
            await pipe.execute()


async def test_an_empty_pipeline_does_nothing(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        assert await zk.pipeline().execute() == []


async def test_pipelined_reads_set_their_watches(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        await zk.create("/w", b"0")
        on_data, on_children = zkpy.WatchFuture(), zkpy.WatchFuture()
        on_missing, unset = zkpy.WatchFuture(), zkpy.WatchFuture()
        pipe = zk.pipeline()
        pipe.create("/w/a-", sequential=True, include_data=True)
        pipe.get("/w", watch=on_data)
        pipe.get_children("/w", watch=on_children)
        pipe.exists("/later", watch=on_missing)
        pipe.get("/absent", watch=unset)  # fails: no watch is left behind
        (created, stat), (data, _), children, missing, absent = await pipe.execute(
            raise_on_error=False
        )
        assert created == "/w/a-0000000000"
        assert stat.czxid == stat.mzxid
        assert stat.ephemeral_owner == 0
        assert (data, children, missing) == (b"0", ["a-0000000000"], None)
        assert isinstance(absent, NoNodeError)
        await zk.set("/w", b"1")
        await zk.create("/w/b")
        await zk.create("/later")
        await zk.create("/absent")
        assert (await on_data.wait()).type is zkpy.EventType.CHANGED
        assert (await on_children.wait()).type is zkpy.EventType.CHILD
        assert (await on_missing.wait()).type is zkpy.EventType.CREATED
        assert not unset.fired  # its event would have come before the create's reply
