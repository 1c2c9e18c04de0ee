"""Read-only mode (zkpy.core.readonly) and a read-only client's connection (zkpy.core.serving
with ZooKeeper's codec), without sockets: when a member without a quorum serves, whom, with
which session, and what it answers."""

from __future__ import annotations

import pytest

from tests.test_core_serving import LIMITS, PASSWORD, FakeMember, Meter, Sink
from zkpy.core.errors import Code
from zkpy.core.readonly import ReadOnlyMode
from zkpy.core.requests import (
    CheckRequest,
    CloseSessionRequest,
    CreateRequest,
    DeleteRequest,
    ExistsRequest,
    GetDataRequest,
    SetDataRequest,
    SyncRequest,
)
from zkpy.core.serving import CreateSession, ServerConnection
from zkpy.core.txn import CreateSession as CreateSessionTxn
from zkpy.core.types import OPEN_ACL_UNSAFE
from zkpy.server.clients import MsgpackCodec
from zkpy.server.zk_clients import JuteCodec
from zkpy.wire import client as wire
from zkpy.wire import jute, jute_client
from zkpy.wire.jute import ConnectRequest, ConnectResponse, JuteRequest

WATCHER = 7


def new_mode(*, enabled: bool = True, serving: bool = True, now_ms: int = 0) -> ReadOnlyMode:
    return ReadOnlyMode(
        enabled=enabled, after_ms=2000, tick_ms=1000, serving=serving, now_ms=now_ms
    )


# ---- the mode --------------------------------------------------------------------------------


def test_the_mode_begins_once_the_member_has_been_without_a_quorum_long_enough() -> None:
    mode = new_mode()
    mode.tick(50_000)
    assert not mode.active  # serving: never
    mode.serving_changed(False, 10_000)
    mode.serving_changed(False, 11_000)  # still without one: the clock does not restart
    mode.tick(11_999)
    assert not mode.active
    mode.tick(12_000)
    assert mode.active


def test_a_member_that_starts_without_a_quorum_counts_from_its_start() -> None:
    mode = new_mode(serving=False, now_ms=500)
    mode.tick(2_499)
    assert not mode.active
    mode.tick(2_500)
    assert mode.active


def test_disabled_the_mode_never_begins() -> None:
    mode = new_mode(enabled=False, serving=False)
    mode.tick(1_000_000)
    assert not mode.active
    with pytest.raises(ValueError, match="read-only mode"):
        mode.open(0xA, PASSWORD, 4000, 1_000_000)


def test_serving_again_ends_the_mode_and_every_local_session() -> None:
    mode = new_mode(serving=False)
    mode.tick(2000)
    mode.open(0xB, b"b" * 16, 4000, 2000)
    mode.open(0xA, b"a" * 16, 4000, 2000)
    assert len(mode) == 2
    assert mode.serving_changed(True, 3000) == [0xA, 0xB]
    assert not mode.active
    assert len(mode) == 0
    assert mode.session(0xA) is None
    assert mode.tick(100_000) == []  # nothing left to expire
    mode.serving_changed(False, 200_000)  # cut off again: counted from now
    mode.tick(201_999)
    assert not mode.active
    mode.tick(202_000)
    assert mode.active


def test_local_sessions_expire_unless_their_clients_are_heard_from() -> None:
    mode = new_mode(serving=False)
    mode.tick(2000)
    mode.open(0xA, b"a" * 16, 4000, 2000)
    mode.open(0xB, b"b" * 16, 4000, 2000)
    mode.touch(0xA, 5000)
    assert mode.tick(6999) == []
    assert mode.tick(7000) == [0xB]  # 2000 + 4000, rounded up to the next whole tick
    assert mode.session(0xB) is None
    local = mode.session(0xA)
    assert local is not None
    assert (local.password, local.timeout_ms) == (b"a" * 16, 4000)
    assert mode.tick(10_000) == [0xA]
    assert len(mode) == 0


def test_a_closed_session_is_gone_and_never_expires() -> None:
    mode = new_mode(serving=False)
    mode.tick(2000)
    mode.open(0xA, PASSWORD, 4000, 2000)
    mode.close(0xA)
    assert mode.session(0xA) is None
    assert mode.tick(60_000) == []


# ---- a read-only client's connection ---------------------------------------------------------


def hello(
    member: FakeMember, *, read_only: bool = True, session_id: int = 0, password: bytes = b""
) -> tuple[ServerConnection, Sink]:
    sink = Sink()
    conn = ServerConnection(member, JuteCodec(), sink, LIMITS, Meter(), WATCHER)
    member.sinks[WATCHER] = conn
    request = ConnectRequest(
        timeout_ms=4000, session_id=session_id, password=password, read_only=read_only
    )
    conn.receive_hello(request.encode()[4:], owner=99)
    return conn, sink


def send(conn: ServerConnection, sink: Sink, xid: int, opcode: int, request: JuteRequest) -> int:
    """The error code of the reply to one request (asserted to be its only frame)."""
    conn.feed(jute_client.encode_request(xid, opcode, request)[4:])
    (frame,) = sink.frames
    sink.frames.clear()
    reply_xid, _zxid, err, _reader = jute_client.decode_reply_header(frame[4:])
    assert reply_xid == xid
    return err


def member_without_quorum() -> FakeMember:
    member = FakeMember()
    member.create("/a")
    member.apply(CreateSessionTxn(0x100, 4000, PASSWORD))  # a session of the ensemble
    member.lose_quorum()
    return member


def test_a_read_only_client_gets_a_local_session_and_answers_to_its_reads() -> None:
    member = member_without_quorum()
    conn, sink = hello(member)
    assert conn.effects == []  # nothing ordered through the ensemble
    greeting = ConnectResponse.decode(sink.frames.pop()[4:])
    assert greeting.read_only
    assert (greeting.session_id, greeting.password, greeting.timeout_ms) == (0xA00, PASSWORD, 4000)
    assert member.read_only_mode.session(0xA00) is not None
    assert member.tree.sessions.get(0xA00) is None
    assert send(conn, sink, 1, jute.OP_GET_DATA, GetDataRequest("/a", True)) == 0
    assert send(conn, sink, 2, jute.OP_EXISTS, ExistsRequest("/missing", True)) == Code.NO_NODE


@pytest.mark.parametrize(
    ("opcode", "request_"),
    [
        (jute.OP_CREATE, CreateRequest("/b", b"", OPEN_ACL_UNSAFE)),
        (jute.OP_SET_DATA, SetDataRequest("/a", b"x", -1)),
        (jute.OP_DELETE, DeleteRequest("/a", -1)),
        (jute.OP_CHECK, CheckRequest("/a", -1)),
        (jute.OP_SYNC, SyncRequest("/a")),
    ],
)
def test_writes_and_syncs_of_a_read_only_client_are_not_read_only(
    opcode: int, request_: JuteRequest
) -> None:
    member = member_without_quorum()
    conn, sink = hello(member)
    sink.frames.clear()
    assert send(conn, sink, 1, opcode, request_) == Code.NOT_READ_ONLY
    assert conn.effects == []
    assert not conn.closing  # the client may go on reading
    assert send(conn, sink, 2, jute.OP_GET_DATA, GetDataRequest("/a", False)) == 0


def test_closing_a_local_session_ends_it_and_the_connection() -> None:
    member = member_without_quorum()
    conn, sink = hello(member)
    sink.frames.clear()
    assert send(conn, sink, 1, jute.OP_CLOSE_SESSION, CloseSessionRequest()) == 0
    assert sink.finished
    assert member.read_only_mode.session(0xA00) is None


def test_a_local_session_resumes_with_its_password_and_no_other() -> None:
    member = member_without_quorum()
    _first, sink = hello(member)
    sink.frames.clear()
    _conn, sink = hello(member, session_id=0xA00, password=PASSWORD)
    greeting = ConnectResponse.decode(sink.frames.pop()[4:])
    assert (greeting.session_id, greeting.timeout_ms, greeting.read_only) == (0xA00, 4000, True)
    _conn, sink = hello(member, session_id=0xA00, password=b"w" * 16)
    refused = ConnectResponse.decode(sink.frames.pop()[4:])
    assert refused.timeout_ms == 0  # how ZooKeeper's clients hear a refused session
    assert sink.finished


def test_a_session_of_the_ensemble_hears_it_expired() -> None:
    """Only the quorum can say whether it lives (ZooKeeper 3.8 answers it the same way)."""
    member = member_without_quorum()
    _conn, sink = hello(member, session_id=0x100, password=PASSWORD)
    refused = ConnectResponse.decode(sink.frames.pop()[4:])
    assert (refused.timeout_ms, refused.session_id, refused.read_only) == (0, 0, True)
    assert sink.finished
    assert 0x100 in member.tree.sessions  # the member's copy of it is untouched


def test_a_client_that_does_not_ask_for_read_only_is_cut_off() -> None:
    member = member_without_quorum()
    conn, sink = hello(member, read_only=False)
    assert sink.frames in ([], [b""])  # closed without a word: it tries another member
    assert sink.finished
    assert not conn.greeted


def test_before_the_mode_begins_a_read_only_client_is_cut_off_too() -> None:
    member = FakeMember()
    member.serving = False
    member.read_only_mode.serving_changed(False, 0)
    conn, sink = hello(member)
    assert sink.finished
    assert not conn.greeted


def test_a_serving_member_gives_a_read_only_client_an_ordinary_session() -> None:
    member = FakeMember()
    conn, sink = hello(member)
    (effect,) = conn.effects
    assert isinstance(effect, CreateSession)
    conn.session_assigned(0x101, PASSWORD, 4000)
    conn.session_ready(member.apply(CreateSessionTxn(0x101, 4000, PASSWORD)))
    greeting = ConnectResponse.decode(sink.frames.pop()[4:])
    assert (greeting.session_id, greeting.read_only) == (0x101, False)
    assert not conn.read_only


def test_over_msgpack_a_session_of_the_ensemble_is_not_read_only() -> None:
    """zkpy's protocol says why, so that its client tries another member and keeps the
    session (docs/protocol.md, section 4.6)."""
    member = member_without_quorum()
    sink = Sink()
    conn = ServerConnection(member, MsgpackCodec(), sink, LIMITS, Meter(), WATCHER)
    hello_frame = wire.Handshake(session_id=0x100, password=PASSWORD, read_only=True).encode()
    conn.receive_hello(hello_frame[4:], owner=99)
    assert sink.take_hello().error == Code.NOT_READ_ONLY
    assert sink.finished

    sink = Sink()
    conn = ServerConnection(member, MsgpackCodec(), sink, LIMITS, Meter(), WATCHER)
    conn.receive_hello(wire.Handshake(read_only=True).encode()[4:], owner=99)
    greeting = sink.take_hello()
    assert (greeting.session_id, greeting.read_only) == (0xA00, True)
