"""Incoming bytes of one connection, read with less machinery per read than trio's streams.

`trio.SocketStream.receive_some` wraps each read in two context managers (one of them an async
generator-based one that tries the read, and yields to the scheduler after a read that did not
have to wait) before it reaches the socket. On a lightly loaded member a request's bytes are
seldom there yet when its reader asks, so the common path is: try, fail with EAGAIN, wait for
epoll, read. `Receiver.receive` does the same with a plain non-blocking `os.read` on the socket's
descriptor and `trio.lowlevel.wait_readable`, which saves several microseconds of Python on every
hop of every request. A read that finds bytes at once still yields (a checkpoint), so a reader
fed faster than it reads cannot starve the other tasks. Where a connection's answers come
quickly, a read spins briefly before it sleeps (see `Receiver`).

TLS streams have no socket to read directly: they are read with `receive_some`.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable

import trio

SPIN_BEFORE_WAIT_S = 0.0002
"""How long a read that finds no bytes keeps trying before it sleeps in epoll, when this
connection's recent waits were short enough (see `Receiver`). 0 turns spinning off."""
MAX_SPIN_S = 0.01  # a longer spin would hold a CPU for most waits instead of saving a wake-up

WAIT_WEIGHT = 0.25  # weight of the newest wait in the running estimate of the next one
MAX_SPINNING = 2
"""Readers of one trio run that may spin at the same time: each spinning reader adds its tries
to every turn of trio's scheduler, so a member with many connections whose answers come quickly
lets the first ones spin and the others sleep."""

_spinning: trio.lowlevel.RunVar[int] = trio.lowlevel.RunVar("zkpy_spinning_readers", default=0)


def spinning_readers() -> int:
    """How many readers of the current trio run are spinning now."""
    return _spinning.get()


def check_spin(spin_s: float, name: str) -> None:
    """Raise ValueError unless `spin_s` (seconds) is 0 (off) or up to MAX_SPIN_S."""
    if not 0 <= spin_s <= MAX_SPIN_S:
        raise ValueError(f"{name} must be between 0 (off) and {MAX_SPIN_S} s")


class Receiver:
    """Reads one socket (or, for TLS, one stream).

    A read that finds no bytes spins for a moment before it sleeps, when this connection's
    recent waits were short. Going to sleep in epoll and being woken costs a process far more
    than the wait itself on a virtual machine that halts idle CPUs without polling first (the
    reference VM boots with ``haltpoll.guest_halt_poll_ns=0``): every wake-up from an idle CPU
    then pays an exit to the hypervisor, and a log sync that completes on an idle CPU takes
    longer too (docs/decisions/0006). A reply that comes within SPIN_BEFORE_WAIT_S (a read
    answered from memory, the next request of a client that sends one at a time) is met
    awake. The spin yields to the process's other tasks at every try (a trio checkpoint), and it
    only happens while the running estimate of this connection's waits is below the spin time
    (a stricter bar starves itself: a wait that ends in a wake-up is longer by the wake-up): a
    connection whose answers take longer (a write waiting for syncs, a quiet link) sleeps at
    once, and an idle member spins not at all. Each wait counts at most eight times the spin
    time in the estimate, so that one long pause does not turn spinning off for long.
    At most MAX_SPINNING readers of a trio run spin at once. TLS streams never spin.
    """

    __slots__ = ("_clock", "_drained", "_expected_wait", "_socket", "_spin_s", "_stream")

    def __init__(
        self,
        stream: trio.abc.Stream,
        spin_s: float = SPIN_BEFORE_WAIT_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._stream = stream
        # the stream owns (and closes) the socket; its descriptor is looked up on every read,
        # so a closed socket is never read through a number that was reused since
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._spin_s = spin_s
        self._clock = clock  # seconds; real time, not trio's clock: spinning takes real time
        self._expected_wait = 0.0  # seconds, the running estimate of the next read's wait
        self._drained = False  # the last read took less than it asked for: nothing was left

    async def receive(self, max_bytes: int) -> bytes | bytearray:
        """Up to `max_bytes` bytes; b"" at the end of the stream. Like `receive_some`, raises
        trio.BrokenResourceError when the connection fails, trio.ClosedResourceError when the
        stream was closed."""
        if self._socket is None:
            return await self._stream.receive_some(max_bytes)
        # A connection whose bytes come slowly and that its last read left dry is not read
        # until it is readable: the read would almost always fail (a system call and an
        # exception, on every message of a one-at-a-time write). One whose bytes come quickly is
        # read at once, as they may be waiting.
        if not (self._drained and self._expected_wait >= self._spin_s):
            data = self._read(max_bytes)
            if data is not None:
                await trio.lowlevel.checkpoint()  # bytes were waiting: still let other tasks run
                return data
        clock = self._clock
        blocked_at = clock()
        if self._expected_wait < self._spin_s and _spinning.get() < MAX_SPINNING:
            _spinning.set(_spinning.get() + 1)
            try:
                data = await self._spin(max_bytes, blocked_at + self._spin_s)
            finally:
                _spinning.set(_spinning.get() - 1)
            if data is not None:
                self._learn(clock() - blocked_at)
                return data
        while True:
            await trio.lowlevel.wait_readable(self._fileno())  # a checkpoint
            data = self._read(max_bytes)
            if data is not None:
                self._learn(clock() - blocked_at)
                return data

    async def _spin(self, max_bytes: int, until: float) -> bytes | None:
        """Try to read until `until` (on `self._clock`), yielding to the other tasks between
        tries; None if nothing came."""
        while self._clock() < until:
            await trio.lowlevel.checkpoint()
            data = self._read(max_bytes)
            if data is not None:
                return data
        return None

    def _learn(self, waited_s: float) -> None:
        waited_s = min(waited_s, 8 * self._spin_s)
        self._expected_wait += (waited_s - self._expected_wait) * WAIT_WEIGHT

    def _fileno(self) -> int:
        assert self._socket is not None
        fd = self._socket.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the stream was closed")
        return fd

    def _read(self, max_bytes: int) -> bytes | None:
        """The bytes the socket has now (b"" at its end), or None if it has none yet."""
        try:
            data = os.read(self._fileno(), max_bytes)
        except BlockingIOError:
            self._drained = True
            return None
        except OSError as err:
            if err.errno == errno.EBADF:
                raise trio.ClosedResourceError("the stream was closed") from None
            raise trio.BrokenResourceError(f"socket connection broken: {err}") from err
        self._drained = len(data) < max_bytes
        return data
