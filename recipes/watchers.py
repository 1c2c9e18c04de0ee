"""Data and children watches as async iterators (kazoo's DataWatch and ChildrenWatch).

    async for value in data_watch(zk, "/app/config"):     # (data, Stat), or None if missing
        reload(value)

    async for children in children_watch(zk, "/app/workers"):   # sorted names, or None
        rebalance(children)

Each iteration yields the current state, the first at once and then one per change. Each read
re-arms a one-shot watch in the same request, so no change is missed; changes that come quickly
one after another are coalesced (you see the latest state, never an older one), as with any
ZooKeeper watch. A lost session ends the iteration with `SessionExpiredError`.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel

import zkpy
from recipes._nodes import async_client, retry
from zkpy.errors import NoNodeError


class DataWatch:
    """Async iterator of ``(data, Stat) | None`` for one znode: see `data_watch`."""

    def __init__(self, zk: zkpy.Client, path: str) -> None:
        self.zk = async_client(zk, "DataWatch")
        self.path = path
        self._pending: zkpy.WatchFuture | None = None
        self._started = False
        self._last: tuple[int, int] | None = None

    def __aiter__(self) -> DataWatch:
        return self

    async def _read(self, watch: zkpy.WatchFuture) -> tuple[bytes, zkpy.Stat] | None:
        while True:
            try:
                data, stat = await retry(self.zk, self.zk.get, self.path, watch=watch)
                return data, stat
            except NoNodeError:
                if await retry(self.zk, self.zk.exists, self.path, watch=watch) is None:
                    return None
                # Created between the two reads: read it again (the watch is armed already).

    async def __anext__(self) -> tuple[bytes, zkpy.Stat] | None:
        while True:
            if self._pending is not None:
                await self._pending.wait()
                self._pending = None
            watch = zkpy.WatchFuture()
            value = await self._read(watch)
            self._pending = watch
            key = None if value is None else (value[1].czxid, value[1].mzxid)
            if not self._started or key != self._last:
                self._started = True
                self._last = key
                return value
            await anyio.lowlevel.checkpoint()


class ChildrenWatch:
    """Async iterator of ``list[str] | None`` (sorted child names; None while the node does
    not exist) for one znode: see `children_watch`."""

    def __init__(self, zk: zkpy.Client, path: str) -> None:
        self.zk = async_client(zk, "ChildrenWatch")
        self.path = path
        self._pending: zkpy.WatchFuture | None = None
        self._started = False
        self._last: list[str] | None = None

    def __aiter__(self) -> ChildrenWatch:
        return self

    async def _read(self, watch: zkpy.WatchFuture) -> list[str] | None:
        while True:
            try:
                names: list[str] = await retry(
                    self.zk, self.zk.get_children, self.path, watch=watch
                )
                return sorted(names)
            except NoNodeError:
                if await retry(self.zk, self.zk.exists, self.path, watch=watch) is None:
                    return None

    async def __anext__(self) -> list[str] | None:
        while True:
            if self._pending is not None:
                await self._pending.wait()
                self._pending = None
            watch = zkpy.WatchFuture()
            value = await self._read(watch)
            self._pending = watch
            if not self._started or value != self._last:
                self._started = True
                self._last = value
                return value
            await anyio.lowlevel.checkpoint()


def data_watch(zk: zkpy.Client, path: str) -> DataWatch:
    """``async for value in data_watch(zk, path):`` the node's (data, Stat), or None while it
    does not exist: now, then after every change."""
    return DataWatch(zk, path)


def children_watch(zk: zkpy.Client, path: str) -> ChildrenWatch:
    """``async for names in children_watch(zk, path):`` the node's sorted children, or None
    while it does not exist: now, then after every change."""
    return ChildrenWatch(zk, path)
