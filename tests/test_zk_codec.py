"""`JuteCodec` inside the serving machine, without sockets: whatever a client sends after its
handshake (ZooKeeper's reads of every kind, in any order, and garbage), the machine and the codec
raise nothing (a member would stop), every frame they push is a well-formed jute reply, and
each reply has the shape its request's opcode calls for."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_core_serving import LIMITS, PASSWORD, FakeMember, Meter, Sink
from zkpy.core.requests import (
    AddWatchRequest,
    ExistsRequest,
    GetACLRequest,
    GetChildrenRequest,
    GetDataRequest,
    SetWatchesRequest,
)
from zkpy.core.serving import CreateSession, ServerConnection
from zkpy.core.txn import CreateSession as CreateSessionTxn
from zkpy.core.types import WatchMode
from zkpy.server.zk_clients import JuteCodec
from zkpy.wire import jute, jute_client
from zkpy.wire.jute import (
    ConnectRequest,
    ConnectResponse,
    GetAllChildrenNumber,
    GetEphemerals,
    JuteRequest,
    MultiRead,
    Reader,
    WatchQuery,
    WhoAmI,
)

WATCHER = 7
PATHS = st.sampled_from(["/", "/a", "/a/b", "/missing", "/zookeeper", "bad"])
WATCH_MODES = st.sampled_from(list(jute.WATCHER_TYPES.values()))


def opened(member: FakeMember) -> tuple[ServerConnection, Sink]:
    sink = Sink()
    conn = ServerConnection(member, JuteCodec(), sink, LIMITS, Meter(), WATCHER)
    member.sinks[WATCHER] = conn
    conn.receive_hello(ConnectRequest(timeout_ms=4000).encode()[4:], owner=99)
    (effect,) = conn.effects
    conn.effects.clear()
    assert isinstance(effect, CreateSession)
    conn.session_assigned(0x100, PASSWORD, 4000)
    conn.session_ready(member.apply(CreateSessionTxn(0x100, 4000, PASSWORD)))
    greeting = ConnectResponse.decode(sink.frames.pop()[4:])
    assert (greeting.session_id, greeting.timeout_ms) == (0x100, 4000)
    return conn, sink


READS = st.one_of(
    st.builds(lambda p, w: (jute.OP_GET_DATA, GetDataRequest(p, w)), PATHS, st.booleans()),
    st.builds(lambda p, w: (jute.OP_EXISTS, ExistsRequest(p, w)), PATHS, st.booleans()),
    st.builds(lambda p, w: (jute.OP_GET_CHILDREN, GetChildrenRequest(p, w)), PATHS, st.booleans()),
    st.builds(lambda p, w: (jute.OP_GET_CHILDREN2, GetChildrenRequest(p, w)), PATHS, st.booleans()),
    st.builds(lambda p: (jute.OP_GET_ACL, GetACLRequest(p)), PATHS),
    st.builds(
        lambda p, m: (jute.OP_ADD_WATCH, AddWatchRequest(p, m)),
        PATHS,
        st.sampled_from([WatchMode.PERSISTENT, WatchMode.PERSISTENT_RECURSIVE]),
    ),
    st.builds(
        lambda p, m, r: (
            jute.OP_REMOVE_WATCHES if r else jute.OP_CHECK_WATCHES,
            WatchQuery(p, m, r),
        ),
        PATHS,
        WATCH_MODES,
        st.booleans(),
    ),
    st.builds(lambda p: (jute.OP_GET_ALL_CHILDREN_NUMBER, GetAllChildrenNumber(p)), PATHS),
    st.builds(lambda p: (jute.OP_GET_EPHEMERALS, GetEphemerals(p)), st.sampled_from(["", "/a"])),
    st.just((jute.OP_WHO_AM_I, WhoAmI())),
    st.builds(
        lambda ops: (jute.OP_MULTI_READ, MultiRead(tuple(ops))),
        st.lists(st.builds(GetDataRequest, PATHS) | st.builds(GetChildrenRequest, PATHS)),
    ),
    st.builds(lambda p: (jute.OP_SET_WATCHES, SetWatchesRequest(0, (p,), (p,), (p,))), PATHS),
)


def check_shape(opcode: int, err: int, reader: Reader) -> None:
    """The record after the header is the one `opcode` answers with (nothing after an error)."""
    if err != 0 and opcode not in (jute.OP_MULTI_READ,):
        reader.end()
        return
    if opcode == jute.OP_GET_DATA:
        reader.buffer()
        reader.stat()
    elif opcode == jute.OP_EXISTS:
        reader.stat()
    elif opcode == jute.OP_GET_CHILDREN:
        reader.strings()
    elif opcode == jute.OP_GET_CHILDREN2:
        reader.strings()
        reader.stat()
    elif opcode == jute.OP_GET_ACL:
        reader.acl()
        reader.stat()
    elif opcode in (jute.OP_ADD_WATCH, jute.OP_GET_ALL_CHILDREN_NUMBER):
        reader.int32()
    elif opcode == jute.OP_GET_EPHEMERALS:
        reader.strings()
    elif opcode == jute.OP_WHO_AM_I:
        for _ in range(reader.int32()):
            reader.string("scheme")
            reader.string("id")
    elif opcode == jute.OP_MULTI_READ:
        jute_client.decode_multi_results(reader)
        return
    reader.end()


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(READS, st.binary(max_size=40).map(lambda junk: (None, junk))),
        min_size=1,
        max_size=12,
    )
)
def test_any_request_sequence_gets_well_formed_replies_and_never_raises(
    requests: list[tuple[int | None, JuteRequest | bytes]],
) -> None:
    member = FakeMember()
    member.create("/a")
    member.create("/a/b")
    conn, sink = opened(member)
    sent: dict[int, int] = {}
    for xid, (opcode, request) in enumerate(requests, 1):
        if conn.closing:
            break
        if opcode is None:
            assert isinstance(request, bytes)
            conn.feed(request)
        else:
            assert not isinstance(request, bytes)
            sent[xid] = opcode
            conn.feed(jute_client.encode_request(xid, opcode, request)[4:])
        assert conn.effects == [] or all(type(e).__name__ == "Notice" for e in conn.effects)
        conn.effects.clear()
    for frame in sink.frames:
        xid, _zxid, err, reader = jute_client.decode_reply_header(frame[4:])
        if xid == jute.XID_NOTIFICATION:
            jute_client.decode_event(reader)
        elif xid in sent:
            check_shape(sent[xid], err, reader)
        else:
            assert err == -5  # garbage whose header could be read
