"""Sessions belong to the ensemble, not to the member a client happens to be connected to."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import trio

from tests.ensemble_harness import Ensemble, Member, connect_to, poll, read_tree
from zkpy.client.client import parse_hosts
from zkpy.testing.ensemble import child_env

VANISHING_CLIENT = """
import sys, trio, zkpy

async def main():
    async with zkpy.connect(sys.argv[1], session_timeout=float(sys.argv[2])) as zk:
        await zk.create("/vanishing", b"mine", ephemeral=True)
        print(f"{zk.session_id:#x}", flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


async def exists_on(member: Member, path: str) -> bool:
    return path in await read_tree(member, path)


async def test_session_moves_between_members_and_ends_everywhere(tmp_path: Path) -> None:
    with Ensemble(tmp_path) as ens:
        leader = await ens.start_serving()
        first, second = await ens.followers()

        async with connect_to(first) as zk:
            session = zk.session_id
            await zk.create("/owned", b"by the session", ephemeral=True)
            for member in ens.voters:
                assert await exists_on(member, "/owned")

            # The client learns every address; then its member goes away cleanly.
            zk.hosts = parse_hosts([first.address, second.address])
            stopped_at = time.monotonic()
            assert await first.stop() == 0
            await poll(
                lambda: zk.connected and zk.server == ("127.0.0.1", second.client_port),
                timeout=zk.session_timeout,
                what="the client to resume its session on the other follower",
            )
            moved_s = time.monotonic() - stopped_at
            print(f"\nsession moved from member {first.id} to {second.id} in {moved_s:.3f} s")
            assert moved_s < zk.session_timeout
            assert zk.session_id == session
            stat = await zk.exists("/owned")
            assert stat is not None
            assert stat.ephemeral_owner == session
            await zk.create("/owned-too", b"", ephemeral=True)

        # Closing the session deletes its ephemerals on every member, including the one that
        # was down meanwhile.
        for member in (second, leader):
            assert not await exists_on(member, "/owned")
            assert not await exists_on(member, "/owned-too")
        first.start()
        await first.wait_serving()
        assert not await exists_on(first, "/owned")
        assert not await exists_on(first, "/owned-too")


async def test_vanished_client_is_expired_by_the_leader(tmp_path: Path) -> None:
    timeout_s = 2.0
    with Ensemble(tmp_path) as ens:
        await ens.start_serving()
        follower = (await ens.followers())[0]
        out = tmp_path / "client.out"
        with open(out, "wb") as sink:
            client = subprocess.Popen(
                [sys.executable, "-c", VANISHING_CLIENT, follower.address, str(timeout_s)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=child_env(),
            )
        try:
            line = await poll(
                lambda: out.read_text().strip(), timeout=15, what="the client's session id"
            )
            session = int(line, 16)
            for member in ens.voters:
                assert await exists_on(member, "/vanishing")

            client.kill()  # gone without a word: no CloseSession, no more pings
            client.wait(timeout=10)
            killed_at = time.monotonic()
            assert await exists_on(ens.voters[0], "/vanishing"), "removed before the timeout"

            async def gone_everywhere() -> bool:
                for member in ens.voters:
                    if await exists_on(member, "/vanishing"):
                        return False
                return True

            await poll(
                gone_everywhere,
                timeout=timeout_s + 4,
                interval=0.05,
                what="the ephemeral of the vanished session to go",
            )
            gone_s = time.monotonic() - killed_at
            print(f"\nsession {session:#x} of a killed client expired after {gone_s:.2f} s")
            # It lived at most one session timeout (plus a tick) past its last ping, and its
            # last ping was at most a third of a timeout before the kill.
            assert timeout_s / 2 <= gone_s <= timeout_s + 2, gone_s

            async def no_sessions_left() -> bool:
                for member in ens.voters:
                    status = await member.status()
                    if status is None or status["sessions"] != 0:
                        return False
                return True

            await poll(no_sessions_left, timeout=5, what="every member to forget the sessions")
        finally:
            if client.poll() is None:
                client.kill()
                client.wait(timeout=10)
            await trio.lowlevel.checkpoint()
