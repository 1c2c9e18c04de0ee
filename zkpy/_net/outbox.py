"""Outgoing bytes of one connection, written straight to the socket at the end of a step.

Waking a writer task for every reply, event and peer message costs one more turn of the trio
scheduler and of epoll per hop, which on a lightly loaded member is most of the cost of the hop
(and a leader that fsyncs on the event loop would hold its proposals back until the fsync was
done). So frames gather in the outbox while a step runs (the Ready loop answering a batch, a
reader handling what one receive brought), and at the end of the step `Flusher.flush` writes each
dirty outbox with one non-blocking write to the socket. Only what the socket does not take at
once is left to the writer task, which then owns the outbox until it is empty again, so bytes
never overtake each other. (A write to a socket whose peer is gone raises EPIPE: Python ignores
SIGPIPE.)

TLS streams have no socket to write to directly: their outboxes always go through the writer.

A `ByteMeter` shared by several outboxes counts the bytes they hold together (queued, or being
sent by a writer), for a limit on their total.
"""

from __future__ import annotations

import errno
import os

import trio


class ByteMeter:
    """The bytes a group of outboxes holds, queued or being sent."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0


class Outbox:
    def __init__(
        self, stream: trio.abc.Stream, flusher: Flusher, meter: ByteMeter | None = None
    ) -> None:
        self.buffer = bytearray()
        self.sending = 0  # bytes the writer has taken from the buffer and not yet sent
        self._meter = meter if meter is not None else ByteMeter()
        self._flusher = flusher
        # the socket's descriptor, borrowed: the stream owns (and closes) it
        self._fd: int | None = None
        if isinstance(stream, trio.SocketStream):
            self._fd = stream.socket.fileno()
        self._wake = trio.Event()
        self._writer_owns = False  # the writer task holds unsent bytes: never write around it
        self._dirty = False
        self._finishing = False
        self.taken = trio.Event()  # set each time the writer takes the buffer, and has sent it

    def __len__(self) -> int:
        return len(self.buffer)

    @property
    def unsent(self) -> int:
        """Bytes queued or being sent."""
        return len(self.buffer) + self.sending

    def push(self, data: bytes) -> None:
        """Queue bytes; they leave at the flusher's next flush (the caller's step ends in one)."""
        self.buffer += data
        self._meter.total += len(data)
        if not self._dirty:
            self._dirty = True
            self._flusher.dirty.append(self)

    def flush(self) -> None:
        """Send what the socket takes now, without blocking; hand the rest to the writer."""
        self._dirty = False
        if not self.buffer:
            return
        if self._writer_owns or self._fd is None:
            self._wake.set()
            return
        try:
            sent = os.write(self._fd, self.buffer)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                self._wake.set()  # the writer meets the error and ends the connection
                return
            sent = 0
        del self.buffer[:sent]
        self._meter.total -= sent
        if self.buffer:
            self._writer_owns = True
            self._wake.set()

    def send_soon(self) -> None:
        """Leave the queued bytes to the writer task, which sends them after the tasks that run
        now (so that many tasks' frames leave in one send), instead of flushing them at once."""
        if self.buffer:
            self._wake.set()

    def finish(self) -> None:
        """Send what is queued, then let `run_writer` return."""
        self._finishing = True
        self._wake.set()

    async def run_writer(self, stream: trio.abc.Stream) -> None:
        """Send what `flush` could not, in order. Returns after `finish` once all is sent (or
        raises on a broken stream); until then, cancel it to stop."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self.buffer:
                self._writer_owns = True
                data = bytes(self.buffer)
                self.buffer.clear()
                self.sending = len(data)
                self._signal_taken()
                await stream.send_all(data)
                self._meter.total -= self.sending
                self.sending = 0
                self._signal_taken()
            self._writer_owns = False
            if self._finishing:
                return

    def _signal_taken(self) -> None:
        self.taken.set()
        self.taken = trio.Event()

    def close(self) -> None:
        """Forget the socket before the stream closes it: nothing is written directly after (the
        descriptor's number may soon belong to another connection). What is still queued no
        longer counts in the meter, nor does anything pushed later."""
        self._fd = None
        self._meter.total -= self.unsent
        self._meter = ByteMeter()
        self.buffer.clear()
        self.sending = 0


class Flusher:
    """The outboxes written to during the current step; `flush` sends them all."""

    def __init__(self) -> None:
        self.dirty: list[Outbox] = []

    def flush(self) -> None:
        dirty, self.dirty = self.dirty, []
        for outbox in dirty:
            outbox.flush()
