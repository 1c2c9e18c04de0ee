"""zkpy.wire: length-prefixed frames and the msgpack client protocol codec."""

from __future__ import annotations

import itertools
from typing import Any, get_args

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkpy.core import requests as requests_module
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
    RemoveWatchesRequest,
    Request,
    SetACLRequest,
    SetDataRequest,
    SetWatchesRequest,
    SyncRequest,
)
from zkpy.core.types import ACL, OPEN_ACL_UNSAFE, EventType, Id, Perm, Stat, WatchedEvent, WatchMode
from zkpy.wire import client as wire
from zkpy.wire.frames import (
    DEFAULT_MAX_FRAME,
    HEADER_BYTES,
    FrameDecoder,
    FrameTooLargeError,
    encode_frame,
)

# ---- frames ---------------------------------------------------------------------------------

FRAMES = [b"", b"a", b"hello" * 50, bytes(range(256)), b"\x00\x00\x00\x05"]
STREAM = b"".join(encode_frame(f) for f in FRAMES)


def test_encode_frame_is_a_big_endian_length_prefix() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert HEADER_BYTES == 4


def test_many_frames_in_one_feed() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(STREAM) == FRAMES
    assert decoder.buffered == 0


def test_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        decoder = FrameDecoder()
        got = decoder.feed(STREAM[:cut])
        got += decoder.feed(STREAM[cut:])
        assert got == FRAMES, cut
        assert decoder.buffered == 0


def test_split_at_every_pair_of_boundaries_in_a_short_stream() -> None:
    stream = encode_frame(b"xy") + encode_frame(b"") + encode_frame(b"z")
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            decoder = FrameDecoder()
            got = decoder.feed(stream[:i]) + decoder.feed(stream[i:j]) + decoder.feed(stream[j:])
            assert got == [b"xy", b"", b"z"], (i, j)


def test_one_byte_at_a_time_and_partial_frames_stay_buffered() -> None:
    decoder = FrameDecoder()
    got: list[bytes] = []
    for index in range(len(STREAM)):
        got += decoder.feed(STREAM[index : index + 1])
    assert got == FRAMES
    decoder.feed(encode_frame(b"abcdef")[:7])
    assert decoder.buffered == 7
    assert decoder.feed(bytearray(b"def")) == [b"abcdef"]
    assert decoder.buffered == 0


@given(st.lists(st.binary(max_size=40), max_size=8), st.lists(st.integers(0, 400), max_size=8))
def test_frames_survive_any_chunking(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(f) for f in frames)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    decoder = FrameDecoder()
    got: list[bytes] = []
    for start, stop in itertools.pairwise(points):
        got += decoder.feed(stream[start:stop])
    assert got == frames
    assert decoder.buffered == 0


def test_frame_too_large_is_raised_from_the_prefix_alone() -> None:
    decoder = FrameDecoder(max_frame=10)
    with pytest.raises(FrameTooLargeError) as info:
        decoder.feed((11).to_bytes(4, "big"))  # no body at all
    assert (info.value.length, info.value.limit) == (11, 10)
    assert isinstance(info.value, ValueError)


def test_frame_too_large_when_the_prefix_arrives_in_pieces() -> None:
    decoder = FrameDecoder(max_frame=10)
    prefix = (2**32 - 1).to_bytes(4, "big")
    assert decoder.feed(prefix[:3]) == []
    with pytest.raises(FrameTooLargeError) as info:
        decoder.feed(prefix[3:])
    assert info.value.length == 2**32 - 1


def test_frame_too_large_after_good_frames_in_the_same_stream() -> None:
    decoder = FrameDecoder(max_frame=10)
    assert decoder.feed(encode_frame(b"0123456789")) == [b"0123456789"]  # exactly the limit
    with pytest.raises(FrameTooLargeError):
        decoder.feed(encode_frame(b"0123456789X"))


def test_frames_before_an_oversize_one_are_not_lost() -> None:
    decoder = FrameDecoder(max_frame=10)
    stream = encode_frame(b"first") + encode_frame(b"second") + (11).to_bytes(4, "big")
    assert decoder.feed(stream) == [b"first", b"second"]
    with pytest.raises(FrameTooLargeError):
        decoder.feed(b"")  # the stream cannot be read past the bad length
    with pytest.raises(FrameTooLargeError):
        decoder.feed(encode_frame(b"ok"))


def test_default_limit_fits_a_one_mib_value() -> None:
    assert DEFAULT_MAX_FRAME > 1 << 20
    decoder = FrameDecoder()
    with pytest.raises(FrameTooLargeError):
        decoder.feed((DEFAULT_MAX_FRAME + 1).to_bytes(4, "big"))


# ---- requests: round trips --------------------------------------------------------------

ACLS = (
    ACL(Perm.READ | Perm.WRITE, Id("digest", "bob:hash")),
    ACL(Perm.ALL, Id("ip", "10.0.0.0/8")),
)

REQUESTS: list[tuple[int, Request]] = [
    (wire.OP_CREATE, CreateRequest("/a", b"data", OPEN_ACL_UNSAFE)),
    (wire.OP_CREATE, CreateRequest("/a", b"", ACLS, ephemeral=True)),
    (wire.OP_CREATE, CreateRequest("/q/", b"\x00\xff", ACLS, sequential=True)),
    (wire.OP_CREATE, CreateRequest("/q/l-", b"x", OPEN_ACL_UNSAFE, True, True)),
    (wire.OP_DELETE, DeleteRequest("/a")),
    (wire.OP_DELETE, DeleteRequest("/a", 7)),
    (wire.OP_EXISTS, ExistsRequest("/a")),
    (wire.OP_EXISTS, ExistsRequest("/a", True)),
    (wire.OP_GET_DATA, GetDataRequest("/a", True)),
    (wire.OP_GET_DATA, GetDataRequest("/ünïcödé")),
    (wire.OP_SET_DATA, SetDataRequest("/a", b"v", 3)),
    (wire.OP_SET_DATA, SetDataRequest("/a", b"v")),
    (wire.OP_GET_ACL, GetACLRequest("/a")),
    (wire.OP_SET_ACL, SetACLRequest("/a", ACLS, 2)),
    (wire.OP_SYNC, SyncRequest("/")),
    (wire.OP_GET_CHILDREN, GetChildrenRequest("/a", True)),
    (wire.OP_CHECK, CheckRequest("/a", -1)),
    (
        wire.OP_MULTI,
        MultiRequest(
            (
                CreateRequest("/m", b"", OPEN_ACL_UNSAFE, sequential=True),
                DeleteRequest("/m", 1),
                SetDataRequest("/m", b"x", 0),
                CheckRequest("/m", 4),
            )
        ),
    ),
    (wire.OP_MULTI, MultiRequest(())),
    (wire.OP_REMOVE_WATCHES, RemoveWatchesRequest("/a", None)),
    *[(wire.OP_REMOVE_WATCHES, RemoveWatchesRequest("/a", mode)) for mode in WatchMode],
    (wire.OP_CLOSE, CloseSessionRequest()),
    (wire.OP_AUTH, AuthRequest("digest", b"user:secret")),
    (wire.OP_SET_WATCHES, SetWatchesRequest(0)),
    (
        wire.OP_SET_WATCHES,
        SetWatchesRequest(2**40, ("/a",), ("/b", "/c"), ("/d",), ("/e",), ("/",)),
    ),
    (wire.OP_ADD_WATCH, AddWatchRequest("/a", WatchMode.PERSISTENT)),
    (wire.OP_ADD_WATCH, AddWatchRequest("/", WatchMode.PERSISTENT_RECURSIVE)),
    (wire.OP_RECONFIG, ReconfigRequest(remove=(2, 3))),
    (
        wire.OP_RECONFIG,
        ReconfigRequest(
            (MemberSpec(4, "10.0.0.4", 2181, 2888), MemberSpec(5, "h5", 1, 2, observer=True)),
            (1,),
            0x100000003,
        ),
    ),
    (
        wire.OP_RECONFIG,
        ReconfigRequest(
            from_version=7, new_members=(MemberSpec(1, "h1", 1, 2), MemberSpec(3, "h3", 3, 4))
        ),
    ),
]


def _payload(frame: bytes) -> bytes:
    (payload,) = FrameDecoder().feed(frame)
    return payload


@pytest.mark.parametrize(("opcode", "request_"), REQUESTS, ids=lambda v: repr(v)[:40])
def test_request_round_trip(opcode: int, request_: Request) -> None:
    for xid in (1, 2**31 - 1, -(2**31), -3, wire.XID_AUTH, wire.XID_SET_WATCHES):
        assert wire.decode_request(_payload(wire.encode_request(xid, request_))) == (
            xid,
            opcode,
            request_,
        )


def test_every_request_type_is_covered() -> None:
    """A new request type needs a line in REQUESTS (session creation and attachment travel in
    the handshake, and a ping is a fixed frame: `test_a_ping_is_only_its_exact_frame`)."""
    covered = {type(r) for _o, r in REQUESTS}
    assert covered == set(get_args(Request)) - {
        requests_module.CreateSessionRequest,
        requests_module.AttachSessionRequest,
        PingRequest,
    }


def test_ping_frame_is_recognised() -> None:
    assert wire.is_ping(_payload(wire.PING_FRAME))
    assert wire.encode_request(wire.XID_PING, PingRequest()) == wire.PING_FRAME
    assert not wire.is_ping(_payload(wire.encode_request(1, SyncRequest("/"))))


@pytest.mark.parametrize(
    ("payload", "xid"),
    [
        (b"\x92\xd0\xfe\x0b", None),  # [-2, 11] with the xid as an int 8
        (b"\x92\xfe\xd0\x0b", None),  # ... with the opcode as an int 8
        (msgpack.packb([-2, wire.OP_PING, None]), None),  # an extra field
        (msgpack.packb([5, wire.OP_PING]), 5),  # opcode 11 with another xid: answered, for 5
        (msgpack.packb([5, wire.OP_MULTI, [[wire.OP_PING]]]), 5),
    ],
    ids=lambda v: v.hex() if isinstance(v, bytes) else repr(v),
)
def test_a_ping_is_only_its_exact_frame(payload: bytes, xid: int | None) -> None:
    """docs/protocol.md 12.2: the server knows a ping by its 3 bytes alone; anything else that
    says opcode 11 is a marshalling error (without an xid to answer when it claims -2)."""
    assert not wire.is_ping(payload)
    err = _refused(payload)
    assert getattr(err, "xid", None) == xid


@pytest.mark.parametrize("xid", sorted(wire.RESERVED_XIDS))
def test_reserved_xids_are_refused_without_an_xid_to_answer(xid: int) -> None:
    """A reply with xid -1 would read as a watch event, with -2 as a ping reply, and 0 is the
    cxid of the server's own transactions on the session (its creation and expiry)."""
    assert set(range(-2, 1)) == wire.RESERVED_XIDS  # what decode_request's range test assumes
    for request_ in (GetDataRequest("/a"), SetDataRequest("/a", b"x"), SyncRequest("/")):
        err = _refused(_payload(wire.encode_request(xid, request_)))
        assert "reserved" in str(err)
        assert getattr(err, "xid", None) is None


paths_st = st.text(max_size=12).map(lambda s: "/" + s)
ints32 = st.integers(-(2**31), 2**31 - 1)
client_xids = ints32.filter(lambda xid: xid not in wire.RESERVED_XIDS)
acl_st = st.lists(
    st.builds(
        ACL,
        st.integers(0, 31),
        st.builds(Id, st.sampled_from(["world", "digest", "ip", "x"]), st.text(max_size=8)),
    ),
    max_size=3,
).map(tuple)
create_st = st.builds(
    CreateRequest, paths_st, st.binary(max_size=20), acl_st, st.booleans(), st.booleans()
)
multi_inner_st = st.one_of(
    create_st,
    st.builds(DeleteRequest, paths_st, ints32),
    st.builds(SetDataRequest, paths_st, st.binary(max_size=20), ints32),
    st.builds(CheckRequest, paths_st, ints32),
)
path_tuple = st.lists(paths_st, max_size=3).map(tuple)
request_st = st.one_of(
    multi_inner_st,
    st.builds(ExistsRequest, paths_st, st.booleans()),
    st.builds(GetDataRequest, paths_st, st.booleans()),
    st.builds(GetChildrenRequest, paths_st, st.booleans()),
    st.builds(GetACLRequest, paths_st),
    st.builds(SetACLRequest, paths_st, acl_st, ints32),
    st.builds(SyncRequest, paths_st),
    st.builds(MultiRequest, st.lists(multi_inner_st, max_size=4).map(tuple)),
    st.builds(RemoveWatchesRequest, paths_st, st.one_of(st.none(), st.sampled_from(WatchMode))),
    st.just(CloseSessionRequest()),
    st.builds(AuthRequest, st.text(max_size=8), st.binary(max_size=16)),
    st.builds(
        SetWatchesRequest,
        st.integers(0, 2**63),
        path_tuple,
        path_tuple,
        path_tuple,
        path_tuple,
        path_tuple,
    ),
    st.builds(
        AddWatchRequest,
        paths_st,
        st.sampled_from([WatchMode.PERSISTENT, WatchMode.PERSISTENT_RECURSIVE]),
    ),
)


@given(client_xids, request_st)
def test_any_request_round_trips(xid: int, request_: Request) -> None:
    got_xid, opcode, decoded = wire.decode_request(_payload(wire.encode_request(xid, request_)))
    assert (got_xid, decoded) == (xid, request_)
    assert opcode == wire.request_fields(request_)[0]


# ---- requests: refusing malformed input -------------------------------------------------


def _raw(value: Any) -> bytes:
    raw: bytes = msgpack.packb(value, use_bin_type=True)
    return raw


def _refused(payload: bytes) -> MarshallingError:
    with pytest.raises(MarshallingError) as info:
        wire.decode_request(payload)
    assert info.value.code == Code.MARSHALLING_ERROR
    return info.value


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_marshalling_error(payload: bytes) -> None:
    try:
        wire.decode_request(payload)
    except MarshallingError:
        pass


msgpack_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=10),
        st.binary(max_size=10),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=20,
)
KNOWN_OPCODES = [
    wire.OP_CREATE,
    wire.OP_DELETE,
    wire.OP_EXISTS,
    wire.OP_GET_DATA,
    wire.OP_SET_DATA,
    wire.OP_GET_ACL,
    wire.OP_SET_ACL,
    wire.OP_SYNC,
    wire.OP_PING,
    wire.OP_GET_CHILDREN,
    wire.OP_CHECK,
    wire.OP_MULTI,
    wire.OP_REMOVE_WATCHES,
    wire.OP_CLOSE,
    wire.OP_AUTH,
    wire.OP_SET_WATCHES,
    wire.OP_ADD_WATCH,
    -10,
    0,
    99,
]


@settings(max_examples=200)
@given(client_xids, st.sampled_from(KNOWN_OPCODES), st.lists(msgpack_values, max_size=7))
def test_well_formed_msgpack_of_any_shape_is_decoded_or_refused(
    xid: int, opcode: int, args: list[Any]
) -> None:
    """Arrays that start right but carry arbitrary arguments: decoded or MarshallingError."""
    try:
        got_xid, _opcode, _request = wire.decode_request(_raw([xid, opcode, *args]))
    except MarshallingError as err:
        got_xid = err.xid  # type: ignore[attr-defined]  # the refusal names the request's xid
    assert got_xid == xid


@given(msgpack_values)
def test_any_msgpack_value_is_decoded_or_refused(value: Any) -> None:
    try:
        wire.decode_request(_raw(value))
    except MarshallingError:
        pass


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",  # a byte msgpack never uses
        _raw([1, 2, "/a", -1])[:-1],  # truncated
        _raw([1, 2, "/a", -1]) + b"\x00",  # trailing bytes
        _raw({"xid": 1, "op": 2}),  # a map instead of an array
        _raw({1: 2}),  # a map with a non-string key
        _raw([]),
        _raw("a string"),
        _raw(None),
        _raw(["1", 2, "/a", -1]),  # xid of the wrong type
        _raw([True, 2, "/a", -1]),  # bool for the xid
        _raw([1.0, 2, "/a", -1]),
        _raw([2**31, 2, "/a", -1]),  # xid beyond 32 bits
        _raw([-(2**31) - 1, 2, "/a", -1]),
        b"\x91" * 100_000 + b"\xc0",  # 100000 nested arrays
        b"\x93\x01\x0e" + b"\x91" * 100_000 + b"\xc0",  # ... inside a multi
        b"\x81\xa1a" * 50_000 + b"\xc0",  # deeply nested maps
        b"\x92\x01\xd4\x05\x00",  # an ext type
        b"\x93\x01\x02\xa2\xff\xfe",  # invalid UTF-8 in a str
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion items
    ],
    ids=lambda p: p[:12].hex(),
)
def test_malformed_payloads_are_marshalling_errors(payload: bytes) -> None:
    _refused(payload)


BAD_SHAPES: list[list[Any]] = [
    [7],  # no opcode
    [7, "1", "/a", -1],  # opcode of the wrong type
    [7, True, "/a", -1],  # bool for the opcode
    [7, 999, "/a"],  # unknown opcode
    [7, wire.OP_PING],  # a ping is only the exact frame [-2, 11]
    [7, -10, 1, 1000, b""],  # create-session travels in the handshake only
    # wrong argument counts
    [7, wire.OP_CREATE, "/a", b"", []],
    [7, wire.OP_CREATE, "/a", b"", [], 0, 0],
    [7, wire.OP_DELETE, "/a"],
    [7, wire.OP_EXISTS, "/a"],
    [7, wire.OP_GET_DATA, "/a", True, 1],
    [7, wire.OP_SET_DATA, "/a", b""],
    [7, wire.OP_GET_ACL],
    [7, wire.OP_SET_ACL, "/a", []],
    [7, wire.OP_SYNC, "/a", "/b"],
    [7, wire.OP_CHECK, "/a"],
    [7, wire.OP_MULTI],
    [7, wire.OP_MULTI, [], []],
    [7, wire.OP_REMOVE_WATCHES, "/a"],
    [7, wire.OP_CLOSE, 1],
    [7, wire.OP_AUTH, "digest"],
    [7, wire.OP_SET_WATCHES, 0, [], [], [], []],
    [7, wire.OP_ADD_WATCH, "/a"],
    # wrong types
    [7, wire.OP_CREATE, b"/a", b"", [], 0],  # path as bytes
    [7, wire.OP_CREATE, "/a", "data", [], 0],  # data as str
    [7, wire.OP_CREATE, "/a", b"", {}, 0],  # acl as a map
    [7, wire.OP_CREATE, "/a", b"", ["world"], 0],  # acl entry not a list
    [7, wire.OP_CREATE, "/a", b"", [[31, "world"]], 0],  # short acl entry
    [7, wire.OP_CREATE, "/a", b"", [[31, "world", "anyone", 1]], 0],  # long acl entry
    [7, wire.OP_CREATE, "/a", b"", [["31", "world", "anyone"]], 0],  # perms as str
    [7, wire.OP_CREATE, "/a", b"", [[31, 5, "anyone"]], 0],  # scheme as int
    [7, wire.OP_CREATE, "/a", b"", [[31, "world", None]], 0],  # id as nil
    [7, wire.OP_CREATE, "/a", b"", [], "0"],  # flags as str
    [7, wire.OP_CREATE, "/a", b"", [], 8],  # an unknown flag (4 is a container)
    [7, wire.OP_CREATE, "/a", b"", [], -1],
    [7, wire.OP_DELETE, None, -1],
    [7, wire.OP_DELETE, "/a", "-1"],
    [7, wire.OP_DELETE, "/a", 1.0],
    [7, wire.OP_EXISTS, "/a", 1],  # watch must be a bool
    [7, wire.OP_GET_CHILDREN, "/a", None],
    [7, wire.OP_SET_DATA, "/a", "text", 0],  # data is bin (or nil: null data)
    [7, wire.OP_SET_ACL, "/a", [[31, "world", "anyone"]], "x"],
    [7, wire.OP_SYNC, 1],
    [7, wire.OP_MULTI, "ops"],
    [7, wire.OP_MULTI, [wire.OP_DELETE, "/a", -1]],  # an op that is not a list
    [7, wire.OP_MULTI, [[wire.OP_GET_DATA, "/a", False]]],  # a read in a multi
    [7, wire.OP_MULTI, [[wire.OP_SET_ACL, "/a", [], -1]]],  # set_acl in a multi
    [7, wire.OP_MULTI, [[wire.OP_CLOSE]]],
    [7, wire.OP_MULTI, [[wire.OP_MULTI, []]]],  # a multi in a multi
    [7, wire.OP_MULTI, [[wire.OP_DELETE, "/a", -1]] * (wire.MAX_MULTI_OPS + 1)],
    [7, wire.OP_MULTI, [[wire.OP_DELETE, "/a"]]],  # a bad op inside
    [7, wire.OP_MULTI, [[]]],
    [7, wire.OP_MULTI, [[[wire.OP_DELETE], "/a", -1]]],  # an unhashable opcode inside
    [7, wire.OP_MULTI, [[True, "/a", -1]]],  # a bool opcode inside
    [7, wire.OP_SET_DATA, "/a", b"", True],  # a bool version
    [7, wire.OP_GET_DATA, "/a", 0],  # watch as an int
    [7, wire.OP_REMOVE_WATCHES, "/a", 9],  # unknown mode
    [7, wire.OP_REMOVE_WATCHES, "/a", "1"],
    [7, wire.OP_AUTH, "digest", "not bytes"],
    [7, wire.OP_AUTH, None, b""],
    [7, wire.OP_SET_WATCHES, "0", [], [], [], [], []],
    [7, wire.OP_SET_WATCHES, 0, [1], [], [], [], []],
    [7, wire.OP_SET_WATCHES, 0, [], "/a", [], [], []],
    [7, wire.OP_ADD_WATCH, "/a", WatchMode.DATA.value],  # only persistent modes
    [7, wire.OP_ADD_WATCH, "/a", 0],
    [7, wire.OP_ADD_WATCH, 5, WatchMode.PERSISTENT.value],
    # bool where an int is expected
    [7, wire.OP_CREATE, "/a", b"", [], True],
    [7, wire.OP_CREATE, "/a", b"", [[True, "world", "anyone"]], 0],
    [7, wire.OP_DELETE, "/a", False],
    [7, wire.OP_SET_DATA, "/a", b"", True],
    [7, wire.OP_SET_ACL, "/a", [], True],
    [7, wire.OP_CHECK, "/a", True],
    [7, wire.OP_REMOVE_WATCHES, "/a", True],
    [7, wire.OP_SET_WATCHES, True, [], [], [], [], []],
    [7, wire.OP_ADD_WATCH, "/a", True],
]


@pytest.mark.parametrize("value", BAD_SHAPES, ids=lambda v: repr(v)[:50])
def test_wrong_shapes_are_refused_with_the_xid(value: list[Any]) -> None:
    err = _refused(_raw(value))
    assert err.xid == 7  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "value",
    [{"xid": 7}, [], ["7", 1], [True, 1], [2**31, 1], [None], [0, 4, "/a", False], [-1, 11]],
    ids=repr,
)
def test_no_xid_when_the_xid_was_unreadable(value: Any) -> None:
    err = _refused(_raw(value))
    assert getattr(err, "xid", None) is None


def test_deeply_nested_multis_are_refused_without_blowing_the_stack() -> None:
    # [7, 14, [[14, [[14, ... [[2, "/a", -1]] ...]]]]]: as deep as msgpack will unpack
    inner = _raw([wire.OP_DELETE, "/a", -1])
    depth = 510
    payload = b"\x93\x07\x0e" + b"\x91\x92\x0e" * depth + b"\x91" + inner
    err = _refused(payload)
    assert err.xid == 7  # type: ignore[attr-defined]


# ---- handshake ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hello",
    [
        wire.Handshake(),
        wire.Handshake(session_id=2**63 - 1, password=b"\x00" * 16, timeout_ms=4000, last_zxid=9),
        wire.Handshake(read_only=True),
    ],
)
def test_handshake_round_trip(hello: wire.Handshake) -> None:
    assert wire.Handshake.decode(_payload(hello.encode())) == hello


@pytest.mark.parametrize(
    "reply",
    [
        wire.HandshakeReply(
            session_id=5,
            password=b"pw",
            timeout_ms=3000,
            zxid=2**33,
            max_frame=DEFAULT_MAX_FRAME,
            server_id=3,
        ),
        wire.HandshakeReply(session_id=6, password=b"pw", timeout_ms=4000, read_only=True),
        wire.HandshakeReply(error=Code.SESSION_EXPIRED, message="session expired"),
        wire.HandshakeReply(error=Code.MARSHALLING_ERROR, message=""),
    ],
)
def test_handshake_reply_round_trip(reply: wire.HandshakeReply) -> None:
    assert wire.HandshakeReply.decode(_payload(reply.encode())) == reply


def test_handshake_defaults_for_missing_fields() -> None:
    assert wire.Handshake.decode(_raw({"v": wire.PROTOCOL_VERSION})) == wire.Handshake()


@pytest.mark.parametrize(
    "value",
    [
        [1, 0],
        {},  # no version
        {"v": 2},  # unsupported version
        {"v": True},
        {"v": 1, "session_id": "1"},
        {"v": 1, "session_id": True},
        {"v": 1, "password": "text"},
        {"v": 1, "timeout_ms": 1.5},
        {"v": 1, "last_zxid": None},
    ],
    ids=repr,
)
def test_bad_handshakes_are_marshalling_errors(value: Any) -> None:
    with pytest.raises(MarshallingError):
        wire.Handshake.decode(_raw(value))


@pytest.mark.parametrize(
    "value",
    [
        [0],
        {"v": 1},  # success needs session_id, password, timeout_ms
        {"v": 1, "session_id": 1, "password": b"", "timeout_ms": "x"},
        {"v": 1, "error": "bad"},
        {"v": 1, "error": -112, "message": 5},
    ],
    ids=repr,
)
def test_bad_handshake_replies_are_marshalling_errors(value: Any) -> None:
    with pytest.raises(MarshallingError):
        wire.HandshakeReply.decode(_raw(value))


@given(st.binary(max_size=100))
def test_handshake_decoders_only_raise_marshalling_error(payload: bytes) -> None:
    for decode in (wire.Handshake.decode, wire.HandshakeReply.decode):
        try:
            decode(payload)
        except MarshallingError:
            pass


# ---- server frames: replies, events, pings ------------------------------------------------


def test_reply_round_trip() -> None:
    stat = Stat(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
    frame = wire.encode_reply(42, 2**40, Code.OK, [b"data", wire.stat_out(stat)])
    xid, zxid, error, body = wire.decode_server_frame(_payload(frame))
    assert (xid, zxid, error) == (42, 2**40, 0)
    assert body[0] == b"data"
    assert wire.stat_in(body[1]) == stat
    assert wire.stat_out(None) is None
    err_frame = wire.encode_reply(3, 0, Code.NO_NODE, "no node: /a")
    assert wire.decode_server_frame(_payload(err_frame)) == (3, 0, Code.NO_NODE, "no node: /a")


@pytest.mark.parametrize("kind", list(EventType))
def test_event_round_trip(kind: EventType) -> None:
    event = WatchedEvent(kind, "/a/b", 2**35 + 1)
    xid, zxid, error, body = wire.decode_server_frame(_payload(wire.encode_event(event)))
    assert (xid, zxid, error) == (wire.XID_EVENT, event.zxid, 0)
    assert wire.decode_event(body, zxid) == event


def test_acl_in_round_trip() -> None:
    assert wire.acl_in([entry.to_wire() for entry in ACLS]) == ACLS
    with pytest.raises(MarshallingError):
        wire.acl_in([[True, "world", "anyone"]])


@pytest.mark.parametrize(
    "value",
    [
        {"xid": 1},
        [1, 2, 3],
        [1, 2, 3, None, 5],
        ["1", 0, 0, None],
        [1, None, 0, None],
        [1, 0, 1.5, None],
        [True, 0, 0, None],
        [1, False, 0, None],
    ],
    ids=repr,
)
def test_bad_server_frames_are_marshalling_errors(value: Any) -> None:
    with pytest.raises(MarshallingError):
        wire.decode_server_frame(_raw(value))


@pytest.mark.parametrize(
    "body",
    [None, [], [1], [1, "/a", 2], [9, "/a"], [0, "/a"], ["1", "/a"], [True, "/a"], [1, b"/a"]],
    ids=repr,
)
def test_bad_event_bodies_are_marshalling_errors(body: Any) -> None:
    with pytest.raises(MarshallingError):
        wire.decode_event(body, 1)


@pytest.mark.parametrize(
    "value", [None, [], list(range(10)), list(range(12)), ["x"] * 11, [True] * 11], ids=repr
)
def test_bad_stats_are_marshalling_errors(value: Any) -> None:
    with pytest.raises(MarshallingError):
        wire.stat_in(value)


@given(st.binary(max_size=100))
def test_decode_server_frame_only_raises_marshalling_error(payload: bytes) -> None:
    try:
        _xid, zxid, _error, body = wire.decode_server_frame(payload)
    except MarshallingError:
        return
    try:
        wire.decode_event(body, zxid)
    except MarshallingError:
        pass
