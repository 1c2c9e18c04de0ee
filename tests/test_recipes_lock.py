"""recipes.Lock: mutual exclusion, fairness, tokens, no herd, cancellation, connection and
session loss, retry-safe creation, reentrancy, guarded writes."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import trio

import zkpy
from recipes import AlreadyHeldError, Held, Lock, LockLostError, NotHeldError
from tests.conftest import wait_until
from tests.test_recipes_helpers import (
    FlakyClient,
    ReplyDroppingProxy,
    children,
    clients,
    proxy_to,
    settle,
)
from zkpy.errors import NoNodeError, SessionExpiredError
from zkpy.testing import RunningServer, running_server


async def test_many_contenders_exclusive_fair_and_tokens_increase(server: RunningServer) -> None:
    contenders, rounds = 8, 6
    inside = 0
    grants: list[tuple[int, int]] = []  # (token, contender) in the order the lock was held
    async with clients(server.address, contenders) as zks:

        async def contender(n: int, zk: zkpy.Client) -> None:
            nonlocal inside
            lock = Lock(zk, "/locks/shared", identifier=f"c{n}")
            for _ in range(rounds):
                async with lock as held:
                    inside += 1
                    assert inside == 1, "two holders at once"
                    grants.append((held.token, n))
                    assert held.path.startswith("/locks/shared/")
                    await trio.sleep(0)  # let the others run while we hold it
                    await trio.sleep(0)
                    inside -= 1
                assert not held.lost

        async with trio.open_nursery() as nursery:
            for n, zk in enumerate(zks):
                nursery.start_soon(contender, n, zk)

        tokens = [token for token, _n in grants]
        assert len(tokens) == contenders * rounds
        assert all(a < b for a, b in itertools.pairwise(tokens)), tokens
        assert sorted(n for _t, n in grants) == sorted(list(range(contenders)) * rounds)
        assert await children(zks[0], "/locks/shared") == []


async def test_fifo_order_and_one_release_wakes_one_waiter(server: RunningServer) -> None:
    waiters = 5
    async with clients(server.address, waiters + 1) as zks:
        holder_lock = Lock(zks[0], "/locks/fifo")
        held = await holder_lock.acquire()
        locks = [Lock(zk, "/locks/fifo", identifier=f"w{n}") for n, zk in enumerate(zks[1:])]
        order: list[int] = []
        release = [trio.Event() for _ in range(waiters)]

        async def waiter(n: int) -> None:
            async with locks[n]:
                order.append(n)
                await release[n].wait()

        async with trio.open_nursery() as nursery:
            for n in range(waiters):  # queue them one by one: their arrival order is known
                nursery.start_soon(waiter, n)
                await wait_until(lambda n=n: _queued(zks[0], n + 2), what=f"waiter {n} to queue")
            await settle(*zks)
            assert [lock.wakeups for lock in locks] == [0] * waiters
            assert await locks[0].contenders() == [b"", *(f"w{n}".encode() for n in range(5))]

            await held.release()  # one release ...
            await wait_until(lambda: order == [0], what="the first waiter to get the lock")
            await settle(*zks)
            # ... woke exactly one waiter: the others still sleep on their own predecessors.
            assert [lock.wakeups for lock in locks] == [1, 0, 0, 0, 0]
            for n in range(waiters):
                release[n].set()
                await wait_until(lambda n=n: len(order) == min(n + 2, waiters))
        assert order == list(range(waiters))
        assert [lock.wakeups for lock in locks] == [1] * waiters  # one wake-up per hand-off


async def _queued(zk: zkpy.Client, count: int) -> bool:
    return len(await children(zk, "/locks/fifo")) == count


async def test_waiter_gives_up_and_the_queue_goes_on(server: RunningServer) -> None:
    async with clients(server.address, 3) as (a, b, c):
        held = await Lock(a, "/locks/giveup").acquire()
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(Lock(b, "/locks/giveup").acquire)
                await wait_until(lambda: _count(a, "/locks/giveup", 2))
                scope.cancel()  # b gives up waiting: trio cancellation, no timeout argument
        # b's node is gone again, nothing orphaned; c queues behind a and gets the lock.
        assert len(await children(a, "/locks/giveup")) == 1
        got: list[Held] = []
        async with trio.open_nursery() as nursery:

            async def take() -> None:
                got.append(await Lock(c, "/locks/giveup").acquire())

            nursery.start_soon(take)
            await wait_until(lambda: _count(a, "/locks/giveup", 2))
            await held.release()
        assert got[0].token > held.token
        await got[0].release()


async def _count(zk: zkpy.Client, path: str, count: int) -> bool:
    return len(await children(zk, path)) == count


async def test_predecessor_vanishes_while_waiting(server: RunningServer) -> None:
    """a holds, b waits on a, c waits on b. b's session ends: c must wait on a, not acquire."""
    async with clients(server.address, 2) as (a, c):
        lock_a = Lock(a, "/locks/vanish")
        held_a = await lock_a.acquire()
        lock_c = Lock(c, "/locks/vanish")
        got: list[Held] = []
        async with trio.open_nursery() as nursery:
            async with zkpy.connect(server.address) as b:

                async def wait_b() -> None:
                    # The server deletes b's node as it closes b's session: which b hears of
                    # first decides the error.
                    with pytest.raises((SessionExpiredError, LockLostError)):
                        await Lock(b, "/locks/vanish").acquire()

                nursery.start_soon(wait_b)
                await wait_until(lambda: _count(a, "/locks/vanish", 2))

                async def wait_c() -> None:
                    got.append(await lock_c.acquire())

                nursery.start_soon(wait_c)
                await wait_until(lambda: _count(a, "/locks/vanish", 3))
                await b.close()  # b's session ends: its node goes without a release
            await wait_until(lambda: _count(a, "/locks/vanish", 2))
            await settle(a, c)
            assert got == []
            assert lock_c.wakeups == 1  # woken, re-listed, now watches a
            await held_a.release()
            await wait_until(lambda: len(got) == 1)
        assert got[0].token > held_a.token
        await got[0].release()


async def test_try_acquire_and_blocking_false(server: RunningServer) -> None:
    async with clients(server.address, 2) as (a, b):
        first = await Lock(a, "/locks/try").try_acquire()
        assert first is not None
        assert await Lock(b, "/locks/try").try_acquire() is None
        assert await Lock(b, "/locks/try").acquire(blocking=False) is None
        assert len(await children(a, "/locks/try")) == 1  # failed tries leave nothing
        await first.release()
        second = await Lock(b, "/locks/try").try_acquire()
        assert second is not None
        assert second.token > first.token
        await second.release()


async def test_not_reentrant_fails_fast_instead_of_deadlocking(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        lock = Lock(zk, "/locks/reentry")
        async with lock as held:
            with pytest.raises(AlreadyHeldError):
                await lock.acquire()
            with pytest.raises(AlreadyHeldError):  # another object, same path, same task
                await Lock(zk, "/locks/reentry").acquire()
            assert lock.held is held
            assert lock.is_acquired
        assert not lock.is_acquired
        with pytest.raises(NotHeldError):
            await lock.release()
        # Other tasks sharing one Lock object take turns like separate processes.
        inside = 0
        tokens: list[int] = []

        async def task() -> None:
            nonlocal inside
            async with lock as held:
                inside += 1
                assert inside == 1
                tokens.append(held.token)
                await trio.sleep(0)
                inside -= 1

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(task)
        assert tokens == sorted(tokens)
        assert len(set(tokens)) == 4


async def test_retry_safe_create_after_lost_reply(server: RunningServer) -> None:
    """The create is applied but its reply is lost: the node is found again by its uid."""
    async with zkpy.connect(server.address) as zk:
        flaky = FlakyClient(zk)
        flaky.fail("create", applied=True)
        lock = Lock(flaky, "/locks/lostreply")  # type: ignore[arg-type]
        async with lock as held:
            assert flaky.failures == ["create"]
            assert await children(zk, "/locks/lostreply") == [held.name]
        assert await children(zk, "/locks/lostreply") == []

        flaky.fail("create", applied=False)  # never sent: created again, once
        async with lock as held:
            assert await children(zk, "/locks/lostreply") == [held.name]


@pytest.mark.parametrize("applied", [True, False])
async def test_a_lost_batch_of_create_and_listing_leaves_one_node(
    server: RunningServer, applied: bool
) -> None:
    """A contender's create goes out with the listing of the queue in one batch; the batch is
    lost with the connection, after the server applied it or before it was sent. Either way the
    contender ends up with one node, found by its uid or created once, and a correct queue."""
    async with zkpy.connect(server.address) as zk, zkpy.connect(server.address) as other:
        await zk.ensure_path("/locks/lostbatch")
        ahead = await Lock(other, "/locks/lostbatch").acquire()
        flaky = FlakyClient(zk)
        flaky.fail("pipeline", applied=applied)
        got: list[Held] = []
        async with trio.open_nursery() as nursery:

            async def take() -> None:
                got.append(await Lock(flaky, "/locks/lostbatch").acquire())  # type: ignore[arg-type]

            nursery.start_soon(take)
            await wait_until(lambda: _count(other, "/locks/lostbatch", 2), what="the waiter")
            assert flaky.failures == ["pipeline"]
            await ahead.release()
        assert await children(zk, "/locks/lostbatch") == [got[0].name]
        assert got[0].token > ahead.token
        await got[0].release()
        assert await children(zk, "/locks/lostbatch") == []


async def test_connection_loss_during_create_over_the_network(server: RunningServer) -> None:
    """The server applies the create, the reply is dropped and the connection cut: the client
    reconnects (same session) and the lock finds its node instead of orphaning it."""
    async with (
        proxy_to(server, ReplyDroppingProxy) as proxy,
        zkpy.connect(proxy.address, session_timeout=2) as zk,
        zkpy.connect(server.address) as observer,
    ):
        await zk.ensure_path("/locks/netloss")
        proxy.dropping = True
        got: list[Held] = []
        async with trio.open_nursery() as nursery:

            async def take() -> None:
                got.append(await Lock(zk, "/locks/netloss").acquire())

            nursery.start_soon(take)
            await wait_until(lambda: _count(observer, "/locks/netloss", 1), what="the create")
            proxy.dropping = False
            proxy.cut()
        names = await children(observer, "/locks/netloss")
        assert names == [got[0].name]  # one node, ours: found again, not created twice
        stat = await observer.exists(got[0].path)
        assert stat is not None
        assert stat.ephemeral_owner == zk.session_id == got[0].session_id
        await got[0].release()
        assert await children(observer, "/locks/netloss") == []


async def test_session_loss_cancels_the_body_and_the_next_holder_has_a_larger_token(
    server: RunningServer,
) -> None:
    async with (
        proxy_to(server) as proxy,
        zkpy.connect(proxy.address, session_timeout=1) as a,
        zkpy.connect(server.address, session_timeout=2) as b,
    ):
        body_cancelled = False
        next_holder: list[Held] = []
        async with trio.open_nursery() as nursery:

            async def contend_b() -> None:
                async with Lock(b, "/locks/session") as held_b:
                    next_holder.append(held_b)

            async def heal_once_b_holds() -> None:
                await wait_until(lambda: len(next_holder) == 1, what="b to take over")
                proxy.refusing = False  # a comes back and learns its session expired

            async with Lock(a, "/locks/session") as held_a:
                nursery.start_soon(contend_b)
                await wait_until(lambda: _count(b, "/locks/session", 2))
                nursery.start_soon(heal_once_b_holds)
                proxy.refusing = True  # a is cut off: its session expires on the server
                proxy.cut()
                try:
                    await trio.sleep_forever()  # the body: cancelled when the hold is lost
                finally:
                    body_cancelled = True
            assert body_cancelled
            assert held_a.lost
            assert held_a.cancel_scope.cancelled_caught
            await wait_until(lambda: len(next_holder) == 1, what="b to take over")
            assert next_holder[0].token > held_a.token
            await wait_until(lambda: a.state is zkpy.ConnectionState.LOST)
        with pytest.raises(SessionExpiredError):
            await Lock(a, "/locks/session").acquire()


async def test_lost_session_is_felt_at_once_as_cancellation(server: RunningServer) -> None:
    """LOST (here: the session is closed under the holder) cancels the body immediately."""
    async with zkpy.connect(server.address) as zk:
        async with trio.open_nursery() as nursery:
            async with Lock(zk, "/locks/lost") as held:
                nursery.start_soon(zk.close)
                await trio.sleep_forever()
        assert held.lost
        assert held.lost_reason in ("the session was lost", "our lock node was deleted")


async def test_cancel_on_suspend_and_surviving_a_brief_suspension(server: RunningServer) -> None:
    async with (
        proxy_to(server) as proxy,
        zkpy.connect(proxy.address, session_timeout=2) as zk,
        zkpy.connect(server.address) as observer,
    ):
        # Default: a short suspension (reconnected within the session) does not cancel.
        async with Lock(zk, "/locks/suspend") as held:
            async with zk.state_changes() as states:
                proxy.cut()
                assert await states.receive() is zkpy.ConnectionState.SUSPENDED
                assert await states.receive() is zkpy.ConnectionState.CONNECTED
            await trio.lowlevel.checkpoint()
            assert not held.lost
            assert await held.is_held()
        assert not held.cancel_scope.cancelled_caught

        # cancel_on_suspend: the body is cancelled as soon as the connection is suspended.
        async with Lock(zk, "/locks/suspend", cancel_on_suspend=True) as held:
            proxy.cut()
            await trio.sleep_forever()
        assert held.lost
        assert "suspended" in (held.lost_reason or "")
        await wait_until(lambda: _count(observer, "/locks/suspend", 0), what="release")


async def test_lock_node_deleted_under_the_holder(server: RunningServer) -> None:
    async with clients(server.address, 2) as (zk, admin):
        async with Lock(zk, "/locks/deleted") as held:
            await admin.delete(held.path)
            await trio.sleep_forever()
        assert held.lost
        assert held.lost_reason == "our lock node was deleted"

        # Deleted while waiting: the waiter fails with LockLostError.
        blocker = await Lock(admin, "/locks/deleted").acquire()
        async with trio.open_nursery() as nursery:

            async def delete_waiter() -> None:
                await wait_until(lambda: _count(admin, "/locks/deleted", 2))
                (waiter,) = set(await children(admin, "/locks/deleted")) - {blocker.name}
                await admin.delete(f"/locks/deleted/{waiter}")

            nursery.start_soon(delete_waiter)
            with pytest.raises(LockLostError):
                await Lock(zk, "/locks/deleted").acquire()
        await blocker.release()


async def test_guarded_transaction_writes_only_while_held(server: RunningServer) -> None:
    async with clients(server.address, 2) as (zk, other):
        await zk.create("/guarded", b"0")
        lock = Lock(zk, "/locks/guard")
        async with lock as held:
            results = await held.guarded_transaction().set_data("/guarded", b"1").commit()
            assert results[0] is True
            assert isinstance(results[1], zkpy.Stat)
            assert await held.commit_guarded(held.guarded_transaction().create("/made")) == [
                "/made"
            ]
        held = await lock.acquire()  # no body scope this time: we look at what follows
        tx = lock.guarded_transaction()  # the Lock's shortcut for the task's hold
        tx.set_data("/guarded", b"2")
        await other.delete(held.path)  # the lock is lost (as if the session had expired)
        results = await tx.commit()
        assert isinstance(results[0], NoNodeError)
        assert isinstance(results[1], zkpy.errors.ZkError)  # not applied
        with pytest.raises(NotHeldError):
            await held.commit_guarded(held.guarded_transaction().set_data("/guarded", b"3"))
        assert (await zk.get("/guarded"))[0] == b"1"
        await wait_until(lambda: held.lost)
        assert held.cancel_scope.cancel_called
        assert not await held.is_held()
        await held.release()


async def test_tokens_keep_growing_across_a_restart_of_the_server(tmp_path: Path) -> None:
    tokens: list[int] = []
    for _ in range(2):
        async with (
            running_server(tmp_path / "data", tick_ms=100) as member,
            zkpy.connect(member.address) as zk,
        ):
            for _ in range(2):
                async with Lock(zk, "/locks/restart") as held:
                    tokens.append(held.token)
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 4
    assert tokens[2] >> 32 > tokens[1] >> 32  # a new epoch after the restart
