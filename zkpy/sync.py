"""A blocking zkpy client for threaded code: the async client, run on a trio loop of its own.

    with zkpy.sync.connect("127.0.0.1:2181", session_timeout=10.0) as zk:
        zk.create("/app/config", b"v1", makepath=True)
        data, stat = zk.get("/app/config")
        with zk.watch("/app", recursive=True) as events:
            for event in events:
                ...

`connect()` starts one thread that runs `trio.run` with the async client (`zkpy.connect`) in it;
every method hands its request to that loop (`trio.from_thread.run`) and blocks the calling
thread until the result (or the async client's exception, the very same one) comes back. Many
threads may call at once: each call is a task of its own on the loop, and requests from different
threads are pipelined on the one connection.

State listeners and one-shot watch callbacks run, in order, on a second thread of the client (as
kazoo's do), not on the loop: they may call the client. A `WatchFuture` of this module is thread
safe and is completed directly.

Blocking calls cannot be made from inside an event loop (trio or asyncio): they would stop the
loop they run on. There, use `zkpy.connect`, or call from a worker thread (`trio.to_thread`,
`asyncio.to_thread`). Closing the client ends both threads; `close()` may be called again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import queue
import threading
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import trio

import zkpy
from zkpy.client.client import Client as AsyncClient
from zkpy.client.client import ConnectionState, Pipeline, Transaction
from zkpy.core.errors import SessionExpiredError, ZkError
from zkpy.core.membership import MemberSpec
from zkpy.core.types import ACL, Stat, WatchedEvent
from zkpy.retry import Retry  # `call_sync` is the blocking way to use it

log = logging.getLogger("zkpy.sync")

T = TypeVar("T")
Item = TypeVar("Item")

_END = object()  # the end of a blocking iterator's queue


class ClientClosedError(SessionExpiredError):
    """The `zkpy.sync` client is closed (or was never started): its session is over.

    A `SessionExpiredError`, as a call on a closed async client raises."""


def refuse_inside_event_loop(what: str) -> None:
    """Raise RuntimeError if this thread is running an event loop (trio or asyncio): a blocking
    call made there would stop the very loop it waits for."""
    running = "trio" if trio.lowlevel.in_trio_run() else None
    if running is None:
        try:
            asyncio.get_running_loop()
            running = "asyncio"
        except RuntimeError:
            return
    raise RuntimeError(
        f"{what} blocks, and was called from inside a running {running} event loop, which it "
        "would deadlock: use the async client (zkpy.connect) there, or call from a worker "
        "thread (trio.to_thread.run_sync, asyncio.to_thread)"
    )


class WatchFuture:
    """A one-shot watch a thread can wait for: pass it as ``watch=`` to a read, then `wait()`.

    >>> fut = zkpy.sync.WatchFuture()
    >>> data, stat = zk.get("/config", watch=fut)
    >>> event = fut.wait(timeout=5)
    """

    def __init__(self) -> None:
        self._done = threading.Event()
        self._value: WatchedEvent | None = None
        self._error: ZkError | None = None

    def __call__(self, event: WatchedEvent) -> None:
        """Deliver the event (the first one only: the watch is one-shot)."""
        if not self._done.is_set():
            self._value = event
            self._done.set()

    def fail(self, error: ZkError) -> None:
        """End the wait with `error` (the session is gone, and the watch with it)."""
        if not self._done.is_set():
            self._error = error
            self._done.set()

    @property
    def fired(self) -> bool:
        """Whether the event (or a failure) has come."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> WatchedEvent:
        """The event, once it comes; raises the error if the session was lost first, and
        TimeoutError if nothing came within `timeout` seconds."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"no watch event within {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


class _Callbacks:
    """The client's callback thread: runs listeners and watch callbacks one at a time, in the
    order the loop queued them, so that they may block and call the client."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, callback: Callable[[], object]) -> None:
        """Queue `callback` (from any thread, without blocking)."""
        self._queue.put(callback)

    def _run(self) -> None:
        while (callback := self._queue.get()) is not None:
            try:
                callback()
            except Exception:
                log.exception("zkpy.sync callback failed")

    def stop(self) -> None:
        """Run what is queued, then end the thread (wait for it unless called from it)."""
        self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()


class _ThreadWatch:
    """A one-shot watch callback of the user's, registered with the async client: it hands the
    event (or the failure) to the callback thread. Equal to any other wrapping the same
    callback, so that `remove_watch` finds it."""

    def __init__(self, callback: Callable[[WatchedEvent], object], callbacks: _Callbacks) -> None:
        self.callback = callback
        self._callbacks = callbacks

    def __call__(self, event: WatchedEvent) -> None:
        self._callbacks.submit(functools.partial(self.callback, event))

    def fail(self, error: ZkError) -> None:
        """Pass a failure on to the user's callback, if it takes failures (has ``fail``)."""
        fail = getattr(self.callback, "fail", None)
        if fail is not None:
            self._callbacks.submit(functools.partial(fail, error))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ThreadWatch) and other.callback == self.callback

    def __hash__(self) -> int:
        return hash(self.callback)


class BlockingIterator(Iterator[Item]):
    """The blocking end of an async stream (a persistent watch, state changes) that a task of
    the client's loop reads into a thread-safe queue. ``for item in it`` blocks for each item
    and ends when the stream does; `next(timeout=...)` gives up with TimeoutError."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._ended = False

    def put(self, item: object) -> None:
        """Queue an item, an exception that ends the stream, or the end (from the loop)."""
        self._queue.put(item)

    def __iter__(self) -> BlockingIterator[Item]:
        return self

    def __next__(self) -> Item:
        return self.next()

    def next(self, timeout: float | None = None) -> Item:
        """The next item, waiting up to `timeout` seconds (None: for ever)."""
        if self._ended:
            raise StopIteration
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"nothing came within {timeout} s") from None
        if item is _END:
            self._ended = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        return item  # type: ignore[return-value]

    next_event = next


class Client:
    """A blocking zkpy session for threaded code. Make one with `zkpy.sync.connect(...)` (or
    ``Client(hosts, ...).start()``); the options are `zkpy.connect`'s. See the module docstring.
    """

    def __init__(self, hosts: str | Sequence[str] = "127.0.0.1:2181", **options: Any) -> None:
        self.hosts = hosts
        self.options = options
        self._async: AsyncClient | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._thread: threading.Thread | None = None
        self._callbacks: _Callbacks | None = None
        self._listeners: dict[Callable[[ConnectionState], object], Callable[..., None]] = {}
        self._closed = False
        self._close_lock = threading.Lock()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.state.value
        return f"<zkpy.sync.Client {self.hosts!r} {state}>"

    # ---- the loop thread ---------------------------------------------------------------------

    def start(self) -> Client:
        """Connect: start the loop thread and open the session (raise if no server answers)."""
        refuse_inside_event_loop("zkpy.sync.Client.start()")
        if self._thread is not None or self._closed:
            raise RuntimeError("a zkpy.sync client can be started once")
        started: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        self._callbacks = _Callbacks("zkpy.sync callbacks")
        self._thread = threading.Thread(
            target=trio.run, args=(self._main, started), name="zkpy.sync loop", daemon=True
        )
        self._thread.start()
        error = started.get()
        if error is not None:
            self._closed = True
            self._thread.join()
            self._callbacks.stop()
            raise error
        return self

    async def _main(self, started: queue.SimpleQueue[BaseException | None]) -> None:
        """The loop thread's whole life: the session, and the tasks of watches and recipes."""
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        try:
            async with zkpy.connect(self.hosts, **self.options) as client:
                async with trio.open_nursery() as nursery:
                    self._async, self._nursery = client, nursery
                    started.put(None)
                    await self._stop.wait()
                    nursery.cancel_scope.cancel()
        except BaseException as error:
            if self._async is None:
                started.put(error)
            else:
                self._closed = True
                log.exception("the zkpy.sync client's loop ended")

    def _run(self, afn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``await afn(*args, **kwargs)`` on the loop; block until it is done."""
        token = self._usable()
        try:
            return trio.from_thread.run(functools.partial(afn, *args, **kwargs), trio_token=token)
        except (trio.RunFinishedError, trio.Cancelled):
            raise ClientClosedError("the zkpy.sync client is closed") from None

    def _run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the loop thread (for what must not race the loop)."""
        token = self._usable()
        try:
            return trio.from_thread.run_sync(fn, *args, trio_token=token)
        except trio.RunFinishedError:
            raise ClientClosedError("the zkpy.sync client is closed") from None

    def _usable(self) -> trio.lowlevel.TrioToken:
        refuse_inside_event_loop("a zkpy.sync client call")
        if self._closed or self._token is None:
            raise ClientClosedError("the zkpy.sync client is closed")
        return self._token

    @property
    def async_client(self) -> AsyncClient:
        """The async client underneath (its coroutines run only on this client's loop)."""
        if self._async is None:
            raise ClientClosedError("the zkpy.sync client was never started")
        return self._async

    def run(self, afn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``await afn(*args, **kwargs)`` on this client's loop and return its result: how
        the blocking recipes drive the async ones (with `async_client`)."""
        return self._run(afn, *args, **kwargs)

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` on this client's loop thread and return its result."""
        return self._run_sync(fn, *args)

    async def _start_task(self, fn: Callable[..., Awaitable[object]], *args: Any) -> Any:
        assert self._nursery is not None
        return await self._nursery.start(fn, *args)

    def start_task(self, fn: Callable[..., Awaitable[object]], *args: Any) -> Any:
        """Start ``fn(*args, task_status=...)`` in the loop's nursery (it lives until it returns
        or the client closes); return what it passes to ``task_status.started()``."""
        return self._run(self._start_task, fn, *args)

    def close(self) -> None:
        """Close the session (its ephemerals are deleted at once) and end the client's threads.
        Idempotent; safe from any thread, the callback thread included."""
        refuse_inside_event_loop("zkpy.sync.Client.close()")
        with self._close_lock:
            if self._closed and (self._thread is None or not self._thread.is_alive()):
                return
            self._closed = True
        if self._thread is not None and self._token is not None and self._stop is not None:
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
            self._thread.join()
        if self._callbacks is not None:
            self._callbacks.stop()

    stop = close

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ---- the session -------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """CONNECTING, CONNECTED, SUSPENDED or LOST (LOST once closed)."""
        if self._async is None:
            return ConnectionState.LOST if self._closed else ConnectionState.CONNECTING
        return self._async.state

    @property
    def connected(self) -> bool:
        """Whether requests can be sent now."""
        return not self._closed and self.state is ConnectionState.CONNECTED

    @property
    def session_id(self) -> int:
        """The session's id."""
        return self.async_client.session_id

    @property
    def read_only(self) -> bool:
        """Whether a member without a quorum serves the client read-only now (made with
        ``read_only=True``; see `zkpy.connect`)."""
        return self.async_client.read_only

    @property
    def session_timeout(self) -> float:
        """The negotiated session timeout, in seconds."""
        return self.async_client.session_timeout

    @property
    def closed(self) -> bool:
        """Whether `close()` was called (or the client never started)."""
        return self._closed

    def add_listener(self, listener: Callable[[ConnectionState], object]) -> None:
        """Call `listener(state)` on every state change, on the client's callback thread."""
        callbacks = self._callbacks
        assert callbacks is not None

        def relay(state: ConnectionState) -> None:
            callbacks.submit(functools.partial(listener, state))

        self._listeners[listener] = relay
        self._run_sync(self.async_client.add_listener, relay)

    def remove_listener(self, listener: Callable[[ConnectionState], object]) -> None:
        """Stop calling `listener` (ValueError if it was not added)."""
        relay = self._listeners.pop(listener, None)
        if relay is None:
            raise ValueError(f"{listener!r} is not a listener of this client")
        self._run_sync(self.async_client.remove_listener, relay)

    def wait_connected(self, timeout: float | None = None) -> None:
        """Block until the session is connected (TimeoutError after `timeout` seconds)."""
        self._run(within, timeout, self.async_client.wait_connected)

    @contextmanager
    def state_changes(self) -> Iterator[BlockingIterator[ConnectionState]]:
        """``with zk.state_changes() as states: for state in states: ...``"""
        with self._stream(self.async_client.state_changes) as states:
            yield states

    # ---- requests ----------------------------------------------------------------------------

    def _watch(self, watch: Callable[[WatchedEvent], object] | None) -> Any:
        """The callback to register with the async client for a user's ``watch=``."""
        if watch is None or isinstance(watch, WatchFuture):
            return watch  # thread safe and non-blocking as it is
        if isinstance(watch, zkpy.WatchFuture):
            raise TypeError(
                "zkpy.WatchFuture belongs to the async client: use zkpy.sync.WatchFuture"
            )
        assert self._callbacks is not None
        return _ThreadWatch(watch, self._callbacks)

    @overload
    def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        acl: Sequence[ACL] | None = None,
        ephemeral: bool = False,
        sequential: bool = False,
        container: bool = False,
        ttl: int | None = None,
        makepath: bool = False,
        include_data: Literal[False] = False,
    ) -> str: ...
    @overload
    def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        acl: Sequence[ACL] | None = None,
        ephemeral: bool = False,
        sequential: bool = False,
        container: bool = False,
        ttl: int | None = None,
        makepath: bool = False,
        include_data: Literal[True],
    ) -> tuple[str, Stat]: ...
    @overload
    def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        acl: Sequence[ACL] | None = None,
        ephemeral: bool = False,
        sequential: bool = False,
        container: bool = False,
        ttl: int | None = None,
        makepath: bool = False,
        include_data: bool,
    ) -> str | tuple[str, Stat]: ...

    def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        acl: Sequence[ACL] | None = None,
        ephemeral: bool = False,
        sequential: bool = False,
        container: bool = False,
        ttl: int | None = None,
        makepath: bool = False,
        include_data: bool = False,
    ) -> str | tuple[str, Stat]:
        """Create a znode; its path, or (path, Stat) with `include_data` (`Client.create`)."""
        return self._run(
            self.async_client.create,
            path,
            data,
            acl=acl,
            ephemeral=ephemeral,
            sequential=sequential,
            container=container,
            ttl=ttl,
            makepath=makepath,
            include_data=include_data,
        )

    def ensure_path(self, path: str, *, acl: Sequence[ACL] | None = None) -> None:
        """Create `path` and any missing ancestors (persistent, empty); no error if present."""
        self._run(self.async_client.ensure_path, path, acl=acl)

    def get(
        self, path: str, *, watch: Callable[[WatchedEvent], object] | None = None
    ) -> tuple[bytes, Stat]:
        """The node's data and Stat; `watch` fires once on its next change or deletion."""
        return self._run(self.async_client.get, path, watch=self._watch(watch))

    def exists(
        self, path: str, *, watch: Callable[[WatchedEvent], object] | None = None
    ) -> Stat | None:
        """The node's Stat, or None; `watch` fires once on its creation, change or deletion."""
        return self._run(self.async_client.exists, path, watch=self._watch(watch))

    @overload
    def get_children(
        self,
        path: str,
        *,
        watch: Callable[[WatchedEvent], object] | None = None,
        include_data: Literal[False] = False,
    ) -> list[str]: ...
    @overload
    def get_children(
        self,
        path: str,
        *,
        watch: Callable[[WatchedEvent], object] | None = None,
        include_data: Literal[True],
    ) -> tuple[list[str], Stat]: ...
    @overload
    def get_children(
        self,
        path: str,
        *,
        watch: Callable[[WatchedEvent], object] | None = None,
        include_data: bool,
    ) -> list[str] | tuple[list[str], Stat]: ...

    def get_children(
        self,
        path: str,
        *,
        watch: Callable[[WatchedEvent], object] | None = None,
        include_data: bool = False,
    ) -> list[str] | tuple[list[str], Stat]:
        """The names of `path`'s children, sorted; with `include_data`, (names, parent Stat)."""
        return self._run(
            self.async_client.get_children,
            path,
            watch=self._watch(watch),
            include_data=include_data,
        )

    def set(self, path: str, data: bytes, version: int = -1) -> Stat:
        """Replace the node's data (if its version is `version`, unless -1); its new Stat."""
        return self._run(self.async_client.set, path, data, version)

    set_data = set

    def delete(self, path: str, version: int = -1, *, recursive: bool = False) -> None:
        """Delete a znode; with `recursive`, its whole subtree first (not atomic)."""
        self._run(self.async_client.delete, path, version, recursive=recursive)

    def sync(self, path: str = "/") -> str:
        """Make the next read on this session reflect every write committed before the sync."""
        return self._run(self.async_client.sync, path)

    def get_acl(self, path: str) -> tuple[list[ACL], Stat]:
        """The node's ACL and Stat."""
        return self._run(self.async_client.get_acl, path)

    def set_acl(self, path: str, acl: Sequence[ACL], version: int = -1) -> Stat:
        """Replace the node's ACL (if its ACL version is `version`, unless -1); its new Stat."""
        return self._run(self.async_client.set_acl, path, acl, version)

    def reconfig(
        self,
        add: Iterable[str | MemberSpec] = (),
        remove: Iterable[int] = (),
        from_version: int = -1,
        new_members: Iterable[str | MemberSpec] | None = None,
    ) -> tuple[bytes, Stat]:
        """Change the membership (super user only): see `zkpy.Client.reconfig`."""
        listed = None if new_members is None else list(new_members)
        return self._run(self.async_client.reconfig, list(add), list(remove), from_version, listed)

    def add_auth(self, scheme: str, credential: str) -> None:
        """Authenticate this session (a refusal raises `AuthFailedError` and ends it)."""
        self._run(self.async_client.add_auth, scheme, credential)

    def remove_watch(self, path: str, watch: Callable[[WatchedEvent], object]) -> bool:
        """Remove a one-shot watch left by a read's ``watch=``; True if it had not fired."""
        return self._run(self.async_client.remove_watch, path, self._watch(watch))

    def transaction(self) -> SyncTransaction:
        """A new multi to fill and `commit()` (see `SyncTransaction`)."""
        return SyncTransaction(self, self.async_client.transaction())

    def pipeline(self) -> SyncPipeline:
        """A batch of requests sent together (see `SyncPipeline`)."""
        return SyncPipeline(self, self.async_client.pipeline())

    @contextmanager
    def watch(
        self, path: str, *, recursive: bool = False
    ) -> Iterator[BlockingIterator[WatchedEvent]]:
        """A persistent watch as a blocking iterator of events.

        ``with zk.watch("/app", recursive=True) as events: for event in events: ...``
        The watch is registered when the block starts and removed when it ends; `for` ends
        when the block does (from another thread) or raises if the session is lost.
        """
        with self._stream(
            functools.partial(self.async_client.watch, path, recursive=recursive)
        ) as it:
            yield it

    @contextmanager
    def _stream(
        self, open_stream: Callable[[], AbstractAsyncContextManager[AsyncIterable[Item]]]
    ) -> Iterator[BlockingIterator[Item]]:
        """Run ``async with open_stream() as s: async for item in s`` in a task of the loop that
        feeds a `BlockingIterator`, for the duration of the ``with`` block."""
        iterator: BlockingIterator[Item] = BlockingIterator()
        done = threading.Event()
        scope: trio.CancelScope = self.start_task(_feed, open_stream, iterator, done)
        try:
            yield iterator
        finally:
            try:
                self._run_sync(scope.cancel)
            except ClientClosedError:
                pass
            done.wait()
            iterator.put(_END)


async def _feed(
    open_stream: Callable[[], AbstractAsyncContextManager[AsyncIterable[Any]]],
    iterator: BlockingIterator[Any],
    done: threading.Event,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Copy a stream's items into `iterator` until cancelled; `done` once the stream is closed
    (for a watch: once its removal has been sent)."""
    try:
        with trio.CancelScope() as scope:
            async with open_stream() as stream:
                task_status.started(scope)
                try:
                    async for item in stream:
                        iterator.put(item)
                except ZkError as error:
                    iterator.put(error)
        iterator.put(_END)
    finally:
        done.set()


async def within(timeout: float | None, afn: Callable[[], Awaitable[T]]) -> T:
    """``await afn()``; after `timeout` seconds (None: never) cancel it and raise TimeoutError
    (the builtin, which threaded code expects, rather than trio's TooSlowError)."""
    with trio.move_on_after(math.inf if timeout is None else timeout):
        return await afn()
    raise TimeoutError(f"not done within {timeout} s")


class SyncTransaction:
    """A multi (`zk.transaction()`): queue `create` / `set_data` / `delete` / `check`, then
    `commit()`; ``with zk.transaction() as tx:`` commits when the block ends without error.
    Results are the async `Transaction`'s: one per operation, kazoo style."""

    def __init__(self, client: Client, transaction: Transaction) -> None:
        self._client = client
        self._transaction = transaction

    @property
    def committed(self) -> bool:
        """Whether `commit()` was called."""
        return self._transaction.committed

    @property
    def async_transaction(self) -> Transaction:
        """The async `Transaction` being filled."""
        return self._transaction

    def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        acl: Sequence[ACL] | None = None,
        ephemeral: bool = False,
        sequential: bool = False,
        container: bool = False,
        ttl: int | None = None,
    ) -> SyncTransaction:
        """Add a create (its result: the created path)."""
        self._transaction.create(
            path,
            data,
            acl=acl,
            ephemeral=ephemeral,
            sequential=sequential,
            container=container,
            ttl=ttl,
        )
        return self

    def delete(self, path: str, version: int = -1) -> SyncTransaction:
        """Add a delete (its result: True)."""
        self._transaction.delete(path, version)
        return self

    def set_data(self, path: str, data: bytes, version: int = -1) -> SyncTransaction:
        """Add a set (its result: the node's new Stat)."""
        self._transaction.set_data(path, data, version)
        return self

    set = set_data

    def check(self, path: str, version: int) -> SyncTransaction:
        """Add a check that the node's version is `version` (its result: True)."""
        self._transaction.check(path, version)
        return self

    def commit(self) -> list[Any]:
        """Send the operations as one multi; one result per operation."""
        return self._client.run(self._transaction.commit)

    def __enter__(self) -> SyncTransaction:
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if kind is None and not self.committed:
            self.commit()


class SyncPipeline:
    """A batch (`zk.pipeline()`): each queued call returns the index of its result;
    `execute()` sends them together and returns the results in order (not atomic).
    ``with zk.pipeline() as p:`` executes when the block ends without error; then `p.results`."""

    def __init__(self, client: Client, pipeline: Pipeline) -> None:
        self._client = client
        self._pipeline = pipeline

    def __len__(self) -> int:
        return len(self._pipeline)

    @property
    def results(self) -> list[Any]:
        """The results of the last `execute()`."""
        return self._pipeline.results

    def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        acl: Sequence[ACL] | None = None,
        ephemeral: bool = False,
        sequential: bool = False,
        container: bool = False,
        ttl: int | None = None,
        include_data: bool = False,
    ) -> int:
        """Queue a create; its result is the created path, or (path, Stat) with `include_data`."""
        return self._pipeline.create(
            path,
            data,
            acl=acl,
            ephemeral=ephemeral,
            sequential=sequential,
            container=container,
            ttl=ttl,
            include_data=include_data,
        )

    def get(self, path: str, *, watch: Callable[[WatchedEvent], object] | None = None) -> int:
        """Queue a read of the node's data; its result is (data, Stat)."""
        return self._pipeline.get(path, watch=self._client._watch(watch))

    def exists(self, path: str, *, watch: Callable[[WatchedEvent], object] | None = None) -> int:
        """Queue an exists; its result is the Stat, or None."""
        return self._pipeline.exists(path, watch=self._client._watch(watch))

    def get_children(
        self, path: str, *, watch: Callable[[WatchedEvent], object] | None = None
    ) -> int:
        """Queue a read of the node's children; its result is their names."""
        return self._pipeline.get_children(path, watch=self._client._watch(watch))

    def set(self, path: str, data: bytes, version: int = -1) -> int:
        """Queue a set; its result is the node's new Stat."""
        return self._pipeline.set(path, data, version)

    set_data = set

    def delete(self, path: str, version: int = -1) -> int:
        """Queue a delete; its result is None."""
        return self._pipeline.delete(path, version)

    def execute(self, *, raise_on_error: bool = True) -> list[Any]:
        """Send everything queued at once and wait for every reply; the results in order."""
        return self._client.run(self._pipeline.execute, raise_on_error=raise_on_error)

    def __enter__(self) -> SyncPipeline:
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if kind is None and len(self._pipeline):
            self.execute()


def connect(
    hosts: str | Sequence[str] = "127.0.0.1:2181",
    session_timeout: float = 10.0,
    **options: Any,
) -> Client:
    """Open a session and return a started blocking `Client`; the options are `zkpy.connect`'s
    (connect_timeout, default_acl, auth, tls, spin_before_wait, new_session_on_expiry,
    read_only ...).

    ``with zkpy.sync.connect("h1:2181,h2:2181", session_timeout=10.0) as zk:`` closes the
    session when the block ends; without ``with``, call `zk.close()`."""
    return Client(hosts, session_timeout=session_timeout, **options).start()


__all__ = [
    "BlockingIterator",
    "Client",
    "ClientClosedError",
    "ConnectionState",
    "Retry",
    "SyncPipeline",
    "SyncTransaction",
    "WatchFuture",
    "connect",
    "refuse_inside_event_loop",
    "within",
]
