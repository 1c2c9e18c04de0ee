"""recipes.Cache (a subtree mirrored through a persistent recursive watch) and the data and
children watch helpers."""

from __future__ import annotations

import pytest
import trio

import zkpy
from recipes import Cache, CacheEvent, children_watch, data_watch
from tests.test_recipes_helpers import clients, proxy_to
from zkpy import EventType
from zkpy.errors import SessionExpiredError
from zkpy.testing import RunningServer


async def _tree(zk: zkpy.Client, path: str) -> dict[str, bytes]:
    """What the server holds under `path`, read directly."""
    out: dict[str, bytes] = {}
    try:
        data, _stat = await zk.get(path)
    except zkpy.errors.NoNodeError:
        return out
    out[path] = data
    for name in await zk.get_children(path):
        out.update(await _tree(zk, f"{path}/{name}"))
    return out


def _data(cache: Cache) -> dict[str, bytes]:
    return {path: data for path, (data, _stat) in cache.snapshot().items()}


async def test_cache_mirrors_the_subtree_and_streams_changes(server: RunningServer) -> None:
    async with clients(server.address, 2) as (zk, writer):
        await writer.create("/app/config", b"v1", makepath=True)
        await writer.create("/app/workers/w1", b"", makepath=True)
        async with Cache(zk, "/app") as cache:
            assert cache.ready
            assert _data(cache) == await _tree(writer, "/app")
            assert cache.get_children("/app") == ["config", "workers"]
            assert cache.get_data("/app/config") == b"v1"
            assert "/app/workers/w1" in cache
            changes = cache.changes()
            await writer.set("/app/config", b"v2")
            await writer.create("/app/workers/w2", b"busy")
            await writer.delete("/app/workers/w1")
            seen: list[tuple[EventType, str, bytes]] = []
            with trio.fail_after(10):
                async for event in changes:
                    assert isinstance(event, CacheEvent)
                    seen.append((event.type, event.path, event.data))
                    if len(seen) == 3:
                        break
            assert seen == [
                (EventType.CHANGED, "/app/config", b"v2"),
                (EventType.CREATED, "/app/workers/w2", b"busy"),
                (EventType.DELETED, "/app/workers/w1", b""),
            ]
            assert _data(cache) == await _tree(writer, "/app")
            assert cache.snapshot["/app/config"][1].version == 1  # property form works too
            await writer.delete("/app", recursive=True)
            await cache.wait_until(lambda snapshot: not snapshot)
        assert cache.closed
        rest = [event async for event in changes]  # what was buffered, then the end
        assert {event.type for event in rest} == {EventType.DELETED}
        assert sorted(event.path for event in rest) == [
            "/app",
            "/app/config",
            "/app/workers",
            "/app/workers/w2",
        ]


async def test_cache_started_during_a_burst_of_writes_converges(server: RunningServer) -> None:
    """The watch is set before the first read, so writes racing the initial load are not lost
    and never make the mirror go back."""
    async with clients(server.address, 2) as (zk, writer):
        await writer.ensure_path("/burst")
        done = trio.Event()

        async def write_burst() -> None:
            for i in range(150):
                path = f"/burst/n{i % 10}"
                if i % 3 == 2:
                    try:
                        await writer.delete(path)
                    except zkpy.errors.NoNodeError:
                        pass
                else:
                    try:
                        await writer.create(path, b"%d" % i)
                    except zkpy.errors.NodeExistsError:
                        await writer.set(path, b"%d" % i)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_burst)
            async with Cache(zk, "/burst") as cache:
                await done.wait()
                await zk.sync("/")
                expected = await _tree(writer, "/burst")
                await cache.wait_until(lambda snapshot: _plain(snapshot) == expected)


def _plain(snapshot: dict[str, tuple[bytes, zkpy.Stat]]) -> dict[str, bytes]:
    return {path: data for path, (data, _stat) in snapshot.items()}


async def test_cache_of_a_missing_root_and_reconnection(server: RunningServer) -> None:
    async with (
        proxy_to(server) as proxy,
        zkpy.connect(proxy.address, session_timeout=2) as zk,
        zkpy.connect(server.address) as writer,
    ):
        async with Cache(zk, "/later") as cache:
            assert len(cache) == 0
            await writer.create("/later/a", b"1", makepath=True)
            await cache.wait_until(lambda snapshot: "/later/a" in snapshot)
            async with zk.state_changes() as states:
                proxy.pause()
                proxy.cut()  # changes made while disconnected are replayed on reconnection
                await writer.set("/later/a", b"2")
                await writer.create("/later/b", b"3")
                proxy.resume()
                assert await states.receive() is zkpy.ConnectionState.SUSPENDED
            expected = {"/later": b"", "/later/a": b"2", "/later/b": b"3"}
            await cache.wait_until(lambda snapshot: _plain(snapshot) == expected)


async def test_cache_ends_with_the_session(server: RunningServer) -> None:
    async def close_the_session_under_the_cache(zk: zkpy.Client) -> None:
        async with Cache(zk, "/") as cache:
            assert "/" in cache
            await zk.close()
            await trio.sleep_forever()

    async with zkpy.connect(server.address) as zk:
        with pytest.raises(SessionExpiredError):
            await close_the_session_under_the_cache(zk)


async def test_data_watch_yields_each_state(server: RunningServer) -> None:
    async with clients(server.address, 2) as (zk, writer):
        values = data_watch(zk, "/cfg")
        assert await values.__anext__() is None  # missing
        await writer.create("/cfg", b"a")
        value = await values.__anext__()
        assert value is not None
        assert value[0] == b"a"
        await writer.set("/cfg", b"b")
        value = await values.__anext__()
        assert value is not None
        assert value[0] == b"b"
        assert value[1].version == 1
        await writer.delete("/cfg")
        assert await values.__anext__() is None
        await writer.create("/cfg", b"c")
        seen: list[bytes] = []
        async for value in data_watch(zk, "/cfg"):
            assert value is not None
            seen.append(value[0])
            if value[0] == b"e":
                break
            await writer.set("/cfg", b"d" if value[0] == b"c" else b"e")
        assert seen == [b"c", b"d", b"e"]


async def test_children_watch_yields_each_listing(server: RunningServer) -> None:
    async with clients(server.address, 2) as (zk, writer):
        listings = children_watch(zk, "/kids")
        assert await listings.__anext__() is None
        await writer.create("/kids/b", makepath=True)
        assert await listings.__anext__() == ["b"]
        await writer.create("/kids/a")
        assert await listings.__anext__() == ["a", "b"]
        await writer.set("/kids/a", b"data changes are not child changes")
        await writer.delete("/kids/b")
        assert await listings.__anext__() == ["a"]
