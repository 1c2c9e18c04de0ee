"""Peer links: mutual TLS between members, and refusal of a member that cannot prove itself."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

import zkpy
from zkpy.client.admin import fetch_status
from zkpy.server.config import MemberAddress, ServerConfig
from zkpy.server.main import serve
from zkpy.server.wal import MIN_SEGMENT_BYTES

from .conftest import free_port, wait_until


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
        assert "the right secret" not in caplog.text and "a wrong secret" not in caplog.text
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
        assert rogue is not None and not rogue["serving"] and rogue["role"] == "looking"
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
