"""An observer serves reads and receives every write, but does not vote."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.ensemble_harness import Ensemble, connect_to, read_tree
from zkpy.core.errors import ConnectionLossError

NO_QUORUM_WINDOW_S = 3.0


async def test_observer_serves_but_does_not_vote(tmp_path: Path) -> None:
    with Ensemble(tmp_path, members=3, observers=1) as ens:
        ens.start_all()
        await ens.wait_all_serving()
        leader = await ens.leader()
        observer = ens[4]
        status = await observer.status()
        assert status is not None
        assert status["role"] == "observer", status
        assert status["leader"] == leader.id
        roles = sorted([(await m.status() or {}).get("role", "?") for m in ens.voters])
        assert roles == ["follower", "follower", "leader"]

        # Writes through a voter reach the observer; writes through the observer reach the
        # voters; the observer answers reads.
        async with connect_to(leader) as zk:
            await zk.create("/via-leader", b"1")
        async with connect_to(observer) as zk:
            await zk.sync("/")
            assert (await zk.get("/via-leader"))[0] == b"1"
            await zk.create("/via-observer", b"2")
            await zk.set("/via-leader", b"1b")
            assert (await zk.get("/via-leader"))[0] == b"1b"  # reads its own writes
        for member in ens.voters:
            assert await read_tree(member, "/via-observer") == {"/via-observer": b"2"}
            assert await read_tree(member, "/via-leader") == {"/via-leader": b"1b"}
        await ens.wait_converged()

        # Two of the three voters stop: one voter and the observer are still up, which would
        # be a majority of four if the observer counted. It does not: nothing is written.
        stopped = await ens.followers()
        async with connect_to(observer) as zk:
            for member in stopped:
                assert await member.stop() == 0
            attempts: list[str] = []
            successes: list[str] = []
            with trio.move_on_after(NO_QUORUM_WINDOW_S):
                while True:
                    path = f"/no-quorum-{len(attempts)}"
                    attempts.append(path)
                    try:
                        await zk.create(path, b"should not be acknowledged")
                    except ConnectionLossError:
                        continue
                    successes.append(path)
            assert not successes, f"acknowledged without a quorum of voters: {successes}"
            for member in (leader, observer):
                status = await member.status()
                assert status is not None
                assert not status["serving"], status

        # One voter back makes a quorum again; the observer serves and takes writes again.
        stopped[0].start()
        await ens.wait_all_serving()
        await ens.leader()
        async with connect_to(observer) as zk:
            await zk.create("/after", b"quorum again")
        await ens.wait_converged()
        for member in ens.running:
            tree = await read_tree(member, "/")
            assert tree["/after"] == b"quorum again"
            assert tree["/via-observer"] == b"2"
