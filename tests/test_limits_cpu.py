"""CPU a client can take from a member: password hashing runs off the event loop, and a reader
lets the other connections run between the requests of one read, so that a flood from one
connection does not delay anyone else's replies (or expire their sessions)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import zkpy
from tests.conftest import TICK_MS, RawConnection
from zkpy.core.requests import AuthRequest, CreateRequest, GetChildrenRequest, GetDataRequest
from zkpy.core.types import OPEN_ACL_UNSAFE
from zkpy.security import make_digest_acl
from zkpy.testing import RunningServer, running_server
from zkpy.wire import client as wire

LATENCY_BOUND_S = 1.0  # generous: a stalled loop took seconds


@pytest.fixture
async def member(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "data", tick_ms=TICK_MS) as running:
        yield running


async def _worst_latency_while(flood: trio.Event, zk: zkpy.Client) -> float:
    """The longest a `get` of a bystander took, from before `flood` is set until after."""
    worst = 0.0
    while True:
        started = time.monotonic()
        await zk.exists("/")
        worst = max(worst, time.monotonic() - started)
        if flood.is_set():
            return worst


async def test_pipelined_auth_requests_do_not_stall_other_clients(
    member: RunningServer,
) -> None:
    """1,000 add_auth requests (PBKDF2 each) sent at once: another client's requests are
    answered promptly meanwhile, and a request sent after them runs with their identity."""
    count = 1000
    async with zkpy.connect(member.address, session_timeout=2) as bystander:
        last_user = f"user-{count - 1}"
        await bystander.create("/secret", b"s", acl=[make_digest_acl(last_user, "pw", all=True)])
        flood_done = trio.Event()
        async with trio.open_nursery() as nursery:
            worst: list[float] = []

            async def measure() -> None:
                worst.append(await _worst_latency_while(flood_done, bystander))

            nursery.start_soon(measure)
            async with RawConnection.open(member.port) as raw:
                assert (await raw.handshake(timeout_ms=2000)).error == 0
                frames = [
                    wire.encode_request(xid, AuthRequest("digest", f"user-{xid - 1}:pw".encode()))
                    for xid in range(1, count + 1)
                ]
                read = wire.encode_request(count + 1, GetDataRequest("/secret", False))
                await raw.send(b"".join(frames) + read)
                for xid in range(1, count + 1):
                    assert (await raw.reply_to(xid, timeout=60))[1] == 0
                _zxid, error, body = await raw.reply_to(count + 1)
                assert error == 0 and body[0] == b"s"  # it waited for the auth before it
            flood_done.set()
        assert worst[0] < LATENCY_BOUND_S, f"a bystander waited {worst[0]:.2f} s"
        assert bystander.connected


async def test_pipelined_big_get_children_do_not_stall_other_clients(
    member: RunningServer,
) -> None:
    children = 20_000
    requests = 300
    async with zkpy.connect(member.address, session_timeout=2) as bystander:
        await bystander.create("/wide", b"")
        async with RawConnection.open(member.port) as raw:
            assert (await raw.handshake(timeout_ms=2000)).error == 0
            await raw.send(
                b"".join(
                    wire.encode_request(
                        index + 1,
                        CreateRequest(f"/wide/c{index:06d}", b"", OPEN_ACL_UNSAFE),
                    )
                    for index in range(children)
                )
            )
            await raw.reply_to(children, timeout=60)
            flood_done = trio.Event()
            worst: list[float] = []
            async with trio.open_nursery() as nursery:

                async def measure() -> None:
                    worst.append(await _worst_latency_while(flood_done, bystander))

                nursery.start_soon(measure)
                first = children + 1
                await raw.send(
                    b"".join(
                        wire.encode_request(xid, GetChildrenRequest("/wide", False))
                        for xid in range(first, first + requests)
                    )
                )
                _zxid, error, body = await raw.reply_to(first + requests - 1, timeout=60)
                assert error == 0 and len(body[0]) == children
                flood_done.set()
        assert worst[0] < LATENCY_BOUND_S / 2, f"a bystander waited {worst[0]:.2f} s"
        assert bystander.connected
