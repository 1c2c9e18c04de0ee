"""The jute codec against kazoo's own serialization: the bytes kazoo sends decode into the
requests they mean, and the replies the codec encodes read back through kazoo's parsers."""

from __future__ import annotations

from typing import Any

import pytest
from kazoo.protocol import serialization as kz
from kazoo.protocol.states import ZnodeStat
from kazoo.security import ACL as KazooACL
from kazoo.security import CREATOR_ALL_ACL as KAZOO_CREATOR_ALL_ACL
from kazoo.security import Id as KazooId
from kazoo.security import make_digest_acl

from zkpy.core.errors import Code
from zkpy.core.membership import MemberSpec
from zkpy.core.requests import (
    AuthRequest,
    CheckRequest,
    CloseSessionRequest,
    CreateRequest,
    DeleteRequest,
    ExistsRequest,
    GetACLRequest,
    GetChildrenRequest,
    GetDataRequest,
    MultiRequest,
    PingRequest,
    ReconfigRequest,
    SetACLRequest,
    SetDataRequest,
    SyncRequest,
)
from zkpy.core.types import ACL, CREATOR_ALL_ACL, OPEN_ACL_UNSAFE, EventType, Id, Stat, WatchedEvent
from zkpy.wire import jute, jute_client
from zkpy.wire.jute import (
    ConnectRequest,
    ConnectResponse,
    JuteMulti,
    JuteRequest,
    MultiResult,
)

KAZOO_OPEN = [KazooACL(31, KazooId("world", "anyone"))]
DIGEST = make_digest_acl("user", "secret", read=True, write=True)
ZKPY_DIGEST = (ACL(DIGEST.perms, Id(DIGEST.id.scheme, DIGEST.id.id)),)
STAT = Stat(0x100000001, 0x100000002, 1_700_000_000_000, 1_700_000_000_500, 3, 1, 2, 0x55, 5, 2, 9)


def kazoo_request(xid: int, request: Any) -> bytes:
    """A request as kazoo's connection sends it (without the length): xid, type, record."""
    header: bytes = kz.int_int_struct.pack(xid, request.type)
    return header + bytes(request.serialize())


@pytest.mark.parametrize(
    ("kazoo", "opcode", "expected"),
    [
        (kz.Create("/a", b"v", KAZOO_OPEN, 0), 1, CreateRequest("/a", b"v", OPEN_ACL_UNSAFE)),
        (
            kz.Create("/e-", b"", [DIGEST], 3),
            1,
            CreateRequest("/e-", b"", ZKPY_DIGEST, ephemeral=True, sequential=True),
        ),
        (kz.Create("/n", None, KAZOO_OPEN, 0), 1, CreateRequest("/n", None, OPEN_ACL_UNSAFE)),
        (
            kz.Create2("/c", b"x", KAZOO_CREATOR_ALL_ACL, 1),
            15,
            CreateRequest("/c", b"x", CREATOR_ALL_ACL, ephemeral=True),
        ),
        (kz.Delete("/a", 3), 2, DeleteRequest("/a", 3)),
        (kz.Exists("/a", lambda event: None), 3, ExistsRequest("/a", True)),
        (kz.GetData("/a", None), 4, GetDataRequest("/a", False)),
        (kz.SetData("/a", b"new", -1), 5, SetDataRequest("/a", b"new", -1)),
        (kz.GetACL("/a"), 6, GetACLRequest("/a")),
        (kz.SetACL("/a", [DIGEST], 4), 7, SetACLRequest("/a", ZKPY_DIGEST, 4)),
        (kz.GetChildren("/", print), 8, GetChildrenRequest("/", True)),
        (kz.GetChildren2("/a", None), 12, GetChildrenRequest("/a", False)),
        (kz.Sync("/a"), 9, SyncRequest("/a")),
        (kz.CheckVersion("/a", 2), 13, CheckRequest("/a", 2)),
        (kz.Auth(0, "digest", "user:secret"), 100, AuthRequest("digest", b"user:secret")),
        (kz.Close(), -11, CloseSessionRequest()),
        (kz.Ping(), 11, PingRequest()),
    ],
)
def test_kazoos_requests_decode_into_what_they_mean(
    kazoo: object, opcode: int, expected: object
) -> None:
    assert jute.decode_request(kazoo_request(7, kazoo)) == (7, opcode, expected)


def test_kazoos_requests_are_what_the_codec_encodes() -> None:
    pairs: list[tuple[Any, int, JuteRequest]] = [
        (
            kz.Create("/a", b"v", KAZOO_OPEN, 2),
            1,
            CreateRequest("/a", b"v", OPEN_ACL_UNSAFE, False, True),
        ),
        (kz.SetData("/a", b"new", 5), 5, SetDataRequest("/a", b"new", 5)),
        (kz.SetACL("/a", [DIGEST], 4), 7, SetACLRequest("/a", ZKPY_DIGEST, 4)),
        (kz.GetData("/a", True), 4, GetDataRequest("/a", True)),
        (kz.CheckVersion("/a", 2), 13, CheckRequest("/a", 2)),
    ]
    for kazoo, opcode, request in pairs:
        assert jute_client.encode_request(7, opcode, request)[4:] == kazoo_request(7, kazoo)


def test_kazoos_transaction_decodes_into_a_multi() -> None:
    transaction = kz.Transaction(
        [
            kz.Create("/t", b"1", KAZOO_OPEN, 0),
            kz.Delete("/u", -1),
            kz.SetData("/t", b"2", 0),
            kz.CheckVersion("/t", 1),
        ]
    )
    xid, opcode, request = jute.decode_request(kazoo_request(9, transaction))
    ops = (
        CreateRequest("/t", b"1", OPEN_ACL_UNSAFE),
        DeleteRequest("/u", -1),
        SetDataRequest("/t", b"2", 0),
        CheckRequest("/t", 1),
    )
    assert (xid, opcode) == (9, 14)
    assert request == JuteMulti(MultiRequest(ops), (1, 2, 5, 13))
    assert jute_client.encode_request(9, 14, request)[4:] == kazoo_request(9, transaction)


def test_kazoos_connect_request_decodes() -> None:
    connect = kz.Connect(0, 0x300000002, 10_000, 0x77, b"\x01" * 16, False)
    assert ConnectRequest.decode(bytes(connect.serialize())) == ConnectRequest(
        0, 0x300000002, 10_000, 0x77, b"\x01" * 16, False
    )
    fresh = kz.Connect(0, 0, 10_000, 0, b"\x00" * 16, True)
    assert ConnectRequest.decode(bytes(fresh.serialize())).read_only is True


def test_kazoo_reads_the_connect_response() -> None:
    frame = ConnectResponse(0, 8_000, 0x1234, b"\x09" * 16, False).encode()
    response, offset = kz.Connect.deserialize(frame[4:], 0)
    assert (response.time_out, response.session_id, response.passwd) == (
        8_000,
        0x1234,
        b"\x09" * 16,
    )
    assert response.read_only is False
    assert offset == len(frame) - 4


def kazoo_reply(frame: bytes) -> tuple[kz.ReplyHeader, bytes, int]:
    header, offset = kz.ReplyHeader.deserialize(frame[4:], 0)
    return header, frame[4:], offset


def zstat(stat: Stat) -> ZnodeStat:
    return ZnodeStat._make(stat)


@pytest.mark.parametrize(
    ("frame", "parser", "expected"),
    [
        (jute.encode_path_reply(3, 8, "/n-0000000004"), kz.Create, "/n-0000000004"),
        (jute.encode_create2_reply(3, 8, "/n", STAT), kz.Create2, ("/n", zstat(STAT))),
        (jute.encode_stat_reply(3, 8, STAT), kz.Exists, zstat(STAT)),
        (jute.encode_stat_reply(3, 8, STAT), kz.SetData, zstat(STAT)),
        (jute.encode_stat_reply(3, 8, STAT), kz.SetACL, zstat(STAT)),
        (jute.encode_data_reply(3, 8, b"value", STAT), kz.GetData, (b"value", zstat(STAT))),
        (
            jute.encode_acl_reply(3, 8, ZKPY_DIGEST + OPEN_ACL_UNSAFE, STAT),
            kz.GetACL,
            ([DIGEST, *KAZOO_OPEN], zstat(STAT)),
        ),
        (jute.encode_children_reply(3, 8, ["a", "ü"]), kz.GetChildren, ["a", "ü"]),
        (jute.encode_children2_reply(3, 8, ["a"], STAT), kz.GetChildren2, (["a"], zstat(STAT))),
        (jute.encode_path_reply(3, 8, "/a"), kz.Sync, "/a"),
    ],
)
def test_kazoo_parses_the_replies(frame: bytes, parser: object, expected: object) -> None:
    header, payload, offset = kazoo_reply(frame)
    assert header == kz.ReplyHeader(3, 8, 0)
    assert parser.deserialize(payload, offset) == expected  # type: ignore[attr-defined]


def test_kazoo_parses_an_error_reply() -> None:
    header, _payload, offset = kazoo_reply(jute.encode_header(5, 9, Code.NODE_EXISTS))
    assert header == kz.ReplyHeader(5, 9, -110)
    assert offset == 16


def test_kazoo_parses_a_multi_reply() -> None:
    frame = jute.encode_multi_reply(
        4,
        8,
        [
            MultiResult(jute.OP_CREATE, path="/t"),
            MultiResult(jute.OP_DELETE),
            MultiResult(jute.OP_SET_DATA, stat=STAT),
            MultiResult(jute.OP_CHECK),
        ],
    )
    header, payload, offset = kazoo_reply(frame)
    assert header.err == 0
    assert kz.Transaction.deserialize(payload, offset) == ["/t", True, zstat(STAT), True]
    failed = jute.encode_multi_reply(
        4, 8, [MultiResult(jute.OP_ERROR, err=0), MultiResult(jute.OP_ERROR, err=Code.BAD_VERSION)]
    )
    _header, payload, offset = kazoo_reply(failed)
    results = kz.Transaction.deserialize(payload, offset)
    assert [type(result).__name__ for result in results] == ["RolledBackError", "BadVersionError"]


def test_kazoo_parses_a_watch_event() -> None:
    frame = jute.encode_event(WatchedEvent(EventType.CHANGED, "/w", 0x200000001))
    header, payload, offset = kazoo_reply(frame)
    assert header.xid == -1
    event, end = kz.Watch.deserialize(payload, offset)
    assert event == kz.Watch(3, 3, "/w")
    assert end == len(payload)


def test_the_ping_reply_and_auth_reply_are_headers_kazoo_recognises() -> None:
    ping, _payload, _offset = kazoo_reply(jute.encode_header(jute.XID_PING, 5, 0))
    auth, _payload, _offset = kazoo_reply(jute.encode_header(jute.XID_AUTH, 0, Code.AUTH_FAILED))
    assert ping.xid == -2
    assert (auth.xid, auth.err) == (-4, -115)


def test_kazoos_non_incremental_reconfig_lists_the_new_membership() -> None:
    members = "server.4=h:1:2;3,server.5=h:4:4:observer;5"
    request = jute.decode_request(kazoo_request(6, kz.Reconfig(None, None, members, 9)))
    assert request == (
        6,
        16,
        ReconfigRequest(
            from_version=9,
            new_members=(MemberSpec(4, "h", 3, 1, election_port=2), MemberSpec(5, "h", 5, 4, True)),
        ),
    )
