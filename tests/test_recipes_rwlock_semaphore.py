"""recipes.ReadWriteLock and recipes.Semaphore."""

from __future__ import annotations

import pytest
import trio

import zkpy
from recipes import AlreadyHeldError, BarrierMismatchError, Held, Lock, ReadWriteLock, Semaphore
from tests.conftest import wait_until
from tests.test_recipes_helpers import FlakyClient, children, clients, settle
from zkpy.testing import RunningServer


async def _count(zk: zkpy.Client, path: str, count: int) -> bool:
    return len(await children(zk, path)) == count


async def test_readers_share_writer_excludes_and_late_readers_queue_behind_writer(
    server: RunningServer,
) -> None:
    async with clients(server.address, 5) as zks:
        r1, r2, w, r3, admin = (ReadWriteLock(zk, "/rw/table") for zk in zks)
        reader1 = await r1.read_lock().acquire()
        reader2 = await r2.read_lock().acquire()  # readers hold together
        assert reader2.token > reader1.token
        events: list[str] = []
        writer_release = trio.Event()
        async with trio.open_nursery() as nursery:

            async def write() -> None:
                async with w.write_lock() as held:
                    events.append("writer in")
                    await writer_release.wait()
                    events.append("writer out")
                assert held.token > reader2.token

            async def late_read() -> None:
                async with r3.read_lock():
                    events.append("late reader in")

            nursery.start_soon(write)
            await wait_until(lambda: _count(zks[4], "/rw/table", 3))
            nursery.start_soon(late_read)  # arrives after the writer: waits for it (fairness)
            await wait_until(lambda: _count(zks[4], "/rw/table", 4))
            await settle(*zks)
            assert events == []
            await reader1.release()
            await settle(*zks)
            assert events == []  # one reader is still in
            await reader2.release()
            await wait_until(lambda: events == ["writer in"])
            await settle(*zks)
            assert events == ["writer in"]
            writer_release.set()
        assert events == ["writer in", "writer out", "late reader in"]
        # A writer waits only on its predecessor; a reader on the nearest writer: no herd.
        assert w.write_lock().wakeups == 1
        assert r3.read_lock().wakeups == 1
        assert await children(admin.read_lock().zk, "/rw/table") == []


async def test_writers_exclude_each_other_and_plain_locks_count_as_writers(
    server: RunningServer,
) -> None:
    async with clients(server.address, 4) as zks:
        inside = 0
        tokens: list[int] = []

        async def writer(zk: zkpy.Client, plain: bool) -> None:
            nonlocal inside
            lock = Lock(zk, "/rw/w") if plain else ReadWriteLock(zk, "/rw/w").write_lock()
            for _ in range(4):
                async with lock as held:
                    inside += 1
                    assert inside == 1
                    tokens.append(held.token)
                    await trio.sleep(0)
                    inside -= 1

        async with trio.open_nursery() as nursery:
            for n, zk in enumerate(zks):
                nursery.start_soon(writer, zk, n % 2 == 0)
        assert tokens == sorted(tokens)
        assert len(set(tokens)) == 16


async def test_upgrade_is_refused_not_deadlocked(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        rw = ReadWriteLock(zk, "/rw/upgrade")
        assert rw.read_lock() is rw.reader
        assert rw.write_lock() is rw.writer
        async with rw.read_lock():
            with pytest.raises(AlreadyHeldError):
                await rw.write_lock().acquire()
        async with rw.write_lock() as held:
            assert held.path.rsplit("/", 1)[1].split("-")[1] == "write"


async def test_semaphore_bounds_holders_and_everyone_gets_a_lease(server: RunningServer) -> None:
    limit, contenders, rounds = 3, 7, 3
    holding = 0
    peak = 0
    served: list[int] = []
    gate = trio.Event()  # holders of the first round stay until the test has looked
    async with clients(server.address, contenders) as zks:

        async def contender(n: int, zk: zkpy.Client) -> None:
            nonlocal holding, peak
            semaphore = Semaphore(zk, "/sem/pool", max_leases=limit, identifier=f"c{n}")
            for _ in range(rounds):
                async with semaphore as held:
                    holding += 1
                    peak = max(peak, holding)
                    assert holding <= limit
                    assert held.path.startswith("/sem/pool/leases/")
                    await gate.wait()
                    await trio.sleep(0)
                    holding -= 1
                served.append(n)

        async with trio.open_nursery() as nursery:
            for n, zk in enumerate(zks):
                nursery.start_soon(contender, n, zk)
            await wait_until(lambda: holding == limit)
            await wait_until(lambda: _count(zks[0], "/sem/pool/lock", contenders - limit))
            await settle(*zks)
            assert holding == limit
            assert peak == limit  # the others wait
            gate.set()
        assert peak == limit
        assert sorted(served) == sorted(list(range(contenders)) * rounds)
        assert await children(zks[0], "/sem/pool/leases") == []
        assert (await zks[0].get("/sem/pool"))[0] == b"3"


async def test_semaphore_release_wakes_one_and_waiter_can_give_up(server: RunningServer) -> None:
    async with clients(server.address, 4) as (a, b, c, d):
        sem_a, sem_b = Semaphore(a, "/sem/two", 2, "a"), Semaphore(b, "/sem/two", 2, "b")
        lease_a = await sem_a.acquire()
        lease_b = await sem_b.acquire()
        assert await Semaphore(c, "/sem/two", 2).try_acquire() is None  # full
        assert sorted(await sem_a.lease_holders()) == [b"a", b"b"]
        sem_c, sem_d = Semaphore(c, "/sem/two", 2, "c"), Semaphore(d, "/sem/two", 2, "d")
        got: list[Held] = []
        async with trio.open_nursery() as nursery:
            give_up = trio.CancelScope()

            async def wait_c() -> None:
                with give_up:
                    got.append(await sem_c.acquire())

            async def wait_d() -> None:
                got.append(await sem_d.acquire())

            nursery.start_soon(wait_c)
            await wait_until(lambda: _count(a, "/sem/two/leases", 3), what="c's lease")
            nursery.start_soon(wait_d)
            await wait_until(lambda: _count(a, "/sem/two/lock", 2), what="d in the queue")
            give_up.cancel()  # c gives up: its lease and queue nodes go, d moves up
            await wait_until(lambda: _count(a, "/sem/two/lock", 1))
            await wait_until(lambda: _count(a, "/sem/two/leases", 3), what="d's lease")
            await settle(a, b, c, d)
            assert got == []
            woken = sem_d.wakeups
            await lease_a.release()
            await wait_until(lambda: len(got) == 1)
            await settle(a, b, c, d)
            assert sem_d.wakeups == woken + 1  # one release woke one waiter
            assert got[0].token > lease_b.token
        assert sorted(await sem_a.lease_holders()) == [b"b", b"d"]
        await lease_b.release()
        await got[0].release()
        assert await children(a, "/sem/two/leases") == []


async def test_semaphore_participants_must_agree_on_max_leases(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        async with Semaphore(zk, "/sem/agree", max_leases=2):
            pass
        with pytest.raises(BarrierMismatchError):
            await Semaphore(zk, "/sem/agree", max_leases=3).acquire()
        with pytest.raises(ValueError, match="max_leases must be at least 1"):
            Semaphore(zk, "/sem/agree", max_leases=0)


async def test_semaphore_lease_is_lost_with_the_session(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as observer:
        async with zkpy.connect(server.address) as zk, trio.open_nursery() as nursery:
            async with Semaphore(zk, "/sem/lost", 2) as held:
                nursery.start_soon(zk.close)
                await trio.sleep_forever()
        assert held.lost
        assert await children(observer, "/sem/lost/leases") == []


@pytest.mark.parametrize("applied", [True, False])
async def test_a_lease_whose_batch_is_lost_is_taken_once(
    server: RunningServer, applied: bool
) -> None:
    """The lease's create and the listing of the leases go in one batch, which is lost with
    the connection (applied by the server or never sent): the lease is found by its uid or
    created once, and the count of leases stays right."""
    async with clients(server.address, 2) as (a, b):
        other = await Semaphore(b, "/sem/lost", 2, "b").acquire()
        flaky = FlakyClient(a)
        flaky.fail("pipeline", applied=applied, after=1)  # the first batch is the queue's
        semaphore = Semaphore(flaky, "/sem/lost", 2, "a")  # type: ignore[arg-type]
        lease = await semaphore.acquire()
        assert flaky.failures == ["pipeline"]
        assert sorted(await semaphore.lease_holders()) == [b"a", b"b"]
        assert await Semaphore(b, "/sem/lost", 2).try_acquire() is None  # two leases: full
        await lease.release()
        await other.release()
        assert await children(a, "/sem/lost/leases") == []
