"""What the client needs from the event loop it runs on: trio, or asyncio through anyio.

The client's cancel scopes, timeouts and sleeps are anyio's, which run on either loop. What runs
for every request and reply is picked by the loop (once per client or connection): under trio,
trio's own nurseries and events and the members' socket plumbing (`zkpy._net`: a reply read
straight from the socket, requests written at the end of a step without waking a writer task),
so the trio client pays nothing for also running on asyncio (docs/decisions/0024); under
asyncio, anyio's task groups, events and streams.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import anyio
import anyio.abc
import trio

from zkpy._net.outbox import Flusher, Outbox
from zkpy._net.receiver import Receiver
from zkpy.client.admin import STATUS_QUERY, decode_status
from zkpy.core.errors import ZkError
from zkpy.wire.frames import FrameDecoder

BROKEN: tuple[type[BaseException], ...] = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)
"""What a connection's streams raise when the connection fails or was closed, on either loop."""


class Waiter(Protocol):
    """An event a task waits on and another sets: `trio.Event` or `anyio.Event`."""

    def set(self) -> None:
        """Wake the waiters, now and later."""

    def is_set(self) -> bool:
        """Whether `set` was called."""

    async def wait(self) -> None:
        """Return once the event is set."""


def new_event() -> Waiter:
    """An event for the loop this thread runs: trio's own under trio, anyio's otherwise."""
    if trio.lowlevel.in_trio_run():
        return trio.Event()
    return anyio.Event()


def event_class() -> Callable[[], Waiter]:
    """What makes the events of the loop this thread runs (`new_event`, decided once)."""
    if trio.lowlevel.in_trio_run():
        return trio.Event
    return anyio.Event


class Scope(Protocol):
    """A cancel scope, trio's or anyio's."""

    def cancel(self) -> None:
        """Cancel what runs in the scope."""


class Tasks(Protocol):
    """A nursery or task group: trio's own under trio, anyio's otherwise."""

    @property
    def cancel_scope(self) -> Scope:
        """The scope of the whole group."""
        ...

    def start_soon(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> object:
        """Start ``func(*args)`` in the group."""

    async def start(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        """Start ``func(*args, task_status=...)``; return once it calls ``started()``."""


def open_tasks() -> AbstractAsyncContextManager[Tasks]:
    """A task group for the loop this thread runs. Under trio it is a plain trio nursery: a
    task started in an anyio task group resumes through two more coroutine frames, which on a
    client's reading task is a cost on every reply."""
    if trio.lowlevel.in_trio_run():
        return trio.open_nursery()
    return anyio.create_task_group()


def clock() -> Callable[[], float]:
    """The running loop's clock (seconds): trio's (so that a MockClock drives it) or asyncio's."""
    if trio.lowlevel.in_trio_run():
        return trio.current_time
    return anyio.current_time


class OutboxLike(Protocol):
    """What the client does with a connection's outgoing bytes (`zkpy._net.outbox.Outbox`)."""

    def push(self, data: bytes) -> None:
        """Queue bytes to send."""

    def send_soon(self) -> None:
        """Have the writer send what is queued once the running tasks have queued theirs."""

    def close(self) -> None:
        """Drop what is queued: the connection is gone."""


class Link(Protocol):
    """One open connection to a server: its bytes in and out."""

    @property
    def outbox(self) -> OutboxLike:
        """Where the client queues the connection's outgoing bytes."""

    async def send_all(self, data: bytes) -> None:
        """Send `data` at once (the handshake, before the outbox is in use)."""

    def receive(self, max_bytes: int, /) -> Awaitable[bytes | bytearray]:
        """Up to `max_bytes` bytes; b"" once the server closed the connection."""
        ...

    async def run_writer(self) -> None:
        """Send what the outbox holds, as it comes, until cancelled or the stream breaks."""

    async def aclose(self) -> None:
        """Close the connection at once."""


async def open_link(
    host: tuple[str, int], tls: ssl.SSLContext | None, flusher: Flusher, spin_s: float
) -> Link:
    """Connect to `host` (with TLS if `tls` is given) on the running loop."""
    if trio.lowlevel.in_trio_run():
        stream: trio.abc.Stream = await trio.open_tcp_stream(*host)
        if tls is not None:
            stream = trio.SSLStream(stream, tls, server_hostname=host[0])
        return TrioLink(stream, flusher, spin_s)
    if tls is None:
        return AnyioLink(await anyio.connect_tcp(*host))
    return AnyioLink(await anyio.connect_tcp(*host, ssl_context=tls, tls_hostname=host[0]))


UNANSWERED = (
    OSError,
    TimeoutError,
    ValueError,  # a frame over the decoder's limit
    ZkError,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
)
"""What a status query that gets no usable answer raises."""


async def member_serves(host: tuple[str, int], tls: ssl.SSLContext | None, timeout: float) -> bool:
    """Whether the member at `host` serves in a quorum, by its answer to the status query;
    False if it does not answer in `timeout` seconds (`zkpy.client.admin.fetch_status` asks
    the same on trio alone, and raises)."""
    secure: dict[str, Any] = {} if tls is None else {"ssl_context": tls, "tls_hostname": host[0]}
    try:
        with anyio.fail_after(timeout):
            async with await anyio.connect_tcp(*host, **secure) as stream:
                await stream.send(STATUS_QUERY)
                decoder = FrameDecoder()
                while not (frames := decoder.feed(await stream.receive(1 << 16))):
                    pass
    except UNANSWERED:
        return False
    try:
        return decode_status(frames[0]).get("serving") is True
    except ZkError:
        return False


class TrioLink:
    """A connection under trio: reads and writes through `zkpy._net`, as members do."""

    def __init__(self, stream: trio.abc.Stream, flusher: Flusher, spin_s: float) -> None:
        self.stream = stream
        self.outbox = self._outbox = Outbox(stream, flusher)
        # the receiver's own method: no call in between on the path of every reply
        self.receive: Callable[[int], Awaitable[bytes | bytearray]]
        self.receive = Receiver(stream, spin_s).receive

    async def send_all(self, data: bytes) -> None:
        """Send `data` at once (the handshake, before the outbox is in use)."""
        await self.stream.send_all(data)

    async def run_writer(self) -> None:
        """Send what a direct flush could not (the socket was full, or TLS)."""
        await self._outbox.run_writer(self.stream)

    async def aclose(self) -> None:
        """Close the connection at once."""
        await trio.aclose_forcefully(self.stream)


class AnyioOutbox:
    """Outgoing bytes under asyncio: queued, and sent together by the writer task once the
    tasks that run now have queued theirs."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self._wake = anyio.Event()

    def push(self, data: bytes) -> None:
        """Queue bytes and wake the writer."""
        self.buffer += data
        self._wake.set()

    def send_soon(self) -> None:
        """Wake the writer (`push` already does)."""
        self._wake.set()

    def close(self) -> None:
        """Drop what is queued: the connection is gone."""
        self.buffer.clear()

    async def run_writer(self, stream: anyio.abc.ByteStream) -> None:
        """Send what is queued, in order, until cancelled or the stream breaks."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self.buffer:
                data = bytes(self.buffer)
                self.buffer.clear()
                await stream.send(data)


class AnyioLink:
    """A connection under asyncio (or any loop anyio runs), through anyio's streams."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.outbox = self._outbox = AnyioOutbox()

    async def send_all(self, data: bytes) -> None:
        """Send `data` at once (the handshake, before the outbox is in use)."""
        await self.stream.send(data)

    async def receive(self, max_bytes: int) -> bytes | bytearray:
        """Up to `max_bytes` bytes; b"" once the server closed the connection."""
        try:
            return await self.stream.receive(max_bytes)
        except anyio.EndOfStream:
            return b""

    async def run_writer(self) -> None:
        """Send what the outbox holds, as it comes."""
        await self._outbox.run_writer(self.stream)

    async def aclose(self) -> None:
        """Close the connection at once."""
        await anyio.aclose_forcefully(self.stream)
