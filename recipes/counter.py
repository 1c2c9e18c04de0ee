"""`Counter`: an integer in a znode, changed by compare-and-set on the znode's version.

The value is stored as decimal ASCII (``b"42"``), readable by any client. Each change is one
multi: set the counter at the version we read, and record a fresh write id in this counter
object's receipt (an ephemeral ``/.recipes/receipts/{uid}``). A conflicting writer makes the
version check fail and we read and try again; a reply lost with the connection is resolved by
reading the receipt, so an increment is applied exactly once, never twice.

`changes()` listens: ``async for value in counter.changes():`` yields the value now, then after
every change (by anyone), as Curator's SharedCount listeners are told.
"""

from __future__ import annotations

import zkpy
from recipes._nodes import RECEIPTS_PATH, Receipt, async_client, check_alive, new_uid, retry
from recipes.watchers import DataWatch
from zkpy.errors import BadVersionError, ConnectionLossError, NodeExistsError, NoNodeError


class Counter:
    """A shared integer counter at `path` (created with `default` on first use).

        counter = Counter(zk, "/counters/jobs")
        value = await counter.add(1)          # the new value; also counter.post_value
        ok = await counter.compare_and_set(value, 0)

    `pre_value` and `post_value` hold the value before and after this object's last change,
    as in kazoo.
    """

    def __init__(
        self,
        zk: zkpy.Client,
        path: str,
        default: int = 0,
        *,
        receipts_path: str = RECEIPTS_PATH,
    ) -> None:
        self.zk = async_client(zk, "Counter")
        self.path = path.rstrip("/") or "/"
        self.default = default
        self.pre_value: int | None = None
        self.post_value: int | None = None
        self._receipt = Receipt(zk, receipts_path)

    def __repr__(self) -> str:
        return f"<Counter {self.path}>"

    async def _read(self) -> tuple[int, int]:
        """(value, version), creating the counter with `default` if it is missing."""
        while True:
            try:
                data, stat = await retry(self.zk, self.zk.get, self.path)
            except NoNodeError:
                try:
                    await retry(
                        self.zk,
                        self.zk.create,
                        self.path,
                        str(self.default).encode(),
                        makepath=True,
                    )
                except NodeExistsError:
                    pass
                continue
            return self._decode(data), stat.version

    def _decode(self, data: bytes) -> int:
        text = data.decode("ascii", errors="replace").strip()
        return int(text) if text else self.default

    async def _write(self, value: int, version: int) -> bool:
        """Set `value` if the counter is still at `version`; True if it was set (exactly once)."""
        await self._receipt.ensure()
        write_id = new_uid().encode()
        transaction = self.zk.transaction()
        transaction.set_data(self.path, str(value).encode(), version)
        transaction.set_data(self._receipt.path, write_id)
        try:
            results = await transaction.commit()
        except ConnectionLossError:
            check_alive(self.zk)
            return await self._receipt.read() == write_id
        if isinstance(results[0], BadVersionError | NoNodeError):
            return False  # changed (or deleted) since we read it: read again
        if isinstance(results[1], NoNodeError):
            check_alive(self.zk)
            self._receipt.invalidate()
            return False
        for result in results:
            if isinstance(result, Exception):
                raise result
        return True

    async def get(self) -> int:
        """The current value."""
        value, _version = await self._read()
        return value

    value = get

    async def add(self, delta: int = 1) -> int:
        """Add `delta` (may be negative); returns the new value."""
        while True:
            value, version = await self._read()
            if await self._write(value + delta, version):
                self.pre_value, self.post_value = value, value + delta
                return value + delta

    async def increment(self, delta: int = 1) -> int:
        """`add(delta)`: returns the new value."""
        return await self.add(delta)

    async def decrement(self, delta: int = 1) -> int:
        """`add(-delta)`: returns the new value."""
        return await self.add(-delta)

    async def set(self, value: int) -> None:
        """Set the value regardless of the current one."""
        while True:
            old, version = await self._read()
            if await self._write(value, version):
                self.pre_value, self.post_value = old, value
                return

    async def compare_and_set(self, expected: int, value: int) -> bool:
        """Set `value` only if the counter holds `expected`; True if it did."""
        while True:
            old, version = await self._read()
            if old != expected:
                return False
            if await self._write(value, version):
                self.pre_value, self.post_value = old, value
                return True

    def changes(self) -> CounterChanges:
        """An async iterator of the value: now, then after every change (`default` while the
        counter's node does not exist). Quick successive changes may be seen as one, the
        latest (as with any watch); a lost session ends it with `SessionExpiredError`."""
        return CounterChanges(self)


class CounterChanges:
    """``async for value in counter.changes():`` (see `Counter.changes`)."""

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self._watch = DataWatch(counter.zk, counter.path)
        self._last: int | None = None

    def __aiter__(self) -> CounterChanges:
        return self

    async def __anext__(self) -> int:
        while True:
            read = await self._watch.__anext__()
            value = self._counter.default if read is None else self._counter._decode(read[0])
            if value != self._last:  # a rewrite of the same value is no change
                self._last = value
                return value
