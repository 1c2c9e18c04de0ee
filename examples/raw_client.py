"""A minimal zkpy client written from docs/protocol.md alone: a TCP socket and msgpack, no zkpy.

It opens a session, creates an ephemeral sequential node, reads it with a watch, sets it from the
same socket, prints the watch event and the reply (the event comes first), reads the new data and
closes the session (which deletes the node).

    python examples/raw_client.py HOST:PORT
"""

from __future__ import annotations

import socket
import struct
import sys
from typing import Any

import msgpack

PROTOCOL_VERSION = 1
XID_EVENT = -1
XID_PING = -2
OP_CREATE = 1
OP_GET_DATA = 4
OP_SET_DATA = 5
OP_CLOSE = -11
FLAG_EPHEMERAL = 1
FLAG_SEQUENTIAL = 2
OPEN_ACL = [[31, "world", "anyone"]]  # [perms, scheme, id]: everything, for anyone
EVENT_TYPES = {1: "CREATED", 2: "DELETED", 3: "CHANGED", 4: "CHILD"}
STAT_FIELDS = (
    "czxid",
    "mzxid",
    "ctime",
    "mtime",
    "version",
    "cversion",
    "aversion",
    "ephemeral_owner",
    "data_length",
    "num_children",
    "pzxid",
)


class ServerError(Exception):
    def __init__(self, code: int, message: Any) -> None:
        super().__init__(f"error {code}: {message}")
        self.code = code


def stat(fields: list[int]) -> dict[str, int]:
    return dict(zip(STAT_FIELDS, fields, strict=True))


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buffer = b""
        self.next_xid = 1
        self.last_zxid = 0

    # framing: a 4-byte big-endian length, then one msgpack value
    def send(self, value: Any) -> None:
        payload = msgpack.packb(value, use_bin_type=True)
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def receive(self) -> Any:
        while True:
            if len(self.buffer) >= 4:
                (length,) = struct.unpack(">I", self.buffer[:4])
                if len(self.buffer) >= 4 + length:
                    payload = self.buffer[4 : 4 + length]
                    self.buffer = self.buffer[4 + length :]
                    return msgpack.unpackb(payload, raw=False)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buffer += chunk

    def handshake(self, timeout_ms: int = 10_000) -> dict[str, Any]:
        self.send(
            {
                "v": PROTOCOL_VERSION,
                "session_id": 0,
                "password": b"",
                "timeout_ms": timeout_ms,
                "last_zxid": 0,
            }
        )
        reply: dict[str, Any] = self.receive()
        if reply.get("error", 0):
            raise ServerError(reply["error"], reply.get("message", ""))
        self.last_zxid = reply["zxid"]
        return reply

    def request(self, opcode: int, *args: Any) -> int:
        """Send ``[xid, opcode, args...]``; return its xid."""
        xid = self.next_xid
        self.next_xid += 1
        self.send([xid, opcode, *args])
        return xid

    def frames_until_reply(self, xid: int) -> list[list[Any]]:
        """Every event that arrives, then the reply to `xid`, in arrival order."""
        seen: list[list[Any]] = []
        while True:
            frame_xid, zxid, error, body = self.receive()
            self.last_zxid = max(self.last_zxid, zxid)
            if frame_xid == XID_PING:
                continue
            seen.append([frame_xid, zxid, error, body])
            if frame_xid == xid:
                if error:
                    raise ServerError(error, body)
                return seen

    def call(self, opcode: int, *args: Any) -> Any:
        """Send a request and return its reply body, printing any event on the way."""
        frames = self.frames_until_reply(self.request(opcode, *args))
        for _xid, zxid, _error, body in frames[:-1]:
            print_event(zxid, body)
        return frames[-1][3]


def print_event(zxid: int, body: list[Any]) -> None:
    kind, path = body
    print(f"event: {EVENT_TYPES.get(kind, kind)} {path} zxid {zxid:#x}")


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python examples/raw_client.py HOST:PORT")
    host, _, port = sys.argv[1].rpartition(":")
    conn = Connection(host.strip("[]") or "127.0.0.1", int(port))

    hello = conn.handshake()
    print(f"connected: session {hello['session_id']:#x}, timeout {hello['timeout_ms']} ms")

    path, created = conn.call(
        OP_CREATE, "/raw-client-", b"hello", OPEN_ACL, FLAG_EPHEMERAL | FLAG_SEQUENTIAL
    )
    print(f"created: {path} czxid {stat(created)['czxid']:#x}")

    data, current = conn.call(OP_GET_DATA, path, True)
    print(f"get: {data!r} version {stat(current)['version']}, watch set")

    # set_data from the same socket: the watch event must arrive before the reply
    for frame_xid, zxid, _error, body in conn.frames_until_reply(
        conn.request(OP_SET_DATA, path, b"world", -1)
    ):
        if frame_xid == XID_EVENT:
            print_event(zxid, body)
        else:
            fields = stat(body)
            print(f"set reply: version {fields['version']} mzxid {fields['mzxid']:#x}")

    data, current = conn.call(OP_GET_DATA, path, False)
    print(f"get: {data!r} version {stat(current)['version']}")

    conn.call(OP_CLOSE)
    try:
        conn.receive()
    except ConnectionError:
        pass
    conn.sock.close()
    print("closed")


if __name__ == "__main__":
    try:
        main()
    except (OSError, ServerError) as err:
        raise SystemExit(f"raw_client: {err}") from None
