"""Slow and idle connections: a handshake must finish within its deadline from the connection's
start, however slowly its bytes come, and connections from a few addresses, or connections that
never handshake, cannot take every place from real clients."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

import zkpy
from tests.conftest import TICK_MS, wait_until
from zkpy.testing import RunningServer, running_server
from zkpy.wire import client as wire

HANDSHAKE_TIMEOUT_S = 1.0


async def _open_from(address: str, port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port, local_address=address)


async def _is_closed(stream: trio.SocketStream, within: float = 0.01) -> bool:
    """True if the server closes `stream` within `within` seconds (it never sends anything
    unasked, but a refusal: what it sends is skipped)."""
    with trio.move_on_after(within):
        try:
            while await stream.receive_some(1 << 16):
                pass
        except trio.BrokenResourceError:
            pass
        return True
    return False


async def _handshake(stream: trio.SocketStream) -> wire.HandshakeReply:
    """Send a new-session handshake and return the reply (error set if refused)."""
    await stream.send_all(wire.Handshake(timeout_ms=2000).encode())
    received = b""
    with trio.fail_after(10):
        while len(received) < 4 or len(received) < 4 + int.from_bytes(received[:4], "big"):
            data = await stream.receive_some(1 << 16)
            if not data:
                raise ConnectionError("closed without a handshake reply")
            received += data
    return wire.HandshakeReply.decode(received[4:])


@asynccontextmanager
async def _idle_connections(
    addresses: list[str], per_address: int, port: int
) -> AsyncIterator[list[trio.SocketStream]]:
    """Connections that send nothing, `per_address` from each of `addresses` (some may be
    refused or dropped by the server at once: that is the point)."""
    async with AsyncExitStack() as stack:
        streams = []
        for address in addresses:
            for _ in range(per_address):
                stream = await _open_from(address, port)
                await stack.enter_async_context(stream)
                streams.append(stream)
        yield streams


async def test_a_slow_handshake_is_cut_off_at_its_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends its handshake one byte at a time, each well within the deadline,
    is still cut off once the deadline from the connection's start has passed."""
    caplog.set_level(logging.WARNING, logger="zkpy.server.clients")
    async with running_server(
        tmp_path / "data", tick_ms=TICK_MS, handshake_timeout_s=HANDSHAKE_TIMEOUT_S
    ) as server:
        handshake = wire.Handshake(timeout_ms=2000).encode()
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            started = time.monotonic()
            closed = False
            for byte in handshake[:-1]:  # never quite finished
                try:
                    await stream.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    closed = True
                    break
                # the slow client's pace: a byte every fifth of the deadline, unless closed
                if await _is_closed(stream, within=HANDSHAKE_TIMEOUT_S / 5):
                    closed = True
                    break
                if time.monotonic() - started > 4 * HANDSHAKE_TIMEOUT_S:
                    break
            assert closed, "a handshake sent a byte at a time held the connection open"
            assert time.monotonic() - started < 3 * HANDSHAKE_TIMEOUT_S
        assert any("no handshake within" in r.getMessage() for r in caplog.records)
        async with zkpy.connect(server.address) as zk:
            await zk.create("/served", b"")


async def test_connections_in_handshake_are_capped(tmp_path: Path) -> None:
    """Past max_connections_in_handshake, the oldest connection without a session goes."""
    async with running_server(
        tmp_path / "data", tick_ms=TICK_MS, max_connections_in_handshake=4, handshake_timeout_s=30
    ) as server:
        async with _idle_connections(["127.0.0.1"], 6, server.port) as idle:
            await wait_until(lambda: _is_closed(idle[0]), what="the oldest to be dropped")
            await wait_until(lambda: _is_closed(idle[1]), what="the second oldest dropped")
            assert not await _is_closed(idle[2])
            async with zkpy.connect(server.address) as zk:  # drops idle[2] to make room
                await zk.create("/served", b"")
            assert not await _is_closed(idle[5])


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(
        tmp_path / "data",
        tick_ms=TICK_MS,
        max_connections=24,
        max_connections_per_address=6,
        handshake_timeout_s=30,  # idle connections would stay for the whole test
    ) as running:
        yield running


async def test_idle_connections_from_a_few_addresses_do_not_lock_others_out(
    limited: RunningServer,
) -> None:
    """Four addresses open as many idle connections as the member takes in all; a client from
    another address still connects (the oldest connection still in its handshake makes room),
    and so do clients from those addresses."""
    port = limited.port
    flooders = [f"127.0.0.{index}" for index in range(2, 6)]
    async with _idle_connections(flooders, 6, port):
        for attempt in range(3):
            async with zkpy.connect(limited.address, session_timeout=2) as zk:
                await zk.create(f"/real-{attempt}", b"")
        stream = await _open_from("127.0.0.2", port)  # the flooders' connections went first
        async with stream:
            assert (await _handshake(stream)).error == 0


async def test_connections_from_one_address_are_capped(limited: RunningServer) -> None:
    """Sessions from one address stop at max_connections_per_address; other addresses are
    still served."""
    async with AsyncExitStack() as stack:
        for _ in range(6):
            stream = await _open_from("127.0.0.7", limited.port)
            await stack.enter_async_context(stream)
            assert (await _handshake(stream)).error == 0
        extra = await _open_from("127.0.0.7", limited.port)
        async with extra:
            await wait_until(lambda: _is_closed(extra), what="the seventh connection refused")
        other = await _open_from("127.0.0.8", limited.port)
        async with other:
            assert (await _handshake(other)).error == 0


async def test_a_big_frame_before_the_handshake_is_refused_at_once(tmp_path: Path) -> None:
    """Nothing but a handshake may come before the handshake reply: a connection that declares
    a frame of nearly a MiB is closed at once instead of being buffered until its deadline."""
    async with running_server(tmp_path / "data", tick_ms=TICK_MS, handshake_timeout_s=30) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all((900_000).to_bytes(4, "big") + b"x" * 1000)
            await wait_until(lambda: _is_closed(stream), timeout=5, what="the connection closed")
        async with zkpy.connect(server.address) as zk:
            await zk.create("/after", b"y" * 900_000)
            assert len((await zk.get("/after"))[0]) == 900_000
