"""A member's counters and latency histograms, kept cheaply on the request path.

Counters are plain ints and a histogram is a list of bucket counts found with `bisect`: no
locks and no registry on the path of a request (a member's work runs on one event loop; the
log sync histogram is also fed from the worker thread that persists, and only from there).
`zkpy.server.admin` renders them in Prometheus's text format when `/metrics` is scraped.
"""

from __future__ import annotations

import math
import re
import time
import typing
from bisect import bisect_left
from typing import Any

from zkpy.core.requests import WriteRequest
from zkpy.core.serving import Codec, Decoded, Hello, ServerConnection
from zkpy.core.types import WatchedEvent

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds of the latency buckets in seconds (a last one, +Inf, takes the rest)."""

_WRITE_TYPES = frozenset(typing.get_args(WriteRequest))
PING_OPCODE = 11  # in both client protocols
_clock = time.perf_counter


class Histogram:
    """Counts of observations per bucket, their sum and their number."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count `value` in the first bucket whose bound is at least `value`."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """(bound as Prometheus writes it, observations up to it), +Inf last."""
        total = 0
        found = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            found.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return found


class OpStats:
    """Requests of one operation served by this member: how many, how many failed, how long
    each took from its decoding to its reply; `commit` is the histogram of writes, which a
    write's latency also goes to (None for reads)."""

    __slots__ = ("commit", "errors", "latency", "requests")

    def __init__(self, commit: Histogram | None = None) -> None:
        self.requests = 0
        self.errors = 0
        self.latency = Histogram()
        self.commit = commit

    def answered(self, elapsed: float, error: int) -> None:
        """One request answered after `elapsed` seconds with `error` (0: none)."""
        self.requests += 1
        if error:
            self.errors += 1
        self.latency.observe(elapsed)
        if self.commit is not None:
            self.commit.observe(elapsed)


class Metrics:
    """Everything `/metrics` reports that is counted as it happens (the gauges are read from
    the member when scraped)."""

    def __init__(self) -> None:
        self.ops: dict[str, OpStats] = {}
        self._by_type: dict[type, OpStats] = {}
        self.log_sync = Histogram()  # one synced append of a batch of records to the log
        self.commit = Histogram()  # a write from its arrival here to its committed reply
        self.apply = Histogram()  # applying the committed records of one batch
        self.received = 0  # client packets, pings included (ZooKeeper's `Received`)
        self.sent = 0  # replies, pongs and watch events (ZooKeeper's `Sent`)
        self.latency_min = math.inf  # seconds, over every request answered
        self.latency_max = 0.0
        self.latency_ms_sum = 0  # each latency in whole ms, as ZooKeeper averages them
        self.answered = 0

    def reset_server_stats(self) -> None:
        """Start ZooKeeper's server stats (packets and latencies of `srvr`, `stat` and
        `mntr`) over, as its `srst` does; /metrics' counters and histograms go on."""
        self.received = self.sent = 0
        self.latency_min, self.latency_max = math.inf, 0.0
        self.latency_ms_sum = self.answered = 0

    def stats_of(self, kind: type) -> OpStats:
        """The stats of the operation of request type `kind`, made on first use."""
        stats = self._by_type.get(kind)
        if stats is None:
            name = op_name(kind)
            stats = self.ops.get(name)
            if stats is None:
                stats = OpStats(self.commit if kind in _WRITE_TYPES else None)
                self.ops[name] = stats
            self._by_type[kind] = stats
        return stats


_OP_NAMES: dict[type, str] = {}


def op_name(kind: type) -> str:
    """The operation of a request type in snake case: SetDataRequest -> set_data."""
    name = _OP_NAMES.get(kind)
    if name is None:
        base = kind.__name__.removesuffix("Request")
        name = _OP_NAMES[kind] = re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower()
    return name


class MeteredCodec:
    """One client connection's view of its listener's codec (`zkpy.core.serving.Codec`) that
    times each request from its decoding to its reply, by xid, into `Metrics`, and keeps the
    connection's own counts for ZooKeeper's `cons` (packets, last operation, latencies)."""

    def __init__(self, codec: Codec, metrics: Metrics) -> None:
        self._codec = codec
        self._metrics = metrics
        self.established = time.time()
        self.received = 0
        self.sent = 0
        self.last_opcode = -1  # -1: none yet
        self.last_xid = -1
        self.last_zxid = -1
        self.last_response = 0.0  # perf_counter time of the last reply, 0 for none
        self.last_latency = 0.0  # seconds, of the last request answered
        self.latency_min = math.inf
        self.latency_max = 0.0
        self.latency_ms_sum = 0  # each latency in whole ms, as ZooKeeper averages them
        self.answered = 0
        self._started: dict[int, tuple[OpStats, float]] = {}
        self._by_type = metrics._by_type
        self._decode = codec.decode_request  # bound once: both run for every request
        self._encode_reply = codec.reply

    def reset_stats(self) -> None:
        """Start this connection's counts over, as ZooKeeper's `crst` does."""
        self.received = self.sent = 0
        self.last_opcode = self.last_xid = self.last_zxid = -1
        self.last_response = self.last_latency = 0.0
        self.latency_min, self.latency_max = math.inf, 0.0
        self.latency_ms_sum = self.answered = 0

    def decode_hello(self, payload: bytes) -> Hello | None:
        """The listener's decoding."""
        return self._codec.decode_hello(payload)

    def decode_request(self, payload: bytes) -> tuple[int, int, Decoded] | None:
        """The listener's decoding; the request's clock starts."""
        decoded = self._decode(payload)
        self.received += 1
        self._metrics.received += 1
        if decoded is not None:
            kind = type(decoded[2])
            stats = self._by_type.get(kind) or self._metrics.stats_of(kind)
            self._started[decoded[0]] = (stats, _clock())
            self.last_opcode = decoded[1]
        return decoded

    def answer(self, conn: ServerConnection, request: object) -> Any:
        """The listener's answer to a read only its protocol has."""
        return self._codec.answer(conn, request)

    def pong(self, zxid: int) -> bytes:
        """The listener's ping reply (pings are counted as packets, not as requests)."""
        self.last_opcode = PING_OPCODE
        self.sent += 1
        self._metrics.sent += 1
        return self._codec.pong(zxid)

    def null_data(self) -> bytes | None:
        """The listener's form of null data."""
        return self._codec.null_data()

    def reply(self, xid: int, zxid: int, error: int, body: Any) -> bytes:
        """The listener's reply; request `xid` is counted, with its latency."""
        started = self._started.pop(xid, None)
        if started is not None:  # OpStats.answered, inlined: this is every request's path
            stats, since = started
            elapsed = _clock() - since
            stats.requests += 1
            if error:
                stats.errors += 1
            latency = stats.latency
            latency.counts[bisect_left(latency.bounds, elapsed)] += 1
            latency.count += 1
            latency.sum += elapsed
            if stats.commit is not None:
                stats.commit.observe(elapsed)
            # the connection's and the member's figures for the four-letter words
            self.last_response = since + elapsed
            self.last_latency = elapsed
            whole_ms = int(elapsed * 1000)
            self.latency_ms_sum += whole_ms
            self.answered += 1
            self.last_xid = xid
            self.last_zxid = zxid
            metrics = self._metrics
            metrics.latency_ms_sum += whole_ms
            metrics.answered += 1
            if elapsed > self.latency_max:
                self.latency_max = elapsed
                if elapsed > metrics.latency_max:
                    metrics.latency_max = elapsed
            if elapsed < self.latency_min:
                self.latency_min = elapsed
                if elapsed < metrics.latency_min:
                    metrics.latency_min = elapsed
        self.sent += 1
        self._metrics.sent += 1
        return self._encode_reply(xid, zxid, error, body)

    def event(self, event: WatchedEvent) -> bytes:
        """The listener's watch event."""
        self.sent += 1
        self._metrics.sent += 1
        return self._codec.event(event)

    def greeting(
        self,
        session_id: int,
        password: bytes,
        timeout_ms: int,
        zxid: int,
        max_frame: int,
        server_id: int,
        read_only: bool = False,
    ) -> bytes:
        """The listener's handshake reply."""
        return self._codec.greeting(
            session_id, password, timeout_ms, zxid, max_frame, server_id, read_only
        )

    def refusal(self, error: int, message: str) -> bytes:
        """The listener's handshake refusal."""
        return self._codec.refusal(error, message)

    def status(self, status: dict[str, Any]) -> bytes:
        """The listener's status answer."""
        return self._codec.status(status)
