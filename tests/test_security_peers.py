"""Peer links: mutual TLS between members, refusal of a member that cannot prove itself, and
peer ports that nothing sent to them (or answered from them) can use to end a member."""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
import trustme

import zkpy
from tests.conftest import RawConnection, wait_until
from zkpy.client.admin import fetch_status
from zkpy.server.config import MemberAddress, ServerConfig
from zkpy.server.main import serve
from zkpy.server.peers import (
    HANDSHAKE_TIMEOUT_S,
    MAX_PENDING_HANDSHAKES,
    handshake_out,
    peer_identity,
)
from zkpy.server.wal import MIN_SEGMENT_BYTES
from zkpy.testing.ports import free_port
from zkpy.wire import client as wire
from zkpy.wire.frames import FrameDecoder, encode_frame
from zkpy.wire.peer import PEER_PROTOCOL_VERSION as V
from zkpy.wire.peer import HandshakeError

from .ensemble_harness import Ensemble, connect_to, read_tree

SECRET = "the peers' secret"


def _members(count: int) -> tuple[MemberAddress, ...]:
    return tuple(
        MemberAddress(index, "127.0.0.1", free_port(), free_port()) for index in range(1, count + 1)
    )


async def _serving(port: int) -> bool:
    try:
        status = await fetch_status("127.0.0.1", port, timeout=1.0)
    except (OSError, trio.TooSlowError, zkpy.errors.ZkError):
        return False
    return bool(status["serving"])


async def _run_members(
    nursery: trio.Nursery, configs: list[ServerConfig]
) -> list[trio.CancelScope]:
    scopes = []
    for config in configs:
        scope = trio.CancelScope()

        async def run(config: ServerConfig = config, scope: trio.CancelScope = scope) -> None:
            with scope:
                await serve(config)

        nursery.start_soon(run)
        scopes.append(scope)
    return scopes


def _tls_configs(
    tmp_path: Path,
    members: tuple[MemberAddress, ...],
    ca_file: Path,
    issuer_for: Callable[[int], trustme.CA],
) -> list[ServerConfig]:
    """Settings of an ensemble over mutual TLS (no secret), each member's certificate signed by
    `issuer_for(member id)`; the ensemble trusts `ca_file`."""
    configs = []
    for member in members:
        cert_file = tmp_path / f"m{member.id}.pem"
        cert = issuer_for(member.id).issue_cert(f"member{member.id}.zkpy")
        cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
        configs.append(
            ServerConfig(
                data_dir=tmp_path / f"m{member.id}",
                log_segment_bytes=MIN_SEGMENT_BYTES,
                client_port=member.client_port,
                server_id=member.id,
                members=members,
                peer_tls=True,
                tls_ca=str(ca_file),
                tls_cert=str(cert_file),
                tls_client_auth="none",
                peer_tick_ms=50,
            )
        )
    return configs


async def test_an_ensemble_over_mutual_tls_without_a_secret(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    members = _members(3)
    configs = _tls_configs(tmp_path, members, ca_file, lambda member_id: ca)
    # clients of these members speak TLS too (tls_cert is the client port's certificate)
    client_tls = zkpy.tls.client_context(ca_file, check_hostname=False)
    async with trio.open_nursery() as nursery:
        scopes = await _run_members(nursery, configs)
        hosts = ",".join(f"127.0.0.1:{m.client_port}" for m in members)
        async with zkpy.connect(hosts, tls=client_tls, connect_timeout=2.0) as zk:
            await zk.create("/over-tls", b"yes")
            await zk.sync("/")
            assert (await zk.get("/over-tls"))[0] == b"yes"
        for scope in scopes:
            scope.cancel()


async def test_a_member_without_the_ensembles_credentials_is_refused_and_cannot_vote(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="zkpy.server.peers")
    members = _members(3)
    common: dict[str, Any] = {"members": members, "peer_tick_ms": 50}
    good = [
        ServerConfig(
            data_dir=tmp_path / f"m{m.id}",
            log_segment_bytes=MIN_SEGMENT_BYTES,
            client_port=m.client_port,
            server_id=m.id,
            secret="the right secret",
            **common,
        )
        for m in members[:2]
    ]
    impostor = ServerConfig(
        data_dir=tmp_path / "m3",
        log_segment_bytes=MIN_SEGMENT_BYTES,
        client_port=members[2].client_port,
        server_id=3,
        secret="a wrong secret",
        **common,
    )
    async with trio.open_nursery() as nursery:
        scopes = await _run_members(nursery, [*good, impostor])
        await wait_until(lambda: "refused a peer connection" in caplog.text, what="refusal")
        # two honest members are a quorum of three and serve; the impostor never does
        for config in good:
            port = config.client_port

            async def serving(port: int = port) -> bool:
                return await _serving(port)

            await wait_until(serving, timeout=15, what=f"member on {port} serving")
        assert not await _serving(impostor.client_port)
        hosts = ",".join(f"127.0.0.1:{c.client_port}" for c in good)
        async with zkpy.connect(hosts) as zk:
            await zk.create("/honest", b"")
        assert not await _serving(impostor.client_port)
        assert "the right secret" not in caplog.text
        assert "a wrong secret" not in caplog.text
        for scope in scopes:
            scope.cancel()


async def test_a_member_with_a_certificate_from_another_ca_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="zkpy.server.peers")
    ca, rogue_ca = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    members = _members(3)
    # member 3's certificate is signed by a CA the ensemble does not trust
    configs = _tls_configs(
        tmp_path, members, ca_file, lambda member_id: rogue_ca if member_id == 3 else ca
    )
    client_tls = zkpy.tls.client_context(ca_file, check_hostname=False)
    async with trio.open_nursery() as nursery:
        scopes = await _run_members(nursery, configs)
        await wait_until(lambda: "refused a peer connection" in caplog.text, what="refusal")

        async def good_ones_serve() -> bool:
            for member in members[:2]:
                status = await fetch_status_tls(member.client_port)
                if status is None or not status["serving"]:
                    return False
            return True

        await wait_until(good_ones_serve, timeout=15, what="the two trusted members serving")
        hosts = ",".join(f"127.0.0.1:{m.client_port}" for m in members[:2])
        async with zkpy.connect(hosts, tls=client_tls, connect_timeout=2.0) as zk:
            await zk.create("/honest", b"")
        # the rogue member never joins: it cannot reach a quorum, so it never serves
        rogue = await fetch_status_tls(members[2].client_port)
        assert rogue is not None
        assert not rogue["serving"]
        assert rogue["role"] == "looking"
        for scope in scopes:
            scope.cancel()


async def fetch_status_tls(port: int) -> dict[str, Any] | None:
    """The status query over TLS (the client port speaks only TLS here), trusting any
    certificate: the rogue member's port presents its own CA's."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with trio.fail_after(2):
            stream = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port), context)
            async with stream:
                from zkpy.wire.client import pack, unpack
                from zkpy.wire.frames import FrameDecoder, encode_frame

                await stream.send_all(encode_frame(pack({"v": 1, "cmd": "status"})))
                decoder = FrameDecoder()
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        return None
                    frames = decoder.feed(data)
                    if frames:
                        status: dict[str, Any] = unpack(frames[0])
                        return status
    except (OSError, trio.TooSlowError, trio.BrokenResourceError):
        return None


# ---- peer ports that nothing can use to end a member ---------------------------------------


def _ensemble(tmp_path: Path, count: int = 3) -> list[ServerConfig]:
    """Settings of every member of an ensemble with a shared secret, on free ports."""
    members = _members(count)
    return [
        ServerConfig(
            data_dir=tmp_path / f"m{m.id}",
            log_segment_bytes=MIN_SEGMENT_BYTES,
            client_port=m.client_port,
            server_id=m.id,
            members=members,
            secret=SECRET,
            peer_tick_ms=50,
        )
        for m in members
    ]


@asynccontextmanager
async def running(*configs: ServerConfig) -> AsyncIterator[None]:
    """Members running in this process. One that ends (a crash) fails the test that runs it."""
    async with trio.open_nursery() as nursery:
        for config in configs:
            await nursery.start(serve, config)
        yield
        nursery.cancel_scope.cancel()


async def connect_as(config: ServerConfig, peer_id: int) -> trio.SocketStream:
    """A peer link to member `peer_id`, authenticated as the member `config` describes."""
    peer = config.peer(peer_id)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(peer.host, peer.peer_port)
        await handshake_out(stream, peer_identity(config), peer_id)
    return stream


async def assert_accepts_a_genuine_peer(config: ServerConfig, peer_id: int) -> None:
    stream = await connect_as(config, peer_id)
    await stream.aclose()


async def read_challenge(stream: trio.SocketStream) -> dict[str, Any]:
    decoder = FrameDecoder()
    with trio.fail_after(5):
        while True:
            frames = decoder.feed(await stream.receive_some(4096))
            if frames:
                challenge: dict[str, Any] = msgpack.unpackb(frames[0])
                return challenge


async def assert_closed_soon(stream: trio.SocketStream, timeout: float = 2.0) -> None:
    """The member closes the connection well before the handshake deadline would."""
    with trio.fail_after(timeout):
        while True:
            try:
                if not await stream.receive_some(4096):
                    return
            except trio.BrokenResourceError:
                return


def _frame(value: object) -> bytes:
    return encode_frame(msgpack.packb(value, use_bin_type=True))


GARBAGE_BEFORE_AUTH = {
    "bad msgpack": bytes.fromhex("00000001c1"),
    "a length of 4 GiB": bytes.fromhex("ffffffff"),
    "a length of 1 GiB": (1 << 30).to_bytes(4, "big"),
    "an array hello": _frame([1, 2, 3]),
    "a hello of wrong types": _frame({"v": V, "id": "2", "to": [], "nonce": 7, "proof": "x"}),
    "a huge member id": _frame({"v": V, "id": 1 << 40, "to": 1, "nonce": b"n", "proof": b""}),
    "two frames at once": _frame({"id": 2, "proof": b""}) * 2,
    "a half frame, then the end": bytes.fromhex("00000010") + b"half",
}


@pytest.mark.parametrize("garbage", GARBAGE_BEFORE_AUTH.values(), ids=GARBAGE_BEFORE_AUTH.keys())
async def test_garbage_before_authentication_closes_that_connection_alone(
    tmp_path: Path, garbage: bytes
) -> None:
    configs = _ensemble(tmp_path)
    async with running(configs[0]):
        for _ in range(2):  # a refusal leaves nothing behind that the next one trips over
            async with await trio.open_tcp_stream("127.0.0.1", configs[0].peer(1).peer_port) as s:
                await read_challenge(s)
                await s.send_all(garbage)
                if not garbage.startswith(bytes.fromhex("00000010")):
                    await assert_closed_soon(s)
        await assert_accepts_a_genuine_peer(configs[1], 1)


ILL_TYPED_MESSAGES = {
    "an Ack of a string": [9, "zxid"],
    "a vote of strings": [1, "round", "epoch", "zxid", 2, 0],
    "a vote for no state": [1, 1, 1, 1, 2, 7],
    "a Commit of a map": [10, {"zxid": 1}],
    "an unknown tag": [99, 1],
    "a Forward of nonsense": [12, [[1, 2, [5, 5, 5, 5], [[1, 2]]]]],
}


@pytest.mark.parametrize("message", ILL_TYPED_MESSAGES.values(), ids=ILL_TYPED_MESSAGES.keys())
async def test_an_authenticated_peer_sending_ill_typed_messages_is_cut_off(
    tmp_path: Path, message: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="zkpy.server.peers")
    configs = _ensemble(tmp_path)
    async with running(configs[0]):
        stream = await connect_as(configs[1], 1)
        async with stream:
            await stream.send_all(_frame(message))
            await assert_closed_soon(stream)
        assert "link from member 2 closed" in caplog.text
        await assert_accepts_a_genuine_peer(configs[2], 1)


SQUATTERS = {
    "bad msgpack": bytes.fromhex("00000001c1"),
    "a length of 4 GiB": bytes.fromhex("ffffffff"),
    "an array challenge": _frame(["nonce"]),
    "a challenge, then a bad answer": _frame({"v": V, "id": 2, "nonce": b"n" * 16})
    + _frame({"proof": "not bytes"}),
    "a challenge as another member": _frame({"v": V, "id": 3, "nonce": b"n" * 16}),
    "an old member's challenge": _frame({"nonce": b"n" * 16}),
}


@pytest.mark.parametrize("answer", SQUATTERS.values(), ids=SQUATTERS.keys())
async def test_a_squatter_on_a_peers_port_cannot_end_the_member_that_dials_it(
    tmp_path: Path, answer: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Member 2 is down and something else answers on its peer port with garbage: member 1's
    link to it fails (and is retried), and member 1 carries on."""
    caplog.set_level(logging.WARNING, logger="zkpy.server.peers")
    configs = _ensemble(tmp_path)
    dialled = 0

    async def squat(stream: trio.SocketStream) -> None:
        nonlocal dialled
        dialled += 1
        async with stream:
            await stream.send_all(answer)
            await stream.receive_some(4096)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_tcp, squat, configs[1].peer(2).peer_port)
        async with running(configs[0]):
            await wait_until(lambda: dialled >= 3, what="member 1 dialling the squatter again")
            await assert_accepts_a_genuine_peer(configs[2], 1)
        nursery.cancel_scope.cancel()
    assert "link to member 2 refused" in caplog.text


async def test_a_relayed_proof_is_refused(tmp_path: Path) -> None:
    """A man in the middle on the peer port of member 2, which is down, passes member 3's
    challenge to member 1 (as if member 2 had sent it) and member 1's hello on to member 3,
    to be taken for member 1 there."""
    configs = _ensemble(tmp_path)
    relayed: list[bool] = []  # per relayed hello: whether member 3 accepted it

    def rewrite(payload: bytes, **fields: int) -> bytes:
        value = msgpack.unpackb(payload)
        value.update({key: fields[key] for key in fields if key in value})
        return encode_frame(msgpack.packb(value, use_bin_type=True))

    async def relay(victim: trio.SocketStream) -> None:
        try:
            target = await trio.open_tcp_stream("127.0.0.1", configs[2].peer(3).peer_port)
            async with victim, target:
                victim_frames, target_frames = FrameDecoder(), FrameDecoder()
                challenge = await _next_frame(target, target_frames)
                await victim.send_all(rewrite(challenge, id=2))
                hello = await _next_frame(victim, victim_frames)
                await target.send_all(rewrite(hello, to=3))
                try:
                    await _next_frame(target, target_frames)  # an answer: taken for member 1
                    relayed.append(True)
                except trio.BrokenResourceError:
                    relayed.append(False)
        except (OSError, trio.BrokenResourceError):
            pass  # a member stopping as the test ends

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_tcp, relay, configs[1].peer(2).peer_port)
        async with running(configs[2], configs[0]):  # member 3 listens before 1 dials
            await wait_until(lambda: len(relayed) >= 3, what="relayed handshakes")
        nursery.cancel_scope.cancel()
    assert not any(relayed)


async def _next_frame(stream: trio.SocketStream, decoder: FrameDecoder) -> bytes:
    frames: list[bytes] = []
    with trio.fail_after(5):
        while not frames:
            data = await stream.receive_some(4096)
            if not data:
                raise trio.BrokenResourceError("closed")
            frames = decoder.feed(data)
    return frames[0]


async def test_a_huge_frame_before_authentication_is_refused_at_once(tmp_path: Path) -> None:
    configs = _ensemble(tmp_path)
    async with running(configs[0]):
        async with await trio.open_tcp_stream("127.0.0.1", configs[0].peer(1).peer_port) as s:
            await read_challenge(s)
            await s.send_all((1 << 30).to_bytes(4, "big") + b"x" * 1000)
            await assert_closed_soon(s, timeout=1.0)


async def test_idle_unauthenticated_connections_do_not_keep_a_member_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="zkpy.server.peers")
    configs = _ensemble(tmp_path)
    port = configs[0].peer(1).peer_port
    idle = 4 * MAX_PENDING_HANDSHAKES
    async with running(configs[0]):
        streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(idle)]
        try:
            closed = 0

            async def wait_closed(stream: trio.SocketStream) -> None:
                nonlocal closed
                await read_challenge(stream)
                await assert_closed_soon(stream, timeout=3.0)
                closed += 1

            with trio.move_on_after(3.0):
                async with trio.open_nursery() as nursery:
                    for stream in streams:
                        nursery.start_soon(wait_closed, stream)
                    await wait_until(
                        lambda: closed >= idle - MAX_PENDING_HANDSHAKES, what="idle ones closed"
                    )
                    nursery.cancel_scope.cancel()
            assert closed >= idle - MAX_PENDING_HANDSHAKES
            # the places still held by idle connections do not keep a genuine member out
            await assert_accepts_a_genuine_peer(configs[1], 1)
        finally:
            for stream in streams:
                await trio.aclose_forcefully(stream)
    # one warning about the flood, not one per connection
    assert caplog.text.count("refused a peer connection") < 5


async def test_a_slow_sender_gets_one_handshake_deadline_from_its_start(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Dripping a byte now and then does not hold a connection open: the handshake must be done
    HANDSHAKE_TIMEOUT_S after connecting, however the bytes arrive. (In virtual time: the
    deadline and the sender's pace are trio time, so the test need not wait them out.)"""
    configs = _ensemble(tmp_path)
    async with running(configs[0]):
        started = trio.current_time()
        async with await trio.open_tcp_stream("127.0.0.1", configs[0].peer(1).peer_port) as s:
            await read_challenge(s)
            await s.send_all((100).to_bytes(4, "big"))  # a hello of 100 bytes, one at a time
            with trio.fail_after(HANDSHAKE_TIMEOUT_S + 2):
                try:
                    while True:
                        await s.send_all(b"x")
                        await trio.sleep(HANDSHAKE_TIMEOUT_S / 40)  # the sender's pace
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        assert trio.current_time() - started >= HANDSHAKE_TIMEOUT_S - 0.5


async def test_a_client_on_a_peer_port_is_told_where_clients_go(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="zkpy.server.peers")
    configs = _ensemble(tmp_path)
    async with running(configs[0]):
        async with RawConnection.open(configs[0].peer(1).peer_port) as raw:
            await raw.send(wire.Handshake().encode())
            await raw.wait_closed()
        with contextlib.suppress(OSError, trio.TooSlowError, zkpy.errors.ZkError):  # `zkpy status`
            await fetch_status("127.0.0.1", configs[0].peer(1).peer_port, timeout=2.0)
        await wait_until(
            lambda: caplog.text.count("not a member (a zkpy client's handshake)") == 2,
            what="both refusals",
        )
    client_address = f"127.0.0.1:{configs[0].client_port}"
    assert f"this is member 1's peer port; clients use {client_address}" in caplog.text
    assert "upgrade" not in caplog.text


async def test_the_proof_binds_the_verifier_and_the_ensemble(tmp_path: Path) -> None:
    """A hello made for member 2 is refused by member 3, and members of two ensembles that
    share a secret refuse each other."""
    configs = _ensemble(tmp_path)
    one, three = peer_identity(configs[0]), peer_identity(configs[2])
    nonce = b"c" * 16
    challenge_from_2 = msgpack.packb({"v": V, "id": 2, "nonce": nonce})
    hello_for_2 = one.hello(challenge_from_2, 2, b"h" * 16)
    with pytest.raises(HandshakeError, match="meant for member 2"):
        three.check_hello(hello_for_2.payload, nonce)
    other = _ensemble(tmp_path / "other")
    hello = peer_identity(other[0]).hello(three.challenge(nonce), 3, b"h" * 16)
    with pytest.raises(HandshakeError, match="another ensemble"):
        three.check_hello(hello.payload, nonce)
    # and the honest exchange passes both ways
    hello = one.hello(three.challenge(nonce), 3, b"h" * 16)
    prover, answer = three.check_hello(hello.payload, nonce)
    assert prover == 1
    one.check_answer(answer, hello, 3)


async def test_garbage_on_every_peer_port_leaves_the_ensemble_serving(tmp_path: Path) -> None:
    """Five bytes of bad msgpack, and a 4 GiB length, sent to every member's peer port."""
    with Ensemble(tmp_path) as ens:
        leader = await ens.start_serving()
        async with connect_to(leader) as zk:
            await zk.create("/before", b"")
        for garbage in GARBAGE_BEFORE_AUTH["bad msgpack"], GARBAGE_BEFORE_AUTH["a length of 4 GiB"]:
            for member in ens.voters:
                async with await trio.open_tcp_stream("127.0.0.1", member.peer_port) as s:
                    await read_challenge(s)
                    await s.send_all(garbage)
                    await assert_closed_soon(s)
        assert all(member.running for member in ens.voters)
        async with connect_to(ens.voters) as zk:
            await zk.create("/after", b"")
        for member in ens.voters:
            assert (await member.wait_serving())["serving"]
            assert set(await read_tree(member, "/")) >= {"/before", "/after"}
            assert "refused a peer connection" in member.log()
