"""A client made with ``new_session_on_expiry=True`` outlives the expiry of its session: LOST is
followed by a new session, the recipes that stand for something come back under it, and what was
held under the old session (a lock) is reported lost, never taken again behind the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

import recipes
import zkpy
import zkpy.sync
from tests.conftest import TcpProxy, tcp_proxy, wait_until
from zkpy import ConnectionState
from zkpy.core.types import WatchMode
from zkpy.errors import SessionExpiredError
from zkpy.testing import RunningServer


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await trio.to_thread.run_sync(partial(fn, *args, **kwargs))


def cut_off(proxy: TcpProxy) -> None:
    """Cut `proxy`'s client off from the server: no bytes, no new connections."""
    proxy.refusing = True
    proxy.pause()
    proxy.cut()


async def let_back_once_expired(observer: zkpy.Client, proxy: TcpProxy, ephemeral: str) -> None:
    """Wait until the server has expired the cut-off session (its `ephemeral` is gone), then
    let its client reach the server again."""

    async def gone() -> bool:
        return await observer.exists(ephemeral) is None

    await wait_until(gone, timeout=5, what="the cut-off session to expire")
    proxy.refusing = False
    proxy.resume()


async def expire(observer: zkpy.Client, proxy: TcpProxy, ephemeral: str) -> None:
    """Cut `proxy`'s client off until the server has expired its session."""
    cut_off(proxy)
    await let_back_once_expired(observer, proxy, ephemeral)


@asynccontextmanager
async def renewing_client(
    server: RunningServer,
) -> AsyncIterator[tuple[zkpy.Client, zkpy.Client, TcpProxy]]:
    async with (
        zkpy.connect(server.address, session_timeout=2) as observer,
        tcp_proxy(server.port) as proxy,
        zkpy.connect(proxy.address, session_timeout=0.4, new_session_on_expiry=True) as zk,
    ):
        yield observer, zk, proxy


async def test_a_new_session_follows_an_expired_one(server: RunningServer) -> None:
    async with renewing_client(server) as (observer, zk, proxy):
        states: list[ConnectionState] = []
        zk.add_listener(states.append)
        await zk.create("/mine", b"", ephemeral=True)
        old = zk.session_id
        await expire(observer, proxy, "/mine")
        await wait_until(lambda: zk.session_id not in (0, old), timeout=5, what="a new session")
        await zk.wait_connected()
        assert states[-2:] == [ConnectionState.LOST, ConnectionState.CONNECTED]
        assert ConnectionState.SUSPENDED not in states[states.index(ConnectionState.LOST) :]
        await zk.create("/after", b"x", ephemeral=True)
        stat = await observer.exists("/after")
        assert stat is not None
        assert stat.ephemeral_owner == zk.session_id


async def test_without_the_option_an_expired_session_stays_lost(server: RunningServer) -> None:
    async with (
        zkpy.connect(server.address, session_timeout=2) as observer,
        tcp_proxy(server.port) as proxy,
        zkpy.connect(proxy.address, session_timeout=0.4) as zk,
    ):
        await zk.create("/mine", b"", ephemeral=True)
        await expire(observer, proxy, "/mine")
        await wait_until(lambda: zk.state is ConnectionState.LOST, timeout=5, what="LOST")
        with pytest.raises(SessionExpiredError):
            await zk.get("/")


async def test_party_membership_comes_back_and_a_held_lock_is_lost(
    server: RunningServer,
) -> None:
    async with renewing_client(server) as (observer, zk, proxy):
        party = recipes.Party(zk, "/party", b"me")

        async def back() -> bool:
            return await recipes.Party(observer, "/party").members() == [b"me"]

        async with party:
            old = zk.session_id
            assert await back()
            async with recipes.Lock(zk, "/locks/x") as held:
                cut_off(proxy)
                await trio.sleep_forever()  # cancelled: the hold is lost with the session
            assert held.lost
            await let_back_once_expired(observer, proxy, party.node_path)
            await wait_until(back, timeout=5, what="the membership to come back")
            stat = await observer.exists(party.node_path)
            assert stat is not None
            assert stat.ephemeral_owner == zk.session_id != old
            assert await observer.get_children("/locks/x") == []  # not taken again
            assert held.lost
        assert await recipes.Party(observer, "/party").members() == []


async def test_a_persistent_node_comes_back_after_deletion_and_expiry(
    server: RunningServer,
) -> None:
    async with renewing_client(server) as (observer, zk, proxy):
        async with recipes.PersistentNode(zk, "/services/api/one", b"addr") as node:
            stat = await observer.exists("/services/api/one")
            assert stat is not None
            assert stat.ephemeral_owner == zk.session_id
            assert node.created == 1

            await observer.delete("/services/api/one")

            async def back() -> bool:
                stat = await observer.exists("/services/api/one")
                return stat is not None and stat.ephemeral_owner == zk.session_id

            await wait_until(back, timeout=5, what="the deleted node to come back")
            assert node.created == 2
            old = zk.session_id
            await expire(observer, proxy, "/services/api/one")
            await wait_until(back, timeout=5, what="the node to come back on a new session")
            assert zk.session_id != old
            data, _stat = await observer.get("/services/api/one")
            assert data == b"addr"
        assert await observer.exists("/services/api/one") is None


async def test_a_persistent_node_waits_for_another_sessions_node(server: RunningServer) -> None:
    async with (
        zkpy.connect(server.address) as zk,
        zkpy.connect(server.address) as other,
    ):
        await other.create("/svc", b"theirs", ephemeral=True)
        entered = trio.Event()

        async def keep() -> None:
            async with recipes.PersistentNode(zk, "/svc", b"ours"):
                entered.set()
                await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep)
            watched = zk._conn.watches.one_shot[WatchMode.DATA]
            await wait_until(lambda: "/svc" in watched, what="the keeper to watch their node")
            assert not entered.is_set()
            await other.delete("/svc")
            await entered.wait()
            data, stat = await other.get("/svc")
            assert (data, stat.ephemeral_owner) == (b"ours", zk.session_id)
            nursery.cancel_scope.cancel()


async def test_an_item_taken_under_an_expired_session_is_not_consumed(
    server: RunningServer,
) -> None:
    async with renewing_client(server) as (observer, zk, proxy):
        await recipes.LockingQueue(observer, "/queues/q").put(b"job")
        item = await recipes.LockingQueue(zk, "/queues/q").take()
        await expire(observer, proxy, item.lock_path)
        other = await recipes.LockingQueue(observer, "/queues/q").take()
        assert other.data == b"job"
        await zk.wait_connected()
        with pytest.raises(recipes.NotHeldError):
            await item.consume()
        await item.release()  # the hold is gone: nothing to do, and the other's stays
        assert await observer.exists(other.lock_path) is not None
        await other.consume()
        assert await recipes.LockingQueue(observer, "/queues/q").length() == 0


async def test_a_partitioner_takes_its_items_again_under_the_new_session(
    server: RunningServer,
) -> None:
    items = ["a", "b", "c"]
    async with renewing_client(server) as (observer, zk, proxy):
        partitions: list[tuple[int, list[str]]] = []
        async with (
            recipes.SetPartitioner(zk, "/partitions/p", items) as partitioner,
            trio.open_nursery() as nursery,
        ):

            async def work() -> None:
                async for partition in partitioner:
                    with partition.cancel_scope:
                        partitions.append((zk.session_id, partition.items))
                        await trio.sleep_forever()

            nursery.start_soon(work)
            await wait_until(lambda: len(partitions) == 1, what="the first partition")
            old = zk.session_id
            await expire(observer, proxy, partitioner.party.node_path)
            await wait_until(
                lambda: partitions[-1][0] not in (0, old), what="a partition in the new session"
            )
            assert partitions[-1][1] == items
            for name in await observer.get_children("/partitions/p/owners"):
                stat = await observer.exists(f"/partitions/p/owners/{name}")
                assert stat is not None
                assert stat.ephemeral_owner == zk.session_id
            nursery.cancel_scope.cancel()


async def test_the_blocking_client_starts_a_new_session_too(server: RunningServer) -> None:
    async with (
        zkpy.connect(server.address, session_timeout=2) as observer,
        tcp_proxy(server.port) as proxy,
    ):
        zk = await in_thread(zkpy.sync.connect, proxy.address, 0.4, new_session_on_expiry=True)
        try:
            await in_thread(zk.create, "/blocking", ephemeral=True)
            old = zk.session_id
            await expire(observer, proxy, "/blocking")
            await wait_until(lambda: zk.session_id not in (0, old), what="a new session")
            await in_thread(zk.wait_connected, 5.0)
            await in_thread(zk.create, "/blocking", ephemeral=True)
        finally:
            await in_thread(zk.close)


async def test_leadership_held_under_an_expired_session_is_lost_not_retaken(
    server: RunningServer,
) -> None:
    async with renewing_client(server) as (observer, zk, proxy):
        election = recipes.Election(zk, "/election/e", b"me")
        old = zk.session_id
        async with election.campaign() as leadership:
            cut_off(proxy)
            await trio.sleep_forever()  # cancelled: leadership is lost with the session
        assert leadership.lost
        await let_back_once_expired(observer, proxy, leadership.path)
        await wait_until(lambda: zk.session_id not in (0, old), what="a new session")
        await zk.wait_connected()
        assert await recipes.Election(observer, "/election/e").contenders() == []
        assert election.leadership is None
