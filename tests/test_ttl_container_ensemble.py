"""Container and TTL nodes across three real member processes: a follower's client makes them,
the leader reaps them through the log, every member loses them alike, and a watcher on another
follower hears the deletion; a new leader after a failover reaps what is due."""

from __future__ import annotations

from pathlib import Path

import trio

import zkpy
from tests.conftest import wait_until
from tests.ensemble_harness import Ensemble, connect_to
from zkpy import EventType

CHECK_MS = 100


async def test_followers_clients_see_containers_and_ttl_nodes_reaped_on_every_member(
    tmp_path: Path,
) -> None:
    with Ensemble(tmp_path, container_check_interval_ms=CHECK_MS) as ens:
        ens.start_all()
        await ens.wait_all_serving()
        leader = await ens.leader()
        first, second = [m for m in ens.members.values() if m.id != leader.id]
        async with connect_to(first) as writer, connect_to(second) as watcher:
            await writer.create("/jobs", container=True)
            await writer.create("/jobs/a")
            await writer.create("/lease", ttl=200)
            await watcher.sync("/")
            deleted = zkpy.WatchFuture()
            assert await watcher.exists("/jobs", watch=deleted) is not None
            await writer.delete("/jobs/a")
            with trio.fail_after(15):
                event = await deleted.wait()
            assert (event.type, event.path) == (EventType.DELETED, "/jobs")

            async def everywhere_gone() -> bool:
                for member in ens.members.values():
                    async with connect_to(member) as zk:
                        await zk.sync("/")
                        if await zk.exists("/jobs") or await zk.exists("/lease"):
                            return False
                return True

            await wait_until(everywhere_gone, timeout=15, what="reaped on every member")

        await leader.stop()  # the next leader reaps too
        async with connect_to([first, second]) as zk:
            await zk.create("/after", ttl=100)
            await wait_until(
                lambda: _gone(zk, "/after"), timeout=20, what="reaped by the new leader"
            )


async def _gone(zk: zkpy.Client, path: str) -> bool:
    return await zk.exists(path) is None
