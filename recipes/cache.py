"""`Cache`: a local mirror of a subtree, kept current by one persistent recursive watch.

    async with Cache(zk, "/app") as cache:
        data, stat = cache.snapshot()["/app/config"]
        async for change in cache.changes():       # CacheEvent(type, path, data, stat)
            ...

How it stays right (Curator's CuratorCache, on zkpy's addWatch):

1. The recursive watch is registered *before* the tree is read, so a change made during the
   initial read is not missed: its event is queued and applied afterwards.
2. Each CREATED / CHANGED event is applied by reading the node again (events carry no data). A
   read returns the node's current state, never an older one, so the mirror only moves forward.
3. Events older than what the mirror already holds are skipped by zxid: a CHANGED whose zxid is
   not above the cached mzxid, a DELETED of an older incarnation (zxid below the cached czxid).
   So the events queued during the initial read never make the mirror go back, not even briefly.
4. After a reconnection the client replays the events the watch missed; a lost session ends the
   cache with `SessionExpiredError` (raised out of the ``async with``).

Quick successive changes of one node may reach `changes()` as one event with the latest data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType

import anyio
import anyio.abc

import zkpy
from recipes._nodes import async_client, join, retry
from zkpy import EventType, Feed
from zkpy.errors import NoNodeError, single_error

NodeState = tuple[bytes, zkpy.Stat]


@dataclass(frozen=True, slots=True)
class CacheEvent:
    """One change of the mirror: `type` is CREATED, CHANGED or DELETED; `data` and `stat` are
    the node's new state (for DELETED, its last known state)."""

    type: EventType
    path: str
    data: bytes
    stat: zkpy.Stat


class Snapshot(dict[str, NodeState]):
    """A point-in-time copy of the mirror: path -> (data, Stat). Calling it returns itself, so
    ``cache.snapshot`` and ``cache.snapshot()`` are the same thing."""

    def __call__(self) -> Snapshot:
        """The snapshot itself (see the class docstring)."""
        return self


class Cache:
    """Mirror the subtree at `path` (the node itself included) for an ``async with`` block.

    - `snapshot()`: a copy of the whole mirror, path -> (data, Stat).
    - `get(path)`, `get_children(path)`, ``path in cache``, ``len(cache)``: read the mirror.
    - `changes()`: a new `Feed` of `CacheEvent`, from now on (one per subscriber;
      iterate it with ``async for``; it ends when the cache closes).
    - `wait_until(predicate)`: wait until ``predicate(snapshot)`` holds.
    """

    def __init__(self, zk: zkpy.Client, path: str, *, max_parallel_reads: int = 64) -> None:
        self.zk = async_client(zk, "Cache")
        self.path = path.rstrip("/") or "/"
        self.ready = False
        self.closed = False
        self._nodes: dict[str, NodeState] = {}
        self._subscribers: list[Feed[CacheEvent]] = []
        self._changed = anyio.Event()
        self._limiter = anyio.CapacityLimiter(max_parallel_reads)
        self._context: AbstractAsyncContextManager[Cache, bool | None] | None = None

    def __repr__(self) -> str:
        return f"<Cache {self.path} nodes={len(self._nodes)}>"

    # ---- reading the mirror ------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        """A copy of the whole mirror, path -> (data, Stat); also callable, as ``snapshot()``."""
        return Snapshot(self._nodes)

    def get(self, path: str) -> NodeState | None:
        """The mirrored (data, Stat) of `path`, or None if the mirror does not hold it."""
        return self._nodes.get(path)

    def get_data(self, path: str) -> bytes | None:
        """The mirrored data of `path`, or None if the mirror does not hold it."""
        state = self._nodes.get(path)
        return None if state is None else state[0]

    def get_children(self, path: str) -> list[str]:
        """The names of the mirrored children of `path`, sorted."""
        prefix = path.rstrip("/") + "/"
        return sorted(
            key[len(prefix) :]
            for key in self._nodes
            if key.startswith(prefix) and "/" not in key[len(prefix) :]
        )

    def __contains__(self, path: object) -> bool:
        return path in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def changes(self) -> Feed[CacheEvent]:
        """Subscribe to the changes made to the mirror from now on."""
        feed = Feed[CacheEvent]()
        if self.closed:
            feed.close()
        else:
            self._subscribers.append(feed)
        return feed

    async def wait_until(self, predicate: object) -> Snapshot:
        """Wait until ``predicate(snapshot)`` is true; return that snapshot."""
        assert callable(predicate)
        while True:
            snapshot = self.snapshot
            if predicate(snapshot):
                return snapshot
            if self.closed:
                raise anyio.ClosedResourceError("the cache is closed")
            await self._changed.wait()

    # ---- keeping it current ------------------------------------------------------------------

    def _emit(self, kind: EventType, path: str, state: NodeState) -> None:
        event = CacheEvent(kind, path, state[0], state[1])
        for feed in self._subscribers:
            feed.put(event)
        self._changed.set()
        self._changed = anyio.Event()

    async def _load(self, path: str, nursery: anyio.abc.TaskGroup) -> None:
        async with self._limiter:
            try:
                data, stat = await retry(self.zk, self.zk.get, path)
                names: list[str] = await retry(self.zk, self.zk.get_children, path)
            except NoNodeError:
                return  # deleted meanwhile: its DELETED event is queued
        old = self._nodes.get(path)
        if old is None or old[1].mzxid < stat.mzxid or old[1].czxid != stat.czxid:
            self._nodes[path] = (data, stat)
        for name in names:
            nursery.start_soon(self._load, join(path, name), nursery)

    async def _apply(self, event: zkpy.WatchedEvent) -> None:
        path = event.path
        old = self._nodes.get(path)
        if event.type is EventType.DELETED:
            if old is not None and (not event.zxid or old[1].czxid <= event.zxid):
                for key in [k for k in self._nodes if k == path or k.startswith(path + "/")]:
                    self._emit(EventType.DELETED, key, self._nodes.pop(key))
            return
        if event.type not in (EventType.CREATED, EventType.CHANGED):
            return
        if old is not None and event.zxid and old[1].mzxid >= event.zxid:
            return  # we hold this change, or a later one, already
        try:
            data, stat = await retry(self.zk, self.zk.get, path)
        except NoNodeError:
            return  # deleted since: its DELETED event follows
        old = self._nodes.get(path)
        if old is not None and old[1].czxid == stat.czxid and old[1].mzxid >= stat.mzxid:
            return
        self._nodes[path] = (data, stat)
        fresh = old is None or old[1].czxid != stat.czxid
        self._emit(EventType.CREATED if fresh else EventType.CHANGED, path, (data, stat))

    async def _follow(self, events: zkpy.WatchStream) -> None:
        async for event in events:
            await self._apply(event)

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[Cache]:
        try:
            async with self.zk.watch(self.path, recursive=True) as events:
                async with anyio.create_task_group() as loader:
                    loader.start_soon(self._load, self.path, loader)
                self.ready = True
                self._changed.set()
                self._changed = anyio.Event()
                async with anyio.create_task_group() as nursery:
                    nursery.start_soon(self._follow, events)
                    try:
                        yield self
                    finally:
                        nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise single_error(group) from None
        finally:
            self.closed = True
            self._changed.set()
            for channel in self._subscribers:
                channel.close()
            self._subscribers.clear()

    async def __aenter__(self) -> Cache:
        if self._context is not None:
            raise RuntimeError("this cache is already running")
        self._context = self._running()
        return await self._context.__aenter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        assert self._context is not None
        context, self._context = self._context, None
        return await context.__aexit__(kind, value, traceback)
