"""The async ends of watches: a one-shot watch to await and a persistent watch to iterate.

The bookkeeping of who hears which event is sans-I/O (`zkpy.client.watches`); these two are
what the application holds, so they are the only watch classes that know about the event loop
(trio or asyncio, through anyio).
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

from zkpy.client.backend import Waiter, new_event
from zkpy.core.errors import ZkError
from zkpy.core.types import WatchedEvent, WatchMode

T = TypeVar("T")


class WatchFuture:
    """A one-shot watch you can await: pass it as ``watch=`` to a read, then ``await wait()``.

    >>> fut = WatchFuture()
    >>> data, stat = await zk.get("/config", watch=fut)
    >>> event = await fut.wait()
    """

    def __init__(self) -> None:
        # made by the first waiter, on its loop: a WatchFuture may be made outside of one
        self._event: Waiter | None = None
        self._fired = False
        self._value: WatchedEvent | None = None
        self._error: ZkError | None = None

    def __call__(self, event: WatchedEvent) -> None:
        """Deliver the event (the first one only: the watch is one-shot)."""
        if not self._fired:
            self._value = event
            self._fire()

    def fail(self, error: ZkError) -> None:
        """End the wait with `error` (the session is gone, and the watch with it)."""
        if not self._fired:
            self._error = error
            self._fire()

    def _fire(self) -> None:
        self._fired = True
        if self._event is not None:
            self._event.set()

    @property
    def fired(self) -> bool:
        """Whether the event (or a failure) has come."""
        return self._fired

    async def wait(self) -> WatchedEvent:
        """The event, once it comes; raises the error if the session was lost first."""
        if self._fired:
            await anyio.lowlevel.checkpoint()
        else:
            if self._event is None:
                self._event = new_event()
            await self._event.wait()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


class Feed(Generic[T]):
    """An unbounded queue that one side fills without waiting and the other reads, on trio or
    asyncio: `receive()` (``async for`` too) returns the items in order, and raises
    `anyio.EndOfStream` (ends the iteration) once it is closed and drained. Unlike a memory
    stream, it needs no closing by its reader."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._closed = False
        self._waiter: Waiter | None = None  # made by the first reader that waits

    def put(self, item: T) -> None:
        """Queue an item (dropped once the feed is closed); never blocks."""
        if not self._closed:
            self._items.append(item)
            self._wake()

    def close(self) -> None:
        """End the reading once the queued items are read."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.set()

    def receive_nowait(self) -> T:
        """The next item; `anyio.WouldBlock` if none is queued, `anyio.EndOfStream` at the end."""
        if self._items:
            return self._items.popleft()
        if self._closed:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def receive(self) -> T:
        """The next item, once there is one; `anyio.EndOfStream` at the end."""
        if self._items or self._closed:
            await anyio.lowlevel.checkpoint()
        while not self._items:
            if self._closed:
                raise anyio.EndOfStream
            if self._waiter is None:
                self._waiter = new_event()
            await self._waiter.wait()
        return self._items.popleft()

    def __aiter__(self) -> Feed[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


class WatchStream:
    """The receiving end of a persistent watch; iterate it for events in zxid order."""

    def __init__(self, path: str, mode: WatchMode) -> None:
        self.path = path
        self.mode = mode
        self._receive = Feed[WatchedEvent | ZkError]()

    def deliver(self, item: WatchedEvent | ZkError) -> None:
        """Queue an event (or the error that ends the stream); never blocks."""
        self._receive.put(item)

    def close(self) -> None:
        """End the iteration once the queued events are read."""
        self._receive.close()

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> WatchedEvent:
        item = await self._receive.__anext__()
        if isinstance(item, ZkError):
            raise item
        return item

    async def next_event(self) -> WatchedEvent:
        """The next event (raises StopAsyncIteration once the stream is closed)."""
        return await self.__anext__()
