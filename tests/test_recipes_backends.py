"""The recipes and the async client's watches under both event loops: each scenario is written
once with anyio and run by ``anyio.run`` on trio and on asyncio, in a thread beside the trio
test that serves the member."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio
import trustme

import zkpy
from recipes import (
    Barrier,
    Cache,
    Counter,
    DoubleBarrier,
    Election,
    Held,
    Lock,
    Party,
    Queue,
    Semaphore,
)
from tests.conftest import TcpProxy, tcp_proxy
from zkpy import tls
from zkpy.testing import RunningServer, running_server

BACKENDS = ["trio", "asyncio"]


async def on(backend: str, scenario: Callable[[str], Awaitable[Any]], address: str) -> Any:
    """Run ``scenario(address)`` in a new event loop of `backend`, in a worker thread."""
    run = functools.partial(anyio.run, scenario, address, backend=backend)
    return await trio.to_thread.run_sync(run)


async def until(condition: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0) -> None:
    """Poll `condition` (plain or async) until it holds; fail after `timeout` seconds."""
    with anyio.fail_after(timeout):
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await anyio.sleep(0.01)


def which_loop() -> str:
    """The loop the scenario runs on, as the client sees it."""
    return "trio" if trio.lowlevel.in_trio_run() else "asyncio"


async def lock_scenario(address: str) -> None:
    async with zkpy.connect(address) as zk, zkpy.connect(address) as admin:
        # contenders on two clients: one holder at a time, tokens increasing
        inside: list[int] = []
        tokens: list[int] = []

        async def worker(client: zkpy.Client) -> None:
            for _ in range(3):
                async with Lock(client, "/locks/shared") as held:
                    inside.append(1)
                    assert len(inside) == 1
                    tokens.append(held.token)
                    await anyio.lowlevel.checkpoint()
                    inside.pop()

        async with anyio.create_task_group() as tasks:
            for client in (zk, admin, zk, admin):
                tasks.start_soon(worker, client)
        assert len(tokens) == 12
        assert tokens == sorted(tokens)

        # a lock lost under its holder cancels the holder's scope
        body_cancelled = False
        async with Lock(zk, "/locks/lost") as held:
            try:
                await admin.delete(held.path)
                await anyio.sleep_forever()
            finally:
                body_cancelled = True
        assert body_cancelled
        assert held.lost
        assert held.lost_reason == "our lock node was deleted"
        assert held.cancel_scope.cancelled_caught

        # and so does the end of the session
        next_holder: list[Held] = []

        async def take_over() -> None:
            async with Lock(admin, "/locks/session") as held_b:
                next_holder.append(held_b)

        async with anyio.create_task_group() as tasks:
            async with Lock(zk, "/locks/session") as held_a:
                tasks.start_soon(take_over)
                await until(lambda: _count(admin, "/locks/session", 2))
                tasks.start_soon(zk.close)
                await anyio.sleep_forever()
        assert held_a.lost
        assert next_holder[0].token > held_a.token


async def _count(zk: zkpy.Client, path: str, wanted: int) -> bool:
    return len(await zk.get_children(path)) == wanted


async def election_scenario(address: str) -> None:
    async with zkpy.connect(address) as a, zkpy.connect(address) as b:
        first, second = Election(a, "/election", "a"), Election(b, "/election", "b")
        led: list[str] = []

        async def stand(election: Election, name: str) -> None:
            async with election.campaign():
                led.append(name)

        async with first.campaign() as held:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(stand, second, "b")
                await until(lambda: _count(a, "/election", 2))
                leader = await second.leader()
                assert leader is not None
                assert (leader.identifier, leader.token) == (b"a", held.token)
                assert await first.contenders() == [b"a", b"b"]
                assert led == []
                await first.resign()
                await until(lambda: led == ["b"])


async def semaphore_scenario(address: str) -> None:
    async with zkpy.connect(address) as a, zkpy.connect(address) as b:
        holding: list[int] = []
        most = 0

        async def worker(client: zkpy.Client) -> None:
            nonlocal most
            async with Semaphore(client, "/sem", max_leases=2):
                holding.append(1)
                most = max(most, len(holding))
                await until(lambda: most == 2 or len(holding) == 2, timeout=10)
                holding.pop()

        async with anyio.create_task_group() as tasks:
            for client in (a, b, a, b):
                tasks.start_soon(worker, client)
        assert most == 2


async def barrier_scenario(address: str) -> None:
    async with zkpy.connect(address) as a, zkpy.connect(address) as b:
        barrier = Barrier(a, "/barrier")
        assert await barrier.create()
        passed = anyio.Event()

        async def wait_for_it() -> None:
            await Barrier(b, "/barrier").wait()
            passed.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait_for_it)
            with anyio.move_on_after(0.2):
                await passed.wait()
            assert not passed.is_set()
            assert await barrier.remove()
            await passed.wait()

        entered: list[str] = []

        async def participate(client: zkpy.Client, name: str) -> None:
            async with DoubleBarrier(client, "/double", num_clients=2):
                entered.append(name)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(participate, a, "a")
            tasks.start_soon(participate, b, "b")
        assert sorted(entered) == ["a", "b"]


async def queue_and_counter_scenario(address: str) -> None:
    async with zkpy.connect(address) as a, zkpy.connect(address) as b:
        queue = Queue(a, "/queue")
        got: list[bytes] = []

        async def consume() -> None:
            for _ in range(3):
                got.append(await Queue(b, "/queue").get())

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(consume)
            await queue.put(b"1")
            await queue.put_all([b"2", b"3"])
        assert got == [b"1", b"2", b"3"]
        assert await queue.get_nowait() is None

        seen: list[int] = []

        async def follow() -> None:
            async for value in Counter(b, "/counter").changes():
                seen.append(value)
                if value == 20:
                    return

        async def add(client: zkpy.Client) -> None:
            for _ in range(10):
                await Counter(client, "/counter").add(1)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(follow)
            tasks.start_soon(add, a)
            tasks.start_soon(add, b)
        assert await Counter(a, "/counter").get() == 20
        assert seen[-1] == 20
        assert seen == sorted(seen)


async def cache_watch_and_party_scenario(address: str) -> str:
    async with zkpy.connect(address) as zk, zkpy.connect(address) as other:
        await zk.ensure_path("/tree")
        async with Cache(zk, "/tree") as cache:
            changes = cache.changes()
            await other.create("/tree/a", b"1")
            await cache.wait_until(lambda snapshot: "/tree/a" in snapshot)
            event = await changes.receive()
            assert event.path == "/tree/a"
            assert cache.get_data("/tree/a") == b"1"

        future = zkpy.WatchFuture()
        await zk.exists("/tree/b", watch=future)
        async with zk.watch("/tree", recursive=True) as events:
            await other.create("/tree/b")
            await other.set("/tree/a", b"2")
            first, second = await events.next_event(), await events.next_event()
        assert [(first.type, first.path), (second.type, second.path)] == [
            (zkpy.EventType.CREATED, "/tree/b"),
            (zkpy.EventType.CHANGED, "/tree/a"),
        ]
        assert (await future.wait()).type is zkpy.EventType.CREATED
        with pytest.raises(StopAsyncIteration):
            await events.next_event()  # the block ended: so did the stream

        async with Party(zk, "/party", "one") as one, Party(other, "/party", "two"):
            assert sorted(await one.members()) == [b"one", b"two"]
        assert await Party(zk, "/party").members() == []

        async with zk.state_changes() as states:
            await other.close()
            await zk.close()
            assert await states.receive() is zkpy.ConnectionState.LOST
        with pytest.raises(zkpy.errors.SessionExpiredError):
            await zk.get("/tree")  # a closed client says so, on either loop
        return which_loop()


def cut_off(proxy: TcpProxy) -> None:
    """No bytes and no new connections through `proxy` (call on the test's trio thread)."""
    proxy.refusing = True
    proxy.pause()
    proxy.cut()


def let_through(proxy: TcpProxy) -> None:
    proxy.refusing = False
    proxy.resume()


async def reconnect_scenario(address: str, proxy: TcpProxy, token: trio.lowlevel.TrioToken) -> None:
    """A broken connection: the requests in flight fail with ConnectionLossError, the client
    is SUSPENDED, then CONNECTED again through the proxy with the same session, its ephemeral
    and its watch (the event missed meanwhile is replayed)."""
    call = functools.partial(trio.from_thread.run_sync, trio_token=token)
    async with (
        zkpy.connect(address) as other,
        zkpy.connect(proxy.address, session_timeout=4) as zk,
    ):
        await zk.create("/mine", b"", ephemeral=True)
        await zk.ensure_path("/w")
        session = zk.session_id
        async with zk.watch("/w", recursive=True) as events, zk.state_changes() as states:
            await anyio.to_thread.run_sync(call, proxy.pause)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(anyio.to_thread.run_sync, call, proxy.cut)
                with pytest.raises(zkpy.errors.ConnectionLossError):
                    await zk.get("/mine")  # in flight (held by the paused proxy) at the cut
            assert await states.receive() is zkpy.ConnectionState.SUSPENDED
            await other.create("/w/while-away")
            await anyio.to_thread.run_sync(call, proxy.resume)
            assert await states.receive() is zkpy.ConnectionState.CONNECTED
            event = await events.next_event()
            assert (event.type, event.path) == (zkpy.EventType.CREATED, "/w/while-away")
        assert zk.session_id == session
        stat = await other.exists("/mine")
        assert stat is not None
        assert stat.ephemeral_owner == session


async def expiry_scenario(address: str, proxy: TcpProxy, token: trio.lowlevel.TrioToken) -> None:
    """A client with new_session_on_expiry is cut off until its session expires: its lock is
    reported lost (the body cancelled), its party membership comes back under the new session,
    and it goes on working."""

    async def on_test_loop(fn: Callable[[TcpProxy], None]) -> None:
        call = functools.partial(trio.from_thread.run_sync, fn, proxy, trio_token=token)
        await anyio.to_thread.run_sync(call)

    async with (
        zkpy.connect(address, session_timeout=2) as observer,
        zkpy.connect(proxy.address, session_timeout=0.4, new_session_on_expiry=True) as zk,
    ):
        party = Party(zk, "/party", b"me")

        async def member_again() -> bool:
            stat = await observer.exists(party.node_path)
            return stat is not None and stat.ephemeral_owner == zk.session_id != old

        async with party:
            old = zk.session_id
            async with Lock(zk, "/locks/x") as held:
                await on_test_loop(cut_off)
                await anyio.sleep_forever()  # cancelled: the hold goes with the session
            assert held.lost
            assert held.cancel_scope.cancelled_caught
            await until(lambda: _gone(observer, party.node_path))  # the old session expired
            await on_test_loop(let_through)
            await until(member_again)
            assert await observer.get_children("/locks/x") == []  # never taken again
            assert await zk.create("/after", b"x") == "/after"
        assert await Party(observer, "/party").members() == []


async def _gone(zk: zkpy.Client, path: str) -> bool:
    return await zk.exists(path) is None


@pytest.mark.parametrize("backend", BACKENDS)
async def test_locks_and_lost_locks(server: RunningServer, backend: str) -> None:
    await on(backend, lock_scenario, server.address)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_election(server: RunningServer, backend: str) -> None:
    await on(backend, election_scenario, server.address)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_semaphore(server: RunningServer, backend: str) -> None:
    await on(backend, semaphore_scenario, server.address)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_barriers(server: RunningServer, backend: str) -> None:
    await on(backend, barrier_scenario, server.address)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_queue_and_counter(server: RunningServer, backend: str) -> None:
    await on(backend, queue_and_counter_scenario, server.address)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_cache_watches_party_and_closed_client(server: RunningServer, backend: str) -> None:
    assert await on(backend, cache_watch_and_party_scenario, server.address) == backend


@pytest.mark.parametrize("backend", BACKENDS)
async def test_reconnect_keeps_the_session(server: RunningServer, backend: str) -> None:
    token = trio.lowlevel.current_trio_token()
    async with tcp_proxy(server.port) as proxy:
        run = functools.partial(reconnect_scenario, server.address, proxy, token)
        await trio.to_thread.run_sync(functools.partial(anyio.run, run, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
async def test_new_session_after_expiry(server: RunningServer, backend: str) -> None:
    token = trio.lowlevel.current_trio_token()
    async with tcp_proxy(server.port) as proxy:
        run = functools.partial(expiry_scenario, server.address, proxy, token)
        await trio.to_thread.run_sync(functools.partial(anyio.run, run, backend=backend))


async def test_tls_under_asyncio(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    settings = {"tls_cert": str(tmp_path / "server.pem"), "tls_ca": str(tmp_path / "ca.pem")}

    async def scenario(address: str) -> bytes:
        async with zkpy.connect(address, tls=tls.client_context(str(tmp_path / "ca.pem"))) as zk:
            await zk.create("/secure", b"over tls")
            data, _stat = await zk.get("/secure")
        untrusting = tls.client_context(None)
        with pytest.raises((zkpy.errors.ConnectionLossError, ssl.SSLError)):
            async with zkpy.connect(address, tls=untrusting, connect_timeout=1.0):
                pass
        return data

    async with running_server(tmp_path / "data", **settings) as server:
        assert await on("asyncio", scenario, server.address) == b"over tls"


def test_asyncio_run_around_connect_needs_no_trio() -> None:
    """The first thing a new user tries: no server there, so the clear error, not one from
    inside trio."""
    import asyncio

    from zkpy.testing.ports import free_port

    async def main() -> None:
        async with zkpy.connect(f"127.0.0.1:{free_port()}", connect_timeout=0.2):
            pass

    with pytest.raises(zkpy.errors.ConnectionLossError, match="no server reachable"):
        asyncio.run(main())
