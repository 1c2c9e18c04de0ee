"""recipes.sync: the blocking recipes, driven from threads against an in-process member."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import zkpy
import zkpy.sync
from recipes.errors import AlreadyHeldError, LockLostError, NotHeldError
from recipes.sync import (
    Barrier,
    Counter,
    Election,
    Lock,
    Party,
    PersistentNode,
    Queue,
    ReadWriteLock,
    Semaphore,
    SetPartitioner,
)
from zkpy.testing import RunningServer


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await trio.to_thread.run_sync(functools.partial(fn, *args))


@asynccontextmanager
async def clients(address: str, count: int) -> AsyncIterator[list[zkpy.sync.Client]]:
    made = [await in_thread(zkpy.sync.connect, address) for _ in range(count)]
    try:
        yield made
    finally:
        for zk in made:
            await in_thread(zk.close)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `condition` from a thread until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        threading.Event().wait(0.02)


def run_threads(*targets: Callable[[], object]) -> list[BaseException]:
    """Run each target in a thread of its own; the exceptions they raised."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], object]) -> None:
        try:
            target()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


async def test_lock_is_not_reentrant_per_thread_and_times_out(server: RunningServer) -> None:
    async with clients(server.address, 2) as (a, b):

        def scenario() -> None:
            lock = Lock(a, "/locks/t", identifier="a")
            with lock as held:
                with pytest.raises(AlreadyHeldError):
                    lock.acquire()
                other = Lock(b, "/locks/t", identifier="b")
                assert other.try_acquire() is None
                with pytest.raises(TimeoutError):
                    other.acquire(timeout=0.2)
                assert lock.contenders() == [b"a"]  # the waiter that gave up withdrew
                assert held.is_held()
                assert not held.lost
            assert held.released
            assert not held.lost
            with other as second:
                assert second.token > held.token

        await in_thread(scenario)


async def test_a_lost_lock_is_reported_to_its_thread(server: RunningServer) -> None:
    async with clients(server.address, 1) as (zk,), zkpy.connect(server.address) as other:
        holding = threading.Event()
        found: list[Any] = []

        def hold() -> None:
            with Lock(zk, "/locks/lost") as held:
                found.append(held)
                holding.set()
                assert held.wait_lost(timeout=10)
                with pytest.raises(LockLostError):
                    held.check()
                guarded = held.guarded_transaction().create("/written-under-the-lock")
                with pytest.raises(NotHeldError):
                    held.commit_guarded(guarded)

        def holder() -> None:
            with pytest.raises(LockLostError, match="deleted"):
                hold()  # leaving the block reports the loss

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, holder)
            assert await trio.to_thread.run_sync(holding.wait, 10)
            await other.delete(found[0].path)  # as if its session had expired
        assert found[0].lost
        assert found[0].lost_reason == "our lock node was deleted"
        assert await other.exists("/written-under-the-lock") is None


async def test_election_semaphore_barrier_queue_counter(server: RunningServer) -> None:
    async with clients(server.address, 3) as (a, b, c):

        def election() -> None:
            first, second = Election(a, "/el", "one"), Election(b, "/el", "two")
            changes = first.leader_changes()
            assert next(changes) is None
            with first.campaign() as leadership:
                assert first.leader() == next(changes)
                assert first.leader().identifier == b"one"  # type: ignore[union-attr]
                waiting = threading.Thread(target=second.run, args=(lambda: None,))
                waiting.start()
                wait_for(lambda: first.contenders() == [b"one", b"two"])
            waiting.join()
            assert second.leader() is None
            assert not leadership.lost

        def semaphore() -> None:
            inside, most = [0], [0]
            mutex = threading.Lock()

            def take(zk: zkpy.sync.Client) -> None:
                with Semaphore(zk, "/sem", max_leases=2):
                    with mutex:
                        inside[0] += 1
                        most[0] = max(most[0], inside[0])
                    zk.sync("/")
                    with mutex:
                        inside[0] -= 1

            for _round in range(3):
                assert run_threads(*(functools.partial(take, zk) for zk in (a, b, c))) == []
            assert 1 <= most[0] <= 2

        def barrier_and_queue() -> None:
            barrier = Barrier(a, "/barrier")
            assert barrier.create()
            with pytest.raises(TimeoutError):
                barrier.wait(timeout=0.1)
            assert run_threads(lambda: Barrier(b, "/barrier").wait(), barrier.remove) == []
            queue = Queue(a, "/queue")
            with pytest.raises(TimeoutError):
                queue.get(timeout=0.1)
            taken: list[bytes] = []
            assert (
                run_threads(
                    lambda: taken.append(Queue(b, "/queue").get()), lambda: queue.put(b"job")
                )
                == []
            )
            assert taken == [b"job"]
            assert len(queue) == 0

        def counter() -> None:
            def add(zk: zkpy.sync.Client) -> None:
                shared = Counter(zk, "/counter")
                for _ in range(10):
                    shared += 1

            assert run_threads(*(functools.partial(add, zk) for zk in (a, b, c))) == []
            mine = Counter(a, "/counter")
            assert mine.get() == 30
            assert mine.compare_and_set(30, 0)
            assert mine.value == 0

        for scenario in (election, semaphore, barrier_and_queue, counter):
            await in_thread(scenario)


async def test_readers_share_and_a_writer_waits(server: RunningServer) -> None:
    async with clients(server.address, 3) as (a, b, c):

        def scenario() -> None:
            with ReadWriteLock(a, "/rw").read_lock() as first:
                with ReadWriteLock(b, "/rw").read_lock() as second:
                    assert second.token > first.token
                    writer = ReadWriteLock(c, "/rw").write_lock()
                    assert writer.try_acquire() is None
                    with pytest.raises(AlreadyHeldError):
                        ReadWriteLock(a, "/rw").write_lock().acquire()
            with writer as exclusive:
                assert exclusive.token > second.token

        await in_thread(scenario)


async def test_party_persistent_node_and_partitioner_stay_up_for_the_block(
    server: RunningServer,
) -> None:
    async with clients(server.address, 2) as (one, two):

        def scenario() -> None:
            with Party(one, "/party", b"one") as party:
                with Party(two, "/party", b"two"):
                    assert sorted(party.members()) == [b"one", b"two"]
                    changes = party.changes()
                    assert len(next(changes)) == 2
                assert next(changes) == [b"one"]  # two left with its block
            assert Party(one, "/party").size() == 0

            with PersistentNode(one, "/kept", b"data") as node:
                assert two.get("/kept")[0] == b"data"
                two.delete("/kept")  # deleted under it: made again by the loop's task
                wait_for(lambda: node.created == 2 and two.exists("/kept") is not None)
                node.set_data(b"new")
                assert two.get("/kept")[0] == b"new"
            assert two.exists("/kept") is None

            items = ["a", "b", "c", "d"]
            with SetPartitioner(one, "/split", items, b"one") as first:
                alone = next(first)
                assert alone.items == items
                assert not alone.wait_changed(timeout=0.05)
                with SetPartitioner(two, "/split", items, b"two") as second:
                    assert alone.wait_changed(timeout=10)
                    mine, theirs = next(first), next(second)
                    assert sorted(mine.items + theirs.items) == items
                    assert len(mine.items) == len(theirs.items) == 2
                assert next(first).items == items  # two left: one holds everything again

        await in_thread(scenario)
