"""A chroot in the connection string ("host:port/app"): every path the client sends is taken
relative to /app and every path it receives is made relative again, for plain calls,
transactions, pipelines, one-shot and persistent watches (across a reconnect), the blocking
client and the recipes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import trio

import recipes
import zkpy
import zkpy.sync
from tests.test_recipes_helpers import proxy_to
from zkpy.client.chroot import Chroot, split_chroot
from zkpy.core.requests import CreateRequest, MultiRequest, SetWatchesRequest
from zkpy.errors import NodeExistsError, NoNodeError, RolledBackError
from zkpy.testing import RunningServer


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def test_the_chroot_is_split_from_the_servers_and_checked() -> None:
    assert split_chroot("h1:2181,h2:2182/app/x") == ("h1:2181,h2:2182", "/app/x")
    assert split_chroot(["h1:2181", "h2:2182/app"]) == ("h1:2181,h2:2182", "/app")
    assert split_chroot("h1:2181") == ("h1:2181", None)
    assert split_chroot("h1:2181/") == ("h1:2181", None)  # the root is no chroot
    for bad in ("h:1/app/", "h:1/a//b", "h:1/a/../b", "h:1/a\x00"):
        with pytest.raises(ValueError, match="bad chroot"):
            split_chroot(bad)
    with pytest.raises(ValueError, match="bad chroot"):
        zkpy.Client("127.0.0.1:2181/app/")


def test_requests_and_replies_are_rewritten() -> None:
    root = Chroot("/app")
    assert root.server_path("/") == "/app"
    assert root.server_path("/a/b") == "/app/a/b"
    assert root.client_path("/app") == "/"
    assert root.client_path("/app/a") == "/a"
    assert root.client_path("/apple") == "/apple"  # not below the chroot: left alone
    sequential_root = CreateRequest("/", b"", (), sequential=True)
    sent = root.outgoing(sequential_root)
    assert isinstance(sent, CreateRequest)
    assert sent.path == "/app/"
    multi = MultiRequest((CreateRequest("/a", b"", ()), CreateRequest("/b", b"", ())))
    sent = root.outgoing(multi)
    assert isinstance(sent, MultiRequest)
    assert [op.path for op in sent.ops] == ["/app/a", "/app/b"]
    watches = root.outgoing(SetWatchesRequest(7, data=("/a",), recursive=("/",)))
    assert watches == SetWatchesRequest(7, data=("/app/a",), recursive=("/app",))
    assert root.incoming_result(multi, ["/app/a", True]) == ["/a", True]


async def test_calls_are_relative_to_the_chroot(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as plain:
        await plain.create("/app")
        async with zkpy.connect(f"{server.address}/app") as zk:
            assert zk.chroot == "/app"
            assert await zk.create("/config", b"v1") == "/config"
            assert await plain.get("/app/config") == await zk.get("/config")
            assert await zk.create("/w-", ephemeral=True, sequential=True) == "/w-0000000001"
            created, stat = await zk.create("/with", b"x", include_data=True)
            assert created == "/with"
            assert stat.data_length == 1
            await zk.ensure_path("/a/b/c")
            assert await plain.exists("/app/a/b/c") is not None
            assert await zk.create("/a/b/c/d", makepath=True) == "/a/b/c/d"
            assert sorted(await zk.get_children("/")) == ["a", "config", "w-0000000001", "with"]
            assert (await zk.exists("/")) == (await plain.exists("/app"))
            assert await zk.sync("/config") == "/config"
            await zk.set("/config", b"v2", version=0)
            await zk.delete("/a", recursive=True)
            assert await plain.exists("/app/a") is None
            with pytest.raises(NoNodeError) as missing:
                await zk.get("/nothing")
            assert missing.value.path == "/nothing"  # the caller's path, not the server's
            assert await plain.get_children("/") == ["app", "zookeeper"]


async def test_a_missing_chroot_is_not_created(server: RunningServer) -> None:
    async with zkpy.connect(f"{server.address}/absent") as zk:
        with pytest.raises(NoNodeError):
            await zk.create("/x")
        assert await zk.exists("/") is None


async def test_transactions_and_pipelines(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as plain:
        await plain.create("/app")
        async with zkpy.connect(f"{server.address}/app") as zk:
            tx = zk.transaction().create("/t", b"1").create("/q-", sequential=True)
            assert await tx.commit() == ["/t", "/q-0000000001"]
            results = await zk.transaction().check("/t", 0).create("/t").commit()
            assert isinstance(results[0], RolledBackError)
            assert isinstance(results[1], NodeExistsError)
            assert results[1].path == "/t"
            pipe = zk.pipeline()
            pipe.create("/p", b"2")
            pipe.get_children("/")
            pipe.get("/p")
            created, children, *rest = await pipe.execute()
            assert created == "/p"
            assert sorted(children) == ["p", "q-0000000001", "t"]
            assert rest[-1][0] == b"2"
            assert await plain.get("/app/p") == rest[-1]


async def test_watches_see_relative_paths_across_a_reconnect(server: RunningServer) -> None:
    async with (
        zkpy.connect(server.address) as plain,
        proxy_to(server) as proxy,
    ):
        await plain.create("/app/config", b"v1", makepath=True)
        async with zkpy.connect(f"{proxy.address}/app", session_timeout=4) as zk:
            future = zkpy.WatchFuture()
            await zk.get("/config", watch=future)
            async with zk.watch("/", recursive=True) as events, zk.state_changes() as states:
                await plain.create("/outside")  # not below the chroot: not seen
                await plain.create("/app/new")
                event = await events.next_event()
                assert (event.type, event.path) == (zkpy.EventType.CREATED, "/new")
                proxy.pause()
                proxy.cut()  # both watches are registered again, chrooted, on reconnecting
                await plain.set("/app/config", b"v2")
                proxy.resume()
                assert await states.receive() is zkpy.ConnectionState.SUSPENDED
                assert await states.receive() is zkpy.ConnectionState.CONNECTED
                event = await events.next_event()
                assert (event.type, event.path) == (zkpy.EventType.CHANGED, "/config")
                assert (await future.wait()).path == "/config"
                await plain.delete("/app/new")
                event = await events.next_event()
                assert (event.type, event.path) == (zkpy.EventType.DELETED, "/new")


async def test_recipes_work_unchanged(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as plain:
        await plain.create("/app")
        async with (
            zkpy.connect(f"{server.address}/app") as zk,
            zkpy.connect(f"{server.address}/app") as other,
        ):
            async with recipes.Lock(zk, "/locks/x") as held:
                (node,) = await plain.get_children("/app/locks/x")
                stat = await plain.exists(f"/app/locks/x/{node}")
                assert stat is not None
                assert held.token == stat.czxid
                contender = recipes.Lock(other, "/locks/x")
                assert not await contender.acquire(blocking=False)
            async with recipes.Party(zk, "/party", b"one"), recipes.Party(other, "/party", b"two"):
                assert sorted(await recipes.Party(zk, "/party").members()) == [b"one", b"two"]
                assert len(await plain.get_children("/app/party")) == 2


async def test_the_blocking_client_takes_a_chroot(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as plain:
        await plain.create("/app")
        zk: zkpy.sync.Client = await in_thread(zkpy.sync.connect, f"{server.address}/app")
        try:

            def use() -> list[str]:
                zk.create("/s", b"1")
                with zk.watch("/s") as events:
                    zk.set("/s", b"2")
                    event = events.next(timeout=5)
                assert event.path == "/s"
                return zk.get_children("/")

            assert await in_thread(use) == ["s"]
            assert (await plain.get("/app/s"))[0] == b"2"
        finally:
            await in_thread(zk.close)
