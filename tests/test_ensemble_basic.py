"""Three real member processes on loopback: election, status, replication and `sync`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

from tests.ensemble_harness import Ensemble, connect_to
from zkpy.testing.ensemble import child_env


async def zkpy_cli(*args: str) -> str:
    """Run `python -m zkpy ARGS...` and return its stdout; fail on a non-zero exit."""
    result = await trio.run_process(
        [sys.executable, "-m", "zkpy", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=child_env(),
    )
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout.decode()


async def test_three_members_elect_one_leader_and_replicate(tmp_path: Path) -> None:
    with Ensemble(tmp_path) as ens:
        ens.start_all()
        await ens.wait_all_serving()
        leader = await ens.leader()
        statuses = await ens.statuses()
        assert all(status["serving"] for status in statuses.values()), statuses
        roles = {member_id: status["role"] for member_id, status in statuses.items()}
        assert sorted(roles.values()) == ["follower", "follower", "leader"], roles
        assert roles[leader.id] == "leader"
        assert {status["epoch"] for status in statuses.values()} == {statuses[leader.id]["epoch"]}
        assert statuses[leader.id]["epoch"] >= 1
        assert all(status["leader"] == leader.id for status in statuses.values()), statuses

        # `zkpy status --server ONE` follows the member list and shows all three with roles.
        one = ens[1]
        table = await zkpy_cli("status", "--server", one.address)
        lines = table.splitlines()
        assert lines[0].split()[:3] == ["member", "id", "role"], table
        rows = {}
        for line in lines[1:]:
            address, member_id, role, epoch, last_zxid, *_rest = line.split()
            rows[address] = (int(member_id), role, int(epoch), int(last_zxid, 16))
        assert set(rows) == {m.address for m in ens.members.values()}, table
        for member in ens.members.values():
            assert rows[member.address][:2] == (member.id, roles[member.id]), table
        as_json = json.loads(await zkpy_cli("status", "--json", "--server", one.address))
        assert {status["server_id"] for status in as_json.values()} == {1, 2, 3}

        # Writes through each member are readable, after a sync, on every other member.
        follower = next(m for m in ens.members.values() if m is not leader)
        for writer in ens.members.values():
            async with connect_to(writer) as zk:
                await zk.create(f"/from-{writer.id}", f"written via {writer.id}".encode())
        for reader in ens.members.values():
            async with connect_to(reader) as zk:
                await zk.sync("/")
                for writer in ens.members.values():
                    data, _stat = await zk.get(f"/from-{writer.id}")
                    assert data == f"written via {writer.id}".encode()

        # `sync` on a follower makes its next read current: a session on the follower reads
        # a value just written through the leader right after its sync, every time.
        async with connect_to(leader) as writer_zk, connect_to(follower) as reader_zk:
            await writer_zk.create("/counter", b"0")
            await reader_zk.sync("/counter")
            for value in range(1, 21):
                stat = await writer_zk.set("/counter", str(value).encode())
                await reader_zk.sync("/counter")
                data, read_stat = await reader_zk.get("/counter")
                assert data == str(value).encode(), f"stale read after sync: {data!r}"
                assert read_stat.mzxid == stat.mzxid
            assert reader_zk.server is not None
            assert reader_zk.server[1] == follower.client_port

        zxid = await ens.wait_converged()
        statuses = await ens.statuses()
        assert {status["last_zxid"] for status in statuses.values()} == {zxid}
        assert (await ens.leader()) is leader


async def test_each_pipelined_write_is_answered_with_the_stat_it_left(tmp_path: Path) -> None:
    """Members apply writes without making Stats; the client's member reads each reply's Stat
    from the node as that write left it, before the next write in the same batch changes it."""
    with Ensemble(tmp_path) as ens:
        ens.start_all()
        await ens.wait_all_serving()
        leader = await ens.leader()
        follower = next(m for m in ens.members.values() if m is not leader)
        async with connect_to(follower) as zk:
            await zk.create("/s", b"")
            pipe = zk.pipeline()
            for index in range(1, 41):
                pipe.set("/s", b"x" * index)
                pipe.create(f"/s/c{index}", b"")
            results = await pipe.execute()
            stats = results[0::2]
            assert [stat.version for stat in stats] == list(range(1, 41))
            assert [stat.data_length for stat in stats] == list(range(1, 41))
            assert [stat.num_children for stat in stats] == list(range(40))
            assert [stat.cversion for stat in stats] == list(range(40))
            mzxids = [stat.mzxid for stat in stats]
            assert mzxids == sorted(set(mzxids))
            _data, final = await zk.get("/s")
            assert final.version == 40
            assert final.num_children == 40
            assert final.mzxid == stats[-1].mzxid
