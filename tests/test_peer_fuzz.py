"""Fuzzing a member's peer port: random bytes, random frames and lengths, random msgpack values,
hellos of random fields, truncated handshakes, relayed proofs and random messages after a valid
handshake, all sent to one `zkpy server` process whose ensemble names two more members (down).
Whatever arrives, the process must keep running and a genuine member must still get in."""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zkpy.server.config import ServerConfig, load_config
from zkpy.server.peers import peer_identity
from zkpy.server.wal import MIN_SEGMENT_BYTES
from zkpy.testing.ensemble import Ensemble, Member
from zkpy.wire.frames import FrameDecoder, encode_frame
from zkpy.wire.peer import NONCE_BYTES, PeerIdentity

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Target:
    member: Member
    configs: dict[int, ServerConfig]  # every member's settings; only member 1 runs

    @property
    def port(self) -> int:
        return self.configs[1].peer(1).peer_port

    def assert_alive(self) -> None:
        assert self.member.running, f"the member ended:\n{self.member.log()}"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    workdir = tmp_path_factory.mktemp("peer-fuzz")
    settings: dict[str, Any] = {"log_segment_bytes": MIN_SEGMENT_BYTES, "peer_tick_ms": 50}
    with Ensemble(workdir, 3, secret="fuzzed", fast=False, **settings) as ensemble:
        ensemble[1].start()
        path = ensemble.config_path
        running = Target(ensemble[1], {m: load_config(path, m) for m in (1, 2, 3)})
        wait_until_listening(running)
        yield running


def wait_until_listening(target: Target, timeout: float = 20.0) -> None:
    """Poll the peer port with a deadline until the member accepts connections."""
    deadline = time.monotonic() + timeout
    while True:
        target.assert_alive()
        try:
            socket.create_connection(("127.0.0.1", target.port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"no peer port:\n{target.member.log()}") from None
            time.sleep(0.02)


# ---- a peer, with blocking sockets ---------------------------------------------------------


def connect(target: Target) -> socket.socket:
    return socket.create_connection(("127.0.0.1", target.port), timeout=5)


def receive_frame(sock: socket.socket, decoder: FrameDecoder) -> bytes | None:
    """The next frame, or None if the member closed the connection first."""
    while True:
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            return None
        if not data:
            return None
        frames = decoder.feed(data)
        if frames:
            return frames[0]


def send(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the member had already closed it: that is one right answer


def identity_of(target: Target, member_id: int) -> PeerIdentity:
    return peer_identity(target.configs[member_id])


def hello_to_1(target: Target, sock: socket.socket, decoder: FrameDecoder) -> bytes:
    """Member 2's genuine hello for the challenge member 1 just sent."""
    challenge = receive_frame(sock, decoder)
    assert challenge is not None
    hello = identity_of(target, 2).hello(challenge, 1, secrets.token_bytes(NONCE_BYTES))
    return encode_frame(hello.payload)


def authenticated(target: Target) -> socket.socket:
    """A connection that has passed the handshake as member 2."""
    sock = connect(target)
    decoder = FrameDecoder()
    challenge = receive_frame(sock, decoder)
    assert challenge is not None
    identity = identity_of(target, 2)
    hello = identity.hello(challenge, 1, secrets.token_bytes(NONCE_BYTES))
    sock.sendall(encode_frame(hello.payload))
    answer = receive_frame(sock, decoder)
    assert answer is not None, "a genuine member was refused"
    identity.check_answer(answer, hello, 1)
    return sock


def assert_member_fine(target: Target) -> None:
    target.assert_alive()
    authenticated(target).close()


# ---- strategies ----------------------------------------------------------------------------

MSGPACK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=16)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
LENGTHS = st.integers(0, 64) | st.integers(4096, (1 << 32) - 1) | st.just(0xFFFFFFFF)
FRAMES = st.builds(lambda length, body: length.to_bytes(4, "big") + body, LENGTHS, st.binary())
MEMBER_IDS = st.integers(-2, 4) | st.integers(1 << 16, 1 << 40) | st.text(max_size=3)
HELLOS = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([5, 4, 6, "5", None]),
        "id": MEMBER_IDS,
        "to": MEMBER_IDS,
        "nonce": st.binary(max_size=20),
        "ensemble": st.binary(max_size=40),
        "proof": st.binary(min_size=32, max_size=32) | MSGPACK,
    },
)
MESSAGES = st.builds(
    lambda tag, fields: [tag, *fields],
    st.integers(0, 16) | MSGPACK,
    st.lists(MSGPACK, max_size=6),
)
# well-typed often enough to reach the replica: integer fields, of about the right count
TYPED_MESSAGES = st.builds(
    lambda tag, fields: [tag, *fields],
    st.integers(1, 15),
    st.lists(st.integers(-1, 3) | st.integers(0, (1 << 64) - 1), min_size=1, max_size=5),
)


def packed(value: object) -> bytes:
    return encode_frame(msgpack.packb(value, use_bin_type=True))


# ---- the fuzzing ---------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=600) | FRAMES | MSGPACK.map(packed) | HELLOS.map(packed))
def test_anything_before_the_handshake_closes_that_connection_alone(
    target: Target, data: bytes
) -> None:
    with connect(target) as sock:
        assert receive_frame(sock, FrameDecoder()) is not None  # the challenge
        send(sock, data)
    target.assert_alive()


@FUZZ
@given(data=st.data())
def test_a_truncated_handshake_closes_that_connection_alone(
    target: Target, data: st.DataObject
) -> None:
    with connect(target) as sock:
        hello = hello_to_1(target, sock, FrameDecoder())
        send(sock, hello[: data.draw(st.integers(0, len(hello) - 1), label="cut")])
    target.assert_alive()


@FUZZ
@given(verifier=st.sampled_from([2, 3]), prover=st.sampled_from([2, 3]))
def test_a_relayed_proof_is_refused(target: Target, verifier: int, prover: int) -> None:
    """A hello member `prover` made for another verifier, relayed to member 1, gets no answer."""
    with connect(target) as sock:
        decoder = FrameDecoder()
        challenge = msgpack.unpackb(receive_frame(sock, decoder))
        challenge["id"] = verifier  # as if `verifier` had sent member 1's challenge
        hello = identity_of(target, prover).hello(
            msgpack.packb(challenge), verifier, secrets.token_bytes(NONCE_BYTES)
        )
        send(sock, encode_frame(hello.payload))
        assert receive_frame(sock, decoder) is None
    target.assert_alive()


@FUZZ
@given(
    frames=st.lists(
        TYPED_MESSAGES.map(packed) | MESSAGES.map(packed) | FRAMES | st.binary(max_size=100),
        max_size=5,
    )
)
def test_anything_after_the_handshake_closes_that_link_alone(
    target: Target, frames: list[bytes]
) -> None:
    with authenticated(target) as sock:
        for frame in frames:
            send(sock, frame)
    target.assert_alive()


def test_after_the_fuzzing_a_genuine_member_gets_in(target: Target) -> None:
    assert_member_fine(target)
    assert "Traceback" not in target.member.log()
