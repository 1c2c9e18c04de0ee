"""The recipes kazoo and Curator users reach for: counter change listeners, a locking queue,
a set partitioner, a time-limited lease (async, and their blocking twins in recipes.sync)."""

from __future__ import annotations

import contextlib

import pytest
import trio

import recipes
import recipes.sync
import zkpy
from tests.conftest import wait_until
from tests.test_recipes_helpers import clients
from tests.test_sync_recipes import clients as sync_clients
from tests.test_sync_recipes import in_thread
from zkpy.core.types import WatchMode
from zkpy.errors import SessionExpiredError
from zkpy.testing import RunningServer

# ---- Counter.changes -----------------------------------------------------------------------


async def test_counter_listeners_see_every_settled_value(server: RunningServer) -> None:
    async with clients(server.address, 2) as (zk, other):
        counter = recipes.Counter(zk, "/counters/seen", default=5)
        seen: list[int] = []
        async with trio.open_nursery() as nursery:

            async def listen() -> None:
                async for value in counter.changes():
                    seen.append(value)

            nursery.start_soon(listen)
            await wait_until(lambda: seen == [5], what="the default before the node exists")
            writer = recipes.Counter(other, "/counters/seen", default=5)
            await writer.add(2)
            await wait_until(lambda: seen[-1] == 7, what="the first change")
            await writer.set(7)  # the same value again: no change to tell
            await writer.add(-10)
            await wait_until(lambda: seen[-1] == -3, what="the second change")
            nursery.cancel_scope.cancel()
        assert seen == [5, 7, -3]


async def test_blocking_counter_changes(server: RunningServer) -> None:
    async with sync_clients(server.address, 1) as (zk,):
        counter = recipes.sync.Counter(zk, "/counters/blocking")
        changes = counter.changes()
        assert await in_thread(next, changes) == 0
        await in_thread(counter.add, 4)
        assert await in_thread(next, changes) == 4


# ---- LockingQueue --------------------------------------------------------------------------


async def test_an_item_taken_by_a_consumer_that_dies_is_taken_by_another(
    server: RunningServer,
) -> None:
    async with clients(server.address, 2) as (producer, survivor):
        queue = recipes.LockingQueue(producer, "/queues/jobs")
        await queue.put(b"job-1")
        await queue.put(b"job-2")
        async with zkpy.connect(server.address) as dying:
            item = await recipes.LockingQueue(dying, "/queues/jobs").take()
            assert item.data == b"job-1"
            other = recipes.LockingQueue(survivor, "/queues/jobs")
            second = await other.take()  # job-1 is held: the next free item
            assert second.data == b"job-2"
            assert await other.take_nowait() is None
            # the consumer's session ends before it consumed job-1
        again = await other.take()
        assert again.data == b"job-1"
        await again.consume()
        await second.release()
        assert await queue.length() == 1
        async with await queue.take() as last:
            assert last.data == b"job-2"
        assert await queue.length() == 0


async def test_a_waiting_consumer_is_woken_by_a_put_and_a_failed_body_releases(
    server: RunningServer,
) -> None:
    async with clients(server.address, 2) as (producer, consumer):
        queue = recipes.LockingQueue(consumer, "/queues/wake")
        async with trio.open_nursery() as nursery:
            taken: list[recipes.TakenItem] = []

            async def take() -> None:
                taken.append(await queue.take())

            nursery.start_soon(take)
            watches = consumer._conn.watches.one_shot  # on the entries, or on their creation
            entries = "/queues/wake/entries"
            await wait_until(
                lambda: entries in watches[WatchMode.CHILD] or entries in watches[WatchMode.EXIST],
                what="a waiting take",
            )
            await recipes.LockingQueue(producer, "/queues/wake").put(b"late")
        assert [item.data for item in taken] == [b"late"]
        await taken[0].release()
        with pytest.raises(RuntimeError):
            async with await recipes.LockingQueue(producer, "/queues/wake").take() as item:
                raise RuntimeError("processing failed")
        assert item.done
        assert await queue.length() == 1


async def test_blocking_locking_queue(server: RunningServer) -> None:
    async with sync_clients(server.address, 2) as (one, two):
        queue = recipes.sync.LockingQueue(one, "/queues/blocking")
        await in_thread(queue.put, b"a")
        item = await in_thread(queue.take, 5.0)
        assert item.data == b"a"
        with pytest.raises(TimeoutError):
            await in_thread(recipes.sync.LockingQueue(two, "/queues/blocking").take, 0.2)
        await in_thread(item.consume)
        assert await in_thread(queue.length) == 0


# ---- SetPartitioner ------------------------------------------------------------------------

ITEMS = [f"feed-{n}" for n in range(6)]


async def test_members_split_the_set_without_overlap_or_gap(server: RunningServer) -> None:
    holding: dict[str, list[str]] = {}  # member -> the items its body works on now

    async def member(zk: zkpy.Client, name: str) -> None:
        with contextlib.suppress(SessionExpiredError):  # the member closed below dies so
            await work(zk, name)

    async def work(zk: zkpy.Client, name: str) -> None:
        async with recipes.SetPartitioner(zk, "/partitions/feeds", ITEMS, name) as partitioner:
            async for partition in partitioner:
                with partition.cancel_scope:
                    others = {
                        item for who, items in holding.items() if who != name for item in items
                    }
                    assert not others & set(partition.items), "an item held twice"
                    holding[name] = partition.items
                    try:
                        await trio.sleep_forever()
                    finally:
                        holding[name] = []

    def split(count: int) -> bool:
        working = [items for items in holding.values() if items]
        every = sorted(item for items in working for item in items)
        return len(working) == count and every == ITEMS

    async with clients(server.address, 3) as zks, trio.open_nursery() as nursery:
        nursery.start_soon(member, zks[0], "one")
        await wait_until(lambda: split(1), what="one member holding everything")
        nursery.start_soon(member, zks[1], "two")
        await wait_until(lambda: split(2), what="two members splitting the set")
        assert sorted(len(items) for items in holding.values()) == [3, 3]
        nursery.start_soon(member, zks[2], "three")
        await wait_until(lambda: split(3), what="three members splitting the set")
        assert sorted(len(items) for items in holding.values()) == [2, 2, 2]
        await zks[0].close()  # a member dies: its items go to the others
        await wait_until(lambda: split(2), what="the survivors taking its items over")
        nursery.cancel_scope.cancel()


# ---- NonBlockingLease ----------------------------------------------------------------------


async def test_a_lease_is_held_until_its_deadline_by_the_servers_clock(
    server: RunningServer,
) -> None:
    async with clients(server.address, 2) as (one, two):
        mine = recipes.NonBlockingLease(one, "/leases/report", 60.0, "one")
        theirs = recipes.NonBlockingLease(two, "/leases/report", 60.0, "two")
        assert await mine.obtain(now=0.0)
        node = await one.exists("/leases/report/lease-0")
        assert node is not None
        assert mine.expires_at == node.last_modified + 60.0
        written = node.last_modified
        assert not await theirs.obtain(now=written + 59.0)  # not ended yet
        assert await mine.obtain(now=written + 59.0)  # the holder renews it
        assert mine.expires_at is not None
        assert mine.expires_at > written  # from the renewal's mtime on
        assert not await theirs.obtain(now=mine.expires_at - 1)
        assert await theirs.obtain(now=mine.expires_at)  # ended: taken over
        assert theirs.expires_at is not None
        assert not await mine.obtain(now=theirs.expires_at - 1)


async def test_a_multi_lease_has_count_holders(server: RunningServer) -> None:
    async with clients(server.address, 1) as (zk,):
        leases = [
            recipes.MultiNonBlockingLease(zk, "/leases/workers", 2, 60.0, name)
            for name in ("a", "b", "c")
        ]
        assert [await lease.obtain(now=0.0) for lease in leases] == [True, True, False]
        assert await leases[1].obtain(now=0.0)  # renews its own slot, takes no other
        assert (leases[0].slot, leases[1].slot) == (
            "/leases/workers/lease-0",
            "/leases/workers/lease-1",
        )


async def test_blocking_lease(server: RunningServer) -> None:
    async with sync_clients(server.address, 2) as (one, two):
        assert await in_thread(
            recipes.sync.NonBlockingLease(one, "/leases/b", 60.0, "1").obtain, 0.0
        )
        other = recipes.sync.NonBlockingLease(two, "/leases/b", 60.0, "2")
        assert not await in_thread(other.obtain, 1.0)
