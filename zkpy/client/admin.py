"""Operator queries that need no session: a member's status (role, epoch, zxids, load)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import trio

from zkpy.core.errors import ConnectionLossError, MarshallingError, ZkError
from zkpy.wire.client import PROTOCOL_VERSION, pack, unpack
from zkpy.wire.frames import FrameDecoder, encode_frame

STATUS_QUERY = encode_frame(pack({"v": PROTOCOL_VERSION, "cmd": "status"}))
"""The first frame that asks a member for its status (docs/protocol.md, section 4.4)."""


def decode_status(payload: bytes) -> dict[str, Any]:
    """The status map in a member's answer to `STATUS_QUERY`; MarshallingError if it is not
    one."""
    status = unpack(payload)
    if not isinstance(status, dict):
        raise MarshallingError("status reply must be a map")
    return status


async def fetch_status(host: str, port: int, *, timeout: float = 5.0) -> dict[str, Any]:
    """Ask one member for its status (ZooKeeper's srvr/mntr): role, epoch, last zxid ..."""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(STATUS_QUERY)
            decoder = FrameDecoder()
            while True:
                data = await stream.receive_some(1 << 16)
                if not data:
                    raise ConnectionLossError(f"{host}:{port} closed without a status")
                frames = decoder.feed(data)
                if frames:
                    return decode_status(frames[0])


async def gather_statuses(
    addresses: Iterable[str], *, timeout: float = 5.0
) -> dict[str, dict[str, Any] | str]:
    """The status of each member named in `addresses` ("host:port") and of every member their
    answers name, by address; a str says why a member did not answer. The members are asked at
    once, wave by wave (those named, then the ones their answers add), so members that do not
    answer cost one `timeout` per wave, however many they are."""
    answers: dict[str, dict[str, Any] | str] = {}

    async def ask(address: str, heard: dict[str, dict[str, Any] | str]) -> None:
        host, _sep, port = address.rpartition(":")
        try:
            heard[address] = await fetch_status(host, int(port), timeout=timeout)
        except (OSError, ValueError, trio.TooSlowError, ZkError) as err:
            heard[address] = f"unreachable ({err})"

    wave = list(dict.fromkeys(addresses))
    while wave:
        heard: dict[str, dict[str, Any] | str] = {}
        async with trio.open_nursery() as nursery:
            for address in wave:
                nursery.start_soon(ask, address, heard)
        answers.update((address, heard[address]) for address in wave)
        named = (
            str(member)
            for address in wave
            if isinstance(found := answers[address], dict)
            for member in found.get("members", [])
        )
        wave = [address for address in dict.fromkeys(named) if address not in answers]
    return answers
