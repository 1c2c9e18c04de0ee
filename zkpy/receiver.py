"""Incoming bytes of one connection, read with less machinery per read than trio's streams.

`trio.SocketStream.receive_some` wraps each read in two context managers (one of them an async
generator-based one that tries the read, and yields to the scheduler after a read that did not
have to wait) before it reaches the socket. On a lightly loaded member a request's bytes are
seldom there yet when its reader asks, so the common path is: try, fail with EAGAIN, wait for
epoll, read. `Receiver.receive` does the same with a plain non-blocking `os.read` on the socket's
descriptor and `trio.lowlevel.wait_readable`, which saves several microseconds of Python on every
hop of every request. A read that finds bytes at once still yields (a checkpoint), so a reader
fed faster than it reads cannot starve the other tasks.

TLS streams have no socket to read directly: they are read with `receive_some`.
"""

from __future__ import annotations

import errno
import os

import trio


class Receiver:
    __slots__ = ("_socket", "_stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        # the stream owns (and closes) the socket; its descriptor is looked up on every read,
        # so a closed socket is never read through a number that was reused since
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None

    async def receive(self, max_bytes: int) -> bytes | bytearray:
        """Up to `max_bytes` bytes; b"" at the end of the stream. Like `receive_some`, raises
        trio.BrokenResourceError when the connection fails, trio.ClosedResourceError when the
        stream was closed."""
        if self._socket is None:
            return await self._stream.receive_some(max_bytes)
        waited = False
        while True:
            fd = self._socket.fileno()
            if fd < 0:
                raise trio.ClosedResourceError("the stream was closed")
            try:
                data = os.read(fd, max_bytes)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)  # a checkpoint
                waited = True
                continue
            except OSError as err:
                if err.errno == errno.EBADF:
                    raise trio.ClosedResourceError("the stream was closed") from None
                raise trio.BrokenResourceError(f"socket connection broken: {err}") from err
            if not waited:
                await trio.lowlevel.checkpoint()
            return data
