"""The recipes kazoo and Curator users reach for: counter change listeners, a locking queue,
a set partitioner, a time-limited lease (async, and their blocking twins in recipes.sync)."""

from __future__ import annotations

import trio

import recipes
import recipes.sync
from tests.conftest import wait_until
from tests.test_recipes_helpers import clients
from tests.test_sync_recipes import clients as sync_clients
from tests.test_sync_recipes import in_thread
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
