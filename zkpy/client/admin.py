"""Operator queries that need no session: a member's status (role, epoch, zxids, load)."""

from __future__ import annotations

from typing import Any

import trio

from zkpy.core.errors import ConnectionLossError, MarshallingError
from zkpy.wire.client import PROTOCOL_VERSION, pack, unpack
from zkpy.wire.frames import FrameDecoder, encode_frame


async def fetch_status(host: str, port: int, *, timeout: float = 5.0) -> dict[str, Any]:
    """Ask one member for its status (ZooKeeper's srvr/mntr): role, epoch, last zxid ..."""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(encode_frame(pack({"v": PROTOCOL_VERSION, "cmd": "status"})))
            decoder = FrameDecoder()
            while True:
                data = await stream.receive_some(1 << 16)
                if not data:
                    raise ConnectionLossError(f"{host}:{port} closed without a status")
                frames = decoder.feed(data)
                if frames:
                    status = unpack(frames[0])
                    if not isinstance(status, dict):
                        raise MarshallingError("status reply must be a map")
                    return status
