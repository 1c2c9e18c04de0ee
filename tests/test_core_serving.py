"""zkpy.core.serving: one client connection's rules, without sockets.

A `FakeMember` holds a real tree, watch registry and change log; the tests feed the state machine
frames and outcomes and read the frames it pushes, decoded with the msgpack codec."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkpy.core import acl as acls
from zkpy.core.errors import AuthFailedError, Code
from zkpy.core.readonly import ReadOnlyMode
from zkpy.core.requests import (
    AddWatchRequest,
    AuthRequest,
    CheckRequest,
    CloseSessionRequest,
    CreateRequest,
    CreateSessionRequest,
    DeleteRequest,
    ExistsRequest,
    GetACLRequest,
    GetChildrenRequest,
    GetDataRequest,
    MultiRequest,
    RemoveWatchesRequest,
    Request,
    SetDataRequest,
    SetWatchesRequest,
    SyncRequest,
)
from zkpy.core.serving import (
    MAX_IDENTITIES,
    AttachSession,
    CreateSession,
    Effect,
    HashCredential,
    Limits,
    Notice,
    ServerConnection,
    ServingStateError,
    Slot,
    StartSync,
    SubmitWrite,
)
from zkpy.core.tree import ApplyResult, DataTree
from zkpy.core.txn import Create, Op, SetData, TxnRecord
from zkpy.core.txn import CreateSession as CreateSessionTxn
from zkpy.core.types import ACL, OPEN_ACL_UNSAFE, EventType, Id, Perm, WatchedEvent, WatchMode
from zkpy.core.watches import ChangeLog, WatchRegistry
from zkpy.server.clients import MsgpackCodec
from zkpy.wire import client as wire

PASSWORD = b"p" * 16
WATCHER = 7
LIMITS = Limits(
    server_id=1,
    max_frame=1 << 20,
    max_data_bytes=1000,
    max_in_flight=1000,
    max_total_pending_bytes=1 << 20,
    max_watches_per_session=4,
    max_total_watch_bytes=1 << 20,
    max_children_per_reply=3,
    handshake_timeout_s=2.0,
    super_digest=acls.digest_id("root", "secret").id,
)


class FakeMember:
    """The parts of a member that the rules read, over a real tree, registry and change log."""

    def __init__(self) -> None:
        self.tree = DataTree()
        self.watches = WatchRegistry()
        self.change_log = ChangeLog(start_zxid=0)
        self.serving = True
        self.pending: set[tuple[int, int]] = set()
        self.sinks: dict[int, ServerConnection] = {}
        self.now_ms = 0
        self.read_only_mode = ReadOnlyMode(
            enabled=True, after_ms=1000, tick_ms=1000, serving=True, now_ms=0
        )
        self.local_sessions = itertools.count(0xA00)

    def open_local_session(self, timeout_ms: int) -> tuple[int, bytes, int]:
        session_id = next(self.local_sessions)
        self.read_only_mode.open(session_id, PASSWORD, timeout_ms, self.now_ms)
        return session_id, PASSWORD, timeout_ms

    def lose_quorum(self) -> None:
        """Stop serving, and stay without a quorum until read-only mode begins."""
        self.serving = False
        self.read_only_mode.serving_changed(False, self.now_ms)
        self.now_ms += self.read_only_mode.after_ms
        self.read_only_mode.tick(self.now_ms)
        assert self.read_only_mode.active

    def session_alive(self, session_id: int) -> bool:
        return session_id in self.tree.sessions

    def xid_pending(self, session_id: int, cxid: int) -> bool:
        return (session_id, cxid) in self.pending

    def status(self) -> dict[str, Any]:
        return {"server_id": 1, "serving": self.serving}

    def apply(self, op: Op, session_id: int = 0, cxid: int = 0) -> ApplyResult:
        """Apply `op` as the next committed record, and fire the watches it triggers."""
        zxid = self.tree.last_zxid + 1
        result = self.tree.apply(TxnRecord(zxid, session_id, cxid, 0, op), stats=False)
        self.change_log.record(zxid, result.changes)
        for watcher, event in self.watches.trigger(result.changes, zxid):
            if watcher in self.sinks:
                self.sinks[watcher].event(event)
        return result

    def create(self, path: str, acl: tuple[ACL, ...] = OPEN_ACL_UNSAFE) -> None:
        self.apply(Create(path, b"v", acl, 0, 0))


@dataclass
class Sink:
    """The frames a connection pushed, decoded as [xid, zxid, error, body] (or a handshake
    reply's map)."""

    frames: list[bytes] = field(default_factory=list)
    finished: bool = False

    def push(self, frame: bytes) -> None:
        self.frames.append(frame)

    def finish(self) -> None:
        self.finished = True

    def take(self) -> list[tuple[int, int, int, Any]]:
        taken = [wire.decode_server_frame(frame[4:]) for frame in self.frames]
        self.frames.clear()
        return taken

    def take_hello(self) -> wire.HandshakeReply:
        (frame,) = self.frames
        self.frames.clear()
        return wire.HandshakeReply.decode(frame[4:])


class Meter:
    def __init__(self) -> None:
        self.total = 0


def new_connection(
    member: FakeMember, ids: frozenset[Id] = frozenset(), limits: Limits = LIMITS
) -> tuple[ServerConnection, Sink, Meter]:
    sink = Sink()
    meter = Meter()
    conn = ServerConnection(member, MsgpackCodec(), sink, limits, meter, WATCHER, ids)
    member.sinks[WATCHER] = conn
    return conn, sink, meter


def hello(session_id: int = 0, password: bytes = b"", last_zxid: int = 0) -> bytes:
    return wire.Handshake(session_id, password, 10_000, last_zxid).encode()[4:]


def take_effects(conn: ServerConnection) -> list[Effect]:
    effects = list(conn.effects)
    conn.effects.clear()
    return effects


def opened(
    member: FakeMember, ids: frozenset[Id] = frozenset(), limits: Limits = LIMITS
) -> tuple[ServerConnection, Sink, Meter]:
    """A connection greeted with a new session."""
    conn, sink, meter = new_connection(member, ids, limits)
    conn.receive_hello(hello(), owner=99)
    (effect,) = take_effects(conn)
    assert isinstance(effect, CreateSession)
    session_id = 0x100 + len(member.tree.sessions)
    conn.session_assigned(session_id, PASSWORD, 4000)
    conn.session_ready(member.apply(CreateSessionTxn(session_id, 4000, PASSWORD)))
    greeting = sink.take_hello()
    assert greeting.error == 0
    assert greeting.session_id == session_id
    return conn, sink, meter


def request(xid: int, req: Request) -> bytes:
    return wire.encode_request(xid, req)[4:]


def submitted(conn: ServerConnection) -> SubmitWrite:
    (effect,) = take_effects(conn)
    assert isinstance(effect, SubmitWrite)
    return effect


# ---- handshake -------------------------------------------------------------------------------


def test_a_new_session_is_created_then_greeted() -> None:
    member = FakeMember()
    conn, sink, _ = new_connection(member)
    conn.receive_hello(hello(), owner=99)
    assert take_effects(conn) == [CreateSession(10_000)]
    assert conn.owner == 99
    assert not conn.greeted
    assert sink.frames == []
    conn.session_assigned(0x100, PASSWORD, 4000)
    conn.session_ready(member.apply(CreateSessionTxn(0x100, 4000, PASSWORD)))
    reply = sink.take_hello()
    assert (reply.session_id, reply.password, reply.timeout_ms) == (0x100, PASSWORD, 4000)
    assert (reply.zxid, reply.max_frame, reply.server_id) == (1, LIMITS.max_frame, 1)
    assert conn.greeted
    assert not sink.finished
    assert conn.read_timeout_s(buffered=False) == 6.0


def test_a_live_session_resumes_by_attaching_it_here() -> None:
    member = FakeMember()
    member.apply(CreateSessionTxn(0x200, 5000, PASSWORD))
    conn, sink, _ = new_connection(member)
    conn.receive_hello(hello(0x200, PASSWORD, last_zxid=1), owner=42)
    assert take_effects(conn) == [AttachSession(0x200)]
    assert conn.session_id == 0x200
    assert conn.timeout_ms == 5000
    conn.session_ready(member.apply(CreateSessionTxn(0x300, 5000, PASSWORD)))  # any OK result
    reply = sink.take_hello()
    assert (reply.session_id, reply.password, reply.timeout_ms) == (0x200, PASSWORD, 5000)


@pytest.mark.parametrize(
    ("session_id", "password", "last_zxid", "serving", "code"),
    [
        (0x999, PASSWORD, 0, True, Code.SESSION_EXPIRED),  # no such session
        (0x200, b"wrong", 0, True, Code.AUTH_FAILED),
        (0, b"", 5, True, Code.CONNECTION_LOSS),  # the client has seen more than this member
        (0, b"", 0, False, Code.CONNECTION_LOSS),  # not serving
    ],
)
def test_a_handshake_is_refused_with_its_reason_and_the_connection_closes(
    session_id: int, password: bytes, last_zxid: int, serving: bool, code: int
) -> None:
    member = FakeMember()
    member.apply(CreateSessionTxn(0x200, 5000, PASSWORD))
    member.serving = serving
    conn, sink, _ = new_connection(member)
    conn.receive_hello(hello(session_id, password, last_zxid), owner=1)
    assert sink.take_hello().error == code
    assert sink.finished
    assert conn.closing
    assert not conn.greeted
    assert conn.effects == []
    with pytest.raises(ServingStateError):
        conn.feed(request(1, GetDataRequest("/")))


@pytest.mark.parametrize(
    ("outcome", "code"),
    [(None, Code.CONNECTION_LOSS), (Code.SESSION_EXPIRED, Code.SESSION_EXPIRED)],
)
def test_a_session_that_cannot_be_taken_is_refused(outcome: int | None, code: int) -> None:
    member = FakeMember()
    member.apply(CreateSessionTxn(0x200, 5000, PASSWORD))
    conn, sink, _ = new_connection(member)
    conn.receive_hello(hello(0x200, PASSWORD), owner=1)
    result = None
    if outcome is not None:
        result = member.apply(CreateSessionTxn(0x300, 5000, PASSWORD))
        result.result.error = outcome
    conn.session_ready(result)
    assert sink.take_hello().error == code
    assert sink.finished
    assert not conn.greeted


def test_a_status_query_is_answered_and_closed() -> None:
    member = FakeMember()
    conn, sink, _ = new_connection(member)
    conn.receive_hello(wire.pack({"cmd": "status"}), owner=1)
    (frame,) = sink.frames
    assert wire.unpack(frame[4:]) == {"server_id": 1, "serving": True}
    assert sink.finished


def test_a_handshake_that_is_not_one_is_refused_as_marshalling() -> None:
    conn, sink, _ = new_connection(FakeMember())
    conn.receive_hello(b"\xc1", owner=1)
    assert sink.take_hello().error == Code.MARSHALLING_ERROR
    assert sink.finished


def test_a_frame_over_the_limit_is_refused_before_the_greeting_and_closes_after() -> None:
    conn, sink, _ = new_connection(FakeMember())
    assert conn.read_timeout_s(buffered=True) == float("inf")  # the handshake deadline rules
    conn.bad_frame("frame of 70000 bytes is over the limit of 65536")
    refusal = sink.take_hello()
    assert refusal.error == Code.MARSHALLING_ERROR
    assert refusal.message.startswith("handshake")
    assert sink.finished
    conn, sink, _ = opened(FakeMember())
    assert conn.read_timeout_s(buffered=True) == 4.0  # the session timeout, over 2 s
    conn.bad_frame("frame of 2000000 bytes is over the limit of 1048576")
    assert sink.frames == []
    assert sink.finished
    assert [type(e) for e in take_effects(conn)] == [Notice]


def test_inputs_out_of_turn_raise_and_change_nothing() -> None:
    member = FakeMember()
    conn, sink, _ = new_connection(member)
    with pytest.raises(ServingStateError):
        conn.feed(request(1, GetDataRequest("/")))
    with pytest.raises(ServingStateError):
        conn.session_ready(None)
    with pytest.raises(ServingStateError):
        conn.auth_hashed(Id("digest", "u:x"))
    assert sink.frames == []
    assert conn.effects == []
    assert conn.requests == 0
    conn, sink, _ = opened(member)
    with pytest.raises(ServingStateError):
        conn.receive_hello(hello(), owner=2)
    with pytest.raises(ServingStateError):
        conn.write_committed(Slot(5), None)  # a slot that waits for no write
    assert sink.frames == []
    assert conn.effects == []
    assert conn.greeted


# ---- reads, writes and their order ------------------------------------------------------------


def test_reads_are_answered_at_once_and_check_acls() -> None:
    member = FakeMember()
    member.create("/open")
    member.create("/mine", (ACL(Perm.ALL, acls.digest_id("u", "pw")),))
    conn, sink, _ = opened(member)
    conn.feed(request(1, GetDataRequest("/open")))
    conn.feed(request(2, GetDataRequest("/mine")))
    conn.feed(request(3, ExistsRequest("/mine")))  # a Stat needs no READ
    conn.feed(request(4, GetDataRequest("/none")))
    conn.feed(wire.PING_FRAME[4:])
    replies = sink.take()
    assert [(xid, error) for xid, _z, error, _b in replies] == [
        (1, 0),
        (2, Code.NO_AUTH),
        (3, 0),
        (4, Code.NO_NODE),
        (wire.XID_PING, 0),
    ]
    assert replies[0][2:] == (0, [b"v", member.tree.nodes["/open"].stat_wire()])
    assert conn.effects == []
    assert conn.queued == 0
    assert conn.requests == 4


def test_a_read_behind_a_write_waits_for_the_write_reply() -> None:
    member = FakeMember()
    member.create("/a")
    conn, sink, meter = opened(member)
    write_frame = request(1, SetDataRequest("/a", b"new", -1))
    conn.feed(write_frame)
    write = submitted(conn)
    assert write.slot.xid == 1
    assert write.request == SetDataRequest("/a", b"new", -1)
    read_frame = request(2, GetDataRequest("/a"))
    conn.feed(read_frame)
    assert sink.frames == []
    assert conn.queued == 2
    assert meter.total == len(write_frame) + len(read_frame)
    result = member.apply(SetData("/a", b"new", 1), conn.session_id, 1)
    conn.write_committed(write.slot, result)
    (xid1, _zxid1, err1, stat), (xid2, _z, err2, body) = sink.take()
    assert (xid1, err1, xid2, err2) == (1, 0, 2, 0)
    assert body[0] == b"new"
    assert stat == member.tree.nodes["/a"].stat_wire()
    assert meter.total == 0
    assert conn.queued == 0
    with pytest.raises(ServingStateError):
        conn.write_committed(write.slot, result)  # answered already


def test_a_lost_write_is_answered_connection_loss_and_closes() -> None:
    conn, sink, _ = opened(FakeMember())
    conn.feed(request(1, CreateRequest("/x", b"", OPEN_ACL_UNSAFE)))
    conn.write_committed(submitted(conn).slot, None)
    ((xid, _z, error, _b),) = sink.take()
    assert (xid, error) == (1, Code.CONNECTION_LOSS)
    assert sink.finished


def test_a_sync_is_answered_in_turn() -> None:
    member = FakeMember()
    conn, sink, _ = opened(member)
    conn.feed(request(1, SyncRequest("/")))
    (sync,) = take_effects(conn)
    assert isinstance(sync, StartSync)
    conn.feed(request(2, ExistsRequest("/")))
    assert sink.frames == []
    conn.sync_done(sync.slot, True)
    assert [(r[0], r[2], r[3]) for r in sink.take()] == [
        (1, 0, "/"),
        (2, 0, member.tree.nodes["/"].stat_wire()),
    ]


def test_a_reused_xid_gets_a_marshalling_error_and_the_close() -> None:
    member = FakeMember()
    conn, sink, _ = opened(member)
    conn.feed(request(5, DeleteRequest("/x")))
    submitted(conn)
    member.pending.add((conn.session_id, 5))
    conn.feed(request(5, DeleteRequest("/y")))
    ((xid, _z, error, message),) = sink.take()
    assert (xid, error) == (5, Code.MARSHALLING_ERROR)
    assert "already in use" in message
    assert sink.finished
    assert conn.closing
    assert [type(e) for e in take_effects(conn)] == [Notice]


def test_garbage_is_answered_when_its_xid_is_known_and_closes() -> None:
    conn, sink, _ = opened(FakeMember())
    conn.feed(wire.pack([9, 4242]))  # an unknown opcode
    ((xid, _z, error, _m),) = sink.take()
    assert (xid, error) == (9, Code.MARSHALLING_ERROR)
    assert sink.finished
    conn, sink, _ = opened(FakeMember())
    conn.feed(wire.pack([-1, 4, "/", False]))  # a reserved xid: no reply could carry it
    assert sink.frames == []
    assert sink.finished


def test_sessions_are_made_by_the_handshake_only() -> None:
    conn, sink, _ = opened(FakeMember())
    conn.receive(3, CreateSessionRequest(1, 1000, b""))
    assert sink.frames == []
    assert sink.finished


def test_an_oversize_value_is_refused_in_turn_naming_the_limit() -> None:
    member = FakeMember()
    conn, sink, _ = opened(member)
    conn.feed(request(1, DeleteRequest("/x")))
    write = submitted(conn)
    conn.feed(request(2, CreateRequest("/big", b"b" * 1001, OPEN_ACL_UNSAFE)))
    assert conn.effects == []
    assert sink.frames == []
    conn.write_committed(write.slot, member.apply(SetData("/", b"", 1), conn.session_id, 1))
    (_first, (xid, _z, error, message)) = sink.take()
    assert (xid, error) == (2, Code.BAD_ARGUMENTS)
    assert "max_data_bytes" in message


def test_limits_on_children_and_watches() -> None:
    member = FakeMember()
    member.create("/p")
    for name in "abcd":
        member.create(f"/p/{name}")
    conn, sink, _ = opened(member)
    conn.feed(request(1, GetChildrenRequest("/p")))
    for xid, path in enumerate(["/p/a", "/p/b", "/p/c", "/p/d", "/p"], 2):
        conn.feed(request(xid, GetDataRequest(path, watch=True)))
    errors = [error for _x, _z, error, _b in sink.take()]
    assert errors == [Code.TOO_MANY_REQUESTS, 0, 0, 0, 0, Code.TOO_MANY_REQUESTS]
    assert member.watches.count(WATCHER) == LIMITS.max_watches_per_session
    conn.feed(request(9, RemoveWatchesRequest("/p/a", WatchMode.DATA)))
    conn.feed(request(10, RemoveWatchesRequest("/p/a", WatchMode.DATA)))
    assert [error for _x, _z, error, _b in sink.take()] == [0, Code.NO_WATCHER]


# ---- watches -------------------------------------------------------------------------------


def test_an_event_precedes_the_reply_of_the_write_that_fired_it() -> None:
    member = FakeMember()
    member.create("/w")
    conn, sink, _ = opened(member)
    conn.feed(request(1, GetDataRequest("/w", watch=True)))
    sink.take()
    conn.feed(request(2, SetDataRequest("/w", b"x", -1)))
    write = submitted(conn)
    conn.write_committed(write.slot, member.apply(SetData("/w", b"x", 1), conn.session_id, 2))
    (event, reply) = sink.take()
    assert event[0] == wire.XID_EVENT
    assert event[3] == [int(EventType.CHANGED), "/w"]
    assert reply[0] == 2
    assert event[1] == reply[1]


def test_events_of_nodes_the_client_may_not_read_are_withheld() -> None:
    member = FakeMember()
    member.create("/secret", (ACL(Perm.ALL, acls.digest_id("u", "pw")),))
    conn, sink, _ = opened(member)
    conn.feed(request(1, AddWatchRequest("/", WatchMode.PERSISTENT_RECURSIVE)))
    sink.take()
    member.apply(SetData("/secret", b"x", 1))
    member.create("/public")
    assert [body for _x, _z, _e, body in sink.take()] == [[int(EventType.CREATED), "/public"]]


def test_set_watches_replays_what_was_missed_before_its_reply() -> None:
    member = FakeMember()
    member.create("/a")
    seen = member.tree.last_zxid
    member.apply(SetData("/a", b"2", 1))
    member.create("/b")
    conn, sink, _ = opened(member)
    conn.feed(request(1, SetWatchesRequest(seen, data=("/a",), exist=("/b", "/c"))))
    frames = sink.take()
    assert [(f[0], f[3]) for f in frames] == [
        (wire.XID_EVENT, [int(EventType.CHANGED), "/a"]),
        (wire.XID_EVENT, [int(EventType.CREATED), "/b"]),
        (1, None),
    ]
    assert member.watches.has(WATCHER, "/c", WatchMode.EXIST)
    assert not member.watches.has(WATCHER, "/a", WatchMode.DATA)  # fired in the replay


# ---- auth ----------------------------------------------------------------------------------


def test_auth_hashes_then_answers_in_turn_and_later_requests_carry_the_identity() -> None:
    member = FakeMember()
    user = acls.digest_id("u", "pw")
    member.create("/mine", (ACL(Perm.ALL, user),))
    conn, sink, _ = opened(member)
    conn.feed(request(1, AuthRequest("digest", b"u:pw")))
    assert take_effects(conn) == [HashCredential(b"u:pw")]
    assert conn.auth_pending
    with pytest.raises(ServingStateError):
        conn.feed(request(2, GetDataRequest("/mine")))  # the shell waits for the hashing
    conn.auth_hashed(acls.digest_id_from_credential(b"u:pw"))
    conn.feed(request(2, GetDataRequest("/mine")))
    assert [(x, e) for x, _z, e, _b in sink.take()] == [(1, 0), (2, 0)]
    assert user in conn.ids


def test_failed_auth_is_answered_and_closes() -> None:
    conn, sink, _ = opened(FakeMember())
    conn.feed(request(1, AuthRequest("kerberos", b"x")))
    ((xid, _z, error, _m),) = sink.take()
    assert (xid, error) == (1, Code.AUTH_FAILED)
    assert sink.finished
    conn, sink, _ = opened(FakeMember())
    conn.feed(request(1, AuthRequest("digest", b"nocolon")))
    conn.auth_hashed(AuthFailedError("digest credentials must be 'user:password'"))
    assert sink.take()[0][2] == Code.AUTH_FAILED
    assert sink.finished


def test_identities_are_capped_and_the_super_digest_makes_a_super_user() -> None:
    ids = frozenset(Id("digest", f"u{n}:x") for n in range(MAX_IDENTITIES))
    conn, sink, _ = opened(FakeMember(), ids)
    conn.feed(request(1, AuthRequest("digest", b"one:more")))
    conn.auth_hashed(Id("digest", "one:more"))
    assert sink.take()[0][2] == Code.AUTH_FAILED
    assert conn.ids == ids
    conn, sink, _ = opened(FakeMember())
    conn.feed(request(1, AuthRequest("digest", b"root:secret")))
    take_effects(conn)
    conn.auth_hashed(acls.digest_id("root", "secret"))
    assert acls.SUPER_ID in conn.ids
    assert [type(e) for e in take_effects(conn)] == [Notice]


def test_outcomes_after_the_end_go_nowhere() -> None:
    member = FakeMember()
    conn, sink, meter = opened(member)
    conn.feed(request(1, DeleteRequest("/x")))
    write = submitted(conn)
    assert meter.total > 0
    conn.closed()
    assert meter.total == 0
    assert conn.queued == 0
    conn.write_committed(write.slot, None)
    conn.event(WatchedEvent(EventType.CREATED, "/x", 3))
    assert sink.frames == []


# ---- fuzz ----------------------------------------------------------------------------------

PATHS = st.sampled_from(["/", "/a", "/a/b", "/zookeeper", "bad", "/a/", "/c"])
READS = st.one_of(
    st.builds(GetDataRequest, PATHS, st.booleans()),
    st.builds(ExistsRequest, PATHS, st.booleans()),
    st.builds(GetChildrenRequest, PATHS, st.booleans()),
    st.builds(GetACLRequest, PATHS),
    st.builds(AddWatchRequest, PATHS, st.sampled_from([WatchMode.PERSISTENT])),
    st.builds(RemoveWatchesRequest, PATHS, st.just(None)),
    st.builds(SetWatchesRequest, st.integers(0, 4), st.tuples(PATHS)),
)
WRITES = st.one_of(
    st.builds(SetDataRequest, PATHS, st.binary(max_size=1100), st.integers(-1, 3)),
    st.builds(CreateRequest, PATHS, st.binary(max_size=4), st.just(OPEN_ACL_UNSAFE)),
    st.builds(DeleteRequest, PATHS, st.integers(-1, 2)),
    st.builds(CheckRequest, PATHS, st.integers(-1, 2)),
    st.builds(MultiRequest, st.just((CheckRequest("/", -1),))),
    st.builds(SyncRequest, PATHS),
)
RARE = st.one_of(
    st.builds(AuthRequest, st.sampled_from(["digest", "ip"]), st.just(b"u:pw")),
    st.just(CloseSessionRequest()),
    st.just(CreateSessionRequest(1, 1, b"")),
)
COMMIT = st.tuples(st.just("commit"), st.integers(0, 5), st.booleans())
ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("request"), READS),
        st.tuples(st.just("request"), WRITES),
        st.tuples(st.just("request"), READS | WRITES),
        COMMIT,
        COMMIT,
        st.tuples(st.just("change"), PATHS),
        st.one_of(
            st.tuples(st.just("request"), RARE),
            st.tuples(st.just("reuse"), READS | WRITES),
            st.tuples(st.just("auth"), st.booleans()),
            st.tuples(st.just("garbage"), st.binary(max_size=8)),
            st.tuples(st.just("hello"), st.booleans()),
            st.tuples(st.just("close"), st.booleans()),
        ),
    ),
    max_size=60,
)


def _snapshot(conn: ServerConnection, sink: Sink, meter: Meter) -> tuple[Any, ...]:
    return (
        conn.state,
        conn.closing,
        conn.queued,
        conn.ids,
        conn.auth_pending,
        len(conn.effects),
        len(sink.frames),
        sink.finished,
        meter.total,
    )


@settings(max_examples=300, deadline=None)
@given(ACTIONS)
def test_fuzz_the_machine_answers_in_order_or_raises_its_own_error(actions: list[Any]) -> None:
    member = FakeMember()
    member.create("/a")
    conn, sink, meter = opened(member)
    xids = iter(range(1, 1000))
    taken: list[int] = []  # the xids of the requests the machine took, in order
    waiting: list[Slot] = []  # writes and syncs submitted, not yet reported
    replies: list[tuple[int, int]] = []
    for action in actions:
        before = _snapshot(conn, sink, meter)
        try:
            _act(conn, member, action, xids, taken, waiting)
        except ServingStateError:
            assert _snapshot(conn, sink, meter) == before
        for effect in take_effects(conn):
            if isinstance(effect, (SubmitWrite, StartSync)):
                waiting.append(effect.slot)
                member.pending.add((conn.session_id, effect.slot.xid))
        replies.extend((f[0], f[2]) for f in sink.take() if f[0] > 0)
    # replies leave in request order; a reused xid is refused at once (-5), then the close
    in_order = [xid for xid, error in replies if error != Code.MARSHALLING_ERROR]
    assert in_order == sorted(in_order)
    assert set(in_order) <= set(taken)
    conn.closed()
    assert meter.total == 0


def _act(
    conn: ServerConnection,
    member: FakeMember,
    action: tuple[Any, ...],
    xids: Iterator[int],
    taken: list[int],
    waiting: list[Slot],
) -> None:
    kind = action[0]
    if kind in ("request", "reuse"):
        xid = taken[-1] if kind == "reuse" and taken else next(xids)
        conn.receive(xid, action[1], size=10)
        taken.append(xid)
    elif kind in ("commit", "sync") and waiting:
        slot = waiting.pop(action[1] % len(waiting))
        member.pending.discard((conn.session_id, slot.xid))
        if isinstance(slot.read, SyncRequest):
            conn.sync_done(slot, action[2])
        else:
            ok = action[2]
            conn.write_committed(slot, member.apply(SetData("/a", b"", 1)) if ok else None)
    elif kind == "auth":
        conn.auth_hashed(Id("digest", "u:x") if action[1] else AuthFailedError("no"))
    elif kind == "garbage":
        conn.feed(action[1])
    elif kind == "change" and action[1] == "/c":
        member.create(f"/c{member.tree.last_zxid}")
    elif kind == "hello":
        conn.receive_hello(hello(), owner=1)
    elif kind == "close" and action[1]:
        conn.close_after_flush()
    elif kind == "close":
        conn.session_ready(None)
