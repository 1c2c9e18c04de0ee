"""One client connection's rules, sans-I/O: the handshake, the session checks, auth, reads with
their ACL checks and limits, xid rules, watch registration and replay, and the reply order.

`ServerConnection` is a state machine in the manner of h11. The socket loop around it
(`zkpy.server.clients`) feeds it what happens, and carries out what it asks for:

- in: a handshake frame, request frames (`feed`, or `receive` for a decoded request), the
  outcome of a write (`write_committed`), of a sync (`sync_done`), of a session's creation or
  move (`session_ready`), of credential hashing (`auth_hashed`), watch events (`event`), and the
  end of the connection (`closed`);
- out: frames, pushed to a `FrameSink` in the order the client must see them (`sink.finish()`
  when the connection is to close once they are sent), and `effects`, a list the shell drains
  after every input: writes to submit, syncs to start, a credential to hash, a session to create
  or attach, and notices for the operator's log.

Replies leave in request order. A write's slot waits for its commit; a read that arrives behind
a pending write waits in the queue and is answered when it reaches the head, so a client always
reads its own writes. Watch events bypass the queue: they are pushed the moment the change is
applied, so they always precede any reply that shows the new state.

Bad input from the client is answered (an error reply or a handshake refusal) and closes the
connection after the replies before it. An input the shell may not give in the machine's state
(a request before the session is ready, a second handshake, a result for a request that is not
waiting for one) raises `ServingStateError` and changes nothing. Outcomes that arrive after the
connection ended are ignored: the writes they belong to may still commit, but nobody waits.

The read path is every request's path: a read answered at once allocates nothing here beyond
its reply, and no effect objects. Reads register watches directly in the member's
`WatchRegistry` (pure state, not I/O). The codec is behind `Codec`, so that a listener speaking
another wire protocol can run the same machine.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, Protocol

from zkpy.core import acl as acls
from zkpy.core import paths
from zkpy.core.errors import (
    AuthFailedError,
    BadArgumentsError,
    Code,
    ConnectionLossError,
    MarshallingError,
    NoAuthError,
    NoNodeError,
    NotReadOnlyError,
    NoWatcherError,
    SessionExpiredError,
    TooManyRequestsError,
    ZkError,
)
from zkpy.core.readonly import LocalSession, ReadOnlyMode
from zkpy.core.requests import (
    AddWatchRequest,
    AttachSessionRequest,
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
    ReadRequest,
    ReconfigRequest,
    RemoveWatchesRequest,
    Request,
    SetACLRequest,
    SetDataRequest,
    SetWatchesRequest,
    SyncRequest,
    WriteRequest,
)
from zkpy.core.tree import ApplyResult, DataTree, OpResult, SessionInfo, ZNode
from zkpy.core.txn import Reconfig, SetACL, SetData
from zkpy.core.types import Id, Perm, Stat, WatchedEvent, WatchMode
from zkpy.core.watches import ChangeLog, WatchRegistry, resume_watches, watch_weight

MAX_IDENTITIES = 64
"""Identities one connection may gain with add_auth (beyond what its address or certificate give
it): each is sent with every write it forwards, and kept while it lives."""

_WRITES = (
    CreateRequest,
    DeleteRequest,
    SetDataRequest,
    SetACLRequest,
    CheckRequest,
    MultiRequest,
    CloseSessionRequest,
    ReconfigRequest,
)

# the machine's states
AWAIT_HELLO: Final = 0  # nothing received yet
BINDING: Final = 1  # the session is being created or moved here
OPEN: Final = 2  # greeted: requests are served
CLOSED: Final = 3  # the connection has ended

# what a slot waits for
_READ: Final = 0
_WRITE: Final = 1
_SYNC: Final = 2
_AUTH: Final = 3
_REFUSED: Final = 4


class ServingStateError(Exception):
    """The shell gave an input the connection's state does not allow; nothing was changed."""


@dataclass(frozen=True, slots=True)
class CodecRead:
    """A read that only the listener's protocol has (ZooKeeper's multiRead, whoAmI ...):
    answered in its turn, like any read, with the body `Codec.answer` makes of `request`."""

    request: Any


Decoded = Request | CodecRead


class Codec(Protocol):
    """The wire format of one listener: decodes client frames, encodes server frames."""

    def decode_hello(self, payload: bytes) -> Hello | None:
        """The handshake in the first frame, or None for a status query; MarshallingError if
        it is neither."""

    def decode_request(self, payload: bytes) -> tuple[int, int, Decoded] | None:
        """(xid, opcode, request), or None for a heartbeat (answered with `pong`);
        MarshallingError, with an `xid` attribute when the request's xid could be read and may
        be answered, for anything else. (One call for both: this is every request's path.)"""

    def pong(self, zxid: int) -> bytes:
        """The reply to a heartbeat."""

    def null_data(self) -> bytes | None:
        """How a node's null data (see `zkpy.core.tree.ZNode`) reads in this protocol: None
        where it has a null value, empty bytes where it has none."""

    def answer(self, conn: ServerConnection, request: object) -> Any:
        """The body of the reply to a `CodecRead`'s request, read through `conn`; a ZkError
        refuses it."""

    def reply(self, xid: int, zxid: int, error: int, body: Any) -> bytes:
        """The reply to request `xid`."""

    def event(self, event: WatchedEvent) -> bytes:
        """A watch event."""

    def greeting(
        self,
        session_id: int,
        password: bytes,
        timeout_ms: int,
        zxid: int,
        max_frame: int,
        server_id: int,
        read_only: bool = False,
    ) -> bytes:
        """The handshake reply that opens a session (a local one of a member in read-only
        mode, `zkpy.core.readonly`, if `read_only`)."""

    def refusal(self, error: int, message: str) -> bytes:
        """The handshake reply that refuses one."""

    def status(self, status: dict[str, Any]) -> bytes:
        """The answer to a status query."""


class FrameSink(Protocol):
    """Where frames go, in order (the connection's outbox)."""

    def push(self, frame: bytes) -> None:
        """Queue a frame to send."""

    def finish(self) -> None:
        """Send what is queued, then end the connection."""


class MemberView(Protocol):
    """What the machine reads of its member (a `zkpy.server.node.Member` fits)."""

    @property
    def tree(self) -> DataTree:
        """The member's tree, as applied so far."""

    @property
    def watches(self) -> WatchRegistry:
        """The member's watch registry (connections are watchers, by their id)."""

    @property
    def change_log(self) -> ChangeLog:
        """Recent changes, to replay watches after a reconnect."""

    @property
    def serving(self) -> bool:
        """Whether the member is part of a serving quorum."""

    @property
    def read_only_mode(self) -> ReadOnlyMode:
        """Whether the member serves read-only clients now, and their local sessions."""

    def open_local_session(self, timeout_ms: int) -> tuple[int, bytes, int]:
        """Start a local session in read-only mode: its id, password and negotiated timeout
        (the member's to choose: ids unique in the ensemble, passwords random)."""

    def session_alive(self, session_id: int) -> bool:
        """Whether the session exists in the applied tree."""

    def xid_pending(self, session_id: int, cxid: int) -> bool:
        """Whether a write or sync of the session with this xid awaits its outcome."""

    def status(self) -> dict[str, Any]:
        """The member's status report."""


class Meter(Protocol):
    """A byte count shared by the member's connections."""

    total: int


@dataclass(frozen=True, slots=True)
class Limits:
    """The settings a connection obeys (from the member's configuration)."""

    server_id: int
    max_frame: int
    max_data_bytes: int
    max_in_flight: int
    max_total_pending_bytes: int
    max_watches_per_session: int
    max_total_watch_bytes: int
    max_children_per_reply: int
    handshake_timeout_s: float
    super_digest: str = ""


@dataclass(frozen=True, slots=True)
class Hello:
    """A client's handshake: which session to start (0) or resume, and whether a member
    without a quorum may serve it read-only."""

    session_id: int
    password: bytes
    timeout_ms: int
    last_zxid: int
    read_only: bool = False


@dataclass(slots=True, eq=False)
class Slot:
    """One request's place in the reply order (compared by identity)."""

    xid: int
    waits: int = _READ
    read: ReadRequest | CodecRead | None = None
    frame: bytes | None = None
    size: int = 0  # the request's bytes, counted in the member's pending bytes until answered
    close_after: bool = False
    error: ZkError | None = None  # refused before ordering: answered with it at its turn


# ---- effects: what the shell is asked to do --------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubmitWrite:
    """Order `request` through the ensemble for this connection's session, owner and
    identities; report its outcome with `write_committed(slot, result)`."""

    slot: Slot
    request: WriteRequest


@dataclass(frozen=True, slots=True)
class StartSync:
    """Start a sync for `slot.xid`; report with `sync_done(slot, ok)`."""

    slot: Slot


@dataclass(frozen=True, slots=True)
class HashCredential:
    """Hash a digest credential (slow: off the event loop) and report with `auth_hashed`
    before feeding the next request."""

    credential: bytes


@dataclass(frozen=True, slots=True)
class CreateSession:
    """Create a session for this connection (as owner); report its id, password and timeout
    with `session_assigned`, then its creation with `session_ready`."""

    timeout_ms: int


@dataclass(frozen=True, slots=True)
class AttachSession:
    """Move session `session_id` to this connection (as owner); report with `session_ready`."""

    session_id: int


@dataclass(frozen=True, slots=True)
class Notice:
    """Something for the operator's log."""

    message: str
    warning: bool = True


Effect = SubmitWrite | StartSync | HashCredential | CreateSession | AttachSession | Notice


class ServerConnection:
    """The rules of one client connection (see the module's docstring)."""

    def __init__(
        self,
        view: MemberView,
        codec: Codec,
        sink: FrameSink,
        limits: Limits,
        pending: Meter,
        watcher: int,
        ids: frozenset[Id] = frozenset(),
    ) -> None:
        """A connection of the member seen through `view`, answering with `codec` into `sink`;
        `watcher` is its key in the watch registry, `ids` the identities it starts with (its
        address, its certificate)."""
        self.view = view
        self.codec = codec
        self.sink = sink
        self.limits = limits
        self.pending = pending  # the request bytes of every connection, read and unanswered
        self.watcher = watcher  # this connection's key in the watch registry
        self.ids = ids
        self.effects: list[Effect] = []
        self.state = AWAIT_HELLO
        self.closing = False  # no more requests are read
        self.session_id = 0
        self.password = b""
        self.timeout_ms = 0
        self.read_only = False  # a local session of a member in read-only mode
        self.owner = 0  # this connection's id as its session's owner
        self.requests = 0  # decoded requests received (pings are not counted)
        self._queue: deque[Slot] = deque()
        self._auth: Slot | None = None  # an add_auth whose hashing is due

    # ---- state -----------------------------------------------------------------------------

    @property
    def greeted(self) -> bool:
        """The handshake is done: the session is created, or attached to this connection."""
        return self.state == OPEN

    @property
    def queued(self) -> int:
        """Requests awaiting their replies."""
        return len(self._queue)

    @property
    def auth_pending(self) -> bool:
        """An add_auth waits for its credential to be hashed (`auth_hashed`)."""
        return self._auth is not None

    def has_room(self) -> bool:
        """Fewer requests are in flight than the connection may have."""
        return len(self._queue) < self.limits.max_in_flight

    def too_much_pending(self) -> bool:
        """Read no more while this connection has its most requests in flight, or while the
        member's connections hold their most request bytes and this one holds some of them
        (each connection may always have one request in flight: no one waits for ever)."""
        queued = len(self._queue)
        if queued >= self.limits.max_in_flight:
            return True
        return queued > 0 and self.pending.total > self.limits.max_total_pending_bytes

    def read_timeout_s(self, buffered: bool) -> float:
        """How long the shell may wait for the client's next bytes: without limit before the
        greeting (the handshake's deadline counts from the connection's start), a session
        timeout (or the handshake timeout, if longer) to complete a frame, and one and a half
        session timeouts between requests."""
        if self.state != OPEN:
            return math.inf
        if buffered:
            return max(self.limits.handshake_timeout_s, self.timeout_ms / 1000)
        return self.timeout_ms / 1000 * 1.5

    # ---- handshake -------------------------------------------------------------------------

    def receive_hello(self, payload: bytes, owner: int) -> None:
        """The client's first frame; `owner` is a new owner id for this connection."""
        if self.state != AWAIT_HELLO or self.closing:
            raise ServingStateError("a handshake comes first, and once")
        try:
            hello = self.codec.decode_hello(payload)
        except MarshallingError as err:
            self._refuse(err)
            return
        if hello is None:
            self.sink.push(self.codec.status(self.view.status()))
            self.close_after_flush()
            return
        self._hello(hello, owner)

    def _hello(self, hello: Hello, owner: int) -> None:
        view = self.view
        read_only = not view.serving
        if read_only and not (hello.read_only and view.read_only_mode.active):
            self._refuse(ConnectionLossError("this member is not serving (no quorum); try another"))
            return
        if hello.last_zxid > view.tree.last_zxid:
            self._refuse(ConnectionLossError("this server is behind the client; try another"))
            return
        self.owner = owner
        if read_only:
            self._open_read_only(hello)
            return
        if hello.session_id == 0:
            self.state = BINDING
            self.effects.append(CreateSession(hello.timeout_ms))
            return
        info = view.tree.sessions.get(hello.session_id)
        if info is None or not view.session_alive(hello.session_id):
            self._refuse(SessionExpiredError(f"session {hello.session_id:#x} has expired"))
            return
        if not self._resume(hello, info):
            return
        self.state = BINDING
        self.effects.append(AttachSession(hello.session_id))

    def _resume(self, hello: Hello, known: SessionInfo | LocalSession) -> bool:
        """Take up the session `hello` names, whose entry in its table is `known`, if the
        password matches; otherwise refuse the client and return False."""
        if known.password != hello.password:
            self._refuse(AuthFailedError("wrong session password"))
            return False
        self.session_id = hello.session_id
        self.password = known.password
        self.timeout_ms = known.timeout_ms
        return True

    def _open_read_only(self, hello: Hello) -> None:
        """Greet a read-only client with a new local session, or its own one resumed. A
        session of the ensemble is refused with NOT_READ_ONLY: only its quorum knows whether
        it lives (ZooKeeper's clients hear that it expired, as ZooKeeper's read-only server
        answers them; zkpy's client tries another member)."""
        view = self.view
        self.read_only = True
        if hello.session_id == 0:
            self.session_id, self.password, self.timeout_ms = view.open_local_session(
                hello.timeout_ms
            )
        else:
            local = view.read_only_mode.session(hello.session_id)
            if local is None:
                self._refuse(
                    NotReadOnlyError(
                        f"session {hello.session_id:#x} is not a read-only session of this "
                        "member, which has no quorum to ask about it"
                    )
                )
                return
            if not self._resume(hello, local):
                return
        self._greet()

    def session_assigned(self, session_id: int, password: bytes, timeout_ms: int) -> None:
        """The member gave the session it is creating (`CreateSession`) its id, password and
        negotiated timeout."""
        if self.state != BINDING or self.session_id:
            raise ServingStateError("no session is being created")
        self.session_id = session_id
        self.password = password
        self.timeout_ms = timeout_ms

    def session_ready(self, result: ApplyResult | None) -> None:
        """The session was created, or attached to this connection (a reconnect): greet; or it
        could not be (None: the member lost its leader)."""
        if self.state == CLOSED:
            return
        if self.state != BINDING or not self.session_id:
            raise ServingStateError("no session is being created or attached")
        if result is None:
            self._refuse(ConnectionLossError("the member lost its leader; try another"))
            return
        error = result.result.error
        if error == Code.SESSION_EXPIRED:
            self._refuse(SessionExpiredError(f"session {self.session_id:#x} has expired"))
            return
        if error != Code.OK:
            self._refuse(ZkError(f"session {self.session_id:#x} could not be taken ({error})"))
            return
        self._greet()

    def _greet(self) -> None:
        self.state = OPEN
        self.sink.push(
            self.codec.greeting(
                self.session_id,
                self.password,
                self.timeout_ms,
                self.view.tree.last_zxid,
                self.limits.max_frame,
                self.limits.server_id,
                self.read_only,
            )
        )

    def _refuse(self, err: ZkError) -> None:
        self.sink.push(self.codec.refusal(err.code, str(err)))
        self.close_after_flush()

    # ---- requests --------------------------------------------------------------------------

    def feed(self, payload: bytes) -> None:
        """One request frame: a ping is answered at once, anything else decoded and handled."""
        if self.state != OPEN or self.closing or self._auth is not None:
            self._check_open()  # raises
        codec = self.codec
        try:
            decoded = codec.decode_request(payload)
        except MarshallingError as err:
            self._protocol_error(err, getattr(err, "xid", None))
            return
        if decoded is None:
            self.sink.push(codec.pong(self.view.tree.last_zxid))
            return
        self._receive(decoded[0], decoded[2], len(payload))

    def receive(self, xid: int, request: Decoded, size: int = 0) -> None:
        """One decoded request; `size` is its frame's bytes, counted in the member's pending
        bytes while it waits for its reply."""
        self._check_open()
        self._receive(xid, request, size)

    def _receive(self, xid: int, request: Decoded, size: int) -> None:
        self.requests += 1
        if type(request) is GetDataRequest and not self._queue:  # most requests: answered now
            self.sink.push(self._answer_read(xid, request))
            return
        queued = len(self._queue)
        try:
            self._dispatch(xid, request)
        except MarshallingError as err:
            self._protocol_error(err, getattr(err, "xid", None))
            return
        if len(self._queue) > queued:  # answered later: held until then
            self._queue[-1].size = size
            self.pending.total += size

    def _check_open(self) -> None:
        if self.state != OPEN:
            raise ServingStateError("requests come after the handshake's greeting")
        if self.closing:
            raise ServingStateError("the connection is closing: no more requests are read")
        if self._auth is not None:
            raise ServingStateError("an add_auth is being hashed: report it with auth_hashed")

    def _dispatch(self, xid: int, request: Decoded) -> None:
        if isinstance(request, _WRITES):
            if self.read_only:
                self._refuse_read_only(xid, request)
            else:
                self._submit_write(xid, request)
            return
        if isinstance(request, (CreateSessionRequest, AttachSessionRequest)):
            raise MarshallingError("sessions are created and attached by the handshake")
        if type(request) is SyncRequest:
            if self.read_only:
                self._refuse_read_only(xid, request)
            else:
                self._sync(xid, request)
            return
        if type(request) is AuthRequest:
            self._authenticate(xid, request)
            return
        if self._queue:  # behind a pending write: answered when that write's reply leaves
            self._queue.append(Slot(xid, read=request))
            self._flush_queue()
        else:
            self.sink.push(self._answer_read(xid, request))

    def _check_xid_free(self, xid: int) -> None:
        """Refuse a write or sync that reuses the xid of one still awaiting its reply: the
        member matches outcomes to requests by (session, xid). A -5 reply, then the close."""
        if self.view.xid_pending(self.session_id, xid):
            err = MarshallingError(f"xid {xid} is already in use by a write or sync in progress")
            err.xid = xid  # type: ignore[attr-defined]
            raise err

    def _protocol_error(self, err: ZkError, xid: int | None) -> None:
        self.effects.append(Notice(f"bad input, closing: {err}"))
        if xid is not None:
            self.sink.push(self._error_reply(xid, err))
        self.close_after_flush()

    def bad_frame(self, message: str) -> None:
        """The client sent a frame the shell could not take (over the size limit): a refusal
        in place of the handshake, or the close after the replies so far."""
        if self.state == CLOSED or self.closing:
            return
        if self.state == AWAIT_HELLO:
            self._refuse(MarshallingError(f"handshake {message}"))
        else:
            self._protocol_error(MarshallingError(message), None)

    # ---- writes and syncs ------------------------------------------------------------------

    def _submit_write(self, xid: int, request: WriteRequest) -> None:
        self._check_xid_free(xid)
        refusal = self._oversize(request)
        if refusal is not None:
            self._refuse_in_turn(xid, refusal)
            return
        slot = Slot(xid, _WRITE, close_after=type(request) is CloseSessionRequest)
        self._queue.append(slot)
        self.effects.append(SubmitWrite(slot, request))

    def _oversize(self, request: WriteRequest) -> ZkError | None:
        """The refusal of a create or set_data whose value is over `max_data_bytes`, made here
        so that the reply can name the limit (a refusal ordered through the log carries only
        its code) and the value is not forwarded to the leader for nothing. Only when prep
        would refuse it for its size too: its session is alive and its path is valid and not
        the root (prep checks those first)."""
        if type(request) is not CreateRequest and type(request) is not SetDataRequest:
            return None
        data = request.data
        size = 0 if data is None else len(data)
        limit = self.limits.max_data_bytes
        if size <= limit or not self.view.session_alive(self.session_id):
            return None
        sequential = type(request) is CreateRequest and request.sequential
        try:
            path = paths.validate(request.path, sequential=sequential)
        except ZkError as err:
            return err
        if type(request) is CreateRequest and path == "/" and not sequential:
            return None
        return BadArgumentsError(
            f"value of {size} bytes is over the max_data_bytes limit of {limit} bytes", path=path
        )

    def _sync(self, xid: int, request: SyncRequest) -> None:
        """A sync waits until this member has applied all the leader had proposed before it."""
        self._check_xid_free(xid)
        try:
            paths.validate(request.path)
        except ZkError as err:
            self._refuse_in_turn(xid, err)
            return
        slot = Slot(xid, _SYNC, read=request)
        self._queue.append(slot)
        self.effects.append(StartSync(slot))

    def _refuse_read_only(self, xid: int, request: WriteRequest | SyncRequest) -> None:
        """A write or sync of a read-only client: NOT_READ_ONLY, in its turn, as ZooKeeper's
        read-only server answers them. Closing its local session is the one write it may make
        (nothing to order: the session is this member's alone)."""
        if type(request) is CloseSessionRequest:
            self.view.read_only_mode.close(self.session_id)
            reply = self.codec.reply(xid, self.view.tree.last_zxid, 0, None)
            self._queue.append(Slot(xid, frame=reply, close_after=True))
            self._flush_queue()
            return
        self._refuse_in_turn(
            xid, NotReadOnlyError("this member has no quorum: it answers reads only")
        )

    def _refuse_in_turn(self, xid: int, err: ZkError) -> None:
        """Answer a request with `err` in its turn, without ordering it through the ensemble."""
        self._queue.append(Slot(xid, _REFUSED, error=err))
        self._flush_queue()

    def write_committed(self, slot: Slot, result: ApplyResult | None) -> None:
        """The outcome of a write (`SubmitWrite`): None if it is unknown (the member lost its
        leader before the write was committed: the client hears ConnectionLoss and is cut off)."""
        if self.state == CLOSED:
            return  # its reply goes nowhere
        self._check_waiting(slot, _WRITE)
        if result is None:
            slot.frame = self.codec.reply(
                slot.xid,
                self.view.tree.last_zxid,
                Code.CONNECTION_LOSS,
                "the member lost its leader; the write may or may not have been applied",
            )
            slot.close_after = True
        else:
            slot.frame = self._write_reply(slot.xid, result)
            if result.result.error == Code.SESSION_MOVED:
                slot.close_after = True  # the session is another connection's now
        self._flush_queue()

    def sync_done(self, slot: Slot, ok: bool) -> None:
        """The outcome of a sync (`StartSync`)."""
        if self.state == CLOSED:
            return
        self._check_waiting(slot, _SYNC)
        zxid = self.view.tree.last_zxid
        request = slot.read
        assert type(request) is SyncRequest
        if ok:
            slot.frame = self.codec.reply(slot.xid, zxid, 0, request.path)
        else:
            slot.frame = self.codec.reply(slot.xid, zxid, Code.CONNECTION_LOSS, "sync failed")
            slot.close_after = True
        self._flush_queue()

    def _check_waiting(self, slot: Slot, waits: int) -> None:
        if slot.waits != waits or slot.frame is not None:
            raise ServingStateError(f"request {slot.xid} is not waiting for this outcome")

    def _write_reply(self, xid: int, result: ApplyResult) -> bytes:
        """The reply to a committed write, made as soon as it is applied: a set's or create's
        Stat is read from the node now, as this write left it (the member applies records
        without Stats, see `Member._answer`)."""
        zxid = result.record.zxid
        codec = self.codec
        if result.multi_results is not None:
            body = [self._op_body(r) for r in result.multi_results]
            return codec.reply(xid, zxid, result.result.error, body)
        if result.result.error != Code.OK:
            return codec.reply(xid, zxid, result.result.error, None)
        op = result.record.op
        if type(op) is Reconfig:  # the new membership's text and /zookeeper/config's Stat
            stat = result.result.value
            return codec.reply(xid, zxid, 0, [op.config, stat.to_wire() if stat else None])
        if type(op) is SetData or type(op) is SetACL:
            node = self.view.tree.get(op.path)
            return codec.reply(xid, zxid, 0, None if node is None else node.stat_wire())
        return codec.reply(xid, zxid, 0, self._op_body(result.result)[1])

    def _op_body(self, outcome: OpResult) -> list[Any]:
        value = outcome.value
        if outcome.error != Code.OK:
            return [outcome.error, None]
        if isinstance(value, str):
            node = self.view.tree.get(value)
            return [0, [value, node.stat_wire() if node is not None else None]]
        if isinstance(value, Stat):
            return [0, value.to_wire()]
        return [0, None]

    # ---- the reply queue -------------------------------------------------------------------

    def _flush_queue(self) -> None:
        queue = self._queue
        while queue:
            slot = queue[0]
            if slot.frame is None:
                if slot.waits == _READ:
                    assert slot.read is not None
                    slot.frame = self._answer_read(slot.xid, slot.read)
                elif slot.error is not None:
                    # made now, not when refused: its zxid must not be older than the replies
                    # to the writes before it
                    slot.frame = self._error_reply(slot.xid, slot.error)
                else:
                    break
            queue.popleft()
            self.pending.total -= slot.size
            self.sink.push(slot.frame)
            if slot.close_after:
                self.close_after_flush()

    def _error_reply(self, xid: int, err: ZkError) -> bytes:
        return self.codec.reply(xid, self.view.tree.last_zxid, err.code, str(err))

    # ---- reads -----------------------------------------------------------------------------

    def _answer_read(self, xid: int, request: ReadRequest | CodecRead) -> bytes:
        tree = self.view.tree
        body: Any  # (compiled, a variable takes the type of its first assignment)
        try:
            if type(request) is GetDataRequest:  # the most frequent, without `match`'s lookups
                body = self._get_data(tree, request)
            else:
                body = self._read(request)
        except ZkError as err:
            if isinstance(err, AuthFailedError):
                self.close_after_flush()
            return self.codec.reply(xid, tree.last_zxid, err.code, str(err))
        return self.codec.reply(xid, tree.last_zxid, 0, body)

    def _get_data(self, tree: DataTree, request: GetDataRequest) -> list[Any]:
        path = request.path
        node = tree.get(paths.validate(path))
        if node is None:
            raise NoNodeError(path=path)
        if not acls.allows(node.acl, Perm.READ, self.ids):
            raise NoAuthError("READ not allowed", path=path)
        if request.watch:
            self._watch(path, WatchMode.DATA)
        data = node.data
        return [self.codec.null_data() if data is None else data, node.stat_wire()]

    def _readable(self, path: str) -> ZNode | None:
        node = self.view.tree.get(path)
        if node is not None and not acls.allows(node.acl, Perm.READ, self.ids):
            raise NoAuthError("READ not allowed", path=path)
        return node

    def read_body(self, request: ReadRequest) -> Any:
        """The body of the reply to `request`, as this connection would answer it alone (a
        ZkError refuses it): for a listener's own requests made of reads (multiRead)."""
        if type(request) is GetDataRequest:
            return self._get_data(self.view.tree, request)
        return self._read(request)

    def _read(self, request: ReadRequest | CodecRead) -> Any:
        """The body of the reply to a read other than get_data."""
        if type(request) is CodecRead:
            return self.codec.answer(self, request.request)
        match request:
            case ExistsRequest(path, watch):
                return self._exists(path, watch)
            case GetChildrenRequest(path, watch):
                return self._get_children(path, watch)
            case GetACLRequest(path):
                return self._get_acl(path)
            case AddWatchRequest(path, mode):
                self._readable(paths.validate(path))
                self._watch(path, mode)
                return None
            case RemoveWatchesRequest(path, mode):
                if not self.view.watches.remove(self.watcher, paths.validate(path), mode):
                    raise NoWatcherError(path=path)
                return None
            case SetWatchesRequest():
                self._set_watches(request)
                return None
        raise BadArgumentsError(f"unknown read {type(request).__name__}")

    def _exists(self, path: str, watch: bool) -> list[int] | None:
        node = self.view.tree.get(paths.validate(path))  # as in ZooKeeper: a Stat needs no READ
        if watch:
            self._watch(path, WatchMode.DATA if node is not None else WatchMode.EXIST)
        return None if node is None else node.stat_wire()

    def _get_acl(self, path: str) -> list[Any]:
        node = self.view.tree.get(paths.validate(path))
        if node is None:
            raise NoNodeError(path=path)
        if not acls.allows(node.acl, Perm.READ | Perm.ADMIN, self.ids):
            raise NoAuthError("READ or ADMIN needed to read an ACL", path=path)
        return [[entry.to_wire() for entry in node.acl], node.stat_wire()]

    def _get_children(self, path: str, watch: bool) -> list[Any]:
        node = self._readable(paths.validate(path))
        if node is None:
            raise NoNodeError(path=path)
        limit = self.limits.max_children_per_reply
        if len(node.children) > limit:
            raise TooManyRequestsError(
                f"{len(node.children)} children is over the reply limit of {limit}", path=path
            )
        if watch:
            self._watch(path, WatchMode.CHILD)
        return [self.view.tree.children_of(path), node.stat_wire()]

    # ---- watches ---------------------------------------------------------------------------

    def _watch(self, path: str, mode: WatchMode) -> None:
        watches = self.view.watches
        if watches.has(self.watcher, path, mode):
            return
        if watches.count(self.watcher) >= self.limits.max_watches_per_session:
            raise TooManyRequestsError(
                f"a session may hold at most {self.limits.max_watches_per_session} watches"
            )
        self._check_watch_room(watch_weight(path))
        watches.add(self.watcher, path, mode)

    def _check_watch_room(self, weight: int) -> None:
        limit = self.limits.max_total_watch_bytes
        if self.view.watches.weight + weight > limit:
            raise TooManyRequestsError(
                f"this member's watches are at their limit of {limit} bytes (max_total_watch_bytes)"
            )

    def _set_watches(self, request: SetWatchesRequest) -> None:
        """Register a reconnecting client's watches, and send at once the events it missed
        since the last zxid it saw (those of nodes it may read)."""
        registrations = [
            (mode, paths.validate(path))
            for mode, group in (
                (WatchMode.DATA, request.data),
                (WatchMode.EXIST, request.exist),
                (WatchMode.CHILD, request.child),
                (WatchMode.PERSISTENT, request.persistent),
                (WatchMode.PERSISTENT_RECURSIVE, request.recursive),
            )
            for path in group
        ]
        view = self.view
        watches = view.watches
        if watches.count(self.watcher) + len(registrations) > self.limits.max_watches_per_session:
            raise TooManyRequestsError("too many watches")
        self._check_watch_room(sum(watch_weight(path) for _mode, path in registrations))
        tree = view.tree
        missed = resume_watches(
            watches,
            self.watcher,
            registrations,
            request.last_zxid,
            view.change_log,
            tree,
            tree.last_zxid,
        )
        for event in missed:
            node = tree.get(event.path)
            if node is None or acls.allows(node.acl, Perm.READ, self.ids):
                self.event(event)

    def event(self, event: WatchedEvent) -> None:
        """A watch of this connection fired: the event leaves at once, ahead of any reply that
        shows the new state, if the client may read the node (for a deleted node: its parent),
        so that a watch on a subtree does not leak what the ACLs hide."""
        if self.state == CLOSED:
            return
        tree = self.view.tree
        node = tree.get(event.path)
        if node is None and event.path != "/":
            node = tree.get(paths.parent(event.path))
        if node is None or acls.allows(node.acl, Perm.READ, self.ids):
            self.sink.push(self.codec.event(event))

    # ---- auth ------------------------------------------------------------------------------

    def _authenticate(self, xid: int, request: AuthRequest) -> None:
        """Take an add_auth's place in the reply order; the shell hashes the credential
        (`HashCredential`) and reports it (`auth_hashed`) before it feeds the next request, so
        that the requests after it carry the new identity."""
        slot = Slot(xid, _AUTH)
        self._queue.append(slot)
        if request.scheme != "digest":
            err = AuthFailedError(f"unknown authentication scheme {request.scheme!r}")
            self._auth_failed(slot, err)
            return
        self._auth = slot
        self.effects.append(HashCredential(request.credential))

    def auth_hashed(self, outcome: Id | AuthFailedError) -> None:
        """The identity the pending add_auth's credential proves, or why it proves none."""
        slot = self._auth
        if self.state == CLOSED:
            return
        if slot is None:
            raise ServingStateError("no add_auth is waiting for its hashing")
        self._auth = None
        if isinstance(outcome, AuthFailedError):
            self._auth_failed(slot, outcome)
            return
        gained = sum(1 for held in self.ids if held.scheme == outcome.scheme)
        if outcome not in self.ids and gained >= MAX_IDENTITIES:
            too_many = f"a connection may hold at most {MAX_IDENTITIES} identities"
            self._auth_failed(slot, AuthFailedError(too_many))
            return
        added = {outcome}
        super_digest = self.limits.super_digest
        if super_digest and outcome.id == super_digest:
            added.add(acls.SUPER_ID)
            self.effects.append(Notice("authenticated as the super user", warning=False))
        self.ids = self.ids | added
        slot.frame = self.codec.reply(slot.xid, self.view.tree.last_zxid, 0, None)
        self._flush_queue()

    def _auth_failed(self, slot: Slot, err: AuthFailedError) -> None:
        """A failed add_auth is answered in its place, and then the connection is closed (no
        request after it is handled)."""
        self.closing = True
        slot.frame = self.codec.reply(slot.xid, self.view.tree.last_zxid, err.code, str(err))
        slot.close_after = True
        self._flush_queue()

    # ---- the end ---------------------------------------------------------------------------

    def close_after_flush(self) -> None:
        """Read no more; close once the frames pushed so far are sent."""
        self.closing = True
        self.sink.finish()

    def closed(self) -> None:
        """The connection has ended: its unanswered requests no longer count as pending (their
        writes may still commit; their replies go nowhere)."""
        self.state = CLOSED
        self.closing = True
        self._auth = None
        self.pending.total -= sum(slot.size for slot in self._queue)
        self._queue.clear()
