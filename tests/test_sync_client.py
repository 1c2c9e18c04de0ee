"""One behaviour suite, run against the async client under trio and under asyncio and against
zkpy.sync, the blocking client (each call from a worker thread): the same results and errors.
Then the blocking client's own: many threads on one client, watches as blocking iterators and
callbacks, and bad use (inside an event loop, after close, mixed with the async API)."""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
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
KINDS = ["trio", "asyncio", "sync"]  # the async client on each loop, and the blocking one


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


class AsyncioApi(AsyncApi):
    """The async client on an asyncio loop of its own thread (`asyncio_client`)."""

    def __init__(self, zk: zkpy.Client, loop: asyncio.AbstractEventLoop) -> None:
        self.zk = zk
        self.loop = loop

    async def _on_loop(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return await in_thread(future.result)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self._on_loop(getattr(self.zk, method)(*args, **kwargs))

    async def commit(self, fill: Callable[[Any], object]) -> list[Any]:
        transaction = self.zk.transaction()
        fill(transaction)
        results: list[Any] = await self._on_loop(transaction.commit())
        return results

    async def pipeline(self, fill: Callable[[Any], object], **kwargs: Any) -> list[Any]:
        pipeline = self.zk.pipeline()
        fill(pipeline)
        results: list[Any] = await self._on_loop(pipeline.execute(**kwargs))
        return results


@asynccontextmanager
async def asyncio_client(address: str) -> AsyncIterator[AsyncioApi]:
    """`zkpy.connect` held open by a task of an asyncio loop that runs in a thread of its own;
    other tasks of that loop make the calls."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, name="asyncio loop")
    runner.start()
    opened: queue.SimpleQueue[zkpy.Client] = queue.SimpleQueue()
    done = asyncio.Event()

    async def hold() -> None:
        async with zkpy.connect(address) as zk:
            opened.put(zk)
            await done.wait()

    holder = asyncio.run_coroutine_threadsafe(hold(), loop)
    try:
        zk = await in_thread(opened.get, timeout=10)
        yield AsyncioApi(zk, loop)
    finally:
        loop.call_soon_threadsafe(done.set)
        await in_thread(holder.result, 10)
        loop.call_soon_threadsafe(loop.stop)
        await in_thread(runner.join)
        loop.close()


@asynccontextmanager
async def api(kind: str, address: str) -> AsyncIterator[AsyncApi]:
    if kind == "trio":
        async with zkpy.connect(address) as zk:
            yield AsyncApi(zk)
    elif kind == "asyncio":
        async with asyncio_client(address) as azk:
            yield azk
    else:
        async with sync_client(address) as szk:
            yield SyncApi(szk)


@pytest.mark.parametrize("kind", KINDS)
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


@pytest.mark.parametrize("kind", KINDS)
async def test_concurrent_callers_share_one_client(server: RunningServer, kind: str) -> None:
    async with api(kind, server.address) as zk:
        await zk.call("ensure_path", "/many")
        created: list[str] = []

        async def caller(n: int) -> None:
            path = await zk.call("create", f"/many/{n}", str(n).encode())
            data, _stat = await zk.call("get", path)
            assert data == str(n).encode()
            created.append(path)

        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(caller, n)
        assert sorted(created) == sorted(f"/many/{n}" for n in range(20))
        assert len(await zk.call("get_children", "/many")) == 20


@pytest.mark.parametrize("kind", KINDS)
async def test_a_closed_client_says_so(server: RunningServer, kind: str) -> None:
    async with api(kind, server.address) as zk:
        path = await zk.call("create", "/closing", ephemeral=True)
        await zk.call("close")
        await zk.call("close")  # idempotent
        with pytest.raises(SessionExpiredError, match="closed"):
            await zk.call("get", "/")
        assert zk.zk.state is zkpy.ConnectionState.LOST
    async with zkpy.connect(server.address) as other:
        assert await other.exists(path) is None  # the session was closed, not left


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

        async def under_asyncio() -> None:
            with pytest.raises(TypeError, match=r"recipes\.sync"):
                recipes.Semaphore(szk, "/mixed")  # type: ignore[arg-type]

        await in_thread(asyncio.run, under_asyncio())


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


async def test_a_pipelined_read_watches_with_a_callback(server: RunningServer) -> None:
    async with sync_client(server.address) as zk, zkpy.connect(server.address) as writer:
        await writer.create("/pw", b"0")
        fired = threading.Event()
        seen: list[zkpy.WatchedEvent] = []

        def on_change(event: zkpy.WatchedEvent) -> None:
            seen.append(event)
            fired.set()

        def read_then_wait() -> list[Any]:
            with zk.pipeline() as pipe:
                pipe.get("/pw", watch=on_change)
                pipe.create("/pw/c", include_data=True)
            trio.from_thread.run(writer.set, "/pw", b"1")
            assert fired.wait(timeout=5)
            return pipe.results

        (data, _), (created, stat) = await in_thread(read_then_wait)
        assert (data, created, stat.version) == (b"0", "/pw/c", 0)
        assert [(event.type, event.path) for event in seen] == [(zkpy.EventType.CHANGED, "/pw")]
