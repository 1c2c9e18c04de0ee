"""The client's side of the protocol as a sans-I/O state machine: bytes and calls in, bytes and
events out (the shape of h11). No sockets, tasks, clocks or randomness: the time is an argument.

One `ClientConnection` holds one session over any number of connections, one at a time::

    IDLE --connect()--> HANDSHAKING --reply--> CONNECTED --loss/timeout/moved--> IDLE
      \\________________________\\___________________\\__end_session()/expired__> CLOSED

It owns the handshake (a new session, or resuming one with its password and the last zxid
seen), xid allocation (positive xids only: -2..0 are reserved), the table of calls awaiting a
reply (replies come in request order: a reply for any other xid is a protocol error), pings and
the silence that ends a connection, watch events and their demultiplexing (`WatchTable`), and
replaying auth and watches on every new connection, and a chroot's rewriting of the paths that
go out and come back (`zkpy.client.chroot`). Every request of every builder (Client
methods, `Transaction`, `Pipeline`) is encoded here, by `send_request`.

The caller (the trio `Client`) connects a socket, sends what `data_to_send()` returns, feeds
what it reads to `receive_data()` and the time to `tick()` at `next_deadline()`, and carries out
the events. Calling a method in a state that does not allow it raises `LocalProtocolError` and
changes nothing. Whatever the server sends, `receive_data` raises nothing: a frame that breaks
the protocol ends the connection with a `ConnectionLost` event carrying a `RemoteProtocolError`.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from zkpy.client.chroot import Chroot
from zkpy.client.watches import WatchCallback, WatchTable
from zkpy.core.errors import (
    BadArgumentsError,
    Code,
    ConnectionLossError,
    MarshallingError,
    RolledBackError,
    SessionExpiredError,
    ZkError,
    error_for_code,
)
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
    ReconfigRequest,
    RemoveWatchesRequest,
    Request,
    SetACLRequest,
    SetDataRequest,
    SetWatchesRequest,
    SyncRequest,
)
from zkpy.core.types import WatchedEvent, WatchMode
from zkpy.wire import client as wire
from zkpy.wire.frames import DEFAULT_MAX_FRAME, FrameDecoder

MAX_SERVER_FRAME = 1 << 30  # replies can exceed the request limit (a big get_children)
MAX_XID = 2**31 - 1


class State(enum.Enum):
    """Where the session's current connection stands."""

    IDLE = "IDLE"  # no connection: `connect` starts one
    HANDSHAKING = "HANDSHAKING"  # the handshake is sent, its reply not yet read
    CONNECTED = "CONNECTED"  # requests may be sent
    CLOSED = "CLOSED"  # the session is over (expired, closed, refused auth): for good


class LocalProtocolError(RuntimeError):
    """The caller asked for something its state does not allow; nothing was changed."""


class RemoteProtocolError(MarshallingError):
    """The server sent something the protocol does not allow; the connection is over."""


@dataclass(slots=True, eq=False)
class Call:
    """One request sent and awaiting its reply. It comes back among the events of
    `receive_data` once answered, or of whatever ends its connection first; `outcome()` is then
    its result, or raises its error.

    `token` is the caller's, handed back untouched (the trio client keeps its waiter there);
    `watch` is registered as a one-shot watch when a watching read succeeds.
    """

    xid: int
    request: Request
    token: Any = None
    watch: WatchCallback | None = None
    result: Any = None
    failure: ZkError | None = None

    def outcome(self) -> Any:
        """The result (see `RESULTS`), or raise the error the reply carried or the loss."""
        if self.failure is not None:
            raise self.failure
        return self.result


@dataclass(frozen=True, slots=True)
class Connected:
    """The handshake succeeded: the session is (again) usable."""

    session_id: int
    timeout_ms: int
    resumed: bool


@dataclass(frozen=True, slots=True)
class HandshakeRefused:
    """The server refused the handshake (and closes the connection); the machine is IDLE."""

    error: ZkError


@dataclass(frozen=True, slots=True)
class WatchFired:
    """A watch event; `callbacks` are the one-shot watches it used up (persistent streams
    have already been given it)."""

    event: WatchedEvent
    callbacks: list[WatchCallback]


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """The connection is over (the calls it had in flight came as failed events before
    this); the machine is IDLE, and the session may be resumed with `connect`."""

    error: ZkError


@dataclass(frozen=True, slots=True)
class SessionLost:
    """The session is over for good; every call failed with `error`. `orphans` are the one-shot
    watches that will never fire (persistent streams have already been ended)."""

    error: ZkError
    orphans: list[WatchCallback]


Event = Call | Connected | HandshakeRefused | WatchFired | ConnectionLost | SessionLost


# ---- replies: each request's body checked and turned into its result -----------------------


def _pair(body: Any) -> list[Any]:
    if type(body) is not list or len(body) != 2:
        raise MarshallingError("the reply body must be a pair")
    return body


def _create_result(body: Any) -> tuple[str, Any]:
    path, stat = _pair(body)
    if type(path) is not str:
        raise MarshallingError("a created path must be a str")
    return path, None if stat is None else wire.stat_in(stat)


def _data_result(body: Any) -> tuple[bytes, Any]:
    data, stat = _pair(body)
    if type(data) is not bytes:
        raise MarshallingError("node data must be bin")
    return data, wire.stat_in(stat)


def _children_result(body: Any) -> tuple[list[str], Any]:
    children, stat = _pair(body)
    if type(children) is not list or not all(type(name) is str for name in children):
        raise MarshallingError("children must be a list of str")
    return children, wire.stat_in(stat)


def _acl_result(body: Any) -> tuple[list[Any], Any]:
    acl, stat = _pair(body)
    return list(wire.acl_in(acl)), wire.stat_in(stat)


def _exists_result(body: Any) -> Any:
    return None if body is None else wire.stat_in(body)


def _sync_result(body: Any) -> str:
    if type(body) is not str:
        raise MarshallingError("a sync reply holds its path")
    return body


def _no_result(body: Any) -> None:
    if body is not None:
        raise MarshallingError("this reply has no body")


def _multi_result(request: MultiRequest, body: Any) -> list[Any]:
    """A committed multi: per operation the created path, the new Stat, or True."""
    if type(body) is not list or len(body) != len(request.ops):
        raise MarshallingError("a multi reply holds one result per operation")
    results: list[Any] = []
    for op, item in zip(request.ops, body, strict=True):
        _code, value = _pair(item)
        if type(op) is CreateRequest:
            results.append(_create_result(value)[0])
        elif type(op) is SetDataRequest:
            results.append(wire.stat_in(value))
        else:
            results.append(True)
    return results


def _multi_failure(request: MultiRequest, body: list[Any]) -> list[ZkError]:
    """A refused multi: the failing operation's error, `RolledBackError` for the others."""
    if len(body) != len(request.ops):
        raise MarshallingError("a multi reply holds one result per operation")
    errors: list[ZkError] = []
    for op, item in zip(request.ops, body, strict=True):
        code = _pair(item)[0]
        if type(code) is not int:
            raise MarshallingError("a multi result's code must be an int")
        path = getattr(op, "path", None)
        errors.append(
            RolledBackError(path=path) if code == Code.OK else error_for_code(code, path=path)
        )
    return errors


# The result of each kind of request, made from its reply's body (shape errors raise
# MarshallingError, which ends the connection). A multi's is made by `_multi_result`.
RESULTS: dict[type, Callable[[Any], Any]] = {
    GetDataRequest: _data_result,
    SetDataRequest: wire.stat_in,
    CreateRequest: _create_result,
    ExistsRequest: _exists_result,
    GetChildrenRequest: _children_result,
    DeleteRequest: _no_result,
    GetACLRequest: _acl_result,
    SetACLRequest: wire.stat_in,
    SyncRequest: _sync_result,
    CheckRequest: _no_result,
    RemoveWatchesRequest: _no_result,
    AddWatchRequest: _no_result,
    AuthRequest: _no_result,
    CloseSessionRequest: _no_result,
    SetWatchesRequest: _no_result,
    ReconfigRequest: _data_result,
}


def _error_message(body: Any) -> str:
    if body is not None and type(body) is not str:
        raise MarshallingError("an error reply's body must be a message or nil")
    return body or ""


def _reply_error(request: Request, code: int, body: Any) -> ZkError:
    """The exception an error reply stands for; its message names the path when it has one."""
    path = getattr(request, "path", None)
    message = _error_message(body)
    if message:
        err = error_for_code(code, message)
        err.path = path
        return err
    return error_for_code(code, path=path)


# ---- the machine -----------------------------------------------------------------------------


class ClientConnection:
    """One session's protocol state, over one connection at a time (see the module's text)."""

    def __init__(
        self,
        timeout_ms: int,
        *,
        auth: Iterable[AuthRequest] = (),
        max_server_frame: int = MAX_SERVER_FRAME,
        chroot: str | None = None,
        can_be_read_only: bool = False,
    ) -> None:
        self.state = State.IDLE
        # a member without a quorum may serve this client read-only (`zkpy.core.readonly`)
        self.can_be_read_only = can_be_read_only
        self.read_only = False  # the session is such a member's own: it answers reads only
        # the client's paths are relative to this znode (None: to the root), see `Chroot`
        self.chroot = None if chroot is None or chroot == "/" else Chroot(chroot)
        self.session_id = 0
        self.password = b""
        self.timeout_ms = timeout_ms  # the requested timeout, then the negotiated one
        self.last_zxid = 0  # the highest zxid seen in any server frame of this session
        self.max_frame = DEFAULT_MAX_FRAME
        self.peer = ""  # who the current connection is to, for messages
        self.pending: deque[Call] = deque()  # awaiting a reply, in the order sent
        self.watches = WatchTable()
        self.auth: list[AuthRequest] = list(auth)
        self.last_sent = 0.0
        self.last_heard = 0.0
        self._max_server_frame = max_server_frame
        self._decoder = FrameDecoder(max_server_frame)
        self._out: list[bytes] = []
        self._packer = wire.new_packer()  # one per machine: a Packer per frame costs as much
        self.next_xid = 1  # the xid of the next request: 1 to 2**31 - 1, then 1 again
        self._pings = 0  # pings sent and not yet answered
        self._error: ZkError | None = None  # why the session ended

    # ---- bytes out ---------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """The bytes to write to the connection, in order, since the last call."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    def connect(self, now: float, peer: str = "") -> None:
        """Start a connection (IDLE -> HANDSHAKING): the handshake is queued for sending."""
        self._require(State.IDLE, "connect")
        self.state = State.HANDSHAKING
        self.peer = peer
        self._decoder = FrameDecoder(self._max_server_frame)
        hello = wire.Handshake(
            self.session_id,
            self.password,
            self.timeout_ms,
            self.last_zxid,
            read_only=self.can_be_read_only,
        )
        self._out = [hello.encode()]
        self.last_sent = self.last_heard = now

    def send_request(
        self,
        request: Request,
        now: float,
        token: Any = None,
        watch: WatchCallback | None = None,
    ) -> Call:
        """Queue `request` with the next xid and return its `Call`. A request whose frame is
        over the server's limit raises `BadArgumentsError` and is not sent."""
        if self.state is not State.CONNECTED:
            raise LocalProtocolError(f"cannot send a request while {self.state.value}")
        xid = self.next_xid
        sent = request if self.chroot is None else self.chroot.outgoing(request)
        frame = wire.encode_request(xid, sent, self._packer)
        if len(frame) > self.max_frame:
            raise BadArgumentsError(f"request of {len(frame)} bytes is over the frame limit")
        self.next_xid = xid + 1 if xid < MAX_XID else 1
        call = Call(xid, request, token, watch)
        self.pending.append(call)
        self._out.append(frame)
        self.last_sent = now
        return call

    # ---- time --------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """When `tick` has something to do next: a ping is due, or the silence is too long."""
        if self.state is not State.CONNECTED:
            return float("inf")
        interval = self.timeout_ms / 3000
        return min(self.last_sent + interval, self.last_heard + 2 * interval)

    def tick(self, now: float) -> list[Event]:
        """Let time pass: queue a ping after a third of the session timeout without sending,
        end the connection after two thirds without hearing from the server."""
        events: list[Event] = []
        if self.state is not State.CONNECTED:
            return events
        interval = self.timeout_ms / 3000
        if now - self.last_heard > 2 * interval:
            silence = ConnectionLossError(
                f"no word from {self.peer} for 2/3 of the session timeout"
            )
            self._end_connection(silence, events)
        elif now - self.last_sent >= interval * 0.9:
            self._out.append(wire.PING_FRAME)
            self._pings += 1
            self.last_sent = now
        return events

    # ---- bytes in ----------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray, now: float) -> list[Event]:
        """Feed bytes read from the connection; return what they mean, in order."""
        if self.state is not State.CONNECTED and self.state is not State.HANDSHAKING:
            raise LocalProtocolError(f"no connection to receive on while {self.state.value}")
        self.last_heard = now
        events: list[Event] = []
        decoder = self._decoder
        try:
            frames = decoder.feed(data)
        except ValueError as err:  # FrameTooLargeError, met on an earlier feed
            frames = []
            self._violation(str(err), events)
        for frame in frames:
            try:
                if self.state is State.CONNECTED:
                    self._receive_frame(frame, events)
                elif self.state is State.HANDSHAKING:
                    self._receive_handshake(frame, now, events)
                else:
                    break  # the connection ended on an earlier frame: the rest is moot
            except MarshallingError as err:
                self._violation(str(err), events)
        if decoder.error is not None:
            self._violation(str(decoder.error), events)
        return events

    def _violation(self, message: str, events: list[Event]) -> None:
        if self.state is State.CONNECTED or self.state is State.HANDSHAKING:
            self._end_connection(RemoteProtocolError(message), events)

    def _receive_handshake(self, payload: bytes, now: float, events: list[Event]) -> None:
        reply = wire.HandshakeReply.decode(payload)
        if reply.error:
            self.state = State.IDLE
            events.append(HandshakeRefused(error_for_code(reply.error, reply.message)))
            return
        resumed = self.session_id != 0
        self.session_id = reply.session_id
        self.password = reply.password
        self.timeout_ms = reply.timeout_ms
        self.max_frame = reply.max_frame or DEFAULT_MAX_FRAME
        self.read_only = reply.read_only
        self.state = State.CONNECTED
        self._pings = 0
        self._replay(now)
        events.append(Connected(reply.session_id, reply.timeout_ms, resumed))

    def _replay(self, now: float) -> None:
        """What a new connection sends first: the auth in force, then the watches held."""
        resume = self.watches.resume_request(self.last_zxid)
        for request in self.auth:
            self._send_internal(wire.XID_AUTH, request)
        if resume is not None:
            self._send_internal(wire.XID_SET_WATCHES, resume)
        self.last_sent = now

    def _send_internal(self, xid: int, request: Request) -> None:
        self.pending.append(Call(xid, request))
        sent = request if self.chroot is None else self.chroot.outgoing(request)
        self._out.append(wire.encode_request(xid, sent))

    def _receive_frame(self, payload: bytes, events: list[Event]) -> None:
        """One server frame: an event, a ping reply, or the reply to the oldest call."""
        xid, zxid, error, body = wire.decode_server_frame(payload)
        if zxid > self.last_zxid:
            self.last_zxid = zxid
        if xid == wire.XID_EVENT:
            event = wire.decode_event(body, zxid)
            if self.chroot is not None:
                event = self.chroot.incoming_event(event)
            events.append(WatchFired(event, self.watches.dispatch(event)))
            return
        if xid == wire.XID_PING:
            if not self._pings:
                raise RemoteProtocolError("a ping reply came with no ping outstanding")
            self._pings -= 1
            return
        # the common case (the oldest call answered with success) spelled out: every reply
        # passes here
        pending = self.pending
        call = pending[0] if pending and pending[0].xid == xid else self._awaited(xid, error)
        request = call.request
        if error or type(request) is MultiRequest:
            self._settle(call, error, body)  # a malformed body raises: the call stays awaited
        else:
            call.result = RESULTS[type(request)](body)
            if call.watch is not None:
                self._register(call)
        if self.chroot is not None and call.failure is None:
            call.result = self.chroot.incoming_result(request, call.result)
        if pending[0] is call:
            pending.popleft()
        else:
            pending.remove(call)
        if call.xid > 0:
            events.append(call)
        if error or type(request) is AuthRequest:
            self._after_reply(call, error, body, events)

    def _awaited(self, xid: int, error: int) -> Call:
        """The call a reply answers: the oldest one, or (a marshalling error is sent at once,
        ahead of earlier replies) the one with its xid."""
        pending = self.pending
        if pending and pending[0].xid == xid:
            return pending[0]
        if error == Code.MARSHALLING_ERROR:
            for call in pending:
                if call.xid == xid:
                    return call
        raise RemoteProtocolError(f"a reply for xid {xid}, which is not the next one awaited")

    def _settle(self, call: Call, error: int, body: Any) -> None:
        """Set the result or failure of a refused call or a multi (raises if the body is
        malformed)."""
        request = call.request
        if error and (type(request) is not MultiRequest or type(body) is not list):
            call.failure = _reply_error(request, error, body)
        elif type(request) is MultiRequest:
            if error:
                call.result = _multi_failure(request, body)  # the multi was refused as a whole
            else:
                call.result = _multi_result(request, body)

    def _register(self, call: Call) -> None:
        """A watching read succeeded: its one-shot watch is registered now, before any later
        frame (an event for it may be the very next one)."""
        request = call.request
        assert call.watch is not None
        if type(request) is GetDataRequest:
            mode = WatchMode.DATA
        elif type(request) is GetChildrenRequest:
            mode = WatchMode.CHILD
        elif type(request) is ExistsRequest:
            mode = WatchMode.EXIST if call.result is None else WatchMode.DATA
        else:
            return
        self.watches.add_one_shot(mode, request.path, call.watch)

    def _after_reply(self, call: Call, error: int, body: Any, events: list[Event]) -> None:
        """What a reply does to the session: auth is kept or ends it, expiry ends it, and a
        session moved to another connection ends this one."""
        if type(call.request) is AuthRequest:
            if not error:
                if call.xid > 0:
                    self.auth.append(call.request)
                return
            refused = call.failure
            if call.xid < 0 or refused is None:
                refused = error_for_code(error, f"authentication failed: {body}")
            self._end_session(refused, events)
        elif error == Code.SESSION_EXPIRED:
            self._end_session(SessionExpiredError("the session expired"), events)
        elif error == Code.SESSION_MOVED:
            moved = call.failure or ConnectionLossError("the session moved")
            self._end_connection(moved, events)

    # ---- endings -----------------------------------------------------------------------------

    def connection_lost(self, error: ZkError) -> list[Event]:
        """The connection broke (or was dropped). Allowed in every state: a connection can end
        at any time, and after the session's end there is nothing left to fail."""
        events: list[Event] = []
        if self.state is State.HANDSHAKING or self.state is State.CONNECTED:
            self._end_connection(error, events)
        return events

    def _end_connection(self, reason: ZkError, events: list[Event]) -> None:
        self.state = State.IDLE
        self._fail_pending(ConnectionLossError(f"connection to {self.peer} was lost"), events)
        self._out = []
        self._pings = 0
        events.append(ConnectionLost(reason))

    def end_session(self, error: ZkError) -> list[Event]:
        """The session is over (closed, or found expired): fail everything, now and later.
        Ending an ended session does nothing."""
        events: list[Event] = []
        self._end_session(error, events)
        return events

    def _end_session(self, error: ZkError, events: list[Event]) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self._error = error
        self._fail_pending(error, events)
        self._out = []
        events.append(SessionLost(error, self.watches.fail_all(error)))

    @property
    def error(self) -> ZkError | None:
        """Why the session ended (None while it lives)."""
        return self._error

    def _fail_pending(self, error: ZkError, events: list[Event]) -> None:
        pending, self.pending = self.pending, deque()
        for call in pending:
            call.failure = error
            if call.xid > 0:
                events.append(call)

    def _require(self, state: State, action: str) -> None:
        if self.state is not state:
            raise LocalProtocolError(f"cannot {action} while {self.state.value}")


__all__ = [
    "Call",
    "ClientConnection",
    "Connected",
    "ConnectionLost",
    "Event",
    "HandshakeRefused",
    "LocalProtocolError",
    "RemoteProtocolError",
    "SessionLost",
    "State",
    "WatchFired",
]
