"""recipes.Barrier, DoubleBarrier, Queue, Counter and Party."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import zkpy
from recipes import Barrier, Counter, DoubleBarrier, Party, Queue
from tests.conftest import wait_until
from tests.test_recipes_helpers import FlakyClient, children, clients, settle
from zkpy.testing import RunningServer

# ---- Barrier -------------------------------------------------------------------------------


async def test_barrier_holds_waiters_until_removed(server: RunningServer) -> None:
    async with clients(server.address, 3) as (owner, w1, w2):
        barrier = Barrier(owner, "/barriers/simple")
        await Barrier(w1, "/barriers/simple").wait()  # not up: passes at once
        assert await barrier.create() is True
        assert await barrier.create() is False
        passed: list[str] = []
        async with trio.open_nursery() as nursery:
            for name, zk in (("w1", w1), ("w2", w2)):

                async def wait(name: str = name, zk: zkpy.Client = zk) -> None:
                    await Barrier(zk, "/barriers/simple").wait()
                    passed.append(name)

                nursery.start_soon(wait)
            await settle(owner, w1, w2)
            assert passed == []
            assert await barrier.remove() is True
        assert sorted(passed) == ["w1", "w2"]
        assert await barrier.remove() is False


async def test_barrier_wait_can_be_given_up(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        await Barrier(zk, "/barriers/giveup").create()
        with trio.move_on_after(0.05) as scope:
            await Barrier(zk, "/barriers/giveup").wait()
        assert scope.cancelled_caught


# ---- DoubleBarrier -------------------------------------------------------------------------


async def test_double_barrier_enters_and_leaves_together(server: RunningServer) -> None:
    n = 3
    async with clients(server.address, n) as zks:
        entered: list[int] = []
        left: list[int] = []
        finish = [trio.Event() for _ in range(n)]
        barriers = [DoubleBarrier(zks[i], "/barriers/double", n, f"p{i}") for i in range(n)]

        async def participant(i: int) -> None:
            async with barriers[i]:
                entered.append(i)
                await finish[i].wait()
            left.append(i)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(participant, 0)
            nursery.start_soon(participant, 1)
            await wait_until(lambda: _count(zks[0], "/barriers/double", 2))
            await settle(*zks)
            assert entered == []  # two of three: nobody enters yet
            nursery.start_soon(participant, 2)
            await wait_until(lambda: len(entered) == n, what="everyone to enter")
            finish[0].set()
            finish[2].set()
            # Leaving: the lowest participant waits for the highest, the others delete their
            # node and wait for the lowest. So 0 and 2 are done with their part when only 1
            # and (if one of them is the lowest) that one are left.
            lowest = min(range(n), key=lambda i: barriers[i].node_name)
            expected = 1 if lowest == 1 else 2
            await wait_until(lambda: _count(zks[0], "/barriers/double", expected))
            await settle(*zks)
            assert left == []  # nobody leaves while one is still inside
            finish[1].set()
        assert sorted(left) == [0, 1, 2]
        assert await children(zks[0], "/barriers/double") == []


async def _count(zk: zkpy.Client, path: str, count: int) -> bool:
    """Participants only (not the `ready` node)."""
    return len([name for name in await children(zk, path) if name != "ready"]) == count


async def test_double_barrier_participant_that_gives_up_withdraws(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        barrier = DoubleBarrier(zk, "/barriers/withdraw", 2)
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(barrier.enter)
                await wait_until(lambda: _count(zk, "/barriers/withdraw", 1))
                scope.cancel()
        assert not barrier.participating
        assert await children(zk, "/barriers/withdraw") == []


# ---- Queue ---------------------------------------------------------------------------------


async def test_queue_is_fifo_with_priorities(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        queue = Queue(zk, "/queues/fifo")
        assert await queue.get_nowait() is None
        for n in range(5):
            await queue.put(f"item-{n}".encode())
        await queue.put(b"urgent", priority=1)
        assert await queue.put_all([b"bulk-0", b"bulk-1"], priority=200)
        assert await queue.length() == 8
        assert await queue.peek() == b"urgent"
        taken = [await queue.get() for _ in range(8)]
        assert taken == [b"urgent", *(f"item-{n}".encode() for n in range(5)), b"bulk-0", b"bulk-1"]
        assert await queue.get_nowait() is None
        assert await queue.length() == 0
        with pytest.raises(ValueError, match=r"priority must be within 0\.\.999"):
            await queue.put(b"x", priority=1000)


async def test_queue_many_consumers_take_each_item_exactly_once(server: RunningServer) -> None:
    consumers, items = 5, 60
    async with clients(server.address, consumers + 1) as zks:
        producer = Queue(zks[0], "/queues/many")
        taken: list[tuple[int, bytes]] = []

        async def consume(n: int) -> None:
            async for data in Queue(zks[n + 1], "/queues/many"):
                taken.append((n, data))
                if data == b"stop":
                    return

        async with trio.open_nursery() as nursery:
            for n in range(consumers):
                nursery.start_soon(consume, n)
            await trio.testing.wait_all_tasks_blocked()  # consumers wait on an empty queue
            for i in range(items):
                await producer.put(b"%d" % i)
            for _ in range(consumers):
                await producer.put(b"stop", priority=999)  # after every item
        payloads = [data for _n, data in taken if data != b"stop"]
        assert sorted(payloads, key=int) == [b"%d" % i for i in range(items)]  # once each
        assert len({n for n, _d in taken}) > 1  # the work was shared
        assert await producer.length() == 0
        assert await children(zks[0], "/queues/many") == []  # items only: receipts live apart


async def test_queue_take_survives_a_lost_reply(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        await Queue(zk, "/queues/flaky").put_all([b"one", b"two"])
        flaky = FlakyClient(zk)
        queue = Queue(flaky, "/queues/flaky")  # type: ignore[arg-type]
        flaky.fail("commit", applied=True)  # taken, but the reply is lost
        assert await queue.get() == b"one"  # ... and the receipt says it was ours
        flaky.fail("commit", applied=False)  # never sent: the item is still there
        assert await queue.get() == b"two"
        assert flaky.failures == ["commit", "commit"]
        assert await queue.get_nowait() is None

        flaky.fail("create", applied=True)  # a put whose reply is lost is not repeated
        await queue.put(b"three")
        assert await queue.length() == 1


async def test_queue_get_waits_and_can_be_cancelled(server: RunningServer) -> None:
    async with clients(server.address, 2) as (a, b):
        with trio.move_on_after(0.05):
            await Queue(a, "/queues/wait").get()
        got: list[bytes] = []
        async with trio.open_nursery() as nursery:

            async def get() -> None:
                got.append(await Queue(a, "/queues/wait").get())

            nursery.start_soon(get)
            await trio.testing.wait_all_tasks_blocked()
            await Queue(b, "/queues/wait").put(b"late")
        assert got == [b"late"]


# ---- Counter -------------------------------------------------------------------------------


async def test_counter_concurrent_increments_are_exact(server: RunningServer) -> None:
    writers, each = 6, 15
    async with clients(server.address, writers) as zks:

        async def bump(zk: zkpy.Client) -> None:
            counter = Counter(zk, "/counters/hits")
            for _ in range(each):
                await counter.add(1)

        async with trio.open_nursery() as nursery:
            for zk in zks:
                nursery.start_soon(bump, zk)
        assert await Counter(zks[0], "/counters/hits").get() == writers * each
        assert (await zks[0].get("/counters/hits"))[0] == b"%d" % (writers * each)


async def test_counter_compare_and_set_and_values(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        counter = Counter(zk, "/counters/cas", default=10)
        assert await counter.get() == 10
        assert await counter.add(5) == 15
        assert (counter.pre_value, counter.post_value) == (10, 15)
        assert await counter.decrement(3) == 12
        assert await counter.compare_and_set(11, 0) is False
        assert await counter.compare_and_set(12, 0) is True
        await counter.set(-4)
        assert await counter.get() == -4
        assert (await zk.get("/counters/cas"))[0] == b"-4"
        await zk.delete("/counters/cas")  # a plain node: no receipts under it
        assert await counter.get() == 10  # back to the default


async def test_counter_increment_with_a_lost_reply_counts_once(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        flaky = FlakyClient(zk)
        counter = Counter(flaky, "/counters/flaky")  # type: ignore[arg-type]
        await counter.get()
        flaky.fail("commit", applied=True)
        assert await counter.add(1) == 1  # applied once, not retried into 2
        flaky.fail("commit", applied=False)
        assert await counter.add(1) == 2  # not applied: retried
        assert await Counter(zk, "/counters/flaky").get() == 2


# ---- Party ---------------------------------------------------------------------------------


async def test_party_membership_and_changes(server: RunningServer) -> None:
    async with clients(server.address, 2) as (a, watcher):
        changes = Party(watcher, "/parties/p").changes()
        assert await changes.__anext__() == []
        async with Party(a, "/parties/p", "alice") as alice:
            assert alice.participating
            assert await changes.__anext__() == [b"alice"]
            async with zkpy.connect(server.address) as b:
                await Party(b, "/parties/p", "bob").join()
                assert sorted(await changes.__anext__()) == [b"alice", b"bob"]
                assert await alice.size() == 2
            # bob's session ended: he is gone without leaving
            assert await changes.__anext__() == [b"alice"]
        assert not alice.participating
        assert await changes.__anext__() == []
        assert await Party(watcher, "/parties/p").members() == []
