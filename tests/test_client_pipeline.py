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
