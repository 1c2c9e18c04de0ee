"""zkpy.sync, the blocking client: the same results and errors as the async client (one suite,
run against both), many threads on one client, watches as blocking iterators and callbacks, and
bad use (inside an event loop, after close, mixed with the async API)."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import recipes
import recipes.sync
import zkpy
import zkpy.sync
from zkpy.errors import (
    BadArgumentsError,
    BadVersionError,
    ConnectionLossError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
    SessionExpiredError,
)
from zkpy.testing import RunningServer
from zkpy.testing.ports import free_port

SYNC_THREADS = ("zkpy.sync loop", "zkpy.sync callbacks")


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a blocking function from a worker thread (the test's loop keeps serving)."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


class AsyncApi:
    """The async client, called as the behaviour suite calls clients."""

    def __init__(self, zk: zkpy.Client) -> None:
        self.zk = zk

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self.zk, method)(*args, **kwargs)

    async def commit(self, fill: Callable[[Any], object]) -> list[Any]:
        transaction = self.zk.transaction()
        fill(transaction)
        return await transaction.commit()

    async def pipeline(self, fill: Callable[[Any], object], **kwargs: Any) -> list[Any]:
        pipeline = self.zk.pipeline()
        fill(pipeline)
        return await pipeline.execute(**kwargs)


class SyncApi(AsyncApi):
    """The blocking client, each call made from a worker thread."""

    def __init__(self, zk: zkpy.sync.Client) -> None:
        self.zk = zk  # type: ignore[assignment]

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await in_thread(getattr(self.zk, method), *args, **kwargs)

    async def commit(self, fill: Callable[[Any], object]) -> list[Any]:
        transaction = self.zk.transaction()
        fill(transaction)
        results: list[Any] = await in_thread(transaction.commit)
        return results

    async def pipeline(self, fill: Callable[[Any], object], **kwargs: Any) -> list[Any]:
        pipeline = self.zk.pipeline()
        fill(pipeline)
        results: list[Any] = await in_thread(pipeline.execute, **kwargs)
        return results


@asynccontextmanager
async def sync_client(address: str, **options: Any) -> AsyncIterator[zkpy.sync.Client]:
    zk = await in_thread(zkpy.sync.connect, address, **options)
    try:
        yield zk
    finally:
        await in_thread(zk.close)


@asynccontextmanager
async def api(kind: str, address: str) -> AsyncIterator[AsyncApi]:
    if kind == "async":
        async with zkpy.connect(address) as zk:
            yield AsyncApi(zk)
    else:
        async with sync_client(address) as szk:
            yield SyncApi(szk)


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_same_results_and_errors(server: RunningServer, kind: str) -> None:
    async with api(kind, server.address) as zk:
        assert await zk.call("create", "/app/config", b"v1", makepath=True) == "/app/config"
        path, stat = await zk.call("create", "/app/s-", sequential=True, include_data=True)
        assert path == "/app/s-0000000001"
        assert stat.version == 0
        data, stat = await zk.call("get", "/app/config")
        assert data == b"v1"
        assert stat.version == 0
        assert (await zk.call("set", "/app/config", b"v2", version=0)).version == 1
        with pytest.raises(BadVersionError):
            await zk.call("set", "/app/config", b"v3", version=0)
        with pytest.raises(NodeExistsError):
            await zk.call("create", "/app/config")
        with pytest.raises(NoNodeError):
            await zk.call("get", "/nowhere")
        with pytest.raises(NotEmptyError):
            await zk.call("delete", "/app")
        with pytest.raises(BadArgumentsError):
            await zk.call("create", "no-slash")
        assert await zk.call("exists", "/nowhere") is None
        names, parent = await zk.call("get_children", "/app", include_data=True)
        assert names == ["config", "s-0000000001"]
        assert parent.num_children == 2
        assert await zk.call("sync", "/app") == "/app"
        acl, _stat = await zk.call("get_acl", "/app")
        assert acl == list(zkpy.OPEN_ACL_UNSAFE)

        results = await zk.commit(
            lambda tx: tx.check("/app/config", version=1).create("/app/ready", b"yes")
        )
        assert results == [True, "/app/ready"]
        failed = await zk.commit(lambda tx: tx.create("/app/x").check("/app/config", version=7))
        assert isinstance(failed[0], RolledBackError)
        assert isinstance(failed[1], BadVersionError)

        def fill(p: Any) -> None:
            p.set("/app/config", b"v3")
            p.get("/app/config")
            p.get("/missing")

        first, (data, _), missing = await zk.pipeline(fill, raise_on_error=False)
        assert first.version == 2
        assert data == b"v3"
        assert isinstance(missing, NoNodeError)
        await zk.call("delete", "/app", recursive=True)
        assert await zk.call("exists", "/app") is None


async def test_many_threads_share_one_client(server: RunningServer) -> None:
    async with sync_client(server.address) as zk:
        await in_thread(zk.ensure_path, "/many")
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            try:
                for i in range(25):
                    path = zk.create(f"/many/{n}-{i}", str(i).encode())
                    assert zk.get(path)[0] == str(i).encode()
            except BaseException as error:
                errors.append(error)

        def run_all() -> None:
            threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        await in_thread(run_all)
        assert errors == []
        assert len(await in_thread(zk.get_children, "/many")) == 8 * 25


async def test_watches_block_and_callbacks_may_call_the_client(server: RunningServer) -> None:
    async with sync_client(server.address) as zk, zkpy.connect(server.address) as writer:
        await writer.create("/w/a", b"0", makepath=True)
        seen: list[tuple[bytes, str]] = []
        called = threading.Event()

        def on_change(event: zkpy.WatchedEvent) -> None:
            # runs on the callback thread, which may make blocking calls
            seen.append((zk.get(event.path)[0], threading.current_thread().name))
            called.set()

        def watch_and_read() -> list[zkpy.WatchedEvent]:
            future = zkpy.sync.WatchFuture()
            zk.get("/w/a", watch=on_change)
            zk.exists("/w/a", watch=future)
            events = []
            with zk.watch("/w", recursive=True) as stream:
                trio.from_thread.run(writer.set, "/w/a", b"1")
                trio.from_thread.run(writer.create, "/w/b")
                events += [stream.next(timeout=5), stream.next(timeout=5)]
                assert future.wait(timeout=5).type is zkpy.EventType.CHANGED
            with pytest.raises(StopIteration):
                next(stream)  # the block ended: so did the iteration
            assert called.wait(timeout=5)
            return events

        events = await in_thread(watch_and_read)
        assert [(e.type, e.path) for e in events] == [
            (zkpy.EventType.CHANGED, "/w/a"),
            (zkpy.EventType.CREATED, "/w/b"),
        ]
        assert seen == [(b"1", "zkpy.sync callbacks")]


async def test_listeners_and_close(server: RunningServer) -> None:
    states: list[zkpy.ConnectionState] = []
    zk = await in_thread(zkpy.sync.connect, server.address)
    assert zk.connected
    assert zk.state.name == "CONNECTED"  # (by name: the state changes under mypy's feet below)
    await in_thread(zk.wait_connected, timeout=1)
    await in_thread(zk.add_listener, states.append)
    ephemeral = await in_thread(zk.create, "/e", ephemeral=True)
    await in_thread(zk.close)
    await in_thread(zk.close)  # idempotent
    assert states == [zkpy.ConnectionState.LOST]
    assert zk.state is zkpy.ConnectionState.LOST
    assert not any(t.name in SYNC_THREADS for t in threading.enumerate())
    with pytest.raises(zkpy.sync.ClientClosedError, match="closed"):
        await in_thread(zk.get, "/")
    assert issubclass(zkpy.sync.ClientClosedError, SessionExpiredError)
    async with zkpy.connect(server.address) as other:
        assert await other.exists(ephemeral) is None  # the session was closed, not left


async def test_calls_from_inside_an_event_loop_are_refused(server: RunningServer) -> None:
    async with sync_client(server.address) as zk:
        with pytest.raises(RuntimeError, match="inside a running trio event loop"):
            zk.get("/")

        async def under_asyncio() -> None:
            zk.exists("/")

        with pytest.raises(RuntimeError, match="inside a running asyncio event loop"):
            await in_thread(asyncio.run, under_asyncio())
        with pytest.raises(RuntimeError, match="trio event loop"):
            zkpy.sync.connect(server.address)
        assert await in_thread(zk.exists, "/") is not None  # still fine from a thread


async def test_mixing_sync_and_async_is_a_type_error(server: RunningServer) -> None:
    async with sync_client(server.address) as szk, zkpy.connect(server.address) as azk:
        for recipe in (recipes.Lock, recipes.Queue, recipes.Counter, recipes.Barrier):
            with pytest.raises(TypeError, match=r"recipes\.sync"):
                recipe(szk, "/mixed")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"recipes\.Election"):
            recipes.Election(szk, "/mixed")  # type: ignore[arg-type]
        for blocking in (recipes.sync.Lock, recipes.sync.Queue, recipes.sync.Counter):
            with pytest.raises(TypeError, match=r"zkpy\.sync client"):
                blocking(azk, "/mixed")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"zkpy\.sync\.WatchFuture"):
            await in_thread(szk.get, "/", watch=zkpy.WatchFuture())


def test_no_server_raises_and_leaves_no_thread() -> None:
    with pytest.raises(ConnectionLossError):
        zkpy.sync.connect(f"127.0.0.1:{free_port()}", connect_timeout=0.2)
    assert not any(t.name in SYNC_THREADS for t in threading.enumerate())


def test_a_plain_import_of_zkpy_reaches_sync_and_tls() -> None:
    import subprocess
    import sys

    code = "import zkpy; print(zkpy.sync.connect.__module__, zkpy.tls.__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["zkpy.sync", "zkpy.tls"], done.stderr
