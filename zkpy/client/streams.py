"""The async ends of watches: a one-shot watch to await and a persistent watch to iterate.

The bookkeeping of who hears which event is sans-I/O (`zkpy.client.watches`); these two are
what the application holds, so they are the only watch classes that know about the event loop
(trio or asyncio, through anyio).
"""

from __future__ import annotations

import math

import anyio

from zkpy.client.backend import Waiter, new_event
from zkpy.core.errors import ZkError
from zkpy.core.types import WatchedEvent, WatchMode


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


class WatchStream:
    """The receiving end of a persistent watch; iterate it for events in zxid order."""

    def __init__(self, path: str, mode: WatchMode) -> None:
        self.path = path
        self.mode = mode
        self._send, self._receive = anyio.create_memory_object_stream[WatchedEvent | ZkError](
            math.inf
        )

    def deliver(self, item: WatchedEvent | ZkError) -> None:
        """Queue an event (or the error that ends the stream); never blocks."""
        try:
            self._send.send_nowait(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def close(self) -> None:
        """End the iteration once the queued events are read."""
        self._send.close()

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> WatchedEvent:
        try:
            item = await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        if isinstance(item, ZkError):
            raise item
        return item

    async def next_event(self) -> WatchedEvent:
        """The next event (raises StopAsyncIteration once the stream is closed)."""
        return await self.__anext__()
