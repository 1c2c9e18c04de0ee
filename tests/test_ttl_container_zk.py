"""Container and TTL nodes through ZooKeeper's client protocol (the member's `zk_port`):
createContainer and createTTL answer with a Create2Response whose Stat carries ZooKeeper's
ephemeralOwner marks, inside a multi too, and the leader reaps what they make."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import zkpy
from tests.conftest import wait_until
from tests.test_zk_kazoo import RawJute
from zkpy.core.nodekind import CONTAINER_OWNER, ttl_owner
from zkpy.core.requests import CreateRequest, DeleteRequest, MultiRequest
from zkpy.core.types import OPEN_ACL_UNSAFE
from zkpy.testing import RunningServer, running_server
from zkpy.testing.ports import free_port
from zkpy.wire import jute, jute_client

OPEN = OPEN_ACL_UNSAFE


@pytest.fixture
async def member(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(
        tmp_path / "data", tick_ms=100, zk_port=free_port(), container_check_interval_ms=50
    ) as server:
        yield server


async def test_container_and_ttl_creates_answer_as_zookeeper_and_are_reaped(
    member: RunningServer,
) -> None:
    conn = await RawJute.open(member)
    try:
        await conn.send(1, jute.OP_CREATE_CONTAINER, CreateRequest("/c", b"", OPEN, container=True))
        xid, _zxid, err, reader = await conn.reply()
        assert (xid, err) == (1, 0)
        assert reader.string("path") == "/c"
        assert reader.stat().ephemeral_owner == CONTAINER_OWNER  # 0x8000000000000000
        await conn.send(2, jute.OP_CREATE_TTL, CreateRequest("/t", b"", OPEN, ttl_ms=100))
        xid, _zxid, err, reader = await conn.reply()
        assert (xid, err) == (2, 0)
        assert reader.string("path") == "/t"
        assert reader.stat().ephemeral_owner == ttl_owner(100)
        assert (await conn.request(3, jute.OP_CREATE, CreateRequest("/c/a", b"", OPEN)))[2] == 0
        assert (await conn.request(4, jute.OP_DELETE, DeleteRequest("/c/a")))[2] == 0
    finally:
        await conn.stream.aclose()
    async with zkpy.connect(member.address) as zk:

        async def both_gone() -> bool:
            return await zk.exists("/c") is None and await zk.exists("/t") is None

        await wait_until(both_gone, timeout=10, what="the container and the TTL node reaped")


async def test_a_multi_creates_container_and_ttl_nodes_with_create2_results(
    member: RunningServer,
) -> None:
    conn = await RawJute.open(member)
    try:
        ops = (
            CreateRequest("/mc", b"", OPEN, container=True),
            CreateRequest("/mt-", b"", OPEN, sequential=True, ttl_ms=60_000),
        )
        multi = jute.JuteMulti(MultiRequest(ops), (jute.OP_CREATE_CONTAINER, jute.OP_CREATE_TTL))
        await conn.send(5, jute.OP_MULTI, multi)
        xid, _zxid, err, reader = await conn.reply()
        assert (xid, err) == (5, 0)
        results = jute_client.decode_multi_results(reader)
        assert [(r.opcode, r.path) for r in results] == [
            (jute.OP_CREATE2, "/mc"),
            (jute.OP_CREATE2, "/mt-0000000001"),
        ]
        owners = [r.stat.ephemeral_owner for r in results if r.stat is not None]
        assert owners == [CONTAINER_OWNER, ttl_owner(60_000)]
    finally:
        await conn.stream.aclose()
