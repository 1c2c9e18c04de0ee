"""A bare ZooKeeper client for the benchmarks: blocking sockets speaking jute, nothing between.

kazoo hands every request from the caller's thread to its connection thread and every reply
back, so on a small machine its rows also measure how soon those threads get a CPU beside the
members. This client is one thread that sends a request and reads its reply on the same
socket: its rows compare what the servers themselves take to answer ZooKeeper's protocol.

    jset    one-at-a-time setData of the worker's node
    jwatch  a second connection leaves a one-shot data watch (getData with watch) on the node,
            then the first sets it; the latency runs from the set to the event's arrival, and
            the next cycle starts once the set's reply has come too (as kazoo's watch row)

Requests are encoded and replies read with `zkpy.wire.jute_client`, the client's half of
zkpy's jute codec (the records are ZooKeeper 3.8's).
"""

from __future__ import annotations

import select
import socket
import struct
import time
from typing import Any

from zkpy.core.errors import Code
from zkpy.core.requests import CreateRequest, GetDataRequest, SetDataRequest
from zkpy.core.types import OPEN_ACL_UNSAFE
from zkpy.errors import error_for_code
from zkpy.wire.jute import (
    OP_CREATE,
    OP_GET_DATA,
    OP_SET_DATA,
    XID_NOTIFICATION,
    ConnectRequest,
    JuteRequest,
)
from zkpy.wire.jute_client import decode_reply_header, encode_request

_LENGTH = struct.Struct(">i")
WORKLOADS = ("jset", "jwatch")


class BareClient:
    """One session over one blocking socket, one request at a time."""

    def __init__(self, address: str, timeout_s: float) -> None:
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._xid = 0
        self.sock.sendall(ConnectRequest(0, 0, int(timeout_s * 1000), 0, bytes(16)).encode())
        self.read_frame()  # the ConnectResponse

    def close(self) -> None:
        self.sock.close()

    def _read_exactly(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = self.sock.recv(size - len(chunks))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            chunks += chunk
        return bytes(chunks)

    def read_frame(self) -> bytes:
        (size,) = _LENGTH.unpack(self._read_exactly(4))
        return self._read_exactly(size)

    def send(self, opcode: int, request: JuteRequest) -> int:
        """Send one request; its xid."""
        self._xid += 1
        self.sock.sendall(encode_request(self._xid, opcode, request))
        return self._xid

    def read_reply(self, xid: int) -> int:
        """The error code of the reply to `xid` (events before it are dropped)."""
        while True:
            got, _zxid, err, _record = decode_reply_header(self.read_frame())
            if got == xid:
                return err

    def call(self, opcode: int, request: JuteRequest) -> None:
        """Send a request and wait for its reply; ZooKeeper's error as zkpy's exception."""
        err = self.read_reply(self.send(opcode, request))
        if err:
            raise error_for_code(err, f"opcode {opcode}")

    def ensure(self, path: str, data: bytes = b"") -> None:
        """Create `path` and its missing parents (open ACL)."""
        prefix = ""
        for part in path.strip("/").split("/"):
            prefix += "/" + part
            create = CreateRequest(prefix, data, OPEN_ACL_UNSAFE)
            err = self.read_reply(self.send(OP_CREATE, create))
            if err not in (Code.OK, Code.NODE_EXISTS):
                raise error_for_code(err, prefix)


class BareWorkload:
    """A jset or jwatch workload's connections and its operation (`benchmarks.workers` runs it
    in one thread)."""

    def __init__(self, spec: dict[str, Any], timeout_s: float) -> None:
        workload: str = spec["workload"]
        if workload not in WORKLOADS:
            raise ValueError(f"the bare jute client cannot run workload {workload!r}")
        self._timeout_s = timeout_s
        path = spec["base"] + "/k0"
        value = b"v" * spec["value_size"]
        self._set_data = SetDataRequest(path, value)
        self._watch = GetDataRequest(path, watch=True)
        self._writer = BareClient(spec["target"], timeout_s)
        self._watcher: BareClient | None = None
        try:
            self._writer.ensure(path, value)
            if workload == "jwatch":
                self._watcher = BareClient(spec["target"], timeout_s)
        except BaseException:
            self.close()
            raise
        self.op = self._one_set if workload == "jset" else self._set_to_event

    def close(self) -> None:
        self._writer.close()
        if self._watcher is not None:
            self._watcher.close()

    def _one_set(self, _slot: int) -> tuple[int, float, float]:
        t0 = time.monotonic()
        self._writer.call(OP_SET_DATA, self._set_data)
        return 1, t0, time.monotonic()

    def _set_to_event(self, _slot: int) -> tuple[int, float, float]:
        watcher = self._watcher
        assert watcher is not None
        watcher.call(OP_GET_DATA, self._watch)
        t0 = time.monotonic()
        xid = self._writer.send(OP_SET_DATA, self._set_data)
        return 1, t0, _await_event_and_reply(self._writer, xid, watcher, self._timeout_s)


def _await_event_and_reply(
    writer: BareClient, xid: int, watcher: BareClient, timeout_s: float
) -> float:
    """Wait for both the watcher's event and the writer's reply to `xid`; when the event came."""
    event_at = 0.0
    waiting = {writer.sock, watcher.sock}
    while waiting:
        readable, _, _ = select.select(list(waiting), [], [], timeout_s)
        if not readable:
            raise TimeoutError("no event or reply within the session timeout")
        now = time.monotonic()
        if (
            watcher.sock in readable
            and decode_reply_header(watcher.read_frame())[0] == XID_NOTIFICATION
        ):
            event_at = now
            waiting.discard(watcher.sock)
        if writer.sock in readable:
            err = writer.read_reply(xid)
            if err:
                raise error_for_code(err, "setData")
            waiting.discard(writer.sock)
    return event_at
