"""Limits that protect a member: bad arguments from the API are refused before anything is
written, and a client that stops reading its replies is cut off without hurting the others."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import zkpy
from tests.conftest import TICK_MS, RawConnection, wait_until
from zkpy.core.requests import GetDataRequest
from zkpy.errors import BadArgumentsError, NoNodeError
from zkpy.testing import RunningServer, running_server
from zkpy.wire import client as wire

MAX_DATA = 1024
BIG = 32 << 10
MAX_OUTBOX = 256 << 10


@pytest.fixture
async def small_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(
        tmp_path / "data",
        tick_ms=TICK_MS,
        max_data_bytes=MAX_DATA,
        max_outbox_bytes=MAX_OUTBOX,
    ) as running:
        yield running


BAD_PATHS = [
    "",
    "relative",
    "/trailing/",
    "/double//slash",
    "/dot/./x",
    "/dotdot/../x",
    "/nul\x00byte",
    "/control\x1fchar",
    "/del\x7f",
    "/private\ue000use",
    "/" + "x" * 5000,
]


async def test_bad_paths_raise_bad_arguments(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        await zk.create("/fine", b"")
        for path in BAD_PATHS:
            with pytest.raises(BadArgumentsError):
                await zk.create(path, b"")
            with pytest.raises(BadArgumentsError):
                await zk.get(path)
            with pytest.raises(BadArgumentsError):
                await zk.set(path, b"")
            with pytest.raises(BadArgumentsError):
                await zk.delete(path)
            with pytest.raises(BadArgumentsError):
                await zk.exists(path)
            with pytest.raises(BadArgumentsError):
                await zk.get_children(path)
            with pytest.raises(BadArgumentsError):
                await zk.transaction().create("/fine/ok").create(path).commit()
        with pytest.raises(BadArgumentsError):
            await zk.create(123, b"")  # type: ignore[call-overload]
        with pytest.raises(BadArgumentsError):
            await zk.create("/fine/x", "text")  # type: ignore[call-overload]
        with pytest.raises(BadArgumentsError):
            await zk.delete("/fine", version=-2)
        # Nothing was written, and the session is fine.
        assert await zk.get_children("/") == ["fine", "zookeeper"]
        assert await zk.get_children("/fine") == []
        assert zk.connected


async def test_bad_paths_are_refused_by_the_server_too(server: RunningServer) -> None:
    """The client checks paths first; the server must not rely on that."""
    async with RawConnection.open(server.port) as raw:
        assert (await raw.handshake(timeout_ms=2000)).error == 0
        xid = 0
        for path in BAD_PATHS:
            for op in (
                [wire.OP_CREATE, path, b"", [[31, "world", "anyone"]], 0],
                [wire.OP_GET_DATA, path, True],
                [wire.OP_SET_DATA, path, b"", -1],
                [wire.OP_DELETE, path, -1],
                [wire.OP_GET_CHILDREN, path, False],
                [wire.OP_ADD_WATCH, path, 5],
            ):
                xid += 1
                _opcode, request = wire.decode_request_fields(op)
                await raw.request(xid, request)
                _zxid, error, _body = await raw.reply_to(xid)
                assert error == zkpy.errors.BadArgumentsError.code, (path, op[0], error)
        xid += 1
        await raw.request(xid, GetDataRequest("/", False))
        assert (await raw.reply_to(xid))[1] == 0
    async with zkpy.connect(server.address) as zk:
        assert await zk.get_children("/") == ["zookeeper"]


async def test_oversize_value_is_refused_and_nothing_is_written(
    small_server: RunningServer,
) -> None:
    async with zkpy.connect(small_server.address) as zk:
        with pytest.raises(BadArgumentsError):
            await zk.create("/big", b"x" * (MAX_DATA + 1))
        assert await zk.exists("/big") is None

        await zk.create("/edge", b"y" * MAX_DATA)  # exactly the limit is fine
        with pytest.raises(BadArgumentsError):
            await zk.set("/edge", b"z" * (MAX_DATA + 1))
        data, stat = await zk.get("/edge")
        assert data == b"y" * MAX_DATA
        assert stat.version == 0

        results = await (
            zk.transaction().create("/in-multi", b"").set("/edge", b"w" * (MAX_DATA + 1)).commit()
        )
        assert isinstance(results[1], BadArgumentsError)
        assert await zk.exists("/in-multi") is None
        assert (await zk.get("/edge"))[1].version == 0

        # A value over the frame limit is refused in the client before it is sent.
        with pytest.raises(BadArgumentsError):
            await zk.create("/huge", b"h" * (4 << 20))
        assert zk.connected
        assert await zk.get_children("/") == ["edge", "zookeeper"]


async def test_client_that_never_reads_is_cut_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="zkpy.server.clients")
    async with (
        running_server(
            tmp_path / "data",
            tick_ms=50,  # sessions of at most 1 s
            max_outbox_bytes=MAX_OUTBOX,
            handshake_timeout_s=0.5,
        ) as server,
        zkpy.connect(server.address, session_timeout=1) as good,
    ):
        await good.create("/big", b"b" * BIG)
        requests = 2000  # 64 MiB of replies, far beyond any socket buffer
        async with RawConnection.open(server.port) as raw:
            assert (await raw.handshake(timeout_ms=1000)).error == 0
            await raw.send(
                b"".join(
                    wire.encode_request(xid, GetDataRequest("/big", False))
                    for xid in range(1, requests + 1)
                )
            )

            # Without reading a byte, keep sending pings until the server's end is gone.
            async def cut_off() -> bool:
                try:
                    await raw.send(wire.PING_FRAME)
                except trio.BrokenResourceError:
                    return True
                return False

            # Meanwhile the well-behaved client is served normally, big values included.
            data, _stat = await good.get("/big")
            assert len(data) == BIG
            await wait_until(cut_off, timeout=10, what="the server to drop the non-reader")
            received = await raw.wait_closed(timeout=5)
            assert len(received) < requests * BIG // 4
        assert any("does not read its replies" in r.getMessage() for r in caplog.records)

        for i in range(5):
            data, _stat = await good.get("/big")
            assert len(data) == BIG
            await good.create(f"/after-{i}", b"")
        with pytest.raises(NoNodeError):
            await good.get("/missing")


async def test_client_that_reads_may_pipeline_more_than_the_outbox_limit(
    tmp_path: Path,
) -> None:
    """Hundreds of big reads sent at once arrive in one socket read; the server must pace its
    answers, not mistake a busy client for one that does not read."""
    async with (
        running_server(tmp_path / "data", tick_ms=TICK_MS, max_outbox_bytes=MAX_OUTBOX) as server,
        zkpy.connect(server.address, session_timeout=2) as zk,
    ):
        await zk.create("/big", b"b" * BIG)
        sizes: list[int] = []

        async def get() -> None:
            sizes.append(len((await zk.get("/big"))[0]))

        async with trio.open_nursery() as nursery:
            for _ in range(200):  # 6.4 MiB of replies against a 256 KiB outbox
                nursery.start_soon(get)
        assert sizes == [BIG] * 200
        assert zk.connected


async def test_get_children_past_the_reply_limit_is_a_clear_error(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", max_children_per_reply=50) as small:
        async with zkpy.connect(small.address) as zk:
            pipe = zk.pipeline()
            pipe.create("/p", b"")
            for index in range(51):
                pipe.create(f"/p/n{index}", b"")
            await pipe.execute()
            with pytest.raises(zkpy.errors.TooManyRequestsError, match="over the reply limit"):
                await zk.get_children("/p")
            await zk.delete("/p/n0")
            assert len(await zk.get_children("/p")) == 50
