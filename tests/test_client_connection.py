"""The client's protocol state machine, without sockets: bytes and calls in, bytes and events out.

A fake server here is nothing but the wire encoders: each test writes the frames a server would
send, feeds them to a `ClientConnection`, and checks the events and the bytes it gives back.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import zkpy
from zkpy.client import builders
from zkpy.client.connection import (
    MAX_XID,
    Call,
    ClientConnection,
    Connected,
    ConnectionLost,
    Event,
    HandshakeRefused,
    LocalProtocolError,
    RemoteProtocolError,
    SessionLost,
    State,
    WatchFired,
)
from zkpy.core.errors import (
    AuthFailedError,
    BadArgumentsError,
    Code,
    ConnectionLossError,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
    SessionExpiredError,
    SessionMovedError,
)
from zkpy.core.requests import AuthRequest, GetDataRequest, SetWatchesRequest
from zkpy.core.types import OPEN_ACL_UNSAFE, EventType, Stat, WatchedEvent, WatchMode
from zkpy.wire import client as wire
from zkpy.wire.frames import FrameDecoder

REPO = Path(__file__).resolve().parents[1]
SESSION = 0x0100_0000_0000_0001
PASSWORD = b"p" * 16
TIMEOUT_MS = 6000  # a ping is due after 2 s of sending nothing, the silence limit is 4 s
STAT = [5, 6, 1, 2, 0, 0, 0, 0, 3, 0, 5]


def handshake_reply(**fields: Any) -> bytes:
    values: dict[str, Any] = dict(
        session_id=SESSION, password=PASSWORD, timeout_ms=TIMEOUT_MS, zxid=4, max_frame=1 << 20
    )
    values.update(fields)
    return wire.HandshakeReply(**values).encode()


def reply(xid: int, body: Any = None, *, error: int = 0, zxid: int = 7) -> bytes:
    return wire.encode_reply(xid, zxid, error, body)


def event(kind: EventType, path: str, zxid: int = 7) -> bytes:
    return wire.encode_event(WatchedEvent(kind, path, zxid))


def sent_frames(conn: ClientConnection) -> list[Any]:
    """The msgpack values of every frame the machine has for the server now."""
    return [msgpack.unpackb(frame) for frame in FrameDecoder().feed(conn.data_to_send())]


def connected(**options: Any) -> ClientConnection:
    conn = ClientConnection(TIMEOUT_MS, **options)
    conn.connect(0.0, "server-1")
    conn.data_to_send()
    events = conn.receive_data(handshake_reply(), 0.0)
    assert events == [Connected(SESSION, TIMEOUT_MS, resumed=False)]
    return conn


def get(conn: ClientConnection, path: str, now: float = 0.0, **kwargs: Any) -> Call:
    return conn.send_request(builders.get_data(path, "watch" in kwargs), now, **kwargs)


def calls_of(events: list[Event]) -> list[Call]:
    return [item for item in events if isinstance(item, Call)]


# ---- the handshake -------------------------------------------------------------------------


def test_a_new_session_starts_with_the_handshake_and_nothing_else() -> None:
    conn = ClientConnection(TIMEOUT_MS)
    conn.connect(0.0)
    frames = FrameDecoder().feed(conn.data_to_send())
    assert len(frames) == 1
    assert wire.Handshake.decode(frames[0]) == wire.Handshake(0, b"", TIMEOUT_MS, 0)
    assert conn.state is State.HANDSHAKING
    with pytest.raises(LocalProtocolError):
        get(conn, "/a")  # no request before the handshake reply
    assert conn.data_to_send() == b""
    assert not conn.pending


def test_the_handshake_reply_may_arrive_a_byte_at_a_time() -> None:
    conn = ClientConnection(TIMEOUT_MS)
    conn.connect(0.0)
    data = handshake_reply()
    events: list[Event] = []
    for index in range(len(data)):
        events += conn.receive_data(data[index : index + 1], 0.0)
    assert events == [Connected(SESSION, TIMEOUT_MS, resumed=False)]
    assert (conn.session_id, conn.password, conn.timeout_ms) == (SESSION, PASSWORD, TIMEOUT_MS)
    assert conn.max_frame == 1 << 20


def test_a_read_only_client_says_so_and_learns_whether_it_was_served_read_only() -> None:
    conn = ClientConnection(TIMEOUT_MS, can_be_read_only=True)
    conn.connect(0.0)
    (frame,) = FrameDecoder().feed(conn.data_to_send())
    assert wire.Handshake.decode(frame).read_only
    conn.receive_data(handshake_reply(read_only=True), 0.0)
    assert conn.read_only
    conn.connection_lost(ConnectionLossError("gone"))
    conn.connect(1.0)
    conn.data_to_send()
    conn.receive_data(handshake_reply(), 1.0)
    assert not conn.read_only  # a member that serves


def test_a_refused_handshake_leaves_the_machine_ready_to_try_again() -> None:
    conn = ClientConnection(TIMEOUT_MS)
    conn.connect(0.0)
    refusal = wire.HandshakeReply(error=Code.CONNECTION_LOSS, message="behind").encode()
    [refused] = conn.receive_data(refusal, 0.0)
    assert isinstance(refused, HandshakeRefused)
    assert isinstance(refused.error, ConnectionLossError)
    assert "behind" in str(refused.error)
    assert conn.state is State.IDLE
    conn.connect(1.0)
    assert conn.state.value == "HANDSHAKING"


def test_a_garbled_handshake_reply_is_a_protocol_error() -> None:
    conn = ClientConnection(TIMEOUT_MS)
    conn.connect(0.0)
    [lost] = conn.receive_data(b"\x00\x00\x00\x01\xc1", 0.0)  # 0xc1: never valid msgpack
    assert isinstance(lost, ConnectionLost)
    assert isinstance(lost.error, RemoteProtocolError)
    assert conn.state is State.IDLE


def test_resuming_replays_auth_then_watches_before_any_request() -> None:
    conn = connected(auth=[AuthRequest("digest", b"u:p")])
    sent_frames(conn)
    assert conn.receive_data(reply(wire.XID_AUTH, None), 0.5) == []
    watch_calls: list[WatchedEvent] = []
    call = get(conn, "/w", watch=watch_calls.append)
    conn.receive_data(reply(call.xid, [b"", STAT], zxid=9), 1.0)
    conn.connection_lost(ConnectionLossError("cut"))

    conn.connect(2.0, "server-2")
    [hello] = FrameDecoder().feed(conn.data_to_send())
    assert wire.Handshake.decode(hello) == wire.Handshake(SESSION, PASSWORD, TIMEOUT_MS, 9)
    [again] = conn.receive_data(handshake_reply(), 2.0)
    assert again == Connected(SESSION, TIMEOUT_MS, resumed=True)
    get(conn, "/after")
    auth, resume, request = sent_frames(conn)
    assert auth == [wire.XID_AUTH, wire.OP_AUTH, "digest", b"u:p"]
    assert resume == [wire.XID_SET_WATCHES, wire.OP_SET_WATCHES, 9, ["/w"], [], [], [], []]
    assert request[1:] == [wire.OP_GET_DATA, "/after", False]


# ---- requests and replies ------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order_with_their_results() -> None:
    conn = connected()
    create = conn.send_request(builders.create("/a", b"1", OPEN_ACL_UNSAFE), 0.0, "c")
    read = get(conn, "/a", token="g")
    missing = conn.send_request(builders.exists("/gone"), 0.0, "e")
    frames = sent_frames(conn)
    assert [frame[0] for frame in frames] == [1, 2, 3] == [create.xid, read.xid, missing.xid]
    assert list(conn.pending) == [create, read, missing]

    events = conn.receive_data(
        reply(1, ["/a", STAT]) + reply(2, [b"1", STAT]) + reply(3, None), 1.0
    )
    assert events == [create, read, missing]
    assert not conn.pending
    assert create.outcome() == ("/a", Stat(*STAT))
    assert read.outcome() == (b"1", Stat(*STAT))
    assert missing.outcome() is None
    assert [call.token for call in calls_of(events)] == ["c", "g", "e"]


def test_error_replies_become_the_errors_of_their_calls() -> None:
    conn = connected()
    call = get(conn, "/nothing")
    events = conn.receive_data(reply(call.xid, "no node: /nothing", error=Code.NO_NODE), 0.0)
    assert events == [call]
    with pytest.raises(NoNodeError) as raised:
        call.outcome()
    assert raised.value.path == "/nothing"
    assert "no node" in str(raised.value)
    assert conn.state is State.CONNECTED


def test_a_refused_multi_is_one_error_per_operation() -> None:
    conn = connected()
    ops = [builders.create("/a", b"", OPEN_ACL_UNSAFE), builders.create("/b", b"", OPEN_ACL_UNSAFE)]
    call = conn.send_request(builders.multi(ops), 0.0)
    body = [[Code.OK, None], [Code.NODE_EXISTS, None]]
    conn.receive_data(reply(call.xid, body, error=Code.NODE_EXISTS), 0.0)
    first, second = call.outcome()
    assert isinstance(first, RolledBackError)
    assert first.path == "/a"
    assert isinstance(second, NodeExistsError)
    assert second.path == "/b"


def test_a_reply_for_an_xid_not_awaited_is_a_protocol_error() -> None:
    conn = connected()
    call = get(conn, "/a")
    events = conn.receive_data(reply(call.xid + 5, [b"", STAT]), 0.0)
    assert events[0] is call
    with pytest.raises(ConnectionLossError):
        call.outcome()
    assert isinstance(events[1], ConnectionLost)
    assert isinstance(events[1].error, RemoteProtocolError)
    assert conn.state is State.IDLE
    assert not conn.pending


def test_a_reply_out_of_order_is_a_protocol_error_but_a_marshalling_refusal_may_overtake() -> None:
    conn = connected()
    first, second = get(conn, "/a"), get(conn, "/b")
    [refused] = conn.receive_data(reply(second.xid, "bad", error=Code.MARSHALLING_ERROR), 0.0)
    assert refused is second
    assert list(conn.pending) == [first]

    other = connected()
    first, second = get(other, "/a"), get(other, "/b")
    events = other.receive_data(reply(second.xid, [b"", STAT]), 0.0)
    assert isinstance(events[-1], ConnectionLost)
    assert other.state is State.IDLE


def test_a_reply_of_the_wrong_shape_is_a_protocol_error_not_a_result() -> None:
    conn = connected()
    call = get(conn, "/a")
    events = conn.receive_data(reply(call.xid, ["not bytes", STAT]), 0.0)
    assert events[0] is call
    assert isinstance(events[-1], ConnectionLost)
    with pytest.raises(ConnectionLossError):
        call.outcome()


def test_an_oversize_request_is_refused_before_it_takes_an_xid() -> None:
    conn = connected()
    too_big = builders.set_data("/a", b"x" * (1 << 20))
    with pytest.raises(BadArgumentsError):
        conn.send_request(too_big, 0.0)
    assert conn.data_to_send() == b""
    assert not conn.pending
    assert conn.next_xid == 1


def test_xids_wrap_past_the_largest_to_one_never_to_a_reserved_xid() -> None:
    conn = connected()
    conn.next_xid = MAX_XID
    xids = [get(conn, "/a").xid for _ in range(3)]
    assert xids == [MAX_XID, 1, 2]


# ---- watches -------------------------------------------------------------------------------


def test_an_event_comes_before_the_reply_that_shows_the_change() -> None:
    conn = connected()
    seen: list[WatchedEvent] = []
    watched = get(conn, "/cfg", watch=seen.append)
    conn.receive_data(reply(watched.xid, [b"1", STAT]), 0.0)
    write = conn.send_request(builders.set_data("/cfg", b"2"), 0.0)
    events = conn.receive_data(event(EventType.CHANGED, "/cfg", 8) + reply(write.xid, STAT), 0.0)
    assert [type(item) for item in events] == [WatchFired, Call]
    fired = events[0]
    assert isinstance(fired, WatchFired)
    assert fired.event == WatchedEvent(EventType.CHANGED, "/cfg", 8)
    assert fired.callbacks == [seen.append]
    assert conn.last_zxid == 8


def test_a_watch_is_registered_with_its_reply_so_the_next_frame_may_fire_it() -> None:
    conn = connected()
    seen: list[WatchedEvent] = []
    call = conn.send_request(builders.exists("/later", True), 0.0, watch=seen.append)
    events = conn.receive_data(reply(call.xid, None) + event(EventType.CREATED, "/later"), 0.0)
    assert events[0] is call
    fired = events[1]
    assert isinstance(fired, WatchFired)
    assert fired.callbacks == [seen.append]
    assert not conn.watches.one_shot[WatchMode.EXIST]  # used up


def test_a_failed_read_registers_no_watch() -> None:
    conn = connected()
    call = get(conn, "/gone", watch=print)
    conn.receive_data(reply(call.xid, None, error=Code.NO_NODE), 0.0)
    assert not conn.watches.one_shot[WatchMode.DATA]


# ---- pings, silence, endings ---------------------------------------------------------------


def test_pings_are_sent_after_a_third_of_the_timeout_without_sending() -> None:
    conn = connected()
    assert conn.next_deadline() == pytest.approx(2.0)
    assert conn.tick(1.0) == []
    assert conn.data_to_send() == b""
    assert conn.tick(2.0) == []
    assert conn.data_to_send() == wire.PING_FRAME
    assert conn.receive_data(reply(wire.XID_PING, None), 2.1) == []
    events = conn.receive_data(reply(wire.XID_PING, None), 2.2)  # no ping outstanding now
    assert isinstance(events[-1], ConnectionLost)


def test_silence_for_two_thirds_of_the_timeout_ends_the_connection() -> None:
    conn = connected()
    call = get(conn, "/a", 3.9)
    assert conn.tick(3.9) == []
    events = conn.tick(4.1)
    assert events[0] is call
    assert isinstance(events[1], ConnectionLost)
    assert "no word" in str(events[1].error)
    assert conn.state is State.IDLE


def test_an_expired_session_fails_everything_for_good() -> None:
    conn = connected()
    write, read = conn.send_request(builders.delete("/a"), 0.0), get(conn, "/b")
    fired: list[WatchedEvent] = []
    conn.watches.add_one_shot(WatchMode.DATA, "/x", fired.append)
    events = conn.receive_data(reply(write.xid, None, error=Code.SESSION_EXPIRED), 0.0)
    assert events[:2] == [write, read]
    lost = events[2]
    assert isinstance(lost, SessionLost)
    assert lost.orphans == [fired.append]
    for call in (write, read):
        with pytest.raises(SessionExpiredError):
            call.outcome()
    assert conn.state is State.CLOSED
    assert isinstance(conn.error, SessionExpiredError)
    with pytest.raises(LocalProtocolError):
        conn.connect(1.0)
    assert conn.connection_lost(ConnectionLossError("late")) == []
    assert conn.state is State.CLOSED


def test_a_moved_session_ends_the_connection_not_the_session() -> None:
    conn = connected()
    write, later = conn.send_request(builders.delete("/a"), 0.0), get(conn, "/b")
    events = conn.receive_data(reply(write.xid, None, error=Code.SESSION_MOVED), 0.0)
    assert events[:2] == [write, later]
    with pytest.raises(SessionMovedError):
        write.outcome()
    with pytest.raises(ConnectionLossError, match="server-1"):
        later.outcome()
    assert isinstance(events[2], ConnectionLost)
    assert isinstance(events[2].error, SessionMovedError)
    assert conn.state is State.IDLE
    assert conn.error is None


def test_a_refused_replayed_auth_ends_the_session() -> None:
    conn = connected(auth=[AuthRequest("digest", b"u:wrong")])
    conn.data_to_send()
    [lost] = conn.receive_data(reply(wire.XID_AUTH, "bad", error=Code.AUTH_FAILED), 0.0)
    assert isinstance(lost, SessionLost)
    assert isinstance(lost.error, AuthFailedError)
    assert conn.state is State.CLOSED


def test_an_accepted_auth_is_replayed_on_the_next_connection() -> None:
    conn = connected()
    call = conn.send_request(builders.auth("digest", "u:p"), 0.0)
    conn.receive_data(reply(call.xid, None), 0.0)
    assert conn.auth == [AuthRequest("digest", b"u:p")]


def test_illegal_transitions_raise_and_change_nothing() -> None:
    conn = ClientConnection(TIMEOUT_MS)
    with pytest.raises(LocalProtocolError):
        conn.send_request(GetDataRequest("/a", False), 0.0)
    with pytest.raises(LocalProtocolError):
        conn.receive_data(reply(1, None), 0.0)
    assert conn.state is State.IDLE
    assert conn.next_xid == 1
    assert conn.data_to_send() == b""
    conn.connect(0.0)
    before = conn.data_to_send()
    with pytest.raises(LocalProtocolError):
        conn.connect(0.0)
    assert conn.state.value == "HANDSHAKING"
    assert conn.data_to_send() == b""
    assert before


def test_the_machine_imports_no_io_clock_or_randomness() -> None:
    banned = {"trio", "socket", "os", "time", "random", "threading", "asyncio", "select"}
    for name in ("connection.py", "watches.py", "builders.py"):
        tree = ast.parse((REPO / "zkpy" / "client" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] not in banned, f"{name} imports {module}"
                assert module != "zkpy.client.streams", f"{name} imports trio's watch classes"


# ---- fuzzing -------------------------------------------------------------------------------


def check_table(conn: ClientConnection, sent: list[Call], answered: list[Call]) -> None:
    """Every call sent is either awaited (in the order sent) or came back exactly once."""
    ids = [id(call) for call in answered]
    assert len(set(ids)) == len(ids), "a call came back twice"
    awaited = [call for call in conn.pending if call.xid > 0]
    assert set(map(id, awaited)).isdisjoint(ids), "a call both awaited and answered"
    assert [id(call) for call in sent if id(call) not in set(ids)] == list(map(id, awaited))
    if conn.state is not State.CONNECTED:
        assert not conn.pending


server_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**64 - 1)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)
server_frames = st.one_of(
    st.tuples(
        st.integers(-3, 6),
        st.integers(0, 20),
        st.sampled_from([0, -5, -101, -112, -118]),
        server_values,
    ).map(lambda f: wire.encode_reply(*f)),
    st.tuples(st.sampled_from(list(EventType)), st.sampled_from(["/a", "/b"])).map(
        lambda e: event(*e)
    ),
    st.binary(max_size=12).map(lambda b: len(b).to_bytes(4, "big") + b),
    st.binary(max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(
    requests=st.integers(0, 5),
    frames=st.lists(server_frames, max_size=8),
    cuts=st.lists(st.integers(0, 200), max_size=4),
)
def test_any_server_bytes_give_events_never_another_exception(
    requests: int, frames: list[bytes], cuts: list[int]
) -> None:
    conn = connected()
    sent = [get(conn, "/a", watch=print) for _ in range(requests)]
    data = b"".join(frames)
    answered: list[Call] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        if conn.state is not State.CONNECTED:
            break
        chunk, start = data[start : max(start, cut)], max(start, cut)
        answered += calls_of(conn.receive_data(chunk, 1.0))
        check_table(conn, sent, answered)


class ClientMachineRun(RuleBasedStateMachine):
    """Random sequences of calls, replies (right and wrong), time and losses."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = ClientConnection(TIMEOUT_MS, auth=[AuthRequest("digest", b"u:p")])
        self.now = 0.0
        self.sent: list[Call] = []
        self.answered: list[Call] = []

    def feed(self, events: list[Event]) -> None:
        self.answered += calls_of(events)

    @rule()
    def connect(self) -> None:
        if self.conn.state is State.IDLE:
            self.conn.connect(self.now)
        else:
            with pytest.raises(LocalProtocolError):
                self.conn.connect(self.now)

    @precondition(lambda self: self.conn.state is State.HANDSHAKING)
    @rule(refuse=st.booleans())
    def handshake(self, refuse: bool) -> None:
        answer = wire.HandshakeReply(error=Code.CONNECTION_LOSS) if refuse else None
        self.feed(
            self.conn.receive_data(handshake_reply() if answer is None else answer.encode(), 0)
        )

    @rule(path=st.sampled_from(["/a", "/b/c", "bad"]))
    def send(self, path: str) -> None:
        try:
            request = builders.get_data(path)
        except BadArgumentsError:
            return
        if self.conn.state is State.CONNECTED:
            self.sent.append(self.conn.send_request(request, self.now))
        else:
            with pytest.raises(LocalProtocolError):
                self.conn.send_request(request, self.now)

    @precondition(lambda self: self.conn.state is State.CONNECTED)
    @rule(right=st.booleans(), shift=st.integers(-3, 3))
    def answer(self, right: bool, shift: int) -> None:
        pending = self.conn.pending
        xid = pending[0].xid if pending else 1
        request = pending[0].request if pending else None
        if type(request) is SetWatchesRequest or type(request) is AuthRequest:
            body = None
        else:
            body = [b"x", STAT]
        self.feed(self.conn.receive_data(reply(xid if right else xid + shift, body), self.now))

    @precondition(lambda self: self.conn.state is State.CONNECTED)
    @rule(frame=server_frames)
    def garbage(self, frame: bytes) -> None:
        self.feed(self.conn.receive_data(frame, self.now))

    @rule(seconds=st.floats(0, 5))
    def wait(self, seconds: float) -> None:
        self.now += seconds
        self.feed(self.conn.tick(self.now))
        self.conn.data_to_send()

    @rule()
    def lose_connection(self) -> None:
        self.feed(self.conn.connection_lost(ConnectionLossError("cut")))

    @rule()
    def end_session(self) -> None:
        self.feed(self.conn.end_session(SessionExpiredError("closed")))

    @invariant()
    def pending_table_is_consistent(self) -> None:
        check_table(self.conn, self.sent, self.answered)
        xids = [call.xid for call in self.conn.pending if call.xid > 0]
        assert xids == sorted(xids)
        assert all(0 < xid <= MAX_XID for xid in xids)


ClientMachineRun.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None
)
test_the_machine_under_random_call_sequences = ClientMachineRun.TestCase


# ---- through the trio client ---------------------------------------------------------------


class MisbehavingMember:
    """Greets every handshake with SESSION; on the first connection answers the first request
    wrongly (as `answer` says), on later ones answers a get with data and a Stat."""

    def __init__(self, answer: Callable[[int], bytes]) -> None:
        self.answer = answer
        self.handshakes: list[wire.Handshake] = []

    async def serve(self, stream: trio.SocketStream) -> None:
        decoder = FrameDecoder(1 << 20)
        frames: list[bytes] = []

        async def next_frame() -> bytes:
            while not frames:
                data = await stream.receive_some(1 << 16)
                if not data:
                    raise trio.BrokenResourceError
                frames.extend(decoder.feed(data))
            return frames.pop(0)

        try:
            self.handshakes.append(wire.Handshake.decode(await next_frame()))
            await stream.send_all(handshake_reply())
            first = len(self.handshakes) == 1
            while True:
                payload = await next_frame()
                if wire.is_ping(payload):
                    await stream.send_all(reply(wire.XID_PING, None))
                    continue
                xid, _opcode, _request = wire.decode_request(payload)
                await stream.send_all(self.answer(xid) if first else reply(xid, [b"ok", STAT]))
                first = False
        except trio.BrokenResourceError:
            pass


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda xid: reply(xid, 5), id="a-body-of-the-wrong-shape"),
        pytest.param(lambda xid: reply(xid + 1000, [b"x", STAT]), id="a-reply-to-no-request"),
        pytest.param(lambda xid: reply(wire.XID_PING, None), id="an-unrequested-ping-reply"),
    ],
)
async def test_a_server_breaking_the_protocol_costs_a_connection_not_the_session(
    answer: Callable[[int], bytes],
) -> None:
    """Before the machine, the first was a TypeError in the caller's task and the others were
    dropped in silence, leaving the request waiting for ever."""
    member = MisbehavingMember(answer)
    async with trio.open_nursery() as nursery:
        listeners: Any = await nursery.start(
            lambda task_status: trio.serve_tcp(
                member.serve, 0, host="127.0.0.1", task_status=task_status
            )
        )
        port = listeners[0].socket.getsockname()[1]
        async with zkpy.connect(f"127.0.0.1:{port}", session_timeout=6.0) as zk:
            with trio.fail_after(10), pytest.raises(ConnectionLossError):
                await zk.get("/a")
            with trio.fail_after(10):
                assert await zk.get("/a") == (b"ok", Stat(*STAT))
            assert [hello.session_id for hello in member.handshakes] == [0, SESSION]
        nursery.cancel_scope.cancel()
