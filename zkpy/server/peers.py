"""TCP links between members: one outgoing connection to every peer (FIFO in that direction),
and a listener for theirs.

A connection starts with a mutual proof of the shared cluster secret (the handshake of
`zkpy.wire.peer.PeerIdentity`), inside mutual TLS when `peer_tls` is set (each member presents a
certificate signed by the ensemble's CA); a peer that cannot prove itself is refused and logged.
Until it has, a connection is held to a small frame, a deadline and a few places. When a link
breaks, or a message for a peer cannot be sent, the replica is told the link is down: Zab then
resynchronises instead of skipping a lost message.

Nothing the other end of a connection sends, or fails to send, may end the member: each
connection's task (and each outgoing link's) runs under one guard that logs the error and closes
that connection alone. The guards sit around the loops, so the path of each message costs no more.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import trio

from zkpy import tls
from zkpy._net.outbox import Flusher, Outbox
from zkpy._net.receiver import Receiver
from zkpy.core.errors import MarshallingError
from zkpy.core.membership import Membership
from zkpy.server.config import ServerConfig
from zkpy.wire.frames import FrameDecoder, FrameTooLargeError, encode_frame
from zkpy.wire.peer import (
    MAX_HANDSHAKE_FRAME,
    NONCE_BYTES,
    HandshakeError,
    NotAPeerError,
    PeerIdentity,
    decode_message,
    encode_message,
    ensemble_digest,
)
from zkpy.zab.messages import Notification, PeerMessage

log = logging.getLogger("zkpy.server.peers")

HANDSHAKE_TIMEOUT_S = 5.0  # from a connection's start to its last handshake frame
MAX_PENDING_HANDSHAKES = 16
"""Incoming connections that may be unauthenticated at once; past this the oldest is closed.
A genuine member finishes its handshake within a round trip, so to keep one out an attacker
would have to open this many connections every round trip."""
RECONNECT_DELAY_S = 0.1
# how a link ends when the other end goes away or does not answer: logged at debug only
_BROKEN = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError)
WARNING_INTERVAL_S = 1.0  # at most one warning per interval about refused connections


class RateLimitedLog:
    """A warning at most once per WARNING_INTERVAL_S; the rest go to debug and are counted in the
    next warning, so a flood of bad connections cannot flood the member's log."""

    def __init__(self) -> None:
        self._next = -math.inf
        self._quiet = 0

    def warning(self, message: str) -> None:
        """Log `message` as a warning unless one went out less than WARNING_INTERVAL_S ago."""
        now = trio.current_time()
        if now < self._next:
            self._quiet += 1
            log.debug("%s", message)
            return
        self._next = now + WARNING_INTERVAL_S
        quiet, self._quiet = self._quiet, 0
        log.warning("%s%s", message, f" ({quiet} more since the last warning)" if quiet else "")


PeerRow = tuple[int, str, int, int]
"""A member as the peer links know it: id, host, client port, peer port."""


def peer_rows(membership: Membership) -> list[PeerRow]:
    """A membership's members as the peer links know them."""
    return [(m.id, m.host, m.client_port, m.peer_port) for m in membership.members]


def peer_identity(config: ServerConfig, members: list[PeerRow] | None = None) -> PeerIdentity:
    """What this member proves and checks in peer handshakes, with the ensemble file's members
    or, once a reconfig has committed, `members`."""
    if members is None:
        members = [(m.id, m.host, m.client_port, m.peer_port) for m in config.members]
    rows = tuple((member_id, host, port) for member_id, host, port, _peer in members)
    me = config.peer(config.server_id)
    return PeerIdentity(
        member_id=config.server_id,
        ensemble=ensemble_digest(rows),
        peers=frozenset(row[0] for row in rows if row[0] != config.server_id),
        secret=config.secret.encode(),
        members=rows,
        address=(me.host, me.peer_port),
    )


async def _read_frame(stream: trio.abc.Stream, decoder: FrameDecoder) -> bytes:
    while True:
        data = await stream.receive_some(MAX_HANDSHAKE_FRAME)
        if not data:
            raise HandshakeError("connection closed during the handshake")
        frames = decoder.feed(data)
        if frames:
            if len(frames) > 1 or decoder.buffered:
                raise HandshakeError("sent more than the handshake before it was answered")
            return frames[0]


async def handshake_out(stream: trio.abc.Stream, identity: PeerIdentity, peer_id: int) -> None:
    """Prove ourselves to member `peer_id`, the listener at the other end, and check its proof.
    Raises HandshakeError (or FrameTooLargeError) if it fails."""
    decoder = FrameDecoder(MAX_HANDSHAKE_FRAME)
    challenge = await _read_frame(stream, decoder)
    hello = identity.hello(challenge, peer_id, secrets.token_bytes(NONCE_BYTES))
    await stream.send_all(encode_frame(hello.payload))
    identity.check_answer(await _read_frame(stream, decoder), hello, peer_id)


async def handshake_in(
    stream: trio.abc.Stream, identity: PeerIdentity
) -> tuple[int, tuple[str, int] | None]:
    """Challenge the member that connected, check its proof and prove ourselves; return its
    id and where it says it listens. Raises HandshakeError (NotAPeerError for a client) or
    FrameTooLargeError if it fails."""
    decoder = FrameDecoder(MAX_HANDSHAKE_FRAME)
    nonce = secrets.token_bytes(NONCE_BYTES)
    await stream.send_all(encode_frame(identity.challenge(nonce)))
    hello = await _read_frame(stream, decoder)
    peer_id, answer = identity.check_hello(hello, nonce)
    await stream.send_all(encode_frame(answer))
    return peer_id, PeerIdentity.stated_address(hello)


class PeerNetwork:
    """This member's links to the other members: it dials every peer and serves their
    connections, hands decoded messages to `on_messages`, a batch per read, and reports broken
    links to `on_disconnect`."""

    def __init__(
        self,
        config: ServerConfig,
        on_messages: Callable[[int, Sequence[PeerMessage]], None],
        on_disconnect: Callable[[int], None],
        flusher: Flusher,
    ) -> None:
        self.config = config
        self.my_id = config.server_id
        self.on_messages = on_messages
        self.on_disconnect = on_disconnect
        # where each peer listens: the ensemble file's members, then those of reconfigs, and
        # members outside the membership that connected (new ones catching up)
        self._addresses = {
            m.id: (m.host, m.peer_port) for m in config.members if m.id != self.my_id
        }
        self._flusher = flusher
        self._outbox: dict[int, Outbox] = {}  # the links that are up
        self._known = set(self._addresses)
        self._down_reported: dict[int, bool] = dict.fromkeys(self._known, True)
        self._nursery: trio.Nursery | None = None
        self._incoming: dict[int, trio.CancelScope] = {}
        self._identity = peer_identity(config)
        self._pending: dict[trio.CancelScope, None] = {}  # unfinished handshakes, oldest first
        self._evicted: set[trio.CancelScope] = set()
        self.refused = 0  # incoming connections refused
        self._refusals = RateLimitedLog()
        self._link_warnings = {member_id: RateLimitedLog() for member_id in self._known}
        self._tls = (
            tls.peer_contexts(config.tls_cert, config.tls_key or None, config.tls_ca)
            if config.peer_tls
            else None
        )

    # ---- sending ---------------------------------------------------------------------------

    def send(self, peer: int, message: PeerMessage) -> None:
        """Queue a message; it leaves when the member's step ends (`Flusher.flush`)."""
        outbox = self._outbox.get(peer)
        if outbox is None:
            if peer in self._known and not isinstance(message, Notification):
                self._report_down(peer)
            return
        outbox.push(encode_frame(encode_message(message)))

    def _report_down(self, peer: int) -> None:
        if not self._down_reported[peer]:
            self._down_reported[peer] = True
            self.on_disconnect(peer)

    async def _outgoing(self, peer_id: int) -> None:
        """Keep a link to `peer_id` up. Nothing the other end does, or fails to do, ends this
        task: every failure is logged, and the link is tried again."""
        warnings = RateLimitedLog()
        while True:
            try:
                await self._link_out(peer_id)
            except Exception as err:  # whatever the other end caused: log it, try again
                if isinstance(err, _BROKEN):
                    log.debug("link to member %d: %s", peer_id, _describe(err))
                else:
                    warnings.warning(f"link to member {peer_id} refused: {_describe(err)}")
            finally:
                self._report_down(peer_id)
            await trio.sleep(RECONNECT_DELAY_S)

    async def _link_out(self, peer_id: int) -> None:
        host, port = self._addresses[peer_id]
        deadline = trio.current_time() + HANDSHAKE_TIMEOUT_S
        with trio.fail_at(deadline):
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        try:
            with trio.fail_at(deadline):
                if self._tls is not None:
                    stream = trio.SSLStream(stream, self._tls[0])
                    await stream.do_handshake()
                await handshake_out(stream, self._identity, peer_id)
            outbox = Outbox(stream, self._flusher)
            self._outbox[peer_id] = outbox
            self._down_reported[peer_id] = False
            try:
                await outbox.run_writer(stream)
            finally:
                del self._outbox[peer_id]
                outbox.close()
        finally:
            await trio.aclose_forcefully(stream)

    # ---- receiving -------------------------------------------------------------------------

    async def _incoming_connection(self, raw: trio.SocketStream) -> None:
        """One incoming connection, from its handshake to its end. Nothing it sends may end the
        member: every error is caught here, logged, and closes this connection alone."""
        address = _address(raw)  # while it is connected
        try:
            stream, peer_id, stated = await self._authenticate(raw)
        except Exception as err:  # whatever the other end sent or failed to send: refuse it
            self.refused += 1
            self._refusals.warning(
                f"refused a peer connection from {address}: {self._why_refused(err)}"
            )
            await trio.aclose_forcefully(raw)  # and a TLS stream over it
            return
        if peer_id not in self._known and stated is not None:
            self._add_peer(peer_id, stated)  # a member the membership does not name (yet)
        try:
            await self._serve_link(stream, peer_id)
        except Exception as err:  # a bug met on this link: it must not take the member down
            log.error("link from member %d failed", peer_id, exc_info=err)
        finally:
            await trio.aclose_forcefully(stream)

    async def _authenticate(
        self, raw: trio.SocketStream
    ) -> tuple[trio.abc.Stream, int, tuple[str, int] | None]:
        """The handshake, within HANDSHAKE_TIMEOUT_S of the connection's start, in one of the
        MAX_PENDING_HANDSHAKES places (taking the oldest one's place if they are all held)."""
        scope = trio.CancelScope(deadline=trio.current_time() + HANDSHAKE_TIMEOUT_S)
        if len(self._pending) >= MAX_PENDING_HANDSHAKES:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            self._evicted.add(oldest)
            oldest.cancel()
        self._pending[scope] = None
        try:
            with scope:
                stream: trio.abc.Stream = raw
                if self._tls is not None:
                    stream = trio.SSLStream(raw, self._tls[1], server_side=True)
                    await stream.do_handshake()
                peer_id, stated = await handshake_in(stream, self._identity)
                return stream, peer_id, stated
            if scope in self._evicted:
                raise HandshakeError(
                    f"closed to make room: {MAX_PENDING_HANDSHAKES} unfinished handshakes"
                )
            raise HandshakeError(f"no handshake within {HANDSHAKE_TIMEOUT_S:g} s")
        finally:
            self._pending.pop(scope, None)
            self._evicted.discard(scope)

    def _why_refused(self, err: Exception) -> str:
        if isinstance(err, NotAPeerError):
            me = self.config.peer(self.my_id)
            return (
                f"not a member ({err}): this is member {self.my_id}'s peer port; clients use "
                f"{me.host}:{me.client_port}"
            )
        return _describe(err)

    async def _serve_link(self, stream: trio.abc.Stream, peer_id: int) -> None:
        """Feed member `peer_id`'s messages to the replica until the link ends (or a newer
        link from the same member replaces it); then tell the replica it is down."""
        previous = self._incoming.pop(peer_id, None)
        if previous is not None:
            previous.cancel()
        with trio.CancelScope() as scope:
            self._incoming[peer_id] = scope
            try:
                await self._receive(stream, FrameDecoder(self.config.max_peer_frame), peer_id)
            except _BROKEN as err:
                log.debug("link from member %d: %s", peer_id, _describe(err))
            except (MarshallingError, FrameTooLargeError) as err:
                self._link_warnings.setdefault(peer_id, RateLimitedLog()).warning(
                    f"link from member {peer_id} closed: {_describe(err)}"
                )
            except Exception as err:  # a bug met on this link: it must not take the member down
                log.error("link from member %d failed", peer_id, exc_info=err)
        if self._incoming.get(peer_id) is scope:
            del self._incoming[peer_id]
        self.on_disconnect(peer_id)

    async def _receive(self, stream: trio.abc.Stream, decoder: FrameDecoder, peer: int) -> None:
        receiver = Receiver(stream, self.config.spin_before_wait_s)
        while True:
            data = await receiver.receive(1 << 18)
            if not data:
                return
            messages = [decode_message(frame) for frame in decoder.feed(data)]
            if messages:
                self.on_messages(peer, messages)

    # ---- membership changes ----------------------------------------------------------------

    def update_members(self, members: list[PeerRow]) -> None:
        """A reconfig committed (or the data directory holds one): prove and check against
        `members` from now on, and keep a link to each of them, at the peer address the
        ensemble file gives if it lists the member (it may route through a proxy), else at the
        membership's. Links to members it no longer lists stay: they follow as learners."""
        self._identity = peer_identity(self.config, members)
        in_file = {m.id for m in self.config.members}
        for member_id, host, _client_port, peer_port in members:
            if member_id == self.my_id or member_id in in_file:
                continue
            if member_id in self._known:
                self._addresses[member_id] = (host, peer_port)
            else:
                self._add_peer(member_id, (host, peer_port))

    def _add_peer(self, member_id: int, address: tuple[str, int]) -> None:
        """Start keeping a link to a member this one did not know."""
        self._addresses[member_id] = address
        self._known.add(member_id)
        self._down_reported.setdefault(member_id, True)
        self._link_warnings.setdefault(member_id, RateLimitedLog())
        if self._nursery is not None:
            self._nursery.start_soon(self._outgoing, member_id)

    # ---- running ---------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen for peers and keep a link to each, until cancelled; started once listening."""
        me = self.config.peer(self.my_id)
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: trio.serve_tcp(
                    self._incoming_connection, me.peer_port, host=me.host, task_status=task_status
                )
            )
            self._nursery = nursery
            for peer_id in sorted(self._known):
                nursery.start_soon(self._outgoing, peer_id)
            task_status.started()


def _describe(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if not isinstance(err, HandshakeError) else text


def _address(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"
