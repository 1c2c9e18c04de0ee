"""Container and TTL nodes on a running member: the leader reaps them through the log within
`container_check_interval_ms` of becoming due, watchers hear the deletion, a restart keeps
the node kinds, and a lock recipe's directory goes once its last holder has left."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import zkpy
from recipes import DoubleBarrier, Lock, Party, Queue
from tests.conftest import wait_until
from zkpy import EventType
from zkpy.core.nodekind import CONTAINER_OWNER, ttl_of
from zkpy.errors import BadArgumentsError
from zkpy.server.config import ServerConfig
from zkpy.testing import RunningServer, running_server

CHECK_MS = 50  # how often the leader looks for due nodes in these tests
TICK_MS = 100


@asynccontextmanager
async def member(data_dir: Path) -> AsyncIterator[RunningServer]:
    async with running_server(
        data_dir, tick_ms=TICK_MS, container_check_interval_ms=CHECK_MS
    ) as server:
        yield server


async def gone(zk: zkpy.Client, path: str) -> bool:
    return await zk.exists(path) is None


async def test_a_container_goes_after_its_last_child_and_its_watchers_hear_it(
    tmp_path: Path,
) -> None:
    async with member(tmp_path / "data") as server, zkpy.connect(server.address) as zk:
        await zk.create("/jobs", container=True)
        await zk.create("/unused", container=True)
        await zk.create("/jobs/a", b"work")
        await zk.create("/jobs/b", b"work")
        stat = await zk.exists("/jobs")
        assert stat is not None
        assert stat.ephemeral_owner == CONTAINER_OWNER
        await zk.delete("/jobs/a")
        deleted = zkpy.WatchFuture()
        await zk.exists("/jobs", watch=deleted)
        # a TTL node made now is reaped by a later check: that check kept /jobs, with a child
        await zk.create("/marker", ttl=1)
        await wait_until(lambda: gone(zk, "/marker"), timeout=10, what="a check after")
        assert await zk.exists("/jobs") is not None
        assert not deleted.fired
        await zk.delete("/jobs/b")
        with trio.fail_after(10):
            event = await deleted.wait()
        assert (event.type, event.path) == (EventType.DELETED, "/jobs")
        assert await zk.exists("/jobs") is None
        assert await zk.exists("/unused") is not None, "a container never used is kept"


async def test_a_ttl_node_goes_once_unchanged_for_its_ttl_but_not_while_it_has_a_child(
    tmp_path: Path,
) -> None:
    async with member(tmp_path / "data") as server, zkpy.connect(server.address) as zk:
        created, stat = await zk.create("/lease-", b"", sequential=True, ttl=300, include_data=True)
        assert ttl_of(stat.ephemeral_owner) == 300
        await zk.transaction().create("/parent", ttl=300).create("/parent/child").commit()
        await wait_until(lambda: gone(zk, created), timeout=10, what="the TTL node reaped")
        ttl_stat = await zk.exists("/parent")
        assert ttl_stat is not None, "a TTL node with a child stays"
        assert await zk.get_children("/parent") == ["child"]
        await zk.delete("/parent/child")
        await wait_until(lambda: gone(zk, "/parent"), timeout=10, what="the emptied TTL node")


async def test_bad_ttl_and_container_combinations_fail_that_call_only(tmp_path: Path) -> None:
    async with member(tmp_path / "data") as server, zkpy.connect(server.address) as zk:
        with pytest.raises(BadArgumentsError, match="ephemeral node cannot have a ttl"):
            await zk.create("/x", ephemeral=True, ttl=1_000)
        with pytest.raises(BadArgumentsError, match="container node cannot be"):
            await zk.create("/x", container=True, sequential=True)
        with pytest.raises(BadArgumentsError, match="ttl must be"):
            await zk.create("/x", ttl=0)
        assert await zk.exists("/x") is None
        await zk.create("/x", ttl=60_000)  # the connection is still fine


async def test_a_restart_keeps_node_kinds_and_reaps_them_after(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with member(data) as server, zkpy.connect(server.address) as zk:
        await zk.create("/c", container=True)
        await zk.create("/c/child")
        await zk.create("/t", ttl=2**40 - 1)  # the longest ttl there is
        await zk.create("/t/child")
    async with member(data) as server, zkpy.connect(server.address) as zk:
        container = await zk.exists("/c")
        ttl_node = await zk.exists("/t")
        assert container is not None
        assert ttl_node is not None
        assert container.ephemeral_owner == CONTAINER_OWNER
        assert ttl_of(ttl_node.ephemeral_owner) == 2**40 - 1
        await zk.delete("/c/child")
        await wait_until(lambda: gone(zk, "/c"), timeout=10, what="the container reaped")


async def test_a_lock_directory_is_reaped_after_the_last_holder_leaves(tmp_path: Path) -> None:
    async with member(tmp_path / "data") as server:
        async with zkpy.connect(server.address) as a, zkpy.connect(server.address) as b:
            for zk in (a, b):
                async with Lock(zk, "/locks/jobs", identifier=b"me"):
                    assert await zk.get_children("/locks") == ["jobs"]
            async with zkpy.connect(server.address) as zk:
                await wait_until(lambda: gone(zk, "/locks/jobs"), timeout=10, what="lock dir")
                await wait_until(lambda: gone(zk, "/locks"), timeout=10, what="its parent")
                # and the next holder makes the directory again
                async with Lock(zk, "/locks/jobs", identifier=b"again") as held:
                    assert held.path.startswith("/locks/jobs/")


def test_the_check_interval_is_a_checked_setting(tmp_path: Path) -> None:
    assert ServerConfig(data_dir=tmp_path).container_check_interval_ms == 60_000
    with pytest.raises(ValueError, match="container_check_interval_ms must be a whole number"):
        ServerConfig(data_dir=tmp_path, container_check_interval_ms=0)


async def test_a_queue_directory_is_reaped_when_drained_and_made_again_by_a_put(
    tmp_path: Path,
) -> None:
    async with member(tmp_path / "data") as server, zkpy.connect(server.address) as zk:
        queue = Queue(zk, "/queues/jobs")
        await queue.put(b"one")
        await queue.put_all(iter([b"two", b"three"]))
        assert [await queue.get() for _ in range(3)] == [b"one", b"two", b"three"]
        await wait_until(lambda: gone(zk, "/queues/jobs"), timeout=10, what="the drained queue")
        await queue.put_all(iter([b"four"]))
        await queue.put(b"five")
        assert await queue.length() == 2
        assert [await queue.get() for _ in range(2)] == [b"four", b"five"]


async def test_party_and_double_barrier_directories_are_reaped_after_use(tmp_path: Path) -> None:
    async with member(tmp_path / "data") as server, zkpy.connect(server.address) as zk:
        async with Party(zk, "/parties/workers", b"w1"):
            assert await zk.get_children("/parties/workers") != []
        async with DoubleBarrier(zk, "/barriers/step", 1):
            assert await zk.exists("/barriers/step") is not None
        for path in ("/parties", "/barriers"):
            await wait_until(lambda p=path: gone(zk, p), timeout=10, what=path)
        async with Party(zk, "/parties/workers", b"w2"):  # made again
            assert len(await zk.get_children("/parties/workers")) == 1
