"""The jute codec (ZooKeeper's client protocol): round trips for every record, bytes derived
by hand from zookeeper.jute for the records, and bad input that must give JuteError only."""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkpy.core.errors import Code, MarshallingError
from zkpy.core.membership import MemberSpec
from zkpy.core.requests import (
    AddWatchRequest,
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
    SetWatchesRequest,
    SyncRequest,
)
from zkpy.core.types import (
    ACL,
    CREATOR_ALL_ACL,
    OPEN_ACL_UNSAFE,
    EventType,
    Id,
    Perm,
    Stat,
    WatchedEvent,
    WatchMode,
)
from zkpy.wire import jute, jute_client
from zkpy.wire.frames import FrameTooLargeError
from zkpy.wire.jute import (
    ConnectRequest,
    ConnectResponse,
    GetAllChildrenNumber,
    GetEphemerals,
    JuteError,
    JuteMulti,
    MultiRead,
    MultiResult,
    Refusal,
    WatchQuery,
    WhoAmI,
)

DIGEST_ACL = (
    ACL(Perm.READ | Perm.WRITE, Id("digest", "user:hash=")),
    ACL(Perm.ALL, Id("world", "anyone")),
)
STAT = Stat(0x100000001, 0x100000002, 1_700_000_000_000, 1_700_000_000_500, 3, 1, 0, 0, 5, 2, 9)

# one request of every kind the codec decodes, with the opcode that carries it
REQUESTS: list[tuple[int, jute.JuteRequest]] = [
    (jute.OP_CREATE, CreateRequest("/a", b"v", OPEN_ACL_UNSAFE)),
    (jute.OP_CREATE, CreateRequest("/e-", b"", DIGEST_ACL, ephemeral=True, sequential=True)),
    (jute.OP_CREATE2, CreateRequest("/s-", b"\x00" * 40, OPEN_ACL_UNSAFE, sequential=True)),
    (jute.OP_CREATE_CONTAINER, CreateRequest("/c", b"", OPEN_ACL_UNSAFE, container=True)),
    (jute.OP_CREATE_TTL, CreateRequest("/t", b"v", OPEN_ACL_UNSAFE, ttl_ms=60_000)),
    (jute.OP_CREATE_TTL, CreateRequest("/t-", b"", OPEN_ACL_UNSAFE, sequential=True, ttl_ms=1)),
    (jute.OP_DELETE, DeleteRequest("/a", 7)),
    (jute.OP_EXISTS, ExistsRequest("/a", True)),
    (jute.OP_GET_DATA, GetDataRequest("/a", False)),
    (jute.OP_SET_DATA, SetDataRequest("/a", b"new", -1)),
    (jute.OP_GET_ACL, GetACLRequest("/a")),
    (jute.OP_SET_ACL, SetACLRequest("/a", DIGEST_ACL, 2)),
    (jute.OP_GET_CHILDREN, GetChildrenRequest("/", True)),
    (jute.OP_GET_CHILDREN2, GetChildrenRequest("/ü", False)),
    (jute.OP_SYNC, SyncRequest("/a")),
    (jute.OP_PING, PingRequest()),
    (jute.OP_CHECK, CheckRequest("/a", 4)),
    (
        jute.OP_MULTI,
        JuteMulti(
            MultiRequest(
                (
                    CreateRequest("/m", b"1", OPEN_ACL_UNSAFE),
                    CreateRequest("/m2", b"2", OPEN_ACL_UNSAFE, ephemeral=True),
                    SetDataRequest("/m", b"3", 0),
                    CheckRequest("/m", 1),
                    DeleteRequest("/m", -1),
                )
            ),
            (jute.OP_CREATE, jute.OP_CREATE2, jute.OP_SET_DATA, jute.OP_CHECK, jute.OP_DELETE),
        ),
    ),
    (jute.OP_MULTI, JuteMulti(MultiRequest(()), ())),
    (jute.OP_MULTI_READ, MultiRead((GetDataRequest("/a"), GetChildrenRequest("/")))),
    (jute.OP_CHECK_WATCHES, WatchQuery("/a", (WatchMode.DATA, WatchMode.EXIST), False)),
    (jute.OP_REMOVE_WATCHES, WatchQuery("/a", (WatchMode.CHILD,), True)),
    (jute.OP_REMOVE_WATCHES, WatchQuery("/a", tuple(WatchMode), True)),
    (jute.OP_REMOVE_WATCHES, WatchQuery("/a", (WatchMode.PERSISTENT,), True)),
    (jute.OP_REMOVE_WATCHES, WatchQuery("/a", (WatchMode.PERSISTENT_RECURSIVE,), True)),
    (jute.OP_CLOSE_SESSION, CloseSessionRequest()),
    (jute.OP_AUTH, AuthRequest("digest", b"user:secret")),
    (jute.OP_SET_WATCHES, SetWatchesRequest(0x500000003, ("/d",), ("/x", "/y"), ())),
    (
        jute.OP_SET_WATCHES2,
        SetWatchesRequest(12, ("/d",), ("/x",), ("/c",), ("/p",), ("/r", "/r2")),
    ),
    (jute.OP_ADD_WATCH, AddWatchRequest("/p", WatchMode.PERSISTENT)),
    (jute.OP_ADD_WATCH, AddWatchRequest("/r", WatchMode.PERSISTENT_RECURSIVE)),
    (jute.OP_GET_EPHEMERALS, GetEphemerals("/app")),
    (jute.OP_GET_ALL_CHILDREN_NUMBER, GetAllChildrenNumber("/app")),
    (jute.OP_WHO_AM_I, WhoAmI()),
]


def s(text: str) -> bytes:
    """A ustring as zookeeper.jute lays it out: int length, UTF-8 bytes."""
    raw = text.encode()
    return struct.pack(">i", len(raw)) + raw


def i(value: int) -> bytes:
    return struct.pack(">i", value)


def q(value: int) -> bytes:
    return struct.pack(">q", value)


def header(xid: int, opcode: int) -> bytes:
    return i(xid) + i(opcode)


def reply(xid: int, zxid: int, err: int) -> bytes:
    return i(xid) + q(zxid) + i(err)


def stat_record(stat: Stat) -> bytes:
    c, m, ct, mt, v, cv, av, owner, length, children, p = stat
    longs = q(c) + q(m) + q(ct) + q(mt)
    return longs + i(v) + i(cv) + i(av) + q(owner) + i(length) + i(children) + q(p)


def open_acl() -> bytes:
    return i(1) + i(31) + s("world") + s("anyone")


def decode(payload: bytes) -> tuple[int, int, jute.JuteRequest]:
    return jute.decode_request(payload)


# ---- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize(("opcode", "request_"), REQUESTS)
def test_every_request_survives_a_round_trip(opcode: int, request_: jute.JuteRequest) -> None:
    frame = jute_client.encode_request(41, opcode, request_)
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4
    assert decode(frame[4:]) == (41, opcode, request_)


def test_every_opcode_a_client_may_send_is_covered() -> None:
    covered = {opcode for opcode, _request in REQUESTS}
    refused = {jute.OP_RECONFIG, jute.OP_SASL}
    assert covered | refused == set(jute._REQUEST_DECODERS)


@pytest.mark.parametrize("read_only", [False, True])
def test_connect_request_round_trip(read_only: bool) -> None:
    request = ConnectRequest(0, 0x200000005, 30_000, 0x1234, b"p" * 16, read_only)
    assert ConnectRequest.decode(request.encode()[4:]) == request


def test_connect_request_of_an_old_client_has_no_read_only_flag() -> None:
    payload = i(0) + q(9) + i(4000) + q(0) + i(16) + b"\x07" * 16
    request = ConnectRequest.decode(payload)
    assert request == ConnectRequest(0, 9, 4000, 0, b"\x07" * 16, False, has_read_only=False)
    assert request.encode()[4:] == payload


def test_connect_response_mirrors_the_request_flag() -> None:
    with_flag = ConnectResponse(0, 10_000, 0x99, b"k" * 16, False)
    assert with_flag.encode() == i(37) + i(0) + i(10_000) + q(0x99) + i(16) + b"k" * 16 + b"\x00"
    without = ConnectResponse(0, 10_000, 0x99, b"k" * 16, has_read_only=False)
    assert without.encode()[4:] == with_flag.encode()[4:-1]
    for response in (with_flag, without):
        assert ConnectResponse.decode(response.encode()[4:]) == response


# ---- request bytes, from zookeeper.jute by hand ------------------------------------------------


HAND_REQUESTS: list[tuple[bytes, int, jute.JuteRequest]] = [
    (
        s("/a") + i(1) + b"v" + open_acl() + i(3),
        jute.OP_CREATE,
        CreateRequest("/a", b"v", OPEN_ACL_UNSAFE, True, True),
    ),
    (  # null data stays null, apart from empty data, as in ZooKeeper
        s("/a") + i(-1) + open_acl() + i(0),
        jute.OP_CREATE,
        CreateRequest("/a", None, OPEN_ACL_UNSAFE),
    ),
    (  # kazoo writes the empty id of the "auth" scheme as a null string
        s("/a") + i(0) + i(1) + i(31) + s("auth") + i(-1) + i(0),
        jute.OP_CREATE,
        CreateRequest("/a", b"", CREATOR_ALL_ACL),
    ),
    (s("/a") + i(5), jute.OP_DELETE, DeleteRequest("/a", 5)),
    (s("/a") + b"\x01", jute.OP_EXISTS, ExistsRequest("/a", True)),
    (s("/a") + b"\x00", jute.OP_GET_DATA, GetDataRequest("/a", False)),
    (s("/a") + i(2) + b"xy" + i(-1), jute.OP_SET_DATA, SetDataRequest("/a", b"xy", -1)),
    (s("/a"), jute.OP_GET_ACL, GetACLRequest("/a")),
    (s("/a") + open_acl() + i(3), jute.OP_SET_ACL, SetACLRequest("/a", OPEN_ACL_UNSAFE, 3)),
    (s("/") + b"\x01", jute.OP_GET_CHILDREN2, GetChildrenRequest("/", True)),
    (s("/a"), jute.OP_SYNC, SyncRequest("/a")),
    (s("/a") + i(8), jute.OP_CHECK, CheckRequest("/a", 8)),
    (b"", jute.OP_CLOSE_SESSION, CloseSessionRequest()),
    (i(0) + s("digest") + i(3) + b"u:p", jute.OP_AUTH, AuthRequest("digest", b"u:p")),
    (
        q(7) + i(1) + s("/d") + i(0) + i(-1),
        jute.OP_SET_WATCHES,
        SetWatchesRequest(7, ("/d",), (), ()),
    ),
    (
        q(7) + i(0) + i(0) + i(0) + i(1) + s("/p") + i(1) + s("/r"),
        jute.OP_SET_WATCHES2,
        SetWatchesRequest(7, (), (), (), ("/p",), ("/r",)),
    ),
    (s("/p") + i(1), jute.OP_ADD_WATCH, AddWatchRequest("/p", WatchMode.PERSISTENT_RECURSIVE)),
    (
        s("/p") + i(2),
        jute.OP_REMOVE_WATCHES,
        WatchQuery("/p", (WatchMode.DATA, WatchMode.EXIST), True),
    ),
    (s("/p") + i(1), jute.OP_CHECK_WATCHES, WatchQuery("/p", (WatchMode.CHILD,), False)),
    (s("/"), jute.OP_GET_EPHEMERALS, GetEphemerals("/")),
    (i(-1), jute.OP_GET_EPHEMERALS, GetEphemerals("")),
    (s("/a"), jute.OP_GET_ALL_CHILDREN_NUMBER, GetAllChildrenNumber("/a")),
    (b"", jute.OP_WHO_AM_I, WhoAmI()),
    (
        i(4)
        + b"\x00"
        + i(-1)
        + s("/a")
        + b"\x01"
        + i(8)
        + b"\x00"
        + i(-1)
        + s("/")
        + b"\x00"
        + i(-1)
        + b"\x01"
        + i(-1),
        jute.OP_MULTI_READ,
        MultiRead((GetDataRequest("/a"), GetChildrenRequest("/"))),
    ),
]


@pytest.mark.parametrize(("record", "opcode", "expected"), HAND_REQUESTS)
def test_request_records_decode_as_zookeeper_lays_them_out(
    record: bytes, opcode: int, expected: jute.JuteRequest
) -> None:
    assert decode(header(3, opcode) + record) == (3, opcode, expected)


def test_ping_is_a_bare_header() -> None:
    assert i(8) + header(-2, 11) == jute_client.PING_FRAME
    assert decode(header(-2, 11)) == (-2, 11, PingRequest())


# ---- nodes kinds and requests zkpy does not serve yet ------------------------------------------


def test_container_and_ttl_creates_decode_to_their_node_kinds() -> None:
    create = s("/c") + i(0) + open_acl()
    container = decode(header(4, jute.OP_CREATE_CONTAINER) + create + i(4))
    ttl = decode(header(5, jute.OP_CREATE_TTL) + create + i(6) + q(60_000))
    assert container == (
        4,
        jute.OP_CREATE_CONTAINER,
        CreateRequest("/c", b"", OPEN_ACL_UNSAFE, container=True),
    )
    assert ttl[2] == CreateRequest("/c", b"", OPEN_ACL_UNSAFE, sequential=True, ttl_ms=60_000)
    via_create2 = decode(header(6, jute.OP_CREATE2) + create + i(jute.FLAG_CONTAINER))[2]
    assert via_create2 == CreateRequest("/c", b"", OPEN_ACL_UNSAFE, container=True)


@pytest.mark.parametrize(
    ("opcode", "flags", "ttl"),
    [
        (jute.OP_CREATE2, jute.FLAG_TTL, None),  # a TTL mode without createTTL's ttl
        (jute.OP_CREATE_CONTAINER, 0, None),
        (jute.OP_CREATE_TTL, jute.FLAG_CONTAINER, 1_000),
        (jute.OP_CREATE_TTL, jute.FLAG_TTL, 0),
        (jute.OP_CREATE_TTL, jute.FLAG_TTL, -5),
    ],
)
def test_mismatched_node_kinds_are_bad_arguments(opcode: int, flags: int, ttl: int | None) -> None:
    record = s("/c") + i(0) + open_acl() + i(flags) + (b"" if ttl is None else q(ttl))
    request = decode(header(4, opcode) + record)[2]
    assert isinstance(request, Refusal)
    assert request.code == Code.BAD_ARGUMENTS


def test_unknown_create_mode_is_bad_arguments_as_in_zookeeper() -> None:
    request = decode(header(4, jute.OP_CREATE) + s("/c") + i(0) + open_acl() + i(9))[2]
    assert isinstance(request, Refusal)
    assert request.code == Code.BAD_ARGUMENTS


def test_a_multi_may_create_a_ttl_node() -> None:
    ttl_op = i(jute.OP_CREATE_TTL) + b"\x00" + i(-1) + s("/t") + i(0) + open_acl() + i(5) + q(1)
    delete_op = i(jute.OP_DELETE) + b"\x00" + i(-1) + s("/a") + i(-1)
    done = i(-1) + b"\x01" + i(-1)
    request = decode(header(9, jute.OP_MULTI) + delete_op + ttl_op + done)[2]
    assert isinstance(request, jute.JuteMulti)
    assert request.request.ops[1] == CreateRequest("/t", b"", OPEN_ACL_UNSAFE, ttl_ms=1)


def test_a_non_incremental_reconfig_lists_the_whole_membership() -> None:
    """newMembers: server lines separated by commas or new lines (zkCli's ``reconfig -file``);
    a version line is ignored, as ZooKeeper ignores it there."""
    four = MemberSpec(4, "h", 7, 1, election_port=2)
    five = MemberSpec(5, "h5", 9, 3, observer=True, election_port=4, client_host="c5")
    for members in (
        "server.4=h:1:2;7,server.5=h5:3:4:observer;c5:9",
        "server.4=h:1:2;7\nserver.5=h5:3:4:observer;c5:9\nversion=100000003\n",
    ):
        record = s("") + s("") + s(members) + q(0x100000003)
        assert decode(header(12, jute.OP_RECONFIG) + record) == (
            12,
            jute.OP_RECONFIG,
            ReconfigRequest(from_version=0x100000003, new_members=(four, five)),
        )


@pytest.mark.parametrize(
    ("joining", "leaving", "members"),
    [
        ("server.6=h:1:2;3", "", "server.4=h:1:2;3"),
        ("", "4", "server.4=h:1:2;3"),
        ("", "", "4=h:1"),
        ("", "", "server.4=h:1:2"),  # no client port
    ],
)
def test_a_reconfig_that_mixes_both_forms_or_names_bad_lines_is_bad_arguments(
    joining: str, leaving: str, members: str
) -> None:
    record = s(joining) + s(leaving) + s(members) + q(-1)
    xid, _opcode, request = decode(header(12, jute.OP_RECONFIG) + record)
    assert xid == 12
    assert isinstance(request, Refusal)
    assert request.code == Code.BAD_ARGUMENTS


def test_a_sasl_request_carries_its_token() -> None:
    assert decode(header(12, jute.OP_SASL) + i(2) + b"hi") == (
        12,
        jute.OP_SASL,
        jute.SaslRequest(b"hi"),
    )


# ---- replies and events ----------------------------------------------------------------------


def test_header_only_replies() -> None:
    assert jute.encode_header(7, 0x100000009, Code.NO_NODE) == i(16) + reply(7, 0x100000009, -101)
    assert jute.encode_header(-2, 5, 0) == i(16) + reply(-2, 5, 0)


@pytest.mark.parametrize(
    ("frame", "body"),
    [
        (jute.encode_path_reply(1, 2, "/n-0000000001"), s("/n-0000000001")),
        (jute.encode_create2_reply(1, 2, "/n", STAT), s("/n") + stat_record(STAT)),
        (jute.encode_stat_reply(1, 2, STAT), stat_record(STAT)),
        (jute.encode_data_reply(1, 2, b"data", STAT), i(4) + b"data" + stat_record(STAT)),
        (
            jute.encode_acl_reply(1, 2, DIGEST_ACL, STAT),
            i(2)
            + i(3)
            + s("digest")
            + s("user:hash=")
            + i(31)
            + s("world")
            + s("anyone")
            + stat_record(STAT),
        ),
        (jute.encode_children_reply(1, 2, ["a", "b"]), i(2) + s("a") + s("b")),
        (jute.encode_children2_reply(1, 2, [], STAT), i(0) + stat_record(STAT)),
        (jute.encode_int_reply(1, 2, 0), i(0)),
        (
            jute.encode_who_am_i_reply(1, 2, [("ip", "127.0.0.1"), ("digest", "u")]),
            i(2) + s("ip") + s("127.0.0.1") + s("digest") + s("u"),
        ),
    ],
)
def test_reply_records_are_laid_out_as_zookeeper_does(frame: bytes, body: bytes) -> None:
    assert frame == i(16 + len(body)) + reply(1, 2, 0) + body


def test_the_stat_has_zookeepers_field_order() -> None:
    # czxid mzxid ctime mtime (long) version cversion aversion (int) ephemeralOwner (long)
    # dataLength numChildren (int) pzxid (long): 68 bytes
    assert len(stat_record(STAT)) == 68
    assert jute.encode_stat_reply(0, 0, STAT)[20:] == stat_record(STAT)
    _xid, _zxid, _err, reader = jute_client.decode_reply_header(
        jute.encode_stat_reply(0, 0, STAT)[4:]
    )
    assert reader.stat() == STAT


def test_multi_reply_round_trip_and_layout() -> None:
    results = [
        MultiResult(jute.OP_CREATE, path="/m"),
        MultiResult(jute.OP_CREATE2, path="/m2", stat=STAT),
        MultiResult(jute.OP_SET_DATA, stat=STAT),
        MultiResult(jute.OP_CHECK),
        MultiResult(jute.OP_DELETE),
        MultiResult(jute.OP_ERROR, err=0),
        MultiResult(jute.OP_ERROR, err=Code.BAD_VERSION),
    ]
    frame = jute.encode_multi_reply(3, 4, results)
    xid, zxid, err, reader = jute_client.decode_reply_header(frame[4:])
    assert (xid, zxid, err) == (3, 4, 0)
    assert jute_client.decode_multi_results(reader) == results
    closing = i(-1) + b"\x01" + i(-1)
    assert frame.endswith(i(-1) + b"\x00" + i(-103) + i(-103) + closing)
    assert frame[20:].startswith(i(1) + b"\x00" + i(0) + s("/m") + i(15) + b"\x00" + i(0))


def test_container_and_ttl_creates_in_a_multi_answer_as_create2_as_in_zookeeper() -> None:
    results = [
        MultiResult(jute.OP_CREATE_CONTAINER, path="/c", stat=STAT),
        MultiResult(jute.OP_CREATE_TTL, path="/t", stat=STAT),
    ]
    frame = jute.encode_multi_reply(3, 4, results)
    _xid, _zxid, _err, reader = jute_client.decode_reply_header(frame[4:])
    assert jute_client.decode_multi_results(reader) == [
        MultiResult(jute.OP_CREATE2, path="/c", stat=STAT),
        MultiResult(jute.OP_CREATE2, path="/t", stat=STAT),
    ]


def test_multi_read_reply_round_trip() -> None:
    results = [
        MultiResult(jute.OP_GET_DATA, data=b"v", stat=STAT),
        MultiResult(jute.OP_GET_CHILDREN, children=("x", "y")),
        MultiResult(jute.OP_ERROR, err=Code.NO_NODE),
    ]
    frame = jute.encode_multi_reply(8, 9, results)
    _xid, _zxid, _err, reader = jute_client.decode_reply_header(frame[4:])
    assert jute_client.decode_multi_results(reader) == results


def test_watch_event_layout() -> None:
    frame = jute.encode_event(WatchedEvent(EventType.CHILD, "/parent", 0x300000001))
    assert frame == i(16 + 12 + 7) + reply(-1, 0x300000001, 0) + i(4) + i(3) + s("/parent")
    _xid, _zxid, _err, reader = jute_client.decode_reply_header(frame[4:])
    assert jute_client.decode_event(reader) == (4, 3, "/parent")


# ---- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "xid"),
    [
        (b"\x00\x00\x00", None),  # shorter than a header
        (header(-1, jute.OP_GET_DATA) + s("/a") + b"\x00", None),  # the event xid
        (header(5, 55), 5),  # unknown opcode
        (header(5, jute.OP_GET_DATA) + s("/a"), 5),  # ends early
        (header(5, jute.OP_GET_DATA) + s("/a") + b"\x00\x00", 5),  # trailing bytes
        (header(5, jute.OP_GET_DATA) + i(-1) + b"\x00", 5),  # a null path
        (header(5, jute.OP_GET_DATA) + i(-7) + b"\x00", 5),  # a negative length
        (header(5, jute.OP_GET_DATA) + i(2) + b"\xff\xfe" + b"\x00", 5),  # not UTF-8
        (header(5, jute.OP_GET_DATA) + i(0x7FFFFFFF) + b"\x00", 5),  # longer than the frame
        (header(5, jute.OP_SET_WATCHES) + q(0) + i(0x7FFFFFFF), 5),  # a vector that cannot fit
        (header(5, jute.OP_SET_ACL) + s("/") + i(1_000_000) + i(0), 5),
        (header(5, jute.OP_ADD_WATCH) + s("/a") + i(2), 5),  # unknown addWatch mode
        (header(5, jute.OP_REMOVE_WATCHES) + s("/a") + i(0), 5),  # unknown watcher type
        (header(5, jute.OP_MULTI) + i(jute.OP_GET_DATA) + b"\x00" + i(-1) + s("/a") + b"\x00", 5),
        (header(5, jute.OP_MULTI_READ) + i(jute.OP_DELETE) + b"\x00" + i(-1) + s("/a") + i(0), 5),
        (header(5, jute.OP_MULTI) + i(-1) + b"\x00", 5),  # a multi with no closing header
    ],
)
def test_malformed_requests_raise_the_protocol_error(payload: bytes, xid: int | None) -> None:
    with pytest.raises(JuteError) as caught:
        decode(payload)
    assert isinstance(caught.value, MarshallingError)
    assert caught.value.code == Code.MARSHALLING_ERROR
    assert caught.value.xid == xid


def test_a_multi_over_the_operation_limit_is_refused() -> None:
    check = i(jute.OP_CHECK) + b"\x00" + i(-1) + s("/a") + i(0)
    done = i(-1) + b"\x01" + i(-1)
    limit = jute.MAX_MULTI_OPS
    fits = decode(header(2, jute.OP_MULTI) + check * limit + done)[2]
    assert isinstance(fits, JuteMulti)
    assert len(fits.request.ops) == limit
    with pytest.raises(JuteError, match="at most"):
        decode(header(2, jute.OP_MULTI) + check * (limit + 1) + done)


def test_huge_claimed_sizes_allocate_nothing() -> None:
    claims = [
        header(1, jute.OP_SET_DATA) + s("/a") + i(0x7FFFFFFF),
        header(1, jute.OP_SET_WATCHES2) + q(0) + i(0x7FFFFFFF) + b"\x00" * 64,
        header(1, jute.OP_SET_ACL) + s("/a") + i(0x7FFFFFFF) + b"\x00" * 64,
        i(0) + q(0) + i(0) + q(0) + i(0x7FFFFFFF),  # a connect request's password
    ]
    tracemalloc.start()
    try:
        for payload in claims:
            is_connect = payload.startswith(i(0) + q(0))
            with pytest.raises(JuteError):
                ConnectRequest.decode(payload) if is_connect else decode(payload)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024


def test_an_oversize_or_negative_frame_length_is_refused_before_buffering() -> None:
    decoder = jute.new_frame_decoder(1024)
    assert decoder.feed(jute.encode_header(1, 2, 0)) == [reply(1, 2, 0)]
    with pytest.raises(FrameTooLargeError):
        decoder.feed(i(1025))
    negative = jute.new_frame_decoder()
    with pytest.raises(FrameTooLargeError):
        negative.feed(i(-1) + b"\x00" * 8)
    assert negative.buffered == 0
    assert jute.new_frame_decoder().max_frame == 0xFFFFF  # ZooKeeper's jute.maxbuffer


# ---- fuzz ------------------------------------------------------------------------------------


def _decoders_only_raise_jute_error(payload: bytes) -> None:
    for decoder in (decode, ConnectRequest.decode, ConnectResponse.decode):
        try:
            decoder(payload)
        except JuteError:
            pass
    try:
        _xid, _zxid, _err, reader = jute_client.decode_reply_header(payload)
        position = reader.pos
        for read in (jute_client.decode_multi_results, jute_client.decode_event):
            reader.pos = position
            try:
                read(reader)
            except JuteError:
                pass
    except JuteError:
        pass


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_random_bytes_give_only_the_protocol_error(payload: bytes) -> None:
    _decoders_only_raise_jute_error(payload)


@settings(max_examples=200)
@given(st.sampled_from(range(len(REQUESTS))), st.integers(-(2**31), 2**31 - 1))
def test_header_with_any_opcode_and_random_record(index: int, opcode: int) -> None:
    record = jute_client.request_record(*REQUESTS[index])
    _decoders_only_raise_jute_error(header(3, opcode) + record)


VALID_FRAMES = [jute_client.encode_request(9, op, request)[4:] for op, request in REQUESTS] + [
    ConnectRequest(0, 1, 2, 3, b"x" * 16).encode()[4:],
    jute.encode_multi_reply(1, 2, [MultiResult(jute.OP_CREATE2, path="/m", stat=STAT)])[4:],
    jute.encode_event(WatchedEvent(EventType.CREATED, "/a", 1))[4:],
]


@settings(max_examples=500)
@given(
    st.sampled_from(VALID_FRAMES),
    st.lists(
        st.tuples(st.integers(0, 400), st.integers(0, 255), st.sampled_from("sid")), max_size=6
    ),
)
def test_mutated_valid_frames_give_only_the_protocol_error(
    frame: bytes, edits: list[tuple[int, int, str]]
) -> None:
    payload = bytearray(frame)
    for position, value, kind in edits:
        at = position % (len(payload) + 1)
        if kind == "s" and at < len(payload):
            payload[at] = value
        elif kind == "i":
            payload[at:at] = bytes([value])
        else:
            del payload[at : at + 1 + value % 8]
    _decoders_only_raise_jute_error(bytes(payload))
