"""The admin port of an in-process member: /metrics in Prometheus's text format with counts
that follow the traffic, /health, /status, and bad HTTP requests that get 4xx answers and
never hurt the member."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import zkpy
from tests.admin_http import get, http_request, parse_prometheus, sample
from tests.conftest import TICK_MS
from zkpy.client.admin import fetch_status
from zkpy.server.admin import MAX_ADMIN_CONNECTIONS, MAX_HEAD_BYTES, READ_TIMEOUT_S
from zkpy.server.main import JsonFormatter
from zkpy.server.metrics import Histogram, Metrics, op_name
from zkpy.testing import RunningServer, running_server
from zkpy.testing.ports import free_port


@pytest.fixture
async def admin_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "data", tick_ms=TICK_MS, admin_port=free_port()) as srv:
        yield srv


async def test_metrics_parse_and_follow_the_traffic(admin_server: RunningServer) -> None:
    before = parse_prometheus((await get(admin_server.config.admin_port, "/metrics"))[1])
    assert sample(before, "zkpy_requests_total", op="create") == 0
    assert sample(before, "zkpy_role", role="standalone") == 1
    assert sample(before, "zkpy_serving") == 1

    async with zkpy.connect(admin_server.address) as zk:
        for index in range(5):
            await zk.create(f"/n{index}", b"x")
        await zk.get("/n0")
        with pytest.raises(zkpy.errors.NoNodeError):
            await zk.delete("/missing")
        _code, text = await get(admin_server.config.admin_port, "/metrics")
        after = parse_prometheus(text)
        assert sample(after, "zkpy_connections") == 1
        assert sample(after, "zkpy_sessions") == 1

    assert sample(after, "zkpy_requests_total", op="create") == 5
    assert sample(after, "zkpy_request_errors_total", op="create") == 0
    assert sample(after, "zkpy_requests_total", op="get_data") == 1
    assert sample(after, "zkpy_requests_total", op="delete") == 1
    assert sample(after, "zkpy_request_errors_total", op="delete") == 1
    assert sample(after, "zkpy_request_seconds_count", op="create") == 5
    assert sample(after, "zkpy_request_seconds_sum", op="create") > 0
    assert sample(after, "zkpy_commit_seconds_count") == 6  # the five creates and the delete
    assert sample(after, "zkpy_log_sync_seconds_count") >= 1
    assert sample(after, "zkpy_apply_seconds_count") >= 1
    assert sample(after, "zkpy_znodes") == sample(before, "zkpy_znodes") + 5
    assert sample(after, "zkpy_last_zxid") > sample(before, "zkpy_last_zxid")
    assert sample(after, "zkpy_log_bytes") > 0
    assert sample(after, "zkpy_checkpoint_bytes") > 0
    for family in ("zkpy_epoch", "zkpy_watches", "zkpy_outstanding_requests"):
        assert after[family].type == "gauge", family
    assert after["zkpy_followers_in_sync"].type == "gauge"


async def test_health_and_status(admin_server: RunningServer) -> None:
    port = admin_server.config.admin_port
    code, text = await get(port, "/health")
    assert code == 200, text
    assert text.startswith("serving as standalone"), text
    code, text = await get(port, "/status")
    assert code == 200
    over_http = json.loads(text)
    over_client_port = await fetch_status("127.0.0.1", admin_server.port)
    assert set(over_http) == set(over_client_port)
    assert over_http["server_id"] == 1
    assert over_http["serving"] is True
    assert over_http["role"] == "standalone"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"garbage\r\n\r\n", 400),
        (b"GET /metrics\r\n\r\n", 400),
        (b"GET metrics HTTP/1.1\r\n\r\n", 400),
        (b"\xff\xfe /health HTTP/1.1\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nX: " + b"a" * (2 * MAX_HEAD_BYTES) + b"\r\n\r\n", 431),
        (b"GET /nothing HTTP/1.1\r\n\r\n", 404),
        (b"POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
    ],
    ids=["garbage", "no-version", "relative", "not-ascii", "oversize", "unknown", "post"],
)
async def test_bad_requests_get_errors_and_harm_nothing(
    admin_server: RunningServer, raw: bytes, status: int
) -> None:
    port = admin_server.config.admin_port
    code, _body = await http_request(port, raw)
    assert code == status
    async with zkpy.connect(admin_server.address) as zk:
        await zk.create("/still", b"served")
    assert (await get(port, "/health"))[0] == 200


async def test_a_half_sent_request_and_a_flood_of_connections_harm_nothing(
    admin_server: RunningServer,
) -> None:
    """More half-sent requests than MAX_ADMIN_CONNECTIONS: each new connection closes the
    oldest one still sending its head, so a health check is answered at once, well before
    any of them times out (READ_TIMEOUT_S)."""
    port = admin_server.config.admin_port
    silent = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(MAX_ADMIN_CONNECTIONS)]
    try:
        for stream in silent:
            await stream.send_all(b"GET /metr")  # never finished
        async with zkpy.connect(admin_server.address) as zk:
            await zk.create("/still", b"served")
        with trio.fail_after(READ_TIMEOUT_S / 2):
            code, _body = await get(port, "/health")
            assert code == 200
            assert await silent[0].receive_some() == b""  # the oldest one made room
        more = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(40)]
        silent += more
        with trio.fail_after(READ_TIMEOUT_S / 2):
            assert (await get(port, "/health"))[0] == 200
    finally:
        for stream in silent:
            await stream.aclose()


async def test_head_gets_the_headers_only(admin_server: RunningServer) -> None:
    code, body = await http_request(
        admin_server.config.admin_port, b"HEAD /health HTTP/1.1\r\n\r\n"
    )
    assert code == 200
    assert body == b""


def test_histogram_buckets_include_their_upper_bound() -> None:
    histogram = Histogram((0.001, 0.01))
    for value in (0.001, 0.002, 0.01, 5.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.001", 1), ("0.01", 3), ("+Inf", 4)]
    assert histogram.count == 4
    assert histogram.sum == pytest.approx(5.013)


def test_op_names_and_counts() -> None:
    from zkpy.core.requests import GetChildrenRequest, SetDataRequest

    assert op_name(SetDataRequest) == "set_data"
    assert op_name(GetChildrenRequest) == "get_children"
    metrics = Metrics()
    metrics.stats_of(SetDataRequest).answered(0.001, 0)
    metrics.stats_of(SetDataRequest).answered(0.002, -103)
    metrics.stats_of(GetChildrenRequest).answered(0.001, 0)
    assert metrics.ops["set_data"].requests == 2
    assert metrics.ops["set_data"].errors == 1
    assert metrics.commit.count == 2


def test_json_log_lines_parse() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("zkpy.server", logging.WARNING, __file__, 1, "a %s", ("b",), None)
    entry = json.loads(formatter.format(record))
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "zkpy.server"
    assert entry["message"] == "a b"
    assert entry["time"].endswith("Z")
    try:
        raise ValueError("boom\nline two")
    except ValueError:
        failed = logging.LogRecord("zkpy", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = formatter.format(failed)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


async def test_status_over_http_follows_the_member(admin_server: RunningServer) -> None:
    port = admin_server.config.admin_port
    async with zkpy.connect(admin_server.address) as zk:
        await zk.create("/s", b"")
        status = json.loads((await get(port, "/status"))[1])
        assert status["connections"] == 1
        assert (
            status["last_zxid"] == (await fetch_status("127.0.0.1", admin_server.port))["last_zxid"]
        )
