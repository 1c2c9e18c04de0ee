"""recipes.Lock's hand-off: a released holder marks its node as it deletes it, so the waiter
behind it takes the lock on the watch event alone, without listing the queue again; a waiter
whose predecessor was abandoned, or was a reader, still lists it."""

from __future__ import annotations

from typing import Any

import trio

import zkpy
from recipes import Held, Lock, ReadLock, WriteLock
from tests.conftest import wait_until
from tests.test_recipes_helpers import children, clients, settle
from zkpy.testing import RunningServer


class CountingClient:
    """A client that counts the listings (get_children calls) made through it."""

    def __init__(self, zk: zkpy.Client) -> None:
        self._zk = zk
        self.listings = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._zk, name)
        if name != "get_children":
            return attribute

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.listings += 1
            return await attribute(*args, **kwargs)

        return counted


async def _count(zk: zkpy.Client, path: str, count: int) -> bool:
    return len(await children(zk, path)) == count


async def test_the_waiter_behind_a_released_holder_takes_the_lock_without_listing(
    server: RunningServer,
) -> None:
    """a holds, b waits on a, c waits on b and listed [a, b, c]. When b has held and released
    the lock, c knows a is gone too (b waited for it) and needs no listing to take the lock."""
    path = "/locks/handoff"
    async with clients(server.address, 3) as (a, b, c):
        held_a = await Lock(a, path).acquire()
        counting = CountingClient(c)
        lock_c = Lock(counting, path)  # type: ignore[arg-type]
        got_b: list[Held] = []
        got_c: list[Held] = []
        async with trio.open_nursery() as nursery:

            async def take(lock: Lock, into: list[Held]) -> None:
                into.append(await lock.acquire())

            nursery.start_soon(take, Lock(b, path), got_b)
            await wait_until(lambda: _count(a, path, 2), what="b to queue")
            nursery.start_soon(take, lock_c, got_c)
            await wait_until(lambda: _count(a, path, 3), what="c to queue")
            await settle(a, b, c)
            listed_while_queueing = counting.listings
            await held_a.release()
            await wait_until(lambda: len(got_b) == 1, what="b to take the lock")
            await settle(a, b, c)
            assert got_c == []
            await got_b[0].release()
            await wait_until(lambda: len(got_c) == 1, what="c to take the lock")
        assert lock_c.wakeups == 1
        assert counting.listings == listed_while_queueing  # the event alone granted it
        assert held_a.token < got_b[0].token < got_c[0].token
        assert await children(a, path) == [got_c[0].name]
        await got_c[0].release()


async def test_a_writer_behind_a_released_reader_still_waits_for_the_readers_ahead(
    server: RunningServer,
) -> None:
    """r1 and r2 hold the read lock, w waits on r2. r2's release says nothing about r1, which
    did not block r2: w must not take the lock until r1 has released it too."""
    path = "/locks/rw-handoff"
    async with clients(server.address, 3) as (r1, r2, w):
        held_1 = await ReadLock(r1, path).acquire()
        held_2 = await ReadLock(r2, path).acquire()
        got: list[Held] = []
        async with trio.open_nursery() as nursery:

            async def take() -> None:
                got.append(await WriteLock(w, path).acquire())

            nursery.start_soon(take)
            await wait_until(lambda: _count(r1, path, 3), what="the writer to queue")
            await held_2.release()
            await wait_until(lambda: _count(r1, path, 2), what="r2's node to go")
            await settle(r1, w)
            assert got == [], "the writer took the lock while a reader held it"
            await held_1.release()
            await wait_until(lambda: len(got) == 1, what="the writer to take the lock")
        assert got[0].token > held_2.token
        await got[0].release()


class RoundTrips:
    """A client that counts its round trips: each request awaited on its own, each pipeline
    batch and each transaction."""

    REQUESTS = frozenset({"create", "get", "exists", "get_children", "set", "delete", "sync"})

    def __init__(self, zk: zkpy.Client) -> None:
        self._zk = zk
        self.count = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._zk, name)
        if name in self.REQUESTS:
            return self._counted(attribute)
        if name in ("pipeline", "transaction"):

            def batch() -> Any:
                made = attribute()
                finish = "execute" if name == "pipeline" else "commit"
                setattr(made, finish, self._counted(getattr(made, finish)))
                return made

            return batch
        return attribute

    def _counted(self, call: Any) -> Any:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await call(*args, **kwargs)

        return counted


async def test_a_contender_queues_in_two_round_trips_and_is_granted_by_the_event(
    server: RunningServer,
) -> None:
    """Queueing behind a holder takes one batch (the create and the listing) and one more
    (the watches on our node and on the one ahead); the release ahead grants the lock with
    no request at all; releasing is one multi. Free, the lock takes the same two batches."""
    path = "/locks/trips"
    async with clients(server.address, 2) as (a, b):
        held_a = await Lock(a, path).acquire()
        counting = RoundTrips(b)
        got: list[Held] = []
        async with trio.open_nursery() as nursery:

            async def take() -> None:
                got.append(await Lock(counting, path).acquire())  # type: ignore[arg-type]

            nursery.start_soon(take)
            await wait_until(lambda: _count(a, path, 2), what="b to queue")
            await settle(a, b)
            assert counting.count == 2
            await held_a.release()
            await wait_until(lambda: len(got) == 1, what="b to take the lock")
        assert counting.count == 2
        await got[0].release()
        assert counting.count == 3
        free = await Lock(counting, path).acquire()  # type: ignore[arg-type]
        assert counting.count == 5
        await free.release()
