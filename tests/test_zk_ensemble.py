"""kazoo against a 3-member ensemble's ZooKeeper ports: when the member it is connected to is
killed, it resumes its session (with its password) on another member, its ephemeral node and
its watch intact; and kazoo's recipes and zkpy's client sharing one scenario."""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

import trio
from kazoo.client import KazooClient
from kazoo.recipe.watchers import DataWatch
from kazoo.retry import KazooRetry

from tests.ensemble_harness import Ensemble, Member, connect_to, poll
from zkpy.core.membership import parse_membership


async def kz(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a (blocking) kazoo method in a worker thread."""
    return await trio.to_thread.run_sync(functools.partial(function, *args, **kwargs))


async def test_kazoo_resumes_its_session_on_another_member(tmp_path: Path) -> None:
    """The members kazoo may move to are those of /zookeeper/config, which names their
    ZooKeeper ports to ZooKeeper's clients."""
    # ticks of 1 s: sessions may last 20 s, room for a kill, a new election and a reconnect
    with Ensemble(tmp_path, zk_ports=True, tick_ms=1000) as ens:
        await ens.start_serving()
        first, *others = ens.voters
        hosts = ",".join(f"127.0.0.1:{m.zk_port}" for m in (first, *others))
        client = KazooClient(hosts=hosts, timeout=15, randomize_hosts=False)
        await kz(client.start, timeout=15)
        try:
            config, _stat = await kz(client.get, "/zookeeper/config")
            shown = {m.id: m.client_port for m in parse_membership(config).members}
            assert shown == {m.id: m.zk_port for m in ens.voters}
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


async def test_a_kazoo_election_seen_and_steered_through_zkpys_client(tmp_path: Path) -> None:
    """Two kazoo workers on different members elect a leader (kazoo's Election) and follow a
    config node (kazoo's DataWatch); a zkpy tool on a third member watches the election with a
    persistent recursive watch and writes the config. The leader steps down, the other takes
    over; then the member the new leader is connected to is killed: it keeps its session and
    its leadership on another member, and still follows the config zkpy writes."""
    with Ensemble(tmp_path, zk_ports=True, tick_ms=1000) as ens:
        leader_member = await ens.start_serving()
        first, second = await ens.followers()

        def hosts(*members: Member) -> str:
            return ",".join(f"127.0.0.1:{m.zk_port}" for m in members)

        workers = {
            "A": KazooClient(hosts=hosts(leader_member), timeout=15),
            "B": KazooClient(
                hosts=hosts(first, leader_member, second), timeout=15, randomize_hosts=False
            ),
        }
        step_down = {name: threading.Event() for name in workers}
        configs: list[bytes] = []
        threads = []
        try:
            for client in workers.values():
                await kz(client.start, timeout=15)
            async with connect_to(second) as zk, zk.watch("/svc", recursive=True) as events:
                await zk.create("/svc/config", b"v1", makepath=True)
                await zk.create("/svc/leader", b"")
                await zk.create("/svc/election", b"")
                await kz(workers["B"].sync, "/svc/config")
                await kz(DataWatch, workers["B"], "/svc/config", lambda d, _s: configs.append(d))

                def lead(name: str) -> None:
                    workers[name].set("/svc/leader", name.encode())
                    step_down[name].wait()

                def campaign(name: str) -> None:
                    workers[name].Election("/svc/election", name).run(lead, name)

                async def leader_is(name: str) -> bool:
                    await zk.sync("/svc/leader")
                    return (await zk.get("/svc/leader"))[0] == name.encode()

                for name in ("A", "B"):
                    thread = threading.Thread(target=campaign, args=(name,), daemon=True)
                    thread.start()
                    threads.append(thread)
                    if name == "A":
                        await poll(lambda: leader_is("A"), timeout=15, what="A to lead")

                async def contenders() -> list[tuple[str, int]]:
                    found = []
                    for child in await zk.get_children("/svc/election"):
                        data, stat = await zk.get(f"/svc/election/{child}")
                        found.append((data.decode(), stat.ephemeral_owner))
                    return sorted(found)

                await poll(lambda: _length_is(contenders, 2), timeout=15, what="two contenders")
                assert await contenders() == [
                    ("A", workers["A"].client_id[0]),
                    ("B", workers["B"].client_id[0]),
                ]

                step_down["A"].set()
                await poll(lambda: leader_is("B"), timeout=15, what="B to take over")
                assert await contenders() == [("B", workers["B"].client_id[0])]
                seen: list[
                    tuple[str, str]
                ] = []  # until B's write to /svc/leader: A's was the first
                while [kind for kind, path in seen if path == "/svc/leader"].count("CHANGED") < 2:
                    event = await events.next_event()
                    seen.append((event.type.name, event.path))
                assert [
                    (kind, path.rsplit("/", 1)[0])
                    for kind, path in seen
                    if path.startswith("/svc/election/")
                ] == [("CREATED", "/svc/election")] * 2 + [("DELETED", "/svc/election")]

                session = workers["B"].client_id
                await first.kill9()  # the member B is connected to
                await zk.set("/svc/config", b"v2")
                await poll(lambda: configs[-1:] == [b"v2"], timeout=30, what="B's DataWatch")
                retry = KazooRetry(max_tries=-1, deadline=30)
                await kz(retry, workers["B"].set, "/svc/leader", b"B again")
                assert workers["B"].client_id == session
                assert await leader_is("B again")
                assert await contenders() == [("B", session[0])]
                assert configs == [b"v1", b"v2"]
        finally:
            for stop in step_down.values():
                stop.set()
            for client in workers.values():
                await kz(client.stop)
                await kz(client.close)
            for thread in threads:
                await trio.to_thread.run_sync(thread.join, 15)


async def _length_is(function: Any, length: int) -> bool:
    return len(await function()) == length
