"""Client connections: one reader and one writer task per connection, FIFO replies.

Replies leave in request order. A write's slot waits for its commit; a read that arrives behind a
pending write waits in the queue and is answered when it reaches the head, so a client always
reads its own writes. Watch events bypass the queue: they are written the moment the change is
applied, so they always precede any reply that shows the new state.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import trio

from zkpy import tls
from zkpy._net.outbox import Outbox
from zkpy._net.receiver import Receiver
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
    NoWatcherError,
    SessionExpiredError,
    TooManyRequestsError,
    ZkError,
)
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
    RemoveWatchesRequest,
    SetACLRequest,
    SetDataRequest,
    SetWatchesRequest,
    SyncRequest,
)
from zkpy.core.tree import ApplyResult, OpResult
from zkpy.core.txn import SetACL, SetData
from zkpy.core.types import Id, Perm, Stat, WatchedEvent, WatchMode
from zkpy.core.watches import resume_watches, watch_weight
from zkpy.server.node import Member
from zkpy.wire import client as wire
from zkpy.wire.frames import FrameDecoder, FrameTooLargeError, encode_frame

log = logging.getLogger("zkpy.server.clients")

# A batch of requests read at once is fed to the ensemble in pieces of this many, so the leader
# starts on the first while the rest are decoded (256 requests of one client otherwise travel
# through every member as one convoy, each stage waiting for the one before).
STEP_EVERY_FRAMES = 128
YIELD_EVERY_S = 0.005
"""A reader that has spent this long on the requests of one read lets the member's other tasks
run (other connections, peer links, the session ticker) before it goes on."""
MAX_HANDSHAKE_FRAME = 64 << 10
"""The largest frame read before the handshake is done (a handshake takes well under 1 KiB, and
nothing else may come before its reply): a connection that has not handshaken yet cannot make
the member buffer a whole `max_frame`."""
MAX_IDENTITIES = 64
"""Identities one connection may gain with add_auth (beyond what its address or certificate give
it): each is sent with every write it forwards, and kept while it lives."""
HASHING_THREADS = max(1, (os.cpu_count() or 2) // 2)
"""Worker threads that hash digest credentials (PBKDF2, milliseconds each) for a member, so that
a flood of `add_auth` takes at most these CPUs and never the event loop."""
READ_WATCH_PERIOD_S = 1.0  # how often `_watch_reads` looks while no read is in progress

_WRITES = (
    CreateRequest,
    DeleteRequest,
    SetDataRequest,
    SetACLRequest,
    CheckRequest,
    MultiRequest,
    CloseSessionRequest,
)


class ConnectionDone(Exception):
    """Raised inside a connection's tasks to end it (after whatever is already flushed)."""


@dataclass(slots=True)
class Slot:
    """One request's place in the reply order."""

    xid: int
    read: ReadRequest | None = None
    frame: bytes | None = None
    size: int = 0  # the request's bytes, counted in the member's pending bytes until answered
    close_after: bool = False
    error: ZkError | None = None  # refused before ordering: answered with it at its turn


class ClientConnection:
    def __init__(self, server: ClientServer, stream: trio.abc.Stream, conn_id: int) -> None:
        self.server = server
        self.member = server.member
        self.config = server.member.config
        self.stream = stream
        self.id = conn_id
        self.session_id = 0
        self.timeout_ms = 0
        self.owner = 0  # this connection's id as its session's owner (`Member.new_owner_id`)
        self.ids: frozenset[Id] = frozenset()
        self.outbox = Outbox(stream, server.member.output, server.member.outbox_bytes)
        self._outboxes = server.member.outbox_bytes
        self._pending = server.member.pending_bytes
        self._packer = server.packer
        self._max_outbox = self.config.max_outbox_bytes
        self._max_total_outbox = self.config.max_total_outbox_bytes
        self.receiver = Receiver(stream, self.config.spin_before_wait_s)
        self._queue: deque[Slot] = deque()
        self._room = trio.Event()
        self._closing = False
        self._read_deadline = math.inf  # when the read in progress times out (`_watch_reads`)
        self._handshaken = trio.Event()
        self._auth: tuple[Slot, bytes] | None = None  # an add_auth whose hashing is due
        self.cancel_scope = trio.CancelScope()

    @property
    def greeted(self) -> bool:
        """The handshake is done: the session is created, or attached to this connection."""
        return self._handshaken.is_set()

    # ---- output ----------------------------------------------------------------------------

    def push(self, frame: bytes) -> None:
        """Queue a frame (it leaves when the current step flushes); past the outbox limit the
        client is cut off."""
        self.outbox.push(frame)
        if len(self.outbox.buffer) > self._max_outbox:
            log.warning("connection %d: client does not read its replies; closing", self.id)
            self.cancel_scope.cancel()

    def send_event(self, event: WatchedEvent) -> None:
        if self._may_see(event):
            self.push(wire.encode_event(event, self._packer))

    def _encode_reply(self, xid: int, zxid: int, error: int, body: Any) -> bytes:
        return wire.encode_reply(xid, zxid, error, body, self._packer)

    def _may_see(self, event: WatchedEvent) -> bool:
        """A watch tells only a client that may READ the node (for a deleted node: its parent),
        so that a watch on a subtree does not leak what the ACLs hide."""
        tree = self.member.tree
        node = tree.get(event.path)
        if node is None and event.path != "/":
            node = tree.get(paths.parent(event.path))
        return node is None or acls.allows(node.acl, Perm.READ, self.ids)

    def close_after_flush(self) -> None:
        self._closing = True
        self.outbox.finish()

    async def write_loop(self) -> None:
        await self.outbox.run_writer(self.stream)
        raise ConnectionDone

    # ---- the reply queue -------------------------------------------------------------------

    def _flush_queue(self) -> None:
        queue = self._queue
        while queue:
            slot = queue[0]
            if slot.frame is None:
                if slot.read is not None:
                    slot.frame = self._answer_read(slot.xid, slot.read)
                elif slot.error is not None:
                    # made now, not when refused: its zxid must not be older than the replies
                    # to the writes before it
                    slot.frame = self._error_reply(slot.xid, slot.error)
                else:
                    break
            queue.popleft()
            self._pending.total -= slot.size
            self.push(slot.frame)
            if slot.close_after:
                self.close_after_flush()
        if len(queue) < self.config.max_in_flight_per_connection:
            self._room.set()

    def _write_committed(self, slot: Slot, opcode: int, result: ApplyResult | None) -> None:
        if result is None:
            slot.frame = self._encode_reply(
                slot.xid,
                self.member.tree.last_zxid,
                Code.CONNECTION_LOSS,
                "the member lost its leader; the write may or may not have been applied",
            )
            slot.close_after = True
        else:
            slot.frame = self._write_reply(slot.xid, opcode, result)
            if result.result.error == Code.SESSION_MOVED:
                slot.close_after = True  # the session is another connection's now
        self._flush_queue()

    def _write_reply(self, xid: int, opcode: int, result: ApplyResult) -> bytes:
        """The reply to a committed write, made as soon as it is applied: a set's or create's
        Stat is read from the node now, as this write left it (the member applies records
        without Stats, see `Member._answer`)."""
        zxid = result.record.zxid
        if result.multi_results is not None:
            body = [self._op_body(r) for r in result.multi_results]
            return self._encode_reply(xid, zxid, result.result.error, body)
        if result.result.error != Code.OK:
            return self._encode_reply(xid, zxid, result.result.error, None)
        op = result.record.op
        if type(op) is SetData or type(op) is SetACL:
            node = self.member.tree.get(op.path)
            return self._encode_reply(xid, zxid, 0, None if node is None else node.stat_wire())
        return self._encode_reply(xid, zxid, 0, self._op_body(result.result)[1])

    def _op_body(self, outcome: OpResult) -> list[Any]:
        value = outcome.value
        if outcome.error != Code.OK:
            return [outcome.error, None]
        if isinstance(value, str):
            node = self.member.tree.get(value)
            return [0, [value, node.stat_wire() if node is not None else None]]
        if isinstance(value, Stat):
            return [0, value.to_wire()]
        return [0, None]

    # ---- requests --------------------------------------------------------------------------

    def handle_frame(self, payload: bytes) -> None:
        """Handle one request (the read loop has touched the session for the whole batch)."""
        if wire.is_ping(payload):
            self.push(self._encode_reply(wire.XID_PING, self.member.tree.last_zxid, 0, None))
            return
        xid, opcode, request = wire.decode_request(payload)
        self.member.stats["requests"] += 1
        if isinstance(request, _WRITES):
            self._submit_write(xid, opcode, request)
            return
        if isinstance(request, (CreateSessionRequest, AttachSessionRequest)):
            raise MarshallingError("sessions are created and attached by the handshake")
        if isinstance(request, SyncRequest):
            self._sync(xid, request)
            return
        if type(request) is AuthRequest:
            self._authenticate(xid, request)
            return
        if self._queue:  # behind a pending write: answered when that write's reply leaves
            self._queue.append(Slot(xid, read=request))
            self._flush_queue()
        else:
            self.push(self._answer_read(xid, request))

    def _sync(self, xid: int, request: SyncRequest) -> None:
        """A sync waits until this member has applied all the leader had proposed before it."""
        self._check_xid_free(xid)
        path = request.path
        try:
            paths.validate(path)
        except ZkError as err:
            self._refuse_in_turn(xid, err)
            return
        slot = Slot(xid)
        self._queue.append(slot)

        def done(ok: bool) -> None:
            zxid = self.member.tree.last_zxid
            if ok:
                slot.frame = self._encode_reply(xid, zxid, 0, path)
            else:
                slot.frame = self._encode_reply(xid, zxid, Code.CONNECTION_LOSS, "sync failed")
                slot.close_after = True
            self._flush_queue()

        self.member.sync(self.session_id, xid, done)

    def _check_xid_free(self, xid: int) -> None:
        """Refuse a write or sync that reuses the xid of one still awaiting its reply: the
        member matches outcomes to requests by (session, xid). A -5 reply, then the close."""
        if self.member.xid_pending(self.session_id, xid):
            err = MarshallingError(f"xid {xid} is already in use by a write or sync in progress")
            err.xid = xid  # type: ignore[attr-defined]
            raise err

    def _refuse_in_turn(self, xid: int, err: ZkError) -> None:
        """Answer a request with `err` in its turn, without ordering it through the ensemble."""
        self._queue.append(Slot(xid, error=err))
        self._flush_queue()

    def _error_reply(self, xid: int, err: ZkError) -> bytes:
        return self._encode_reply(xid, self.member.tree.last_zxid, err.code, str(err))

    def _oversize(self, request: Any) -> ZkError | None:
        """The refusal of a create or set_data whose value is over `max_data_bytes`, made here
        so that the reply can name the limit (a refusal ordered through the log carries only
        its code) and the value is not forwarded to the leader for nothing. Only when prep
        would refuse it for its size too: its session is alive and its path is valid and not
        the root (prep checks those first)."""
        if type(request) is not CreateRequest and type(request) is not SetDataRequest:
            return None
        size = len(request.data)
        limit = self.config.max_data_bytes
        if size <= limit or not self.member.session_alive(self.session_id):
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

    def _submit_write(self, xid: int, opcode: int, request: Any) -> None:
        self._check_xid_free(xid)
        refusal = self._oversize(request)
        if refusal is not None:
            self._refuse_in_turn(xid, refusal)
            return
        slot = Slot(xid, close_after=isinstance(request, CloseSessionRequest))
        self._queue.append(slot)
        self.member.submit(
            self.session_id,
            xid,
            request,
            lambda result: self._write_committed(slot, opcode, result),
            self.ids,
            self.owner,
        )

    def _answer_read(self, xid: int, request: ReadRequest) -> bytes:
        zxid = self.member.tree.last_zxid
        try:
            body = self._read(request)
        except ZkError as err:
            if isinstance(err, AuthFailedError):
                self.close_after_flush()
            return self._encode_reply(xid, zxid, err.code, str(err))
        return self._encode_reply(xid, zxid, 0, body)

    def _readable(self, path: str) -> Any:
        node = self.member.tree.get(path)
        if node is not None and not acls.allows(node.acl, Perm.READ, self.ids):
            raise NoAuthError("READ not allowed", path=path)
        return node

    def _watch(self, path: str, mode: WatchMode) -> None:
        watches = self.member.watches
        if watches.has(self.id, path, mode):
            return
        if watches.count(self.id) >= self.config.max_watches_per_session:
            raise TooManyRequestsError(
                f"a session may hold at most {self.config.max_watches_per_session} watches"
            )
        self._check_watch_room(watch_weight(path))
        watches.add(self.id, path, mode)

    def _check_watch_room(self, weight: int) -> None:
        limit = self.config.max_total_watch_bytes
        if self.member.watches.weight + weight > limit:
            raise TooManyRequestsError(
                f"this member's watches are at their limit of {limit} bytes (max_total_watch_bytes)"
            )

    def _read(self, request: ReadRequest) -> Any:
        if type(request) is GetDataRequest:  # the most frequent, without `match`'s lookups
            path = request.path
            node = self._readable(paths.validate(path))
            if node is None:
                raise NoNodeError(path=path)
            if request.watch:
                self._watch(path, WatchMode.DATA)
            return [node.data, node.stat_wire()]
        tree = self.member.tree
        match request:
            case ExistsRequest(path, watch):
                node = tree.get(paths.validate(path))  # as in ZooKeeper: a Stat needs no READ
                if watch:
                    self._watch(path, WatchMode.DATA if node is not None else WatchMode.EXIST)
                return None if node is None else node.stat_wire()
            case GetChildrenRequest(path, watch):
                node = self._readable(paths.validate(path))
                if node is None:
                    raise NoNodeError(path=path)
                limit = self.config.max_children_per_reply
                if len(node.children) > limit:
                    raise TooManyRequestsError(
                        f"{len(node.children)} children is over the reply limit of {limit}",
                        path=path,
                    )
                if watch:
                    self._watch(path, WatchMode.CHILD)
                return [tree.children_of(path), node.stat_wire()]
            case GetACLRequest(path):
                node = tree.get(paths.validate(path))
                if node is None:
                    raise NoNodeError(path=path)
                if not acls.allows(node.acl, Perm.READ | Perm.ADMIN, self.ids):
                    raise NoAuthError("READ or ADMIN needed to read an ACL", path=path)
                return [[entry.to_wire() for entry in node.acl], node.stat_wire()]
            case AddWatchRequest(path, mode):
                self._readable(paths.validate(path))
                self._watch(path, mode)
                return None
            case RemoveWatchesRequest(path, mode):
                if not self.member.watches.remove(self.id, paths.validate(path), mode):
                    raise NoWatcherError(path=path)
                return None
            case SetWatchesRequest():
                return self._set_watches(request)
        raise BadArgumentsError(f"unknown read {type(request).__name__}")

    def _set_watches(self, request: SetWatchesRequest) -> None:
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
        member = self.member
        if member.watches.count(self.id) + len(registrations) > self.config.max_watches_per_session:
            raise TooManyRequestsError("too many watches")
        self._check_watch_room(sum(watch_weight(path) for _mode, path in registrations))
        missed = resume_watches(
            member.watches,
            self.id,
            registrations,
            request.last_zxid,
            member.change_log,
            member.tree,
            member.tree.last_zxid,
        )
        for event in missed:
            node = member.tree.get(event.path)
            if node is None or acls.allows(node.acl, Perm.READ, self.ids):
                self.send_event(event)

    def _authenticate(self, xid: int, request: AuthRequest) -> None:
        """Take an add_auth's place in the reply order; the reader hashes the credential
        (`_finish_auth`) before it handles this connection's next request, so that the requests
        after it carry the new identity."""
        slot = Slot(xid)
        self._queue.append(slot)
        if request.scheme != "digest":
            err = AuthFailedError(f"unknown authentication scheme {request.scheme!r}")
            self._auth_failed(slot, err)
            return
        self._auth = (slot, request.credential)

    async def _finish_auth(self) -> None:
        """Hash the pending add_auth's credential in a worker thread (PBKDF2 takes milliseconds:
        a flood of them on the event loop would starve every other connection and the peer
        links) and answer it in its place."""
        assert self._auth is not None
        slot, credential = self._auth
        self._auth = None
        try:
            ident = await trio.to_thread.run_sync(
                acls.digest_id_from_credential, credential, limiter=self.server.hashing
            )
        except AuthFailedError as err:
            self._auth_failed(slot, err)
            return
        gained = sum(1 for held in self.ids if held.scheme == ident.scheme)
        if ident not in self.ids and gained >= MAX_IDENTITIES:
            too_many = f"a connection may hold at most {MAX_IDENTITIES} identities"
            self._auth_failed(slot, AuthFailedError(too_many))
            return
        added = {ident}
        if self.config.super_digest and ident.id == self.config.super_digest:
            added.add(acls.SUPER_ID)
            log.info("connection %d authenticated as the super user", self.id)
        self.ids = self.ids | added
        slot.frame = self._encode_reply(slot.xid, self.member.tree.last_zxid, 0, None)
        self._flush_queue()

    def _auth_failed(self, slot: Slot, err: AuthFailedError) -> None:
        """A failed add_auth is answered in its place, and then the connection is closed (no
        request after it is handled)."""
        self._closing = True
        zxid = self.member.tree.last_zxid
        slot.frame = self._encode_reply(slot.xid, zxid, err.code, str(err))
        slot.close_after = True
        self._flush_queue()

    # ---- handshake -------------------------------------------------------------------------

    def handshake(self, payload: bytes) -> None:
        try:
            first = wire.unpack(payload)
            if isinstance(first, dict) and first.get("cmd") == "status":
                self.push(encode_frame(wire.pack(self.member.status())))
                self.close_after_flush()
                return
            hello = wire.Handshake.decode(payload)
        except MarshallingError as err:
            self._refuse(err)
            return
        member = self.member
        if not member.serving:
            self._refuse(ConnectionLossError("this member is not serving (no quorum); try another"))
            return
        if hello.last_zxid > member.tree.last_zxid:
            self._refuse(ConnectionLossError("this server is behind the client; try another"))
            return
        self.owner = member.new_owner_id()
        if hello.session_id == 0:
            session_id, password, timeout = member.create_session(
                hello.timeout_ms,
                lambda result: self._session_created(result, password, timeout),
                self.owner,
            )
            self._bind(session_id, timeout)
            return
        info = member.tree.sessions.get(hello.session_id)
        if info is None or not member.session_alive(hello.session_id):
            self._refuse(SessionExpiredError(f"session {hello.session_id:#x} has expired"))
            return
        if info.password != hello.password:
            self._refuse(AuthFailedError("wrong session password"))
            return
        self._bind(hello.session_id, info.timeout_ms)
        member.touch(hello.session_id)
        member.attach_session(
            hello.session_id,
            self.owner,
            lambda result: self._session_created(result, info.password, info.timeout_ms),
        )

    def _bind(self, session_id: int, timeout_ms: int) -> None:
        previous = self.server.by_session.get(session_id)
        if previous is not None and previous is not self:
            previous.cancel_scope.cancel()
        self.server.by_session[session_id] = self
        self.session_id = session_id
        self.timeout_ms = timeout_ms

    def _session_created(self, result: ApplyResult | None, password: bytes, timeout: int) -> None:
        """The session was created, or attached to this connection (a reconnect): greet."""
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
        self._greet(self.session_id, password, timeout)

    def _greet(self, session_id: int, password: bytes, timeout_ms: int) -> None:
        self.push(
            wire.HandshakeReply(
                session_id=session_id,
                password=password,
                timeout_ms=timeout_ms,
                zxid=self.member.tree.last_zxid,
                max_frame=self.config.max_frame,
                server_id=self.config.server_id,
            ).encode()
        )
        self._handshaken.set()

    def _refuse(self, err: ZkError) -> None:
        self.push(wire.HandshakeReply(error=err.code, message=str(err)).encode())
        self.close_after_flush()

    # ---- the reader ------------------------------------------------------------------------

    async def read_loop(self) -> None:
        decoder = FrameDecoder(min(self.config.max_frame, MAX_HANDSHAKE_FRAME))
        handshaken = False
        while True:
            if not handshaken:
                wait_s = math.inf  # the handshake's deadline counts from the connection's start
            elif decoder.buffered:
                wait_s = max(self.config.handshake_timeout_s, self.timeout_ms / 1000)
            else:
                wait_s = self.timeout_ms / 1000 * 1.5
            self._read_deadline = trio.current_time() + wait_s
            data = await self.receiver.receive(1 << 16)
            self._read_deadline = math.inf
            if not data:
                raise ConnectionDone
            try:
                frames = decoder.feed(data)
            except FrameTooLargeError as too_large:
                if handshaken:
                    self._protocol_error(MarshallingError(str(too_large)), None)
                else:  # said in a handshake refusal, as any bad handshake
                    self._refuse(MarshallingError(f"handshake {too_large}"))
                return
            if frames:
                self.member.touch(self.session_id)  # any frame keeps the session alive
            yield_at = time.perf_counter() + YIELD_EVERY_S
            try:
                for index, payload in enumerate(frames, 1):
                    if self._closing:
                        return
                    if not handshaken:
                        self.handshake(payload)
                        self.member.output.flush()
                        handshaken = True
                        await self._handshaken.wait()  # no request runs before its session
                        self.server.handshake_done(self.id)
                        decoder.max_frame = self.config.max_frame
                        continue
                    queued = len(self._queue)
                    try:
                        self.handle_frame(payload)
                    except MarshallingError as err:
                        self._protocol_error(err, getattr(err, "xid", None))
                        return
                    if len(self._queue) > queued:  # answered later: held until then
                        self._queue[-1].size = len(payload)
                        self._pending.total += len(payload)
                    if self._auth is not None:
                        self._send_so_far()
                        await self._finish_auth()
                        self.member.touch(self.session_id)  # its requests came in time
                    if self._outbox_full():
                        self._send_so_far()
                        await self._wait_outbox_taken()
                    if index % STEP_EVERY_FRAMES == 0:
                        self._send_so_far()  # these writes leave while the rest is read
                    if time.perf_counter() >= yield_at:
                        self._send_so_far()
                        await trio.lowlevel.checkpoint()  # let the other connections run
                        self.member.touch(self.session_id)
                        yield_at = time.perf_counter() + YIELD_EVERY_S
            finally:
                self.member.step()  # the writes of this batch start on their way at once
                self.member.output.flush()  # the replies to this batch of reads, in one send
            if decoder.error is not None:
                self._protocol_error(MarshallingError(str(decoder.error)), None)
                return
            while self._too_much_pending():
                self._room = trio.Event()
                await self._room.wait()

    def _too_much_pending(self) -> bool:
        """Read no more while this connection has its most requests in flight, or while the
        member's connections hold their most request bytes and this one holds some of them
        (each connection may always have one request in flight: no one waits for ever)."""
        queued = len(self._queue)
        if queued >= self.config.max_in_flight_per_connection:
            return True
        return queued > 0 and self._pending.total > self.config.max_total_pending_bytes

    def _outbox_full(self) -> bool:
        """This connection's outbox is half full, or the member's outboxes together are over
        their limit and this one holds some of it."""
        if len(self.outbox.buffer) >= self._max_outbox // 2:
            return True
        return self._outboxes.total > self._max_total_outbox and self.outbox.unsent > 0

    def _send_so_far(self) -> None:
        """Start the writes handled so far on their way, and send the replies made so far."""
        self.member.step()
        self.member.output.flush()

    async def _watch_reads(self) -> None:
        """Close the connection when a read waits past its deadline (set by `read_loop`).

        A watchdog instead of a `move_on_after` around every read: a cancel scope per read cost
        a noticeable part of answering a small request, while this wakes about once per
        deadline. Between reads (the deadline is infinite) it looks again every second.
        """
        while True:
            deadline = self._read_deadline
            now = trio.current_time()
            if now >= deadline:
                log.info("connection %d: timed out waiting for the client", self.id)
                self.cancel_scope.cancel()
                return
            await trio.sleep_until(min(deadline, now + READ_WATCH_PERIOD_S))

    async def _wait_outbox_taken(self) -> None:
        """Backpressure: read no more requests until the writer has taken the replies so far
        (while the member's outboxes are over their total, until they are sent).

        Many pipelined reads of big values arrive in one read from the socket; answering them
        all at once would go over `max_outbox_bytes` however fast the client reads. The writer
        takes the outbox only once the previous send is done, so a client that does not read
        holds us here, and is cut off after a session timeout.
        """
        with trio.move_on_after(max(self.config.handshake_timeout_s, self.timeout_ms / 1000)):
            while self._outbox_full():
                await self.outbox.taken.wait()
            return
        if len(self.outbox.buffer) >= self._max_outbox // 2:
            log.warning("connection %d: client does not read its replies; closing", self.id)
        else:
            log.warning(
                "connection %d: client does not read its replies while the member's outboxes "
                "hold over %d bytes (max_total_outbox_bytes); closing",
                self.id,
                self._max_total_outbox,
            )
        raise ConnectionDone

    def release(self) -> None:
        """The connection has ended: its unanswered requests no longer count as pending (their
        writes may still commit; their replies go nowhere)."""
        self._pending.total -= sum(slot.size for slot in self._queue)
        self._queue.clear()

    def _protocol_error(self, err: ZkError, xid: int | None) -> None:
        log.warning("connection %d: bad input, closing: %s", self.id, err)
        if xid is not None:
            self.push(self._encode_reply(xid, self.member.tree.last_zxid, err.code, str(err)))
        self.close_after_flush()

    async def serve(self) -> None:
        with self.cancel_scope:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._guard, self.write_loop)
                    nursery.start_soon(self._watch_reads)
                    await self._guard(self.read_loop)
                    await trio.sleep_forever()
            except (ConnectionDone, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            except BaseExceptionGroup as group:
                _, rest = group.split(
                    (ConnectionDone, trio.BrokenResourceError, trio.ClosedResourceError)
                )
                if rest is not None:
                    raise rest from None

    async def _guard(self, body: Any) -> None:
        try:
            await body()
        except (ConnectionDone, trio.BrokenResourceError, trio.ClosedResourceError):
            self.cancel_scope.cancel()


class ClientServer:
    """The client listener of one member: accepts, limits and tracks connections."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.packer = wire.new_packer()  # every connection's replies (all on the event loop)
        self.by_session: dict[int, ClientConnection] = {}
        self._ids = itertools.count(1)
        self._per_address: dict[str, int] = {}
        # the admission deadlines of connections still in their handshake, oldest first
        self._handshaking: dict[int, trio.CancelScope] = {}
        self.hashing = trio.CapacityLimiter(HASHING_THREADS)
        member.session_closed = self._session_closed
        member.session_attached = self._session_attached
        member.serving_changed = self._serving_changed
        self._connections: dict[int, ClientConnection] = {}
        config = member.config
        self._tls = (
            tls.server_context(
                config.tls_cert,
                config.tls_key or None,
                config.tls_ca or None,
                config.tls_client_auth,
            )
            if config.tls_cert
            else None
        )

    def _serving_changed(self, serving: bool) -> None:
        """A member that leaves the quorum drops its clients, so that they find one that serves."""
        if not serving:
            for conn in list(self._connections.values()):
                conn.cancel_scope.cancel()

    def _session_closed(self, session_id: int) -> None:
        conn = self.by_session.pop(session_id, None)
        if conn is not None:
            conn.close_after_flush()

    def _session_attached(self, session_id: int, owner: int) -> None:
        """A session moved to the connection `owner`: an older one of it here must go. Ours
        only if it is greeted: its own attachment was applied before this one (a connection
        still in its handshake waits for its attachment, which comes later)."""
        conn = self.by_session.get(session_id)
        if conn is not None and conn.owner != owner and conn.greeted:
            del self.by_session[session_id]
            log.info("connection %d: session %#x moved to another member", conn.id, session_id)
            conn.close_after_flush()

    def _forget(self, address: str) -> None:
        self.member.connections -= 1
        self._per_address[address] -= 1
        if not self._per_address[address]:
            del self._per_address[address]

    def _admit(self, address: str) -> bool:
        """Count a new connection from `address` in, unless it is over a connection limit.

        When the member is full, or too many connections are in their handshake, the oldest
        connection still in its handshake is dropped to make room, rather than the new one
        refused: real clients finish their handshakes in milliseconds, so the oldest are idle
        ones, and connections that never handshake cannot lock real clients out.
        """
        config = self.member.config
        if self._per_address.get(address, 0) >= config.max_connections_per_address:
            log.warning(
                "refusing a connection from %s: it has %d, the limit for one address "
                "(max_connections_per_address)",
                address,
                config.max_connections_per_address,
            )
            return False
        if self.member.connections >= config.max_connections and not self._drop_oldest():
            log.warning(
                "refusing a connection from %s: %d connections is the limit (max_connections)",
                address,
                config.max_connections,
            )
            return False
        if len(self._handshaking) >= config.max_connections_in_handshake:
            self._drop_oldest()
        self.member.connections += 1
        self._per_address[address] = self._per_address.get(address, 0) + 1
        return True

    def _drop_oldest(self) -> bool:
        """Drop the connection that has been in its handshake longest; False if there is none."""
        if not self._handshaking:
            return False
        oldest, admission = next(iter(self._handshaking.items()))
        del self._handshaking[oldest]
        admission.cancel()
        log.warning("connection %d: dropped before its handshake, to make room", oldest)
        return True

    def handshake_done(self, conn_id: int) -> None:
        """The connection has a session: no handshake deadline for it any more."""
        admission = self._handshaking.pop(conn_id, None)
        if admission is not None:
            admission.deadline = math.inf

    async def _secure(
        self, stream: trio.SocketStream, context: ssl.SSLContext, address: str
    ) -> trio.SSLStream[trio.SocketStream] | None:
        """The TLS handshake (within the connection's handshake deadline, set by `handle`)."""
        secured = trio.SSLStream(stream, context, server_side=True)
        try:
            await secured.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError, OSError) as err:
            log.warning("TLS handshake with %s failed: %s", address, err)
            return None
        return secured

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            address = str(stream.socket.getpeername()[0])
        except OSError:
            address = "?"
        if not self._admit(address):
            await stream.aclose()
            return
        conn_id = next(self._ids)
        timeout_s = self.member.config.handshake_timeout_s
        # one deadline from the connection's start for the TLS and the session handshakes,
        # however slowly their bytes come
        admission = trio.CancelScope(deadline=trio.current_time() + timeout_s)
        self._handshaking[conn_id] = admission
        streams: list[trio.abc.Stream] = [stream]  # and the TLS stream over it, if any
        try:
            with admission:
                await self._serve(stream, address, conn_id, streams)
            if admission.cancelled_caught and trio.current_time() >= admission.deadline:
                log.warning(
                    "connection %d from %s: no handshake within %s s (handshake_timeout_s)",
                    conn_id,
                    address,
                    timeout_s,
                )
        finally:
            self._handshaking.pop(conn_id, None)
            self._forget(address)
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await trio.aclose_forcefully(streams[-1])
                await trio.aclose_forcefully(stream)

    async def _serve(
        self, stream: trio.SocketStream, address: str, conn_id: int, streams: list[trio.abc.Stream]
    ) -> None:
        """Serve one admitted connection; a TLS stream over `stream` is added to `streams`.

        Its cleanup here is synchronous: `handle` closes the streams (compiled, an await in a
        `finally` that an exception passed through broke the cancel scope around it, and the
        client listener ended).
        """
        client_stream: trio.abc.Stream = stream
        # every connection is who its address says (ACLs of the ip scheme), and more if proven
        identities: frozenset[Id] = (
            frozenset() if address == "?" else frozenset({Id("ip", address)})
        )
        if self._tls is not None:
            secured = await self._secure(stream, self._tls, address)
            if secured is None:
                return
            streams.append(secured)
            subject = tls.subject_of(secured.getpeercert())
            if subject is not None:
                identities = identities | {Id("x509", subject)}
            client_stream = secured
        conn = ClientConnection(self, client_stream, conn_id)
        conn.ids = identities
        self.member.register_event_sink(conn.id, conn.send_event)
        self._connections[conn.id] = conn
        try:
            await conn.serve()
        finally:
            conn.outbox.close()
            conn.release()
            del self._connections[conn.id]
            self.member.drop_watcher(conn.id)
            if self.by_session.get(conn.session_id) is conn:
                del self.by_session[conn.session_id]
