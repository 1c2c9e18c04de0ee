"""How the client treats SESSION_MOVED (-118): the request fails with `SessionMovedError` (a
`ConnectionLossError`: it was not applied, and retrying code retries it), and the client drops
that connection and resumes the session, which attaches it to the new connection.

A scripted server stands in for a member whose connection the session has left: it answers
the first request with -118 and keeps the connection open, so only the client can end it.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

import zkpy
from zkpy.core.errors import Code
from zkpy.core.requests import ExistsRequest, Request
from zkpy.errors import ConnectionLossError, SessionMovedError
from zkpy.wire import client as wire
from zkpy.wire.frames import FrameDecoder

SESSION = 0x0100_0000_0000_0042
PASSWORD = b"p" * 16


class ScriptedMember:
    """Greets every handshake with SESSION; answers the first connection's first request
    with SESSION_MOVED, and everything later with success and no body (pings too)."""

    def __init__(self) -> None:
        self.handshakes: list[wire.Handshake] = []
        self.requests: list[Request] = []  # answered normally, on the second connection
        self.reconnected = trio.Event()

    async def serve(self, stream: trio.SocketStream) -> None:
        decoder = FrameDecoder(1 << 20)
        frames: list[bytes] = []

        async def next_frame() -> bytes:
            while not frames:
                data = await stream.receive_some(1 << 16)
                if not data:
                    raise trio.BrokenResourceError
                frames.extend(decoder.feed(data))
            return frames.pop(0)

        try:
            hello = wire.Handshake.decode(await next_frame())
            self.handshakes.append(hello)
            reply = wire.HandshakeReply(SESSION, PASSWORD, 4000, 7, 1 << 20, 1)
            await stream.send_all(reply.encode())
            first = len(self.handshakes) == 1
            if not first:
                self.reconnected.set()
            while True:
                payload = await next_frame()
                if wire.is_ping(payload):
                    await stream.send_all(wire.encode_reply(wire.XID_PING, 7, 0, None))
                    continue
                xid, _opcode, request = wire.decode_request(payload)
                if first:
                    await stream.send_all(
                        wire.encode_reply(xid, 7, Code.SESSION_MOVED, "moved elsewhere")
                    )
                    first = False
                    continue
                self.requests.append(request)
                await stream.send_all(wire.encode_reply(xid, 7, 0, None))
        except trio.BrokenResourceError:
            pass


async def test_session_moved_fails_the_request_and_the_client_resumes_elsewhere() -> None:
    member = ScriptedMember()
    async with trio.open_nursery() as nursery:
        listeners: Any = await nursery.start(
            lambda task_status: trio.serve_tcp(
                member.serve, 0, host="127.0.0.1", task_status=task_status
            )
        )
        port = listeners[0].socket.getsockname()[1]
        async with zkpy.connect(f"127.0.0.1:{port}", session_timeout=4.0) as zk:
            with pytest.raises(SessionMovedError) as raised:
                await zk.set("/k", b"late")
            assert isinstance(raised.value, ConnectionLossError)
            assert raised.value.code == -118
            with trio.fail_after(10):
                await member.reconnected.wait()
            assert await zk.exists("/k") is None  # the session goes on, on the new connection
            assert [h.session_id for h in member.handshakes] == [0, SESSION]
            assert member.handshakes[1].password == PASSWORD
            assert member.requests == [ExistsRequest("/k", False)]
        nursery.cancel_scope.cancel()
