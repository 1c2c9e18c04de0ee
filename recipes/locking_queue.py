"""`LockingQueue`: a queue whose items survive a consumer that dies before it is done with them
(kazoo's LockingQueue): take an item, process it, then consume it (or release it back).

    queue = LockingQueue(zk, "/queues/jobs")
    await queue.put(b"job-1")
    async with await queue.take() as item:     # consumed if the block ends cleanly,
        await process(item.data)              # released (back in the queue) if it raises

Items are `Queue` items under ``{path}/entries``. Taking one creates the ephemeral lock node
``{path}/taken/{item name}`` (both directories are containers, as the queue's is): only one
create can succeed, so an item is processed by one consumer at a time; if that consumer's
session ends (it died, or was cut off past its session timeout) the lock node goes with it and
the item can be taken again. Consuming deletes the item and its lock node in one multi, sent
only on the session that took the item (whose lock node, while the session lives, is still
ours), so an item whose hold was lost (and may be with another consumer by now) is never
consumed by the one that lost it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType

import anyio
import anyio.lowlevel

import zkpy
from recipes._nodes import (
    async_client,
    check_alive,
    create_in_containers,
    delete_quietly,
    join,
    new_uid,
    retry,
)
from recipes.errors import NotHeldError
from recipes.queue import Queue, _items
from zkpy.errors import (
    BadVersionError,
    ConnectionLossError,
    NodeExistsError,
    NoNodeError,
    SessionExpiredError,
)


async def watched_children(
    zk: zkpy.Client, path: str, watch: Callable[[zkpy.WatchedEvent], object] | None
) -> list[str]:
    """The children of `path` with `watch` armed on them, or none (the watch armed on the
    node's creation) while it does not exist: a container directory comes and goes."""
    while True:
        try:
            names: list[str] = await retry(zk, zk.get_children, path, watch=watch)
            return names
        except NoNodeError:
            if await retry(zk, zk.exists, path, watch=watch) is None:
                return []


class TakenItem:
    """An item taken from a `LockingQueue`: `data`, `name`; `consume()` when done with it, or
    `release()` it back to the queue. ``async with`` does one of the two for you."""

    def __init__(self, queue: LockingQueue, name: str, data: bytes, session_id: int) -> None:
        self.queue = queue
        self.name = name
        self.data = data
        self.entry_path = join(queue.entries_path, name)
        self.lock_path = join(queue.taken_path, name)
        self.session_id = session_id  # the session whose lock node holds the item
        self.done = False

    def __repr__(self) -> str:
        return f"<TakenItem {self.entry_path}>"

    async def consume(self) -> None:
        """Remove the item for good. `NotHeldError` if our hold on it was lost (the session
        that took it ended: another consumer may have it now), and the item stays."""
        zk = self.queue.zk
        while not self.done:
            await self._wait_for_own_session()
            transaction = zk.transaction().delete(self.lock_path, 0).delete(self.entry_path)
            try:
                results = await transaction.commit()  # sent at once: on the session checked
            except ConnectionLossError:
                check_alive(zk)
                self.done = await retry(zk, zk.exists, self.entry_path) is None
                continue
            if isinstance(results[0], Exception):
                raise NotHeldError(f"{self.entry_path} is no longer ours") from results[0]
            self.done = True

    async def _wait_for_own_session(self) -> None:
        """Return connected on the session that took the item, or raise `NotHeldError`: a
        request sent under a newer session could consume an item another consumer holds."""
        zk = self.queue.zk
        while True:
            if zk.session_id != self.session_id:
                raise NotHeldError(f"{self.entry_path} was taken under an earlier session")
            if zk.connected:
                return
            await zk.wait_connected()

    async def release(self) -> None:
        """Put the item back: another consumer (or this one) may take it again. (If the hold
        was lost, the item is back already.)"""
        if self.done:
            return
        self.done = True
        while True:
            try:
                await self._wait_for_own_session()
                await self.queue.zk.delete(self.lock_path, 0)  # sent at once: on our session
                return
            except (NotHeldError, SessionExpiredError, NoNodeError, BadVersionError):
                return  # the hold is gone already: the item is free
            except ConnectionLossError:
                continue  # the delete may not have happened: again, if our session lives

    async def __aenter__(self) -> TakenItem:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            if kind is None:
                await self.consume()
            else:
                await self.release()


class LockingQueue:
    """A queue at `path` whose items are taken, then consumed or released (see the module).

    `put`, `put_all` and `length` are `Queue`'s, with priorities (lower is taken first).
    """

    def __init__(self, zk: zkpy.Client, path: str) -> None:
        self.zk = async_client(zk, "LockingQueue")
        self.path = path.rstrip("/") or "/"
        self.entries_path = join(self.path, "entries")
        self.taken_path = join(self.path, "taken")
        self._entries = Queue(zk, self.entries_path)
        self.identifier = new_uid().encode()

    def __repr__(self) -> str:
        return f"<LockingQueue {self.path}>"

    async def put(self, data: bytes, priority: int = 100) -> str:
        """Add an item (`priority` 0..999, lower first); returns its znode path."""
        return await self._entries.put(data, priority)

    async def put_all(self, items: Iterable[bytes], priority: int = 100) -> list[str]:
        """Add several items atomically (one multi), in order."""
        return await self._entries.put_all(items, priority)

    async def length(self) -> int:
        """The number of items in the queue, taken or not (consumed ones are gone)."""
        return await self._entries.length()

    async def _try_take(self, name: str) -> TakenItem | None:
        """Lock the item `name` and read it; None if another consumer has it (or it is gone)."""
        zk = self.zk
        lock = join(self.taken_path, name)
        session = zk.session_id
        try:
            await retry(zk, create_in_containers, zk, lock, self.identifier, ephemeral=True)
        except NodeExistsError:
            stat = await retry(zk, zk.exists, lock)  # ours, if a lost reply hid our create
            if stat is None or stat.ephemeral_owner != zk.session_id:
                return None
        try:
            data, _stat = await retry(zk, zk.get, join(self.entries_path, name))
        except NoNodeError:  # consumed between our listing and our lock
            await delete_quietly(zk, lock)
            return None
        if zk.session_id != session:
            return None  # our lock node went with that session
        return TakenItem(self, name, data, session)

    async def take_nowait(self) -> TakenItem | None:
        """Take the first free item, or None if there is none now."""
        item, _changed = await self._scan(None)
        return item

    async def take(self) -> TakenItem:
        """Take the first free item, waiting for one (cancel to give up)."""
        while True:
            changed = zkpy.WatchFuture()
            item, seen = await self._scan(changed)
            if item is not None:
                return item
            if seen:  # an item was taken by another under our nose: look again
                await anyio.lowlevel.checkpoint()
                continue
            await changed.wait()  # an item was put, or a hold ended

    get = take

    async def _scan(self, changed: zkpy.WatchFuture | None) -> tuple[TakenItem | None, bool]:
        """The first free item we could take, and whether there were free items at all."""
        zk = self.zk
        taken = set(await watched_children(zk, self.taken_path, changed))
        names = await watched_children(zk, self.entries_path, changed)
        free = [name for name in _items(names) if name not in taken]
        for name in free:
            item = await self._try_take(name)
            if item is not None:
                return item, True
        return None, bool(free)
