"""With one follower of three down, writes through the other follower still commit at once
(its own copy and the leader's are a quorum: the early proposal, the leader's `Logged`, and the
Ack it holds back until its next message to the leader, decision 0038), the leader's clients
see them after a sync and hear their watch events, and the stopped follower catches up."""

from __future__ import annotations

from pathlib import Path

import trio

import zkpy
from tests.ensemble_harness import Ensemble, connect_to, read_tree

WRITES = 30


async def test_writes_through_a_follower_commit_with_the_other_follower_down(
    tmp_path: Path,
) -> None:
    with Ensemble(tmp_path) as ens:
        leader = await ens.start_serving()
        origin, down = await ens.followers()
        async with connect_to(origin) as zk:
            await zk.create("/down", b"")
        await down.kill9()

        async with connect_to(leader) as on_leader, connect_to(origin) as zk:
            await on_leader.sync("/down")
            assert await on_leader.exists("/down") is not None
            fired = zkpy.WatchFuture()
            await on_leader.exists("/down/w0", watch=fired)
            with trio.fail_after(20):
                for n in range(WRITES):
                    await zk.create(f"/down/w{n}", str(n).encode())
                event = await fired.wait()
                await on_leader.sync("/down")
            assert event.type is zkpy.EventType.CREATED
            assert event.path == "/down/w0"
            assert sorted(await on_leader.get_children("/down")) == sorted(
                f"w{n}" for n in range(WRITES)
            )

        down.start()
        await ens.wait_all_serving()
        expected = await read_tree(leader, "/down")
        assert len(expected) == WRITES + 1
        assert await read_tree(down, "/down") == expected
        assert await read_tree(origin, "/down") == expected
