"""Membership changes in a real ensemble: three members become five and go back to three while a
client keeps writing, the new membership survives restarts with the old ensemble file, and the
refusals reach the client as ZooKeeper's errors."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from kazoo.client import KazooClient
from kazoo.security import make_digest_acl_credential

import zkpy
from tests.ensemble_harness import Ensemble, connect_to, poll
from tests.test_zk_ensemble import kz
from zkpy.core.acl import digest_id
from zkpy.core.membership import parse_membership
from zkpy.errors import NewConfigNoQuorumError, NoAuthError
from zkpy.testing.ensemble import child_env

SUPER = ("root", "reconfig-secret")
AS_SUPER = [("digest", f"{SUPER[0]}:{SUPER[1]}")]


def small_config(ensemble: Ensemble, ids: set[int]) -> Path:
    """The ensemble's file listing only `ids`: what the first members start with."""
    everyone = ensemble.members
    ensemble.members = {i: m for i, m in everyone.items() if i in ids}
    try:
        return ensemble.write_config(ensemble.root / "small.toml", ensemble.secret)
    finally:
        ensemble.members = everyone


def member_text(ensemble: Ensemble, member_id: int) -> str:
    member = ensemble[member_id]
    return f"{member_id}=127.0.0.1:{member.client_port}:{member.peer_port}"


async def voters_of(member: zkpy.Client) -> set[int]:
    await member.sync("/")
    data, _stat = await member.get("/zookeeper/config")
    return set(parse_membership(data).voters)


async def start_three_voters(ensemble: Ensemble) -> None:
    """Start members 1-3 of `ensemble` with a file that lists only them, and wait until they
    serve (the other members, if started, join through a reconfig)."""
    small = small_config(ensemble, {1, 2, 3})
    for member_id in (1, 2, 3):
        ensemble[member_id].start(small)
    for member_id in (1, 2, 3):
        await ensemble[member_id].wait_serving()


async def test_three_become_five_and_go_back_to_three_while_writes_flow(
    tmp_path: Path,
) -> None:
    super_digest = digest_id(*SUPER).id
    with Ensemble(tmp_path, members=5, super_digest=super_digest) as ensemble:
        await start_three_voters(ensemble)
        for member_id in (4, 5):  # the new members: their file lists all five
            ensemble[member_id].start()
        old = [ensemble[i] for i in (1, 2, 3)]
        writes: list[float] = []
        changes: list[tuple[str, float, float]] = []
        start = time.monotonic()
        stop = trio.Event()

        async def writer() -> None:
            async with connect_to(old) as zk:
                await zk.create("/w", b"")
                count = 0
                while not stop.is_set():
                    await zk.create(f"/w/n{count}", b"x")
                    writes.append(time.monotonic() - start)
                    count += 1

        async def change(zk: zkpy.Client, what: str, **kw: object) -> None:
            began = time.monotonic() - start
            await zk.reconfig(**kw)  # type: ignore[arg-type]
            changes.append((what, began, time.monotonic() - start))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            async with connect_to(old, auth=AS_SUPER) as zk:
                await poll(lambda: _some(writes, 150), timeout=10, what="writes")
                await change(
                    zk, "add 4, 5", add=[member_text(ensemble, 4), member_text(ensemble, 5)]
                )
                assert await voters_of(zk) == {1, 2, 3, 4, 5}
                await ensemble[4].wait_serving()
                await ensemble[5].wait_serving()
                mark = len(writes)
                await poll(lambda: _some(writes, mark + 150), timeout=10, what="writes")
                await change(zk, "remove 4, 5", remove=[4, 5])
                assert await voters_of(zk) == {1, 2, 3}
                mark = len(writes)
                await poll(lambda: _some(writes, mark + 150), timeout=10, what="writes")
            stop.set()
        timeline = _timeline(writes, changes)
        print(timeline)
        (tmp_path / "timeline.txt").write_text(timeline)
        for what, began, done in changes:
            assert done - began < 10, f"{what} took {done - began:.2f} s"
        assert _longest_gap(writes) < 3.0, timeline

        async def not_serving(member_id: int) -> bool | None:
            status = await ensemble[member_id].status()
            return True if status is not None and not status.get("serving") else None

        await poll(lambda: not_serving(4), timeout=10, what="removed member 4 to stop serving")

        # a restart with the old file: the membership in the data directory wins
        for member_id in (1, 2, 3):
            await ensemble[member_id].stop()
        for member_id in (1, 2, 3):
            ensemble[member_id].start()  # the file that lists all five
        for member_id in (1, 2, 3):
            await ensemble[member_id].wait_serving()
        async with connect_to(old) as zk:
            assert await voters_of(zk) == {1, 2, 3}
            children = await zk.get_children("/w")
            assert len(children) == len(writes), "every acknowledged write is there"


async def _some(writes: list[float], count: int) -> bool | None:
    return True if len(writes) >= count else None


def _longest_gap(writes: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(writes)), default=0.0)


def _timeline(writes: list[float], changes: list[tuple[str, float, float]]) -> str:
    """Writes acknowledged per 100 ms, with each change's start and commit."""
    end = writes[-1] if writes else 0.0
    lines = []
    for tenth in range(int(end * 10) + 1):
        low, high = tenth / 10, (tenth + 1) / 10
        count = sum(1 for w in writes if low <= w < high)
        notes = [f"{what} started" for what, began, _done in changes if low <= began < high]
        notes += [f"{what} committed" for what, _began, done in changes if low <= done < high]
        lines.append(f"{low:6.1f}s {count:4d} {'#' * min(count, 60)} {'; '.join(notes)}")
    lines += [
        f"{what}: started at {began:.3f} s, committed at {done:.3f} s "
        f"({(done - began) * 1e3:.0f} ms)"
        for what, began, done in changes
    ]
    return "\n".join(lines)


async def test_refusals_reach_the_client(tmp_path: Path) -> None:
    super_digest = digest_id(*SUPER).id
    with Ensemble(tmp_path, members=5, super_digest=super_digest) as ensemble:
        await start_three_voters(ensemble)
        old = [ensemble[i] for i in (1, 2, 3)]
        async with connect_to(old) as zk:
            with pytest.raises(NoAuthError):
                await zk.reconfig(add=[member_text(ensemble, 4)])
        async with connect_to(old, auth=AS_SUPER) as zk:
            with pytest.raises(NewConfigNoQuorumError):  # 4 and 5 are not running
                await zk.reconfig(
                    add=[member_text(ensemble, 4), member_text(ensemble, 5)], remove=[3]
                )
            stat = await zk.exists("/zookeeper/config")
            assert stat is not None
            assert stat.mzxid == 0, "nothing was committed: the starting membership still shows"


async def test_kazoo_names_the_whole_new_membership(tmp_path: Path) -> None:
    """ZooKeeper's non-incremental reconfig from kazoo: the members' lines as kazoo reads them
    from /zookeeper/config (with their ZooKeeper ports) plus a new voter, then without it. The
    members listed keep the client ports the membership has for them (their msgpack ports)."""
    super_digest = make_digest_acl_credential(*SUPER)
    with Ensemble(tmp_path, members=4, zk_ports=True, super_digest=super_digest) as ensemble:
        await start_three_voters(ensemble)
        ensemble[4].start()
        client = KazooClient(
            hosts=f"127.0.0.1:{ensemble[1].zk_port}", auth_data=[("digest", ":".join(SUPER))]
        )
        await kz(client.start, timeout=15)
        try:
            config, _stat = await kz(client.get, "/zookeeper/config")
            lines = config.decode().splitlines()[:-1]
            assert [line.rsplit(":", 1)[1] for line in lines] == [
                str(ensemble[i].zk_port) for i in (1, 2, 3)
            ]
            four = ensemble[4]
            joining = f"server.4=127.0.0.1:{four.peer_port}:{four.peer_port};{four.client_port}"
            grown, _stat = await kz(client.reconfig, None, None, ",".join([*lines, joining]))
            assert parse_membership(grown).voters == {1, 2, 3, 4}
            await four.wait_serving()
            shrunk, _stat = await kz(client.reconfig, None, None, "\n".join(lines))
            assert parse_membership(shrunk).voters == {1, 2, 3}
        finally:
            await kz(client.stop)
            await kz(client.close)
        async with connect_to([ensemble[1]]) as zk:
            await zk.sync("/")
            data, _stat = await zk.get("/zookeeper/config")
        ports = {m.id: m.client_port for m in parse_membership(data).members}
        assert ports == {i: ensemble[i].client_port for i in (1, 2, 3)}


async def test_the_command_line_grows_and_shrinks_the_ensemble(tmp_path: Path) -> None:
    super_digest = digest_id(*SUPER).id
    with Ensemble(tmp_path, members=4, super_digest=super_digest) as ensemble:
        await start_three_voters(ensemble)
        ensemble[4].start()
        server = ensemble.addresses([ensemble[i] for i in (1, 2, 3)])
        auth = f"{SUPER[0]}:{SUPER[1]}"

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            command = [sys.executable, "-m", "zkpy", "reconfig", "--server", server, *args]
            return subprocess.run(
                command, capture_output=True, text=True, timeout=60, env=child_env()
            )

        grown = await trio.to_thread.run_sync(
            cli, "--auth", auth, "--add", member_text(ensemble, 4)
        )
        assert grown.returncode == 0, grown.stderr
        assert parse_membership(grown.stdout.encode()).voters == {1, 2, 3, 4}
        await ensemble[4].wait_serving()
        refused = await trio.to_thread.run_sync(cli, "--remove", "4")
        assert refused.returncode == 1
        assert refused.stderr.startswith("zkpy: NoAuthError"), refused.stderr
        usage = await trio.to_thread.run_sync(cli, "--auth", auth)
        assert usage.returncode == 2
        assert "--add or --remove" in usage.stderr
        mixed = await trio.to_thread.run_sync(cli, "--auth", auth, "--remove", "4", "--member", "x")
        assert mixed.returncode == 2
        assert "not both" in mixed.stderr
        shrunk = await trio.to_thread.run_sync(cli, "--auth", auth, "--remove", "4")
        assert shrunk.returncode == 0, shrunk.stderr
        assert parse_membership(shrunk.stdout.encode()).voters == {1, 2, 3}
        members = [arg for i in (1, 2) for arg in ("--member", member_text(ensemble, i))]
        two = await trio.to_thread.run_sync(cli, "--auth", auth, *members)
        assert two.returncode == 0, two.stderr
        assert parse_membership(two.stdout.encode()).voters == {1, 2}
