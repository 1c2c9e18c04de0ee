"""recipes.Election: one leader at a time, increasing tokens, leader changes, resign, loss."""

from __future__ import annotations

import pytest
import trio

import zkpy
from recipes import AlreadyHeldError, Election, Held, Leader
from tests.conftest import wait_until
from tests.test_recipes_helpers import clients, proxy_to, settle
from zkpy.testing import RunningServer


async def test_one_leader_at_a_time_and_each_new_leader_has_a_larger_token(
    server: RunningServer,
) -> None:
    async with clients(server.address, 4) as (a, b, c, observer):
        leading: list[str] = []
        terms: list[tuple[str, int]] = []
        step_down = {name: trio.Event() for name in "abc"}

        async def candidate(name: str, zk: zkpy.Client) -> None:
            async with Election(zk, "/election/one", identifier=name).campaign() as held:
                leading.append(name)
                assert len(leading) == 1, f"two leaders: {leading}"
                terms.append((name, held.token))
                await step_down[name].wait()
                leading.remove(name)

        seen: list[Leader | None] = []
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for leader in Election(observer, "/election/one").leader_changes():
                    seen.append(leader)

            nursery.start_soon(watch)
            await wait_until(lambda: seen == [None], what="no leader at first")
            for count, (name, zk) in enumerate((("a", a), ("b", b), ("c", c)), start=1):
                nursery.start_soon(candidate, name, zk)
                await wait_until(lambda count=count: _count(observer, "/election/one", count))
            election = Election(observer, "/election/one")
            await wait_until(lambda: len(terms) == 1)
            assert await election.contenders() == [b"a", b"b", b"c"]
            for n, name in enumerate("abc"):
                leader = await election.leader()
                assert leader is not None
                assert leader.identifier == name.encode()
                assert leader.token == terms[-1][1]
                step_down[name].set()  # resign by leaving the block
                if name != "c":
                    await wait_until(lambda n=n: len(terms) == n + 2, what="the next leader")
            await wait_until(lambda: seen[-1] is None, what="the last leader to go")
            nursery.cancel_scope.cancel()
        assert [name for name, _t in terms] == ["a", "b", "c"]
        tokens = [token for _n, token in terms]
        assert tokens == sorted(tokens)
        assert len(set(tokens)) == 3
        leaders = [leader for leader in seen if leader is not None]
        assert [leader.identifier for leader in leaders] == [b"a", b"b", b"c"]
        assert [leader.token for leader in leaders] == tokens
        assert await Election(observer, "/election/one").leader() is None


async def test_await_campaign_then_resign(server: RunningServer) -> None:
    async with clients(server.address, 2) as (a, b):
        first = Election(a, "/election/resign", "first")
        second = Election(b, "/election/resign", "second")
        lead: Held = await first.campaign()
        assert first.leadership is lead
        with pytest.raises(AlreadyHeldError):
            await first.campaign()
        got: list[Held] = []
        async with trio.open_nursery() as nursery:

            async def run_second() -> None:
                got.append(await second.campaign())

            nursery.start_soon(run_second)
            await wait_until(lambda: _count(a, "/election/resign", 2))
            await settle(a, b)
            assert got == []
            await lead.resign()
        assert got[0].token > lead.token
        leader = await first.leader()
        assert leader is not None
        assert leader.identifier == b"second"
        assert leader.session_id == b.session_id
        await second.resign()
        assert await first.leader() is None


async def _count(zk: zkpy.Client, path: str, count: int) -> bool:
    try:
        return len(await zk.get_children(path)) == count
    except zkpy.errors.NoNodeError:
        return count == 0


async def test_run_returns_the_result_as_leader(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        election = Election(zk, "/election/run", "me")

        async def work(x: int) -> int:
            assert election.leadership is not None
            return x * 2

        assert await election.run(work, 21) == 42
        assert await election.leader() is None


async def test_leader_who_loses_its_session_is_cancelled_and_replaced(
    server: RunningServer,
) -> None:
    async with (
        proxy_to(server) as proxy,
        zkpy.connect(proxy.address, session_timeout=1) as a,
        zkpy.connect(server.address) as b,
    ):
        successor: list[Held] = []
        async with trio.open_nursery() as nursery:

            async def stand_b() -> None:
                async with Election(b, "/election/lost", "b").campaign() as held:
                    successor.append(held)
                    await trio.sleep_forever()

            async with Election(a, "/election/lost", "a").campaign() as first:
                nursery.start_soon(stand_b)
                await wait_until(lambda: _count(b, "/election/lost", 2))
                proxy.refusing = True
                proxy.cut()
                await trio.sleep_forever()  # cancelled once a's session must be gone
            assert first.lost
            await wait_until(lambda: len(successor) == 1, what="b to take over")
            assert successor[0].token > first.token
            proxy.refusing = False
            nursery.cancel_scope.cancel()


async def test_leader_changes_are_deduplicated_and_ignore_candidates(
    server: RunningServer,
) -> None:
    async with clients(server.address, 3) as (a, b, observer):
        changes = Election(observer, "/election/dedup").leader_changes()
        assert await changes.__anext__() is None
        lead = await Election(a, "/election/dedup", "a").campaign()
        first = await changes.__anext__()
        assert first is not None
        assert first.identifier == b"a"
        got: list[Held] = []
        async with trio.open_nursery() as nursery:

            async def stand_b() -> None:
                got.append(await Election(b, "/election/dedup", "b").campaign())

            nursery.start_soon(stand_b)
            await wait_until(lambda: _count(observer, "/election/dedup", 2))
            await lead.resign()
            second = await changes.__anext__()  # b joining was not a change; a leaving is
            assert second is not None
            assert second.identifier == b"b"
            assert second.token > first.token
        await got[0].resign()
        assert await changes.__anext__() is None
