"""Memory a client can make a member hold: caches keep only small values, and a member's
connections together hold at most its aggregate limits (outboxes, watches, pending requests)."""

from __future__ import annotations

import gc
import logging
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import trio

import zkpy
from tests.conftest import TICK_MS, RawConnection, wait_until
from zkpy.client.admin import fetch_status
from zkpy.core import acl as acls
from zkpy.core.errors import TooManyRequestsError
from zkpy.core.requests import CreateRequest, ExistsRequest, GetDataRequest
from zkpy.core.types import OPEN_ACL_UNSAFE, SHARED_ACL_CAPACITY, Id, acl_from_wire
from zkpy.core.watches import watch_weight
from zkpy.server.storage import Storage
from zkpy.testing import RunningServer, running_server
from zkpy.wire import client as wire


def _big_acl(tag: str, entries: int = 2000) -> list[list[object]]:
    return [[31, "digest", f"{tag}-user-{index}:{'x' * 40}"] for index in range(entries)]


def test_small_acls_are_shared_and_big_ones_are_not_kept() -> None:
    small = [[31, "world", "anyone"]]
    assert acl_from_wire(small) is acl_from_wire([[31, "world", "anyone"]])
    resolved = acls.resolve(acl_from_wire(small), frozenset())
    assert acls.resolve(acl_from_wire(small), frozenset()) is resolved

    big = _big_acl("shared")
    assert acl_from_wire(big) == acl_from_wire(big)
    assert acl_from_wire(big) is not acl_from_wire(big)
    decoded = acl_from_wire(big)
    assert acls.resolve(decoded, frozenset()) is not acls.resolve(decoded, frozenset())


def test_decoded_acls_of_refused_requests_are_freed() -> None:
    """A unique big ACL (as a refused `set_acl` brings) leaves nothing behind in the caches."""
    gc.collect()
    tracemalloc.start()
    try:
        before, _peak = tracemalloc.get_traced_memory()
        for round_ in range(5):
            decoded = acl_from_wire(_big_acl(f"refused-{round_}"))
            acls.resolve(decoded, frozenset({Id("digest", "me:x")}))
            del decoded
        gc.collect()
        after, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 1 << 20, f"{after - before} bytes stayed"


def test_the_shared_acl_cache_is_bounded() -> None:
    """However many distinct small ACLs arrive, the cache keeps at most its capacity."""
    for index in range(SHARED_ACL_CAPACITY + 10):
        acl_from_wire([[1, "digest", f"u{index}:x"]])
    from zkpy.core import types

    assert len(types._SHARED_ACLS) <= SHARED_ACL_CAPACITY


# ---- the member's totals ---------------------------------------------------------------------


async def _status(server: RunningServer) -> dict[str, Any]:
    return await fetch_status("127.0.0.1", server.port)


async def _watch_exists(raw: RawConnection, xid: int, path: str) -> int:
    """Set an exists watch on `path` through `raw`; return the reply's error code."""
    await raw.request(xid, ExistsRequest(path, True))
    return (await raw.reply_to(xid))[1]


async def test_watches_of_all_sessions_together_are_limited(tmp_path: Path) -> None:
    """Past max_total_watch_bytes a watch fails with TooManyRequests, whichever session asks;
    a closed connection's watches are freed, and make room again."""
    limit = 40_000
    async with running_server(
        tmp_path / "data", tick_ms=TICK_MS, max_total_watch_bytes=limit
    ) as server:
        long = "/" + "w" * 900  # about 1.3 kB a watch
        async with RawConnection.open(server.port) as first:
            assert (await first.handshake(timeout_ms=2000)).error == 0
            xid = 0
            while True:
                xid += 1
                error = await _watch_exists(first, xid, f"{long}{xid}")
                if error:
                    break
            assert error == TooManyRequestsError.code
            assert xid - 1 == limit // watch_weight(f"{long}{xid}")
            async with RawConnection.open(server.port) as second:
                assert (await second.handshake(timeout_ms=2000)).error == 0
                assert await _watch_exists(second, 1, f"{long}-second") == TooManyRequestsError.code
                assert (await _status(server))["watch_bytes"] <= limit
                await first.stream.aclose()
                await wait_until(
                    lambda: _status_is(server, "watch_bytes", 0), what="the watches to be freed"
                )
                assert await _watch_exists(second, 2, f"{long}-second") == 0
        await wait_until(lambda: _status_is(server, "watches", 0), what="every watch freed")


async def _status_is(server: RunningServer, key: str, value: int) -> bool:
    return bool((await _status(server))[key] == value)


async def test_slow_readers_together_are_cut_off_past_the_total_outbox_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends requests (and pings) but does not read its replies holds less than
    its own outbox limit, but more than the member's total: it is cut off after a session
    timeout, and the bytes are freed; a client that reads is served throughout."""
    caplog.set_level(logging.WARNING, logger="zkpy.server.clients")
    value = 32 << 10
    async with (
        running_server(
            tmp_path / "data",
            tick_ms=50,  # sessions of at most 1 s
            max_total_outbox_bytes=1 << 20,
            handshake_timeout_s=0.5,
        ) as server,
        zkpy.connect(server.address, session_timeout=1) as good,
    ):
        await good.create("/big", b"b" * value)
        async with RawConnection.open(server.port) as raw:
            assert (await raw.handshake(timeout_ms=1000)).error == 0
            count = 600  # 19 MiB of replies: under the 64 MiB of one connection's outbox
            await raw.send(
                b"".join(
                    wire.encode_request(xid, GetDataRequest("/big", False))
                    for xid in range(1, count + 1)
                )
            )

            async def cut_off() -> bool:
                try:
                    await raw.send(wire.PING_FRAME)  # alive, but never reading
                except trio.BrokenResourceError:
                    return True
                assert len((await good.get("/big"))[0]) == value
                return False

            await wait_until(cut_off, timeout=10, interval=0.2, what="the slow reader cut off")
        assert any("max_total_outbox_bytes" in r.getMessage() for r in caplog.records)
        await wait_until(lambda: _status_is(server, "outbox_bytes", 0), what="outboxes freed")
        assert len((await good.get("/big"))[0]) == value


async def test_request_bytes_held_by_all_connections_are_limited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the member's connections hold max_total_pending_bytes of unanswered requests, a
    connection with requests in flight is not read further; every request is still answered."""
    original = Storage.append

    def slow_append(self: Storage, entries: Any) -> None:
        time.sleep(0.01)  # a slow disk: writes stay pending for a while
        original(self, entries)

    monkeypatch.setattr(Storage, "append", slow_append)
    limit = 128 << 10
    async with running_server(
        tmp_path / "data", tick_ms=TICK_MS, max_total_pending_bytes=limit
    ) as server:
        async with RawConnection.open(server.port) as raw:
            assert (await raw.handshake(timeout_ms=2000)).error == 0
            count = 800
            value = b"v" * 2048
            await raw.send(
                b"".join(
                    wire.encode_request(xid, CreateRequest(f"/n{xid}", value, OPEN_ACL_UNSAFE))
                    for xid in range(1, count + 1)
                )
            )
            highest = 0
            answered = 0
            while answered < count:
                highest = max(highest, (await _status(server))["pending_bytes"])
                with trio.move_on_after(0.005):
                    while answered < count:
                        xid, _zxid, error, _body = await raw.receive_server_frame()
                        assert error == 0
                        answered += 1
            assert xid == count
        assert highest <= limit + (64 << 10) + 2 * len(value), highest
        assert (await _status(server))["pending_bytes"] == 0
