"""kazoo against a 3-member ensemble's ZooKeeper ports: when the member it is connected to is
killed, it resumes its session (with its password) on another member, its ephemeral node and
its watch intact."""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

import trio
from kazoo.client import KazooClient
from kazoo.retry import KazooRetry

from tests.ensemble_harness import Ensemble, connect_to, poll


async def kz(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a (blocking) kazoo method in a worker thread."""
    return await trio.to_thread.run_sync(functools.partial(function, *args, **kwargs))


async def test_kazoo_resumes_its_session_on_another_member(tmp_path: Path) -> None:
    # ticks of 1 s: sessions may last 20 s, room for a kill, a new election and a reconnect
    with Ensemble(tmp_path, zk_ports=True, tick_ms=1000) as ens:
        await ens.start_serving()
        first, *others = ens.voters
        hosts = ",".join(f"127.0.0.1:{m.zk_port}" for m in (first, *others))
        client = KazooClient(hosts=hosts, timeout=15, randomize_hosts=False)
        await kz(client.start, timeout=15)
        try:
            session = client.client_id
            await kz(client.create, "/mine", b"", ephemeral=True)
            fired = threading.Event()
            await kz(client.get_children, "/", watch=lambda event: fired.set())

            await first.kill9()  # the member kazoo is connected to (the first of its hosts)
            async with connect_to(others) as zk:
                await zk.create("/after-the-kill", b"")
            await poll(fired.is_set, timeout=30, what="the child watch, set before the kill")

            retry = KazooRetry(max_tries=-1, deadline=30)
            stat = await kz(retry, client.exists, "/mine")
            assert client.client_id == session
            assert stat is not None
            assert stat.ephemeralOwner == session[0]
            await kz(retry, client.create, "/resumed", b"")
            async with connect_to(others) as zk:
                assert await zk.exists("/resumed") is not None
        finally:
            await kz(client.stop)
            await kz(client.close)
