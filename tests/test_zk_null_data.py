"""Null data as ZooKeeper has it: a node created or set with null data (a jute buffer of length
-1) reads back null over the ZooKeeper protocol, apart from empty data, and keeps being null
through the log, checkpoints, snapshots and a restart; msgpack clients read it as empty."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

import zkpy
from tests.test_zk_kazoo import kz, started, stopped
from zkpy.core.requests import CreateRequest, SetDataRequest
from zkpy.core.tree import DataTree, decode_node, encode_node
from zkpy.core.txn import Create, SetData, TxnRecord, decode_record, encode_record
from zkpy.core.types import OPEN_ACL_UNSAFE
from zkpy.testing import running_server
from zkpy.testing.ports import free_port
from zkpy.wire import client as wire
from zkpy.wire import jute, jute_client
from zkpy.wire.jute import MultiResult, Reader
from zkpy.wire.peer import decode_message, encode_message
from zkpy.zab.messages import Forward, ForwardedWrite, Propose

TICK_MS = 500


def test_the_codec_keeps_null_apart_from_empty() -> None:
    null = jute.REQUEST_HEADER.pack(1, jute.OP_SET_DATA) + jute.write_ustring("/a")
    _xid, _op, request = jute.decode_request(null + jute.INT.pack(-1) + jute.INT.pack(-1))
    assert request == SetDataRequest("/a", None, -1)
    _xid, _op, request = jute.decode_request(null + jute.INT.pack(0) + jute.INT.pack(-1))
    assert request == SetDataRequest("/a", b"", -1)
    stat = zkpy.Stat(*range(11))
    reply = Reader(jute.encode_data_reply(7, 9, None, stat)[4 + jute.REPLY_HEADER.size :])
    assert (reply.node_data(), reply.stat()) == (None, stat)


def test_null_data_survives_the_log_and_checkpoints() -> None:
    create = Create("/n", None, OPEN_ACL_UNSAFE, 0, 1)
    record = decode_record(encode_record(TxnRecord(5, 1, 1, 100, create)))
    assert record.op == create
    tree = DataTree()
    tree.apply(record)
    tree.apply(TxnRecord(6, 1, 2, 101, Create("/e", b"x", OPEN_ACL_UNSAFE, 0, 2)))
    tree.apply(decode_record(encode_record(TxnRecord(7, 1, 3, 102, SetData("/e", None, 1)))))
    assert tree.nodes["/e"].data is None
    node = tree.nodes["/n"]
    assert node.data is None
    assert node.stat().data_length == 0
    assert decode_node(encode_node(node)).data is None
    delta = tree.take_checkpoint()
    rebuilt = DataTree.from_checkpoint(delta.zxid, delta.node_puts, [])
    assert rebuilt.nodes["/n"].data is None
    assert rebuilt.digest() == tree.digest()


def test_an_old_checkpoint_record_still_loads() -> None:
    """A record written before null data existed: the same fields, data always bytes."""
    old = msgpack.packb([b"v", 3, 4, 3, 10, 11, 1, 0, 0, 0, [[31, "world", "anyone"]]])
    node = decode_node(old)
    assert (node.data, node.version, node.stat().data_length) == (b"v", 1, 1)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


async def test_kazoo_reads_back_null_and_msgpack_reads_empty(data_dir: Path) -> None:
    port = free_port()
    async with running_server(data_dir, tick_ms=TICK_MS, zk_port=port, checkpoint_every=2) as m:
        client = await started(m)
        try:
            await kz(client.create, "/null", None)
            await kz(client.create, "/empty", b"")
            await kz(client.create, "/later", b"x")
            await kz(client.set, "/later", None)
            assert (await kz(client.get, "/null"))[0] is None
            assert (await kz(client.get, "/empty"))[0] == b""
            data, stat = await kz(client.get, "/later")
            assert (data, stat.dataLength, stat.version) == (None, 0, 1)
            async with zkpy.connect(m.address) as zk:
                assert (await zk.get("/null"))[0] == b""
                await zk.set("/later", b"")
            assert (await kz(client.get, "/later"))[0] == b""
            await kz(client.set, "/later", None)
        finally:
            await stopped(client)
    async with running_server(data_dir, tick_ms=TICK_MS, zk_port=port) as restarted:
        client = await started(restarted)
        try:
            assert (await kz(client.get, "/null"))[0] is None
            assert (await kz(client.get, "/empty"))[0] == b""
            assert (await kz(client.get, "/later"))[0] is None
        finally:
            await stopped(client)


def test_a_multi_read_result_carries_null() -> None:
    stat = zkpy.Stat(*range(11))
    results = [MultiResult(jute.OP_GET_DATA, data=None, stat=stat), MultiResult(4, stat=stat)]
    frame = jute.encode_multi_reply(3, 4, results)
    _xid, _zxid, _err, reader = jute_client.decode_reply_header(frame[4:])
    assert [r.data for r in jute_client.decode_multi_results(reader)] == [None, b""]


def test_null_data_crosses_the_peer_links() -> None:
    """A follower forwards a jute client's write to the leader, which proposes it back."""
    writes: tuple[ForwardedWrite, ...] = (
        (7, 1, SetDataRequest("/n", None, -1), frozenset(), 0),
        (7, 2, CreateRequest("/m", None, OPEN_ACL_UNSAFE), frozenset(), 0),
    )
    assert decode_message(encode_message(Forward(writes))) == Forward(writes)
    propose = Propose((TxnRecord(1 << 32 | 1, 7, 1, 123, SetData("/n", None, 1)),))
    assert decode_message(encode_message(propose)) == propose


def test_the_msgpack_protocol_takes_nil_as_null_data() -> None:
    create = msgpack.packb([5, wire.OP_CREATE, "/n", None, [[31, "world", "anyone"]], 0])
    assert wire.decode_request(create)[2] == CreateRequest("/n", None, OPEN_ACL_UNSAFE)
    set_data = msgpack.packb([6, wire.OP_SET_DATA, "/n", None, -1])
    assert wire.decode_request(set_data)[2] == SetDataRequest("/n", None, -1)
