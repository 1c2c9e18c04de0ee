"""A live member against hostile or broken peers: garbage, oversize frames, half frames, wrong
shapes, deep nesting. Each attack ends that connection only; a well-behaved client on the same
server keeps working throughout."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

import zkpy
from tests.conftest import TICK_MS, RawConnection, encode_exact
from zkpy.core.errors import Code
from zkpy.testing import RunningServer, running_server
from zkpy.wire import client as wire

HANDSHAKE_TIMEOUT = 0.5


@pytest.fixture
async def strict_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(
        tmp_path / "data", tick_ms=TICK_MS, handshake_timeout_s=HANDSHAKE_TIMEOUT
    ) as running:
        yield running


@pytest.fixture
async def bystander(strict_server: RunningServer) -> AsyncIterator[zkpy.Client]:
    async with zkpy.connect(strict_server.address, session_timeout=2) as zk:
        await zk.create("/ok", b"")
        yield zk


async def still_works(zk: zkpy.Client, tag: str) -> None:
    """The well-behaved client's session and connection are fine."""
    assert zk.connected, tag
    path = await zk.create(f"/ok/{tag}-", tag.encode(), sequential=True)
    assert (await zk.get(path))[0] == tag.encode()


async def good_session(raw: RawConnection) -> None:
    reply = await raw.handshake(timeout_ms=2000)
    assert reply.error == 0


async def test_random_bytes(strict_server: RunningServer, bystander: zkpy.Client) -> None:
    for seed in range(8):
        rng = random.Random(seed)
        garbage = rng.randbytes(rng.randrange(1, 4096))
        async with RawConnection.open(strict_server.port) as raw:
            await raw.send(garbage)
            await raw.wait_closed(timeout=HANDSHAKE_TIMEOUT + 5)
        await still_works(bystander, f"random{seed}")


async def refused_before_and_after_handshake(server: RunningServer, frame: bytes) -> None:
    """As a handshake, `frame` is refused with a reason and the server hangs up; after a good
    handshake, the server hangs up on it."""
    async with RawConnection.open(server.port) as raw:
        await raw.send(frame)
        reply = wire.HandshakeReply.decode(await raw.receive_frame())
        assert reply.error == Code.MARSHALLING_ERROR
        await raw.wait_closed(timeout=5)
    async with RawConnection.open(server.port) as raw:
        await good_session(raw)
        await raw.send(frame)
        await raw.wait_closed(timeout=5)


async def test_random_frames_before_and_after_the_handshake(
    strict_server: RunningServer, bystander: zkpy.Client
) -> None:
    for seed in range(8):
        rng = random.Random(seed)
        frame = encode_exact(rng.randbytes(rng.randrange(0, 512)))
        await refused_before_and_after_handshake(strict_server, frame)
        await still_works(bystander, f"frame{seed}")


async def test_oversize_length_prefix_is_refused_at_once(
    strict_server: RunningServer, bystander: zkpy.Client
) -> None:
    for handshaken in (False, True):
        async with RawConnection.open(strict_server.port) as raw:
            if handshaken:
                await good_session(raw)
            with trio.fail_after(HANDSHAKE_TIMEOUT * 0.8):  # not by the timeout: right away
                await raw.send(b"\xff\xff\xff\xff" + b"x" * 100)
                await raw.wait_closed()
        await still_works(bystander, f"oversize{handshaken}")


async def test_truncated_frame_then_silence_is_timed_out(
    strict_server: RunningServer, bystander: zkpy.Client
) -> None:
    cases = {
        "half-length": b"\x00\x00",
        "half-handshake": wire.Handshake().encode()[:-3],
        "length-only": (1000).to_bytes(4, "big"),
    }
    for name, prefix in cases.items():
        async with RawConnection.open(strict_server.port) as raw:
            started = trio.current_time()
            await raw.send(prefix)
            await raw.wait_closed(timeout=HANDSHAKE_TIMEOUT + 5)
            elapsed = trio.current_time() - started
            assert elapsed >= HANDSHAKE_TIMEOUT * 0.9, (name, elapsed)
        await still_works(bystander, name)


async def test_silent_connection_is_timed_out(
    strict_server: RunningServer, bystander: zkpy.Client
) -> None:
    async with RawConnection.open(strict_server.port) as raw:
        started = trio.current_time()
        await raw.wait_closed(timeout=HANDSHAKE_TIMEOUT + 5)
        assert trio.current_time() - started >= HANDSHAKE_TIMEOUT * 0.9
    await still_works(bystander, "silent")


WRONG_SHAPES_WITH_XID: dict[str, list[Any]] = {
    "no-opcode": [4],
    "missing-args": [5, wire.OP_CREATE, "/x"],
    "unknown-opcode": [6, 9999],
    "watch-not-bool": [7, wire.OP_GET_DATA, "/", "yes"],
    "path-not-str": [8, wire.OP_GET_DATA, 123, False],
    "data-not-bytes": [9, wire.OP_SET_DATA, "/ok", "text", -1],
    "bad-flags": [10, wire.OP_CREATE, "/x", b"", [], 64],
    "bad-acl": [11, wire.OP_CREATE, "/x", b"", [["all", "world"]], 0],
    "multi-of-reads": [12, wire.OP_MULTI, [[wire.OP_GET_DATA, "/", False]]],
    "extra-arg": [13, wire.OP_CREATE, "/x", b"", [[31, "world", "anyone"]], 0, "extra"],
}

WRONG_SHAPES_WITHOUT_XID: dict[str, Any] = {
    "map": {"xid": 1, "op": 4},
    "float-xid": [1.5, wire.OP_GET_DATA, "/", False],
    "bool-xid": [True, wire.OP_GET_DATA, "/", False],
    "huge-xid": [2**40, wire.OP_GET_DATA, "/", False],
    "scalar": 42,
    "empty-list": [],
}


async def test_wrong_shape_after_handshake_gets_marshalling_error_and_close(
    strict_server: RunningServer, bystander: zkpy.Client
) -> None:
    for name, value in WRONG_SHAPES_WITH_XID.items():
        async with RawConnection.open(strict_server.port) as raw:
            await good_session(raw)
            xid = value[0]
            await raw.send(encode_exact(msgpack.packb(value, use_bin_type=True)))
            _zxid, error, body = await raw.reply_to(xid)
            assert error == Code.MARSHALLING_ERROR, (name, error, body)
            assert isinstance(body, str), name
            assert body, name
            await raw.wait_closed(timeout=5)
        await still_works(bystander, name)

    for name, value in WRONG_SHAPES_WITHOUT_XID.items():
        async with RawConnection.open(strict_server.port) as raw:
            await good_session(raw)
            await raw.send(encode_exact(msgpack.packb(value, use_bin_type=True)))
            leftover = await raw.wait_closed(timeout=5)
            assert leftover == b"", name  # no xid to answer to
        await still_works(bystander, name)


async def test_good_requests_before_a_bad_one_are_answered(
    strict_server: RunningServer, bystander: zkpy.Client
) -> None:
    async with RawConnection.open(strict_server.port) as raw:
        await good_session(raw)
        await raw.send(
            wire.encode_request(1, wire.decode_request_fields([wire.OP_EXISTS, "/ok", False])[1])
            + encode_exact(msgpack.packb([2, 9999]))
            + wire.encode_request(3, wire.decode_request_fields([wire.OP_EXISTS, "/ok", False])[1])
        )
        _zxid, error, body = await raw.reply_to(1)
        assert error == 0
        assert isinstance(body, list)
        _zxid, error, _body = await raw.reply_to(2)
        assert error == Code.MARSHALLING_ERROR
        assert await raw.wait_closed(timeout=5) == b"", "nothing after the bad frame is answered"
    await still_works(bystander, "ordered")


async def test_deeply_nested_msgpack(strict_server: RunningServer, bystander: zkpy.Client) -> None:
    nested_arrays = encode_exact(b"\x91" * 100_000 + b"\xc0")
    nested_maps = encode_exact(b"\x81\xa1k" * 30_000 + b"\xc0")
    for name, frame in (("arrays", nested_arrays), ("maps", nested_maps)):
        await refused_before_and_after_handshake(strict_server, frame)
        await still_works(bystander, f"nested-{name}")


async def test_bad_handshakes_are_refused(
    strict_server: RunningServer, bystander: zkpy.Client
) -> None:
    bad = {
        "version": {"v": 99},
        "no-version": {"session_id": 0},
        "session-not-int": {"v": 1, "session_id": "x"},
        "password-not-bytes": {"v": 1, "session_id": 0, "password": "text"},
        "list": [1, 0, b"", 1000, 0],
    }
    for name, value in bad.items():
        async with RawConnection.open(strict_server.port) as raw:
            await raw.send(encode_exact(msgpack.packb(value, use_bin_type=True)))
            reply = wire.HandshakeReply.decode(await raw.receive_frame())
            assert reply.error == Code.MARSHALLING_ERROR, name
            assert reply.message, name
            await raw.wait_closed(timeout=5)
        await still_works(bystander, f"handshake-{name}")

    # A client that claims to have seen the future is sent elsewhere.
    async with RawConnection.open(strict_server.port) as raw:
        reply = await raw.handshake(last_zxid=1 << 62)
        assert reply.error == Code.CONNECTION_LOSS
        await raw.wait_closed(timeout=5)
    await still_works(bystander, "future")


def request_frame(value: list[object]) -> bytes:
    return encode_exact(msgpack.packb(value, use_bin_type=True))


async def frames_until_closed(raw: RawConnection) -> list[tuple[int, int, int, object]]:
    """Every server frame the connection gets before the server closes it, decoded."""
    rest = await raw.wait_closed(timeout=5)
    frames = raw.frames + raw.decoder.feed(rest)
    return [wire.decode_server_frame(frame) for frame in frames]


async def test_reserved_xids_close_the_connection_without_a_reply(
    strict_server: RunningServer, bystander: zkpy.Client
) -> None:
    """A reply to xid -1 would read as a watch event and one to -2 as a ping reply; 0 is the
    cxid of the server's own transactions on the session. Each is refused, with no frame."""
    for xid in (wire.XID_EVENT, wire.XID_PING, 0):
        for value in (
            [xid, wire.OP_GET_DATA, "/ok", False],
            [xid, wire.OP_SET_DATA, "/ok", b"overwritten", -1],
            [xid, wire.OP_SYNC, "/"],
        ):
            async with RawConnection.open(strict_server.port) as raw:
                await good_session(raw)
                await raw.send(request_frame(value))
                assert await raw.wait_closed(timeout=5) == b"", value
    assert (await bystander.get("/ok"))[0] == b"", "the refused write did not happen"
    await still_works(bystander, "reserved")


async def test_a_ping_is_only_its_exact_bytes(
    strict_server: RunningServer, bystander: zkpy.Client
) -> None:
    """docs/protocol.md 12.2: any other encoding of [-2, 11], or opcode 11 with another xid, is
    a marshalling error that closes the connection (answered when its xid may be)."""
    async with RawConnection.open(strict_server.port) as raw:
        await good_session(raw)
        await raw.send(wire.PING_FRAME)
        assert (await raw.receive_server_frame())[::2] == (wire.XID_PING, 0)
    for name, payload in {
        "int8-xid": b"\x92\xd0\xfe\x0b",
        "int16-opcode": b"\x92\xfe\xd1\x00\x0b",
        "extra-field": msgpack.packb([wire.XID_PING, wire.OP_PING, None]),
    }.items():
        async with RawConnection.open(strict_server.port) as raw:
            await good_session(raw)
            await raw.send(encode_exact(payload))
            assert await raw.wait_closed(timeout=5) == b"", name
    async with RawConnection.open(strict_server.port) as raw:
        await good_session(raw)
        await raw.send(request_frame([5, wire.OP_PING]))
        _zxid, error, body = await raw.reply_to(5)
        assert error == Code.MARSHALLING_ERROR
        assert "ping" in str(body)
        await raw.wait_closed(timeout=5)
    await still_works(bystander, "pings")


async def test_a_write_or_sync_reusing_a_pending_xid_gets_marshalling_error(
    strict_server: RunningServer, bystander: zkpy.Client
) -> None:
    """The member knows writes and syncs in progress by (session, xid): a second one with the
    xid of one not yet answered is answered -5 for that xid (docs/protocol.md 13.2), then the
    connection closes."""
    pairs = {
        "write-write": ([7, wire.OP_SET_DATA, "/ok", b"1", -1], [7, wire.OP_DELETE, "/ok", -1]),
        "sync-sync": ([7, wire.OP_SYNC, "/"], [7, wire.OP_SYNC, "/ok"]),
        "write-sync": ([7, wire.OP_SET_DATA, "/ok", b"2", -1], [7, wire.OP_SYNC, "/"]),
        "sync-write": ([7, wire.OP_SYNC, "/"], [7, wire.OP_DELETE, "/ok", -1]),
    }
    for name, (first, second) in pairs.items():
        async with RawConnection.open(strict_server.port) as raw:
            await good_session(raw)
            await raw.send(request_frame(first) + request_frame(second))  # before any commit
            frames = await frames_until_closed(raw)
        refusals = [f for f in frames if f[0] == 7 and f[2] == Code.MARSHALLING_ERROR]
        assert len(refusals) == 1, (name, frames)
        assert "xid 7" in str(refusals[0][3]), name
        assert await bystander.exists("/ok") is not None, f"{name}: the second write never ran"
    await still_works(bystander, "duplicates")


async def test_data_over_the_limit_names_the_limit(tmp_path: Path) -> None:
    async with (
        running_server(tmp_path / "data", tick_ms=TICK_MS, max_data_bytes=1000) as server,
        zkpy.connect(server.address, session_timeout=2) as zk,
    ):
        await zk.create("/n", b"small")
        too_big = b"x" * 1001
        with pytest.raises(
            zkpy.errors.BadArgumentsError, match=r"1001 .*max_data_bytes.* 1000"
        ) as refused:
            await zk.set("/n", too_big)
        assert refused.value.path == "/n"
        with pytest.raises(zkpy.errors.BadArgumentsError, match=r"1001 .*max_data_bytes.* 1000"):
            await zk.create("/m", too_big, sequential=True)
        assert (await zk.get("/n"))[0] == b"small"
        assert await zk.get_children("/") == ["n", "zookeeper"]  # no sequential /m was made
        await zk.set("/n", b"x" * 1000)  # the limit itself is allowed; the session goes on


async def test_refusals_answered_in_turn_carry_no_older_zxid(
    strict_server: RunningServer, bystander: zkpy.Client
) -> None:
    """A request refused without a transaction (a sync of a bad path, a value over the limit)
    is answered in its turn, with a zxid no older than the replies before it (section 6)."""
    too_big = b"x" * (strict_server.config.max_data_bytes + 1)
    async with RawConnection.open(strict_server.port) as raw:
        await good_session(raw)
        await raw.send(
            request_frame([1, wire.OP_SET_DATA, "/ok", b"a", -1])
            + request_frame([2, wire.OP_SYNC, "no-slash"])
            + request_frame([3, wire.OP_SET_DATA, "/ok", b"b", -1])
            + request_frame([4, wire.OP_SET_DATA, "/ok", too_big, -1])
        )
        replies = [await raw.receive_server_frame() for _ in range(4)]
    assert [(xid, error) for xid, _zxid, error, _body in replies] == [
        (1, 0),
        (2, Code.BAD_ARGUMENTS),
        (3, 0),
        (4, Code.BAD_ARGUMENTS),
    ]
    zxids = [zxid for _xid, zxid, _error, _body in replies]
    assert zxids == sorted(zxids), zxids
    assert "max_data_bytes" in str(replies[3][3])
    await still_works(bystander, "in-turn")


async def test_the_client_never_sends_a_reserved_xid(
    strict_server: RunningServer, bystander: zkpy.Client
) -> None:
    """Past 2**31 - 1 the client's xids wrap to 1, never to 0 or below, which the server would
    refuse by closing the connection."""
    bystander._next_xid = 2**31 - 2
    for tag in ("last", "wrapped", "after"):
        await still_works(bystander, tag)  # three requests each: the wrap falls inside
    assert 0 < bystander._next_xid < 10
