"""A member's admin port: `GET /metrics` (Prometheus text format), `GET /health` (200 while
the member serves with a quorum, else 503, for a load balancer's check) and `GET /status` (the
JSON that `zkpy status --json` prints for the member).

The HTTP side is a minimal HTTP/1.1 responder on trio: GET (and HEAD) only, one request per
connection, the request head bounded in size (`MAX_HEAD_BYTES`, else 431) and in time
(`READ_TIMEOUT_S`), anything it cannot parse answered 400 and closed. A scrape reads the
member's counters (`zkpy.server.metrics`) and state on the event loop, between two steps of
the member, so what it reports is consistent and nothing is locked.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import trio

from zkpy.server.metrics import Histogram, Metrics
from zkpy.server.node import Member
from zkpy.server.storage import DATA_FILE
from zkpy.zab.leader import Leading

log = logging.getLogger("zkpy.server.admin")

MAX_HEAD_BYTES = 8192  # the request line and headers together
READ_TIMEOUT_S = 5.0  # to send the whole request head
WRITE_TIMEOUT_S = 10.0  # to take the whole response
LINGER_S = 1.0  # after the response, to discard the rest of a request we refused
MAX_LINGER_BYTES = 1 << 20
MAX_ADMIN_CONNECTIONS = 64  # at once; past it the oldest one still sending its head goes

ROLES = ("looking", "following", "leading", "observing", "standalone")
_ROLE_OF = {"follower": "following", "leader": "leading", "observer": "observing"}
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class BadRequest(Exception):
    """The request cannot be answered; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


# ---- what the endpoints answer ---------------------------------------------------------------


def healthy(member: Member) -> bool:
    """Whether the member serves clients in a quorum (a follower that stops hearing its leader,
    or a leader that stops hearing a quorum, stops serving within `sync_limit` peer ticks)."""
    return member.serving


def health_body(member: Member) -> tuple[int, str]:
    """/health: (HTTP status, a one-line reason)."""
    status = member.status()
    if healthy(member):
        return 200, f"serving as {status['role']} in epoch {status['epoch']}\n"
    if status["read_only"]:
        return 503, f"not serving ({status['role']}; serving read-only clients)\n"
    return 503, f"not serving ({status['role']})\n"


def followers_in_sync(member: Member) -> int:
    """Voting followers a leader has synchronized and broadcasts to (0 on other members)."""
    role = member.replica._role  # the leader's per-follower state, read only
    if not isinstance(role, Leading):
        return 0
    return sum(1 for peer in role.peers.values() if peer.synced and not peer.observer)


def disk_usage(data_dir: Path) -> tuple[int, int]:
    """(bytes of log segment files, bytes of the LMDB checkpoint file) in `data_dir`."""
    log_bytes = 0
    try:
        with os.scandir(data_dir / "wal") as entries:
            log_bytes = sum(e.stat().st_size for e in entries if e.name.endswith(".wal"))
    except OSError:
        pass
    try:
        checkpoint_bytes = (data_dir / DATA_FILE).stat().st_size
    except OSError:
        checkpoint_bytes = 0
    return log_bytes, checkpoint_bytes


def render_metrics(member: Member) -> str:
    """The member's metrics in Prometheus's text exposition format (version 0.0.4)."""
    return "".join(_metric_lines(member))


def _metric_lines(member: Member) -> Iterator[str]:
    metrics = member.metrics
    yield from _op_families(metrics)
    yield from _histogram(
        "zkpy_log_sync_seconds", "One synced append of a batch of log records.", metrics.log_sync
    )
    yield from _histogram(
        "zkpy_commit_seconds",
        "A write from its arrival at this member to its committed reply.",
        metrics.commit,
    )
    yield from _histogram(
        "zkpy_apply_seconds",
        "Applying one batch of committed records (with their watch events and replies).",
        metrics.apply,
    )
    yield from _gauges(member)


def _op_families(metrics: Metrics) -> Iterator[str]:
    ops = sorted(metrics.ops.items())
    yield "# HELP zkpy_requests_total Client requests answered, by operation.\n"
    yield "# TYPE zkpy_requests_total counter\n"
    for name, stats in ops:
        yield f'zkpy_requests_total{{op="{name}"}} {stats.requests}\n'
    yield "# HELP zkpy_request_errors_total Client requests answered with an error.\n"
    yield "# TYPE zkpy_request_errors_total counter\n"
    for name, stats in ops:
        yield f'zkpy_request_errors_total{{op="{name}"}} {stats.errors}\n'
    yield "# HELP zkpy_request_seconds Client requests from decoding to reply, by operation.\n"
    yield "# TYPE zkpy_request_seconds histogram\n"
    for name, stats in ops:
        yield from _buckets("zkpy_request_seconds", stats.latency, f'op="{name}",')


def _histogram(name: str, help_text: str, histogram: Histogram) -> Iterator[str]:
    yield f"# HELP {name} {help_text}\n"
    yield f"# TYPE {name} histogram\n"
    yield from _buckets(name, histogram, "")


def _buckets(name: str, histogram: Histogram, labels: str) -> Iterator[str]:
    for bound, count in histogram.cumulative():
        yield f'{name}_bucket{{{labels}le="{bound}"}} {count}\n'
    plain = f"{{{labels.rstrip(',')}}}" if labels else ""
    yield f"{name}_sum{plain} {histogram.sum!r}\n"
    yield f"{name}_count{plain} {histogram.count}\n"


def _gauges(member: Member) -> Iterator[str]:
    status = member.status()
    role = _ROLE_OF.get(status["role"], status["role"])
    yield "# HELP zkpy_role The member's role: 1 for the one it has.\n"
    yield "# TYPE zkpy_role gauge\n"
    for name in ROLES:
        yield f'zkpy_role{{role="{name}"}} {int(name == role)}\n'
    log_bytes, checkpoint_bytes = disk_usage(member.config.data_dir)
    gauges: list[tuple[str, str, float]] = [
        ("zkpy_serving", "1 while the member serves clients in a quorum.", int(member.serving)),
        (
            "zkpy_read_only",
            "1 while the member, without a quorum, serves read-only clients.",
            int(status["read_only"]),
        ),
        ("zkpy_epoch", "The current epoch.", status["epoch"]),
        ("zkpy_last_zxid", "The last zxid in the log.", status["last_zxid"]),
        ("zkpy_committed_zxid", "The last zxid applied to the tree.", status["committed_zxid"]),
        ("zkpy_znodes", "Znodes in the tree.", status["znodes"]),
        ("zkpy_sessions", "Open sessions in the ensemble.", status["sessions"]),
        ("zkpy_watches", "Watches set by this member's clients.", status["watches"]),
        ("zkpy_connections", "Client connections to this member.", status["connections"]),
        ("zkpy_outstanding_requests", "Writes and syncs in flight.", status["outstanding"]),
        ("zkpy_log_bytes", "Disk taken by the log's segment files.", log_bytes),
        ("zkpy_checkpoint_bytes", "Size of the LMDB checkpoint file.", checkpoint_bytes),
        ("zkpy_followers_in_sync", "Voters a leader broadcasts to.", followers_in_sync(member)),
        ("zkpy_uptime_seconds", "Time since the member started.", status["uptime_ms"] / 1000),
    ]
    for name, help_text, value in gauges:
        yield f"# HELP {name} {help_text}\n# TYPE {name} gauge\n{name} {value}\n"


# ---- HTTP ------------------------------------------------------------------------------------


Route = Callable[[Member], tuple[int, str, str]]


def _metrics_route(member: Member) -> tuple[int, str, str]:
    return 200, PROMETHEUS_TYPE, render_metrics(member)


def _health_route(member: Member) -> tuple[int, str, str]:
    code, body = health_body(member)
    return code, "text/plain; charset=utf-8", body


def _status_route(member: Member) -> tuple[int, str, str]:
    return 200, "application/json", json.dumps(member.status(), indent=2) + "\n"


ROUTES: dict[str, Route] = {
    "/metrics": _metrics_route,
    "/health": _health_route,
    "/status": _status_route,
}

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def parse_request_line(head: bytes) -> tuple[str, str]:
    """(method, path without its query) of a request head; BadRequest if it is not HTTP/1.x."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(400, "the request is not ASCII") from None
    line = text.split("\r\n", 1)[0]
    parts = line.split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(400, "not an HTTP/1.x request line")
    method, target, _version = parts
    if not method.isalpha() or not target.startswith("/"):
        raise BadRequest(400, "bad method or target")
    return method, target.split("?", 1)[0]


def response(code: int, content_type: str, body: str, *, head_only: bool = False) -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    data = body.encode()
    lines = [
        f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(data)}",
        "Cache-Control: no-store",
        "Connection: close",
        "",
        "",
    ]
    head = "\r\n".join(lines).encode()
    return head if head_only else head + data


async def read_head(stream: trio.abc.ReceiveStream) -> bytes:
    """The request head up to its blank line; BadRequest 431 past MAX_HEAD_BYTES, 400 if the
    peer closes before the head ends."""
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEAD_BYTES:
            raise BadRequest(431, "the request head is too large")
        data = await stream.receive_some(MAX_HEAD_BYTES + 1)
        if not data:
            raise BadRequest(400, "the request ended before its head did")
        buffer += data
    end = buffer.index(b"\r\n\r\n")
    if end > MAX_HEAD_BYTES:
        raise BadRequest(431, "the request head is too large")
    return bytes(buffer[:end])


async def _linger(stream: trio.SocketStream) -> None:
    """Close our side, then discard what the client still sends (a bounded amount, for a
    bounded time): closing with unread bytes would reset the connection, and the client
    could lose the response before it reads it."""
    await stream.send_eof()
    drained = 0
    with trio.move_on_after(LINGER_S):
        while drained < MAX_LINGER_BYTES:
            data = await stream.receive_some(1 << 16)
            if not data:
                return
            drained += len(data)


class AdminServer:
    """The admin port of one member.

    At most MAX_ADMIN_CONNECTIONS connections are open at once. Past it, the oldest one still
    sending its request head is closed to make room, as the client port does with handshakes:
    idle or slow connections cannot keep a load balancer's health check out. Only when every
    connection is being answered is a new one closed unanswered."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.connections: set[object] = set()
        self.reading: dict[object, trio.CancelScope] = {}  # oldest first

    async def handle(self, stream: trio.SocketStream) -> None:
        """Answer one request and close; nothing a client sends here can harm the member."""
        async with stream:
            if len(self.connections) >= MAX_ADMIN_CONNECTIONS and not self._close_oldest_reader():
                return  # every one is being answered: closed unanswered, as a full backlog would
            connection = object()
            self.connections.add(connection)
            try:
                answer = await self._answer(stream, connection)
                if answer is None:
                    return  # closed to make room while its head was coming
                with trio.move_on_after(WRITE_TIMEOUT_S):
                    await stream.send_all(answer)
                    await _linger(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            finally:
                self.connections.discard(connection)

    def _close_oldest_reader(self) -> bool:
        """Close the connection that has been sending its request head longest; False if none
        is (every connection is being answered)."""
        oldest = next(iter(self.reading), None)
        if oldest is None:
            return False
        self.reading.pop(oldest).cancel()
        self.connections.discard(oldest)
        return True

    async def _answer(self, stream: trio.SocketStream, connection: object) -> bytes | None:
        """The response to the request on `stream`, or None if the connection was closed to
        make room (`_close_oldest_reader`) before its head was in."""
        with trio.CancelScope() as reading:
            self.reading[connection] = reading
            try:
                with trio.fail_after(READ_TIMEOUT_S):
                    head = await read_head(stream)
                method, path = parse_request_line(head)
            except BadRequest as err:
                return response(err.status, "text/plain; charset=utf-8", f"{err}\n")
            except trio.TooSlowError:
                return response(
                    408, "text/plain; charset=utf-8", "the request head came too slowly\n"
                )
            finally:
                self.reading.pop(connection, None)
        if reading.cancelled_caught:
            return None
        route = ROUTES.get(path)
        if route is None:
            return response(404, "text/plain; charset=utf-8", "try /metrics, /health, /status\n")
        if method not in ("GET", "HEAD"):
            return response(405, "text/plain; charset=utf-8", "only GET and HEAD\n")
        try:
            code, content_type, body = route(self.member)
        except Exception:
            log.exception("admin %s failed", path)
            return response(500, "text/plain; charset=utf-8", "internal error\n")
        return response(code, content_type, body, head_only=method == "HEAD")


async def serve_admin(
    member: Member, host: str, port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the admin port until cancelled; `task_status.started()` reports the bound port."""
    server = AdminServer(member)
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound: int = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: trio.serve_listeners(server.handle, listeners))
        task_status.started(bound)
