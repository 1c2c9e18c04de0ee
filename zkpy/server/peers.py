"""TCP links between members: one outgoing connection to every peer (FIFO in that direction),
and a listener for theirs.

A connection starts with a mutual proof of the shared cluster secret (HMAC over fresh nonces),
inside mutual TLS when `peer_tls` is set (each member presents a certificate signed by the
ensemble's CA); a peer that cannot prove itself is refused and logged. When a link breaks, or a
message for a peer cannot be sent, the replica is told the link is down: Zab then
resynchronises instead of skipping a lost message.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from typing import Any

import msgpack
import trio

from zkpy import tls
from zkpy.core.errors import MarshallingError
from zkpy.outbox import Flusher, Outbox
from zkpy.receiver import Receiver
from zkpy.server.config import ServerConfig
from zkpy.wire.frames import FrameDecoder, encode_frame
from zkpy.wire.peer import decode_message, encode_message
from zkpy.zab.messages import Notification, PeerMessage

log = logging.getLogger("zkpy.server.peers")

HANDSHAKE_TIMEOUT_S = 5.0
# Bump when peer messages change shape: members of different versions refuse each other
# (and say why) instead of failing to decode each other's messages.
PEER_PROTOCOL_VERSION = 5
RECONNECT_DELAY_S = 0.1


class PeerAuthError(Exception):
    pass


def _proof(secret: str, side: bytes, nonce: bytes, member_id: int) -> bytes:
    message = side + nonce + member_id.to_bytes(2, "big")
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


async def _read_frame(stream: trio.abc.Stream, decoder: FrameDecoder) -> Any:
    while True:
        data = await stream.receive_some(1 << 16)
        if not data:
            raise PeerAuthError("connection closed during the handshake")
        frames = decoder.feed(data)
        if frames:
            return msgpack.unpackb(frames[0], raw=False)


class PeerNetwork:
    def __init__(
        self,
        config: ServerConfig,
        on_message: Callable[[int, PeerMessage], None],
        on_disconnect: Callable[[int], None],
        flusher: Flusher,
        after_messages: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.my_id = config.server_id
        self.on_message = on_message
        self.on_disconnect = on_disconnect
        self.peers = [m for m in config.members if m.id != self.my_id]
        self._flusher = flusher
        self.after_messages = after_messages  # called after each batch of received messages
        self._outbox: dict[int, Outbox] = {}  # the links that are up
        self._known = {m.id for m in self.peers}
        self._down_reported: dict[int, bool] = {m.id: True for m in self.peers}
        self._incoming: dict[int, trio.CancelScope] = {}
        self.refused = 0
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
        peer = self.config.peer(peer_id)
        while True:
            try:
                with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                    stream: trio.abc.Stream = await trio.open_tcp_stream(peer.host, peer.peer_port)
                    if self._tls is not None:
                        stream = trio.SSLStream(stream, self._tls[0])
                        await stream.do_handshake()
                async with stream:
                    with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                        await self._handshake_out(stream, peer_id)
                    outbox = Outbox(stream, self._flusher)
                    self._outbox[peer_id] = outbox
                    self._down_reported[peer_id] = False
                    try:
                        await outbox.run_writer(stream)
                    finally:
                        del self._outbox[peer_id]
                        outbox.close()
            except (OSError, trio.BrokenResourceError, trio.TooSlowError) as err:
                log.debug("link to %d: %s", peer_id, err)
            except PeerAuthError as err:
                log.warning("link to member %d refused: %s", peer_id, err)
            finally:
                self._report_down(peer_id)
            await trio.sleep(RECONNECT_DELAY_S)

    async def _handshake_out(self, stream: trio.abc.Stream, peer_id: int) -> None:
        decoder = FrameDecoder(1 << 16)
        challenge = await _read_frame(stream, decoder)
        if not isinstance(challenge, dict) or not isinstance(challenge.get("nonce"), bytes):
            raise PeerAuthError("bad challenge")
        my_nonce = secrets.token_bytes(16)
        proof = _proof(self.config.secret, b"out", challenge["nonce"], self.my_id)
        hello = {"id": self.my_id, "nonce": my_nonce, "proof": proof, "v": PEER_PROTOCOL_VERSION}
        await stream.send_all(encode_frame(msgpack.packb(hello, use_bin_type=True)))
        answer = await _read_frame(stream, decoder)
        expected = _proof(self.config.secret, b"in", my_nonce, peer_id)
        if not isinstance(answer, dict) or not hmac.compare_digest(
            answer.get("proof", b""), expected
        ):
            raise PeerAuthError(f"member {peer_id} failed to prove the cluster secret")

    # ---- receiving -------------------------------------------------------------------------

    async def _incoming_connection(self, raw: trio.SocketStream) -> None:
        decoder = FrameDecoder(self.config.max_peer_frame)
        stream: trio.abc.Stream = raw
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                if self._tls is not None:
                    stream = trio.SSLStream(raw, self._tls[1], server_side=True)
                    await stream.do_handshake()
                peer_id = await self._handshake_in(stream, decoder)
        except (PeerAuthError, trio.TooSlowError, OSError, trio.BrokenResourceError) as err:
            self.refused += 1
            log.warning("refused a peer connection from %s: %s", _address(raw), err)
            await trio.aclose_forcefully(stream)
            return
        previous = self._incoming.pop(peer_id, None)
        if previous is not None:
            previous.cancel()
        with trio.CancelScope() as scope:
            self._incoming[peer_id] = scope
            try:
                await self._receive(stream, decoder, peer_id)
            except (OSError, trio.BrokenResourceError, ValueError, MarshallingError) as err:
                log.debug("link from %d: %s", peer_id, err)
        if self._incoming.get(peer_id) is scope:
            del self._incoming[peer_id]
        await trio.aclose_forcefully(stream)
        self.on_disconnect(peer_id)

    async def _handshake_in(self, stream: trio.abc.Stream, decoder: FrameDecoder) -> int:
        nonce = secrets.token_bytes(16)
        await stream.send_all(encode_frame(msgpack.packb({"nonce": nonce}, use_bin_type=True)))
        hello = await _read_frame(stream, decoder)
        if not isinstance(hello, dict):
            raise PeerAuthError("bad hello")
        if hello.get("v") != PEER_PROTOCOL_VERSION:
            raise PeerAuthError(
                f"peer protocol version {hello.get('v')!r}, this member speaks "
                f"{PEER_PROTOCOL_VERSION}: upgrade every member of an ensemble together"
            )
        peer_id = hello.get("id")
        known = {m.id for m in self.peers}
        if not isinstance(peer_id, int) or peer_id not in known:
            raise PeerAuthError(f"unknown member id {peer_id!r}")
        expected = _proof(self.config.secret, b"out", nonce, peer_id)
        proof = hello.get("proof")
        if not isinstance(proof, bytes) or not hmac.compare_digest(proof, expected):
            raise PeerAuthError(f"member {peer_id} failed to prove the cluster secret")
        their_nonce = hello.get("nonce")
        if not isinstance(their_nonce, bytes):
            raise PeerAuthError("bad hello nonce")
        answer = {"proof": _proof(self.config.secret, b"in", their_nonce, self.my_id)}
        await stream.send_all(encode_frame(msgpack.packb(answer, use_bin_type=True)))
        return peer_id

    async def _receive(self, stream: trio.abc.Stream, decoder: FrameDecoder, peer: int) -> None:
        receiver = Receiver(stream, self.config.spin_before_wait_s)
        while True:
            data = await receiver.receive(1 << 18)
            if not data:
                return
            for frame in decoder.feed(data):
                self.on_message(peer, decode_message(frame))
            self.after_messages()

    # ---- running ---------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        me = self.config.peer(self.my_id)
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: trio.serve_tcp(
                    self._incoming_connection, me.peer_port, host=me.host, task_status=task_status
                )
            )
            for peer in self.peers:
                nursery.start_soon(self._outgoing, peer.id)
            task_status.started()


def _address(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"
