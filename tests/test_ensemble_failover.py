"""Real member processes: the leader killed mid-stream, and a member rebuilt from nothing."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import trio

from tests.ensemble_harness import Ensemble, connect_to, poll, read_tree
from zkpy.core.errors import ConnectionLossError
from zkpy.server.storage import Storage
from zkpy.testing.ensemble import child_env

FAILOVER_LIMIT_S = 3.0


async def cli_status(address: str) -> dict[str, dict[str, object]]:
    """`zkpy status --json --server ADDRESS`, parsed."""
    result = await trio.run_process(
        [sys.executable, "-m", "zkpy", "status", "--json", "--server", address],
        capture_stdout=True,
        capture_stderr=True,
        env=child_env(),
    )
    parsed: dict[str, dict[str, object]] = json.loads(result.stdout)
    return parsed


@pytest.mark.parametrize(
    "checkpoint_every",
    [20_000, 20],
    ids=["default-checkpoints", "checkpoints-racing-the-failover"],
)
async def test_leader_kill9_mid_stream(tmp_path: Path, checkpoint_every: int) -> None:
    # With checkpoint_every=20 a checkpoint is being written in a worker thread nearly all the
    # time, while epochs are persisted, the old leader is truncated or sent a diff, and appends
    # go on: none of that may wait on, or undo, another.
    with Ensemble(tmp_path, checkpoint_every=checkpoint_every) as ens:
        leader = await ens.start_serving()
        survivors = [m for m in ens.voters if m is not leader]
        async with connect_to(list(ens.members.values())) as zk:
            session = zk.session_id
            await zk.create("/stream", b"")
            await zk.create("/mine", b"ephemeral", ephemeral=True)

            # (when, number, created path, epoch of its zxid)
            acked: list[tuple[float, int, str, int]] = []
            in_doubt: list[int] = []  # ConnectionLoss: may or may not have been applied
            stop = trio.Event()

            async def write_stream() -> None:
                number = 0
                while not stop.is_set():
                    number += 1
                    try:
                        path, stat = await zk.create(
                            "/stream/n-", str(number).encode(), sequential=True, include_data=True
                        )
                    except ConnectionLossError:
                        in_doubt.append(number)
                        continue
                    acked.append((time.monotonic(), number, path, stat.czxid >> 32))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write_stream)
                await poll(lambda: len(acked) >= 30, timeout=10, what="30 writes before the kill")
                old_epoch = acked[-1][3]
                killed_at = await leader.kill9()

                def acked_after_kill() -> int:
                    return sum(1 for _w, _n, _p, epoch in acked if epoch > old_epoch)

                await poll(
                    lambda: acked_after_kill() >= 30,
                    timeout=15,
                    what="30 writes after the kill",
                )
                stop.set()

            # A reply that arrives just after the kill may be for a write committed before it:
            # the failover ends with the first acknowledged write of the new leader's epoch.
            first_after = min(when for when, _n, _p, epoch in acked if epoch > old_epoch)
            failover_s = first_after - killed_at
            print(
                f"\nFAILOVER: leader {leader.id} kill -9 -> first acknowledged write "
                f"{failover_s:.3f} s ({len(acked)} acked, {len(in_doubt)} in doubt)"
            )
            assert failover_s < FAILOVER_LIMIT_S, f"failover took {failover_s:.3f} s"

            # The session survived the failover, and so did its ephemeral.
            assert zk.session_id == session
            assert zk.connected
            stat = await zk.exists("/mine")
            assert stat is not None
            assert stat.ephemeral_owner == session
            new_leader = await ens.leader()
            assert new_leader in survivors

            # Every acknowledged write is on every surviving member (after a sync), once, with
            # its data; anything else there is a write whose outcome the client never learnt.
            expected = {path: str(number).encode() for _w, number, path, _e in acked}
            for member in survivors:
                tree = await read_tree(member, "/stream")
                missing = set(expected) - set(tree)
                assert not missing, f"member {member.id} lost acked writes {sorted(missing)}"
                for path, data in expected.items():
                    assert tree[path] == data, (member.id, path, tree[path])
                extra = {int(tree[p]) for p in tree if p != "/stream" and p not in expected}
                assert extra <= set(in_doubt), (member.id, extra, in_doubt)
                mine = await read_tree(member, "/mine")
                assert mine == {"/mine": b"ephemeral"}, (member.id, mine)

            # The old leader, restarted, catches up: the same last zxid as the others, as
            # `zkpy status` reports it, and the same nodes and data.
            leader.start()
            await leader.wait_serving()
            zxid = await ens.wait_converged()
            statuses = await cli_status(leader.address)
            assert len(statuses) == 3
            assert {s["last_zxid"] for s in statuses.values()} == {zxid}, statuses
            assert sum(1 for s in statuses.values() if s["role"] == "leader") == 1
            trees = {m.id: await read_tree(m, "/stream") for m in ens.members.values()}
            reference = trees[new_leader.id]
            for member_id, tree in trees.items():
                assert tree == reference, f"member {member_id} differs from the leader"
            assert set(expected) <= set(reference)
            assert (await read_tree(leader, "/mine")) == {"/mine": b"ephemeral"}
            assert zk.session_id == session


async def test_wiped_member_is_rebuilt_from_a_snapshot(tmp_path: Path) -> None:
    # The leader keeps 20 log entries; the wiped member misses far more, so it cannot be
    # brought up to date by a diff. No checkpoint is taken by the member itself.
    with Ensemble(tmp_path, sync_history=20, checkpoint_every=1_000_000) as ens:
        leader = await ens.start_serving()
        wiped = (await ens.followers())[0]
        others = [m for m in ens.voters if m is not wiped]
        async with connect_to(leader) as zk:
            await zk.create("/data", b"root")
            for index in range(10):
                await zk.create(f"/data/early-{index}", f"early {index}".encode())
        await ens.wait_converged()

        assert await wiped.stop() == 0
        shutil.rmtree(wiped.data_dir)
        async with connect_to(others) as zk:
            for index in range(60):
                await zk.create(f"/data/late-{index}", f"late {index}".encode())
            for index in range(0, 10, 2):
                await zk.set(f"/data/early-{index}", b"changed")
            for index in range(1, 10, 2):
                await zk.delete(f"/data/early-{index}")
            async with connect_to(others) as owner:
                await owner.create("/data/ephemeral", b"session-owned", ephemeral=True)

                wiped.start()
                await wiped.wait_serving()
                zxid = await ens.wait_converged()
                trees = {m.id: await read_tree(m, "/data") for m in ens.voters}
                assert trees[wiped.id] == trees[leader.id], "the rebuilt member differs"
                assert all(tree == trees[leader.id] for tree in trees.values())
                tree = trees[wiped.id]
                assert len(tree) == 1 + 5 + 60 + 1
                assert tree["/data/early-0"] == b"changed"
                assert "/data/early-1" not in tree
                assert tree["/data/late-59"] == b"late 59"
                assert tree["/data/ephemeral"] == b"session-owned"

        # It got a snapshot: its storage holds a checkpoint although it never took one, and
        # after a restart it recovers the same tree from that snapshot and its log.
        assert await wiped.stop() == 0
        with Storage.open(wiped.data_dir) as storage:
            checkpoint_zxid = storage.load().checkpoint_zxid
        assert 0 < checkpoint_zxid <= zxid
        wiped.start()
        await wiped.wait_serving()
        await ens.wait_converged()
        final = {m.id: await read_tree(m, "/data") for m in ens.voters}
        assert final[wiped.id] == final[leader.id]
        assert "/data/ephemeral" not in final[wiped.id]  # its session was closed meanwhile
