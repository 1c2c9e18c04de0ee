"""`Queue`: a FIFO queue (with priorities) that many producers and consumers share.

An item is a persistent sequential znode ``{path}/item-{priority:03d}-{uid}-{seq}``; consumers take
items in (priority, seq) order. Taking is one multi: delete the item and write its name into the
consumer's receipt (an ephemeral ``/.recipes/receipts/{uid}``). Only one delete of an item can
succeed, so an item is taken exactly once; and if the reply is lost with the connection, the
receipt tells the consumer whether the take happened, so the item is neither lost nor taken
twice. The uid in the item's name makes `put` retry-safe in the same way.

Waiting consumers watch the queue's children, so a put wakes every waiting consumer (as in kazoo
and Curator); one of them gets the item and the others go back to waiting.

The queue's directory is a container node: the ensemble deletes it a while after its last item is
taken, and the next put makes it again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import anyio
import anyio.lowlevel

import zkpy
from recipes._nodes import (
    RECEIPTS_PATH,
    Receipt,
    async_client,
    check_alive,
    ensure_containers,
    join,
    new_uid,
    retry,
)
from zkpy.errors import ConnectionLossError, NoNodeError

_ITEM = re.compile(r"^item-(?P<priority>[0-9]{3})-(?P<uid>[0-9a-f]{32})-(?P<seq>[0-9]{10})$")


def _items(names: Iterable[str]) -> list[str]:
    """Item names in the order they are to be taken."""
    keyed: list[tuple[int, int, str]] = []
    for name in names:
        match = _ITEM.match(name)
        if match is not None:
            keyed.append((int(match["priority"]), int(match["seq"]), name))
    keyed.sort()
    return [name for _p, _s, name in keyed]


class Queue:
    """A distributed FIFO queue at `path`.

    queue = Queue(zk, "/queues/jobs")
    await queue.put(b"job-1")                  # priority=100 by default; lower goes first
    data = await queue.get()                   # waits for an item (cancel to give up)
    data = await queue.get_nowait()            # None if the queue is empty
    async for data in queue: ...               # take items forever
    """

    def __init__(self, zk: zkpy.Client, path: str, *, receipts_path: str = RECEIPTS_PATH) -> None:
        self.zk = async_client(zk, "Queue")
        self.path = path.rstrip("/") or "/"
        self._receipt = Receipt(zk, receipts_path)

    def __repr__(self) -> str:
        return f"<Queue {self.path}>"

    async def put(self, data: bytes, priority: int = 100) -> str:
        """Add an item; returns its znode path. `priority` is 0..999, lower is taken first."""
        if not 0 <= priority <= 999:
            raise ValueError("priority must be within 0..999")
        uid = new_uid()
        prefix = join(self.path, f"item-{priority:03d}-{uid}-")
        while True:
            try:
                created: str = await self.zk.create(prefix, data, sequential=True)
                return created
            except NoNodeError:
                await ensure_containers(self.zk, self.path)
            except ConnectionLossError:
                check_alive(self.zk)
                await retry(self.zk, self.zk.sync, self.path)
                names: list[str] = await retry(self.zk, self.zk.get_children, self.path)
                for name in names:
                    if f"-{uid}-" in name:
                        return join(self.path, name)

    async def put_all(self, items: Iterable[bytes], priority: int = 100) -> list[str]:
        """Add several items atomically (one multi), in order."""
        if not 0 <= priority <= 999:
            raise ValueError("priority must be within 0..999")
        items = list(items)  # sent again if the first try is lost or finds no directory
        await ensure_containers(self.zk, self.path)
        uid = new_uid()
        transaction = self.zk.transaction()
        for data in items:
            transaction.create(
                join(self.path, f"item-{priority:03d}-{uid}-"), data, sequential=True
            )
        try:
            results = await transaction.commit()
        except ConnectionLossError:
            check_alive(self.zk)
            await retry(self.zk, self.zk.sync, self.path)
            names: list[str] = await retry(self.zk, self.zk.get_children, self.path)
            mine = [join(self.path, name) for name in _items(names) if f"-{uid}-" in name]
            if mine:
                return mine
            return await self.put_all(items, priority)
        if any(isinstance(result, NoNodeError) for result in results):
            return await self.put_all(items, priority)  # the directory was reaped meanwhile
        for result in results:
            if isinstance(result, Exception):
                raise result
        return [str(result) for result in results]

    async def _take(self, names: list[str]) -> bytes | None:
        """Take the first item of `names` that nobody else takes first."""
        await self._receipt.ensure()
        for name in _items(names):
            item = join(self.path, name)
            try:
                data, _stat = await retry(self.zk, self.zk.get, item)
            except NoNodeError:
                continue
            transaction = self.zk.transaction()
            transaction.delete(item).set_data(self._receipt.path, name.encode())
            try:
                results = await transaction.commit()
            except ConnectionLossError:
                check_alive(self.zk)
                if await self._receipt.read() == name.encode():
                    return data
                continue
            if not isinstance(results[0], Exception) and not isinstance(results[1], Exception):
                return data
            if isinstance(results[1], NoNodeError):  # our receipt went with the session?
                check_alive(self.zk)
                self._receipt.invalidate()
                await self._receipt.ensure()
        return None

    async def get_nowait(self) -> bytes | None:
        """Take the first item, or return None if the queue is empty."""
        while True:
            try:
                names: list[str] = await retry(self.zk, self.zk.get_children, self.path)
            except NoNodeError:
                return None
            if not _items(names):
                return None
            data = await self._take(names)
            if data is not None:
                return data

    async def get(self) -> bytes:
        """Take the first item, waiting for one if the queue is empty."""
        while True:
            changed = zkpy.WatchFuture()
            try:
                names: list[str] = await retry(
                    self.zk, self.zk.get_children, self.path, watch=changed
                )
            except NoNodeError:
                if await retry(self.zk, self.zk.exists, self.path, watch=changed):
                    continue
                names = []
            if _items(names):
                data = await self._take(names)
                if data is not None:
                    return data
                await anyio.lowlevel.checkpoint()
                continue
            await changed.wait()

    take = get

    async def length(self) -> int:
        """The number of items now in the queue."""
        try:
            names: list[str] = await retry(self.zk, self.zk.get_children, self.path)
        except NoNodeError:
            return 0
        return len(_items(names))

    async def peek(self) -> bytes | None:
        """The first item, without taking it (None if empty)."""
        try:
            names: list[str] = await retry(self.zk, self.zk.get_children, self.path)
        except NoNodeError:
            return None
        for name in _items(names):
            item = join(self.path, name)
            try:
                data, _stat = await retry(self.zk, self.zk.get, item)
                return data
            except NoNodeError:
                continue
        return None

    def __aiter__(self) -> Queue:
        return self

    async def __anext__(self) -> bytes:
        return await self.get()
