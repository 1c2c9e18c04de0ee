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
from zkpy.core.acl import digest_id
from zkpy.core.errors import AuthFailedError
from zkpy.core.requests import AuthRequest, CreateRequest, GetChildrenRequest, GetDataRequest
from zkpy.core.types import ACL, AUTH_IDS, OPEN_ACL_UNSAFE, Perm
from zkpy.security import make_digest_acl
from zkpy.server.clients import MAX_IDENTITIES
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
        users = MAX_IDENTITIES // 2  # each auth hashes anew, whether its user is new or not
        last_user = f"user-{count % users}"
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
                    wire.encode_request(
                        xid, AuthRequest("digest", f"user-{xid % users}:pw".encode())
                    )
                    for xid in range(1, count + 1)
                ]
                read = wire.encode_request(count + 1, GetDataRequest("/secret", False))
                await raw.send(b"".join(frames) + read)
                for xid in range(1, count + 1):
                    assert (await raw.reply_to(xid, timeout=60))[1] == 0
                _zxid, error, body = await raw.reply_to(count + 1)
                assert error == 0
                assert body[0] == b"s"  # it waited for the auth before it
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
                assert error == 0
                assert len(body[0]) == children
                flood_done.set()
        assert worst[0] < LATENCY_BOUND_S / 2, f"a bystander waited {worst[0]:.2f} s"
        assert bystander.connected


async def test_a_write_after_an_auth_carries_its_identity(member: RunningServer) -> None:
    """An add_auth that arrives behind a pending write still applies to the write after it."""
    async with RawConnection.open(member.port) as raw:
        assert (await raw.handshake(timeout_ms=2000)).error == 0
        creator_only = (ACL(Perm.ALL, AUTH_IDS),)  # needs an identity when it is written
        await raw.send(
            wire.encode_request(1, CreateRequest("/first", b"", OPEN_ACL_UNSAFE))
            + wire.encode_request(2, AuthRequest("digest", b"alice:pw"))
            + wire.encode_request(3, CreateRequest("/mine", b"", creator_only))
        )
        for xid in (1, 2, 3):
            _zxid, error, _body = await raw.reply_to(xid)
            assert error == 0, (xid, error)
    async with zkpy.connect(member.address) as zk:
        await zk.add_auth("digest", "alice:pw")
        acl, _stat = await zk.get_acl("/mine")
        assert [entry.id for entry in acl] == [digest_id("alice", "pw")]


async def test_a_connection_may_hold_only_so_many_identities(member: RunningServer) -> None:
    """Each identity travels with every write the connection makes: past MAX_IDENTITIES an
    add_auth fails (and the connection closes, as after any failed auth); repeating one that
    the connection holds is fine."""
    async with RawConnection.open(member.port) as raw:
        assert (await raw.handshake(timeout_ms=2000)).error == 0
        users = [f"u{index}:pw".encode() for index in range(MAX_IDENTITIES)]
        frames = [
            wire.encode_request(xid, AuthRequest("digest", credential))
            for xid, credential in enumerate([*users, users[0], b"one-too-many:pw"], 1)
        ]
        await raw.send(b"".join(frames))
        for xid in range(1, MAX_IDENTITIES + 2):
            assert (await raw.reply_to(xid))[1] == 0
        _zxid, error, message = await raw.reply_to(MAX_IDENTITIES + 2)
        assert error == AuthFailedError.code
        assert "at most" in message
        await raw.wait_closed()
