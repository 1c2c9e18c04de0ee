"""Client listeners: socket loops around `zkpy.core.serving`, one reader and one writer task
per connection.

Every protocol decision (the handshake, session checks, auth, reads with their ACLs and limits,
xid rules, watch replay, the FIFO reply order) is made by the connection's
`serving.ServerConnection`; this module reads bytes, frames them and feeds them in, carries out
the effects it asks for (writes, syncs, sessions, hashing credentials in worker threads), and
writes the frames it pushes. It also owns what only a socket loop can: admission and connection
limits, TLS, read deadlines and backpressure.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import ssl
import time
from typing import Any, Protocol

import trio

from zkpy import tls
from zkpy._net.outbox import Outbox
from zkpy._net.receiver import Receiver
from zkpy.core import acl as acls
from zkpy.core.errors import AuthFailedError, BadArgumentsError
from zkpy.core.requests import Request
from zkpy.core.serving import (
    AWAIT_HELLO,
    BINDING,
    MAX_IDENTITIES,
    AttachSession,
    Codec,
    CreateSession,
    HashCredential,
    Hello,
    Limits,
    Notice,
    ServerConnection,
    ServingStateError,
    Slot,
    StartSync,
    SubmitWrite,
)
from zkpy.core.tree import ApplyResult
from zkpy.core.types import Id, WatchedEvent
from zkpy.server import backup
from zkpy.server.config import ServerConfig
from zkpy.server.metrics import MeteredCodec
from zkpy.server.node import Member
from zkpy.wire import client as wire
from zkpy.wire.frames import FrameDecoder, FrameTooLargeError, encode_frame

__all__ = ["MAX_HANDSHAKE_FRAME", "MAX_IDENTITIES", "ClientServer", "Dialect", "MsgpackCodec"]

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
HASHING_THREADS = max(1, (os.cpu_count() or 2) // 2)
"""Worker threads that hash digest credentials (PBKDF2, milliseconds each) for a member, so that
a flood of `add_auth` takes at most these CPUs and never the event loop."""
READ_WATCH_PERIOD_S = 1.0  # how often `_watch_reads` looks while no read is in progress


class ConnectionDone(Exception):
    """Raised inside a connection's tasks to end it (after whatever is already flushed)."""


class MsgpackCodec:
    """The msgpack client protocol (`zkpy.wire.client`), as `zkpy.core.serving.Codec`."""

    def __init__(self) -> None:
        """One codec per listener: its packer is reused by every connection's replies."""
        self._packer = wire.new_packer()  # every connection's replies (all on the event loop)

    def decode_hello(self, payload: bytes) -> Hello | None:
        """The handshake, or None for a ``{"cmd": "status"}`` query."""
        first = wire.unpack(payload)
        if isinstance(first, dict) and first.get("cmd") == "status":
            return None
        hello = wire.Handshake.decode(payload)
        return Hello(
            hello.session_id, hello.password, hello.timeout_ms, hello.last_zxid, hello.read_only
        )

    def decode_request(self, payload: bytes) -> tuple[int, int, Request] | None:
        """None for the fixed ping frame, else see `zkpy.wire.client.decode_request`."""
        if wire.is_ping(payload):
            return None
        return wire.decode_request(payload)

    def pong(self, zxid: int) -> bytes:
        """The ping reply."""
        return wire.encode_reply(wire.XID_PING, zxid, 0, None, self._packer)

    def null_data(self) -> bytes:
        """Null data (a jute client's) reads as empty bytes: msgpack clients know no null."""
        return b""

    def answer(self, conn: ServerConnection, request: object) -> Any:
        """Never asked: the msgpack protocol decodes into core requests only."""
        raise BadArgumentsError(f"unknown read {type(request).__name__}")

    def reply(self, xid: int, zxid: int, error: int, body: Any) -> bytes:
        """A reply frame."""
        return wire.encode_reply(xid, zxid, error, body, self._packer)

    def event(self, event: WatchedEvent) -> bytes:
        """A watch event frame."""
        return wire.encode_event(event, self._packer)

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
        """The handshake reply."""
        return wire.HandshakeReply(
            session_id=session_id,
            password=password,
            timeout_ms=timeout_ms,
            zxid=zxid,
            max_frame=max_frame,
            server_id=server_id,
            read_only=read_only,
        ).encode()

    def refusal(self, error: int, message: str) -> bytes:
        """A handshake refusal."""
        return wire.HandshakeReply(error=error, message=message).encode()

    def status(self, status: dict[str, Any]) -> bytes:
        """The status report, as a map."""
        return encode_frame(wire.pack(status))


class Dialect(Protocol):
    """A listener's wire protocol, as the socket loop needs it beyond the codec's frames."""

    serves_backups: bool
    """Whether a connection's first frame may ask for a backup (`zkpy.server.backup`)."""

    def new_codec(self) -> Codec:
        """The codec of a new connection (it may keep state of that connection)."""

    def hash_credential(self, credential: bytes) -> Id:
        """The identity a digest add_auth's credential proves (AuthFailedError if none); run
        in a worker thread."""

    def command(self, member: Member, first: bytes) -> bytes | None:
        """The answer, after which the connection ends, if the first bytes a connection
        sends are a command in place of a handshake (ZooKeeper's four-letter words)."""


class MsgpackDialect:
    """The msgpack protocol: one codec for every connection, zkpy's own digest scheme, and
    backups (`zkpy backup` speaks it)."""

    serves_backups = True

    def __init__(self, codec: MsgpackCodec) -> None:
        self.codec = codec

    def new_codec(self) -> Codec:
        """The listener's one codec."""
        return self.codec

    def hash_credential(self, credential: bytes) -> Id:
        """zkpy's salted PBKDF2 digest (`zkpy.core.acl.digest_id`)."""
        return acls.digest_id_from_credential(credential)

    def command(self, member: Member, first: bytes) -> bytes | None:
        """None: a status query is a handshake frame here."""
        return None


def limits_of(config: ServerConfig) -> Limits:
    """The settings of `config` that a client connection obeys."""
    return Limits(
        server_id=config.server_id,
        max_frame=config.max_frame,
        max_data_bytes=config.max_data_bytes,
        max_in_flight=config.max_in_flight_per_connection,
        max_total_pending_bytes=config.max_total_pending_bytes,
        max_watches_per_session=config.max_watches_per_session,
        max_total_watch_bytes=config.max_total_watch_bytes,
        max_children_per_reply=config.max_children_per_reply,
        handshake_timeout_s=config.handshake_timeout_s,
        super_digest=config.super_digest,
    )


class ClientConnection:
    """The socket loops of one client connection, around its `ServerConnection` (`rules`)."""

    def __init__(
        self,
        server: ClientServer,
        stream: trio.abc.Stream,
        conn_id: int,
        ids: frozenset[Id],
        dialect: Dialect,
    ) -> None:
        """Connection `conn_id` on `stream`, starting with the identities `ids`, speaking
        `dialect`."""
        self.server = server
        self.dialect = dialect
        self.member = server.member
        self.config = server.member.config
        self.stream = stream
        self.id = conn_id
        self.outbox = Outbox(stream, server.member.output, server.member.outbox_bytes)
        self._outboxes = server.member.outbox_bytes
        self._max_outbox = self.config.max_outbox_bytes
        self._max_total_outbox = self.config.max_total_outbox_bytes
        self.receiver = Receiver(stream, self.config.spin_before_wait_s)
        self.rules = ServerConnection(
            server.member,
            MeteredCodec(dialect.new_codec(), server.member.metrics),
            self,
            server.limits,
            server.member.pending_bytes,
            conn_id,
            ids,
        )
        self._room = trio.Event()
        self._read_deadline = math.inf  # when the read in progress times out (`_watch_reads`)
        self._bound = trio.Event()  # the session is ready, or refused
        self._counted = 0  # the requests of `rules` counted in the member's stats
        self.cancel_scope = trio.CancelScope()

    @property
    def session_id(self) -> int:
        """The session this connection serves (0 before the handshake)."""
        return self.rules.session_id

    @property
    def owner(self) -> int:
        """This connection's id as its session's owner (`Member.new_owner_id`)."""
        return self.rules.owner

    @property
    def greeted(self) -> bool:
        """The handshake is done: the session is created, or attached to this connection."""
        return self.rules.greeted

    # ---- output: the sink of `rules` -------------------------------------------------------

    def push(self, frame: bytes) -> None:
        """Queue a frame (it leaves when the current step flushes); past the outbox limit the
        client is cut off."""
        self.outbox.push(frame)
        if len(self.outbox.buffer) > self._max_outbox:
            log.warning("connection %d: client does not read its replies; closing", self.id)
            self.cancel_scope.cancel()

    def finish(self) -> None:
        """Close once what is queued is sent."""
        self.outbox.finish()

    def send_event(self, event: WatchedEvent) -> None:
        """A watch of this connection fired (the member's event sink)."""
        self.rules.event(event)

    def close_after_flush(self) -> None:
        """Read no more, and close once the frames so far are sent."""
        self.rules.close_after_flush()

    async def write_loop(self) -> None:
        await self.outbox.run_writer(self.stream)
        raise ConnectionDone

    # ---- effects ---------------------------------------------------------------------------

    def _carry_out(self) -> bytes | None:
        """Do what `rules` asked for; returns the credential to hash, if it asked for that (the
        reader hashes it before it feeds the next request)."""
        credential: bytes | None = None
        effects = self.rules.effects
        for effect in effects:
            if type(effect) is SubmitWrite:
                self._submit(effect.slot, effect)
            elif type(effect) is StartSync:
                self._start_sync(effect.slot)
            elif type(effect) is HashCredential:
                credential = effect.credential
            elif type(effect) is CreateSession:
                self._create_session(effect.timeout_ms)
            elif type(effect) is AttachSession:
                self._attach_session(effect.session_id)
            elif type(effect) is Notice:
                log.log(
                    logging.WARNING if effect.warning else logging.INFO,
                    "connection %d: %s",
                    self.id,
                    effect.message,
                )
        effects.clear()
        return credential

    def _submit(self, slot: Slot, effect: SubmitWrite) -> None:
        rules = self.rules
        self.member.submit(
            rules.session_id,
            slot.xid,
            effect.request,
            lambda result: self._write_committed(slot, result),
            rules.ids,
            rules.owner,
        )

    def _write_committed(self, slot: Slot, result: ApplyResult | None) -> None:
        try:
            self.rules.write_committed(slot, result)
        except ServingStateError as err:
            self._fail(err)
        self._check_room()

    def _start_sync(self, slot: Slot) -> None:
        def done(ok: bool) -> None:
            try:
                self.rules.sync_done(slot, ok)
            except ServingStateError as err:
                self._fail(err)
            self._check_room()

        self.member.sync(self.rules.session_id, slot.xid, done)

    def _fail(self, err: ServingStateError) -> None:
        """An outcome the connection's state does not allow (a bug, not the client's doing):
        it ends this connection, never the member whose Ready loop reported it."""
        log.error("connection %d: %s; closing", self.id, err)
        self.cancel_scope.cancel()

    def _check_room(self) -> None:
        if self.rules.has_room():
            self._room.set()

    def _create_session(self, timeout_ms: int) -> None:
        session_id, password, timeout = self.member.create_session(
            timeout_ms, self._session_ready, self.rules.owner
        )
        self.rules.session_assigned(session_id, password, timeout)
        self._bind(session_id)

    def _attach_session(self, session_id: int) -> None:
        self._bind(session_id)
        self.member.touch(session_id)
        self.member.attach_session(session_id, self.rules.owner, self._session_ready)

    def _bind(self, session_id: int) -> None:
        previous = self.server.by_session.get(session_id)
        if previous is not None and previous is not self:
            previous.cancel_scope.cancel()
        self.server.by_session[session_id] = self

    def _session_ready(self, result: ApplyResult | None) -> None:
        try:
            self.rules.session_ready(result)
        except ServingStateError as err:
            self._fail(err)
        self._bound.set()

    async def _hash(self, credential: bytes) -> None:
        """Hash an add_auth's credential in a worker thread (PBKDF2 takes milliseconds: a flood
        of them on the event loop would starve every other connection and the peer links)."""
        outcome: Id | AuthFailedError
        try:
            outcome = await trio.to_thread.run_sync(
                self.dialect.hash_credential, credential, limiter=self.server.hashing
            )
        except AuthFailedError as err:
            outcome = err
        self.rules.auth_hashed(outcome)
        self._carry_out()

    # ---- the reader ------------------------------------------------------------------------

    async def _handshake(self, payload: bytes) -> bool:
        """Feed the first frame and wait for the session; False if the connection is to close."""
        rules = self.rules
        rules.receive_hello(payload, self.member.new_owner_id())
        self._carry_out()
        self.member.output.flush()
        if rules.state == BINDING:
            await self._bound.wait()  # no request runs before its session
        if not rules.greeted:
            return False
        if rules.read_only:  # a local session, greeted at once: see `ReadOnlyMode`
            self._bind(rules.session_id)
        self.server.handshake_done(self.id)
        return True

    async def read_loop(self) -> None:
        rules = self.rules
        decoder = FrameDecoder(min(self.config.max_frame, MAX_HANDSHAKE_FRAME))
        head: bytes | None = b""  # the first bytes, until 4 came: a command may stand there
        while True:
            self._read_deadline = trio.current_time() + rules.read_timeout_s(decoder.buffered > 0)
            data = await self.receiver.receive(1 << 16)
            self._read_deadline = math.inf
            if not data:
                raise ConnectionDone
            if head is not None:  # ZooKeeper, too, reads 4 bytes before it decides
                head += bytes(data)
                if len(head) < 4:
                    continue
                if self._command(head):
                    return
                data, head = head, None
            try:
                frames = decoder.feed(data)
            except FrameTooLargeError as too_large:
                rules.bad_frame(str(too_large))
                self._carry_out()
                return
            if frames:
                self.member.touch(rules.session_id)  # any frame keeps the session alive
            if not await self._handle_frames(frames, decoder):
                return
            if decoder.error is not None:
                rules.bad_frame(str(decoder.error))
                self._carry_out()
                return
            while rules.too_much_pending():
                self._room = trio.Event()
                await self._room.wait()

    def _command(self, first: bytes) -> bool:
        """Answer the connection's first bytes, and end it, if they are a command."""
        answer = self.dialect.command(self.member, first)
        if answer is None:
            return False
        self.push(answer)
        self.rules.close_after_flush()
        self.member.output.flush()
        return True

    async def _handle_frames(self, frames: list[bytes], decoder: FrameDecoder) -> bool:
        """Feed the frames of one read; False if the connection is to close."""
        rules = self.rules
        yield_at = time.perf_counter() + YIELD_EVERY_S
        try:
            for index, payload in enumerate(frames, 1):
                if rules.closing:
                    return False
                if rules.state == AWAIT_HELLO:
                    snapshot = (
                        backup.snapshot_request(payload) if self.dialect.serves_backups else None
                    )
                    if snapshot is not None:
                        await backup.send_snapshot(self, snapshot)
                        return False
                    if not await self._handshake(payload):
                        return False
                    decoder.max_frame = self.config.max_frame
                    continue
                rules.feed(payload)
                if rules.effects:
                    credential = self._carry_out()
                    if credential is not None:
                        self._send_so_far()
                        await self._hash(credential)
                        self.member.touch(rules.session_id)  # its requests came in time
                if self._outbox_full():
                    self._send_so_far()
                    await self._wait_outbox_taken()
                if index % STEP_EVERY_FRAMES == 0:
                    self._send_so_far()  # these writes leave while the rest is read
                if time.perf_counter() >= yield_at:
                    self._send_so_far()
                    await trio.lowlevel.checkpoint()  # let the other connections run
                    self.member.touch(rules.session_id)
                    yield_at = time.perf_counter() + YIELD_EVERY_S
        finally:
            served = rules.requests
            self.member.stats["requests"] += served - self._counted
            self._counted = served
            self.member.step()  # the writes of this batch start on their way at once
            self.member.output.flush()  # the replies to this batch of reads, in one send
        return True

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
        wait_s = max(self.config.handshake_timeout_s, self.rules.timeout_ms / 1000)
        with trio.move_on_after(wait_s):
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
        self.rules.closed()

    async def serve(self) -> None:
        """Run the connection's reader, writer and read watchdog until it ends."""
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
        """The listener of `member`, which it tells of sessions closed and moved."""
        self.member = member
        self.codec = MsgpackCodec()
        self.msgpack = MsgpackDialect(self.codec)
        self.limits = limits_of(member.config)
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
        """A member that leaves the quorum drops its clients, so that they find one that
        serves; one that serves again drops its read-only clients, so that they find one that
        takes writes."""
        for conn in list(self._connections.values()):
            if not serving or conn.rules.read_only:
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

    def connections(self) -> list[ClientConnection]:
        """The open client connections, oldest first (for ZooKeeper's `cons` and `dump`)."""
        return list(self._connections.values())

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

    async def handle(self, stream: trio.SocketStream, dialect: Dialect | None = None) -> None:
        """Serve one accepted connection (in zkpy's msgpack protocol unless `dialect` says
        otherwise), if the connection limits admit it."""
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
                await self._serve(stream, address, conn_id, streams, dialect or self.msgpack)
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
        self,
        stream: trio.SocketStream,
        address: str,
        conn_id: int,
        streams: list[trio.abc.Stream],
        dialect: Dialect,
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
        conn = ClientConnection(self, client_stream, conn_id, identities, dialect)
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
