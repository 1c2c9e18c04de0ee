"""ACLs, authentication and TLS: everything denied where it should be, and nothing leaked."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trustme
from cryptography import x509

import zkpy
from tests.conftest import wait_until
from zkpy import security, tls
from zkpy.errors import AuthFailedError, NoAuthError, RolledBackError
from zkpy.testing import RunningServer, running_server
from zkpy.testing.ports import free_port

ALICE = ("alice", "wonderland")
ALICE_ALL = security.make_digest_acl(*ALICE, all=True)
WORLD_READ = security.make_acl("world", "anyone", read=True)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    super_id = security.make_digest_acl_credential("root", "rootpw")
    async with running_server(tmp_path / "data", super_digest=super_id) as running:
        yield running


async def test_digest_acl_is_salted_and_deterministic() -> None:
    first = security.make_digest_acl_credential("alice", "pw")
    assert first == security.make_digest_acl_credential("alice", "pw")
    assert first.startswith("alice:")
    assert first != security.make_digest_acl_credential("bob", "pw").replace("bob", "alice")
    acl = security.make_digest_acl("alice", "pw", read=True, write=True)
    assert acl.perms == zkpy.Perm.READ | zkpy.Perm.WRITE
    assert security.make_digest_acl("alice", "pw", all=True).perms == zkpy.Perm.ALL


async def test_every_operation_is_denied_without_the_permission(server: RunningServer) -> None:
    async with zkpy.connect(server.address, auth=[("digest", "alice:wonderland")]) as alice:
        await alice.create("/private", b"secret", acl=[ALICE_ALL])
        await alice.create("/private/child", b"c", acl=[ALICE_ALL])
        await alice.create("/shown", b"visible", acl=[WORLD_READ, ALICE_ALL])
        async with zkpy.connect(server.address) as stranger:
            denied = [
                stranger.get("/private"),
                stranger.get_children("/private"),
                stranger.set("/private", b"x"),
                stranger.create("/private/new", b""),
                stranger.delete("/private/child"),
                stranger.set_acl("/private", [WORLD_READ]),
                stranger.get_acl("/private"),
                stranger.set("/shown", b"x"),
            ]
            for attempt in denied:
                with pytest.raises(NoAuthError):
                    await attempt
            # DELETE is checked on the parent, as in ZooKeeper: "/" is open, so /shown may go
            # reading what the world may read works; a Stat is not protected (as in ZooKeeper)
            assert (await stranger.get("/shown"))[0] == b"visible"
            assert await stranger.exists("/private") is not None
            with pytest.raises(NoAuthError):
                async with stranger.watch("/private"):
                    pass
        # nothing the stranger tried changed anything
        data, stat = await alice.get("/private")
        assert (data, stat.version, stat.aversion) == (b"secret", 0, 0)
        assert await alice.get_children("/private") == ["child"]


async def test_multi_is_denied_whole_when_one_operation_is(server: RunningServer) -> None:
    async with zkpy.connect(server.address, auth=[("digest", "alice:wonderland")]) as alice:
        await alice.create("/locked", b"", acl=[WORLD_READ, ALICE_ALL])
        async with zkpy.connect(server.address) as stranger:
            tx = stranger.transaction()
            tx.create("/free", b"")
            tx.check("/locked", -1)
            tx.create("/locked/inside", b"")
            results = await tx.commit()
            assert isinstance(results[0], RolledBackError)
            assert isinstance(results[2], NoAuthError)
            assert await stranger.exists("/free") is None
            await alice.create("/hidden", b"", acl=[ALICE_ALL])
            check = stranger.transaction().check("/hidden", 0)
            assert isinstance((await check.commit())[0], NoAuthError)


async def test_watches_do_not_leak_what_acls_hide(server: RunningServer) -> None:
    async with (
        zkpy.connect(server.address, auth=[("digest", "alice:wonderland")]) as alice,
        zkpy.connect(server.address) as stranger,
    ):
        await alice.create("/open", b"", acl=zkpy.OPEN_ACL_UNSAFE)
        await alice.create("/secret", b"", acl=[ALICE_ALL])
        async with stranger.watch("/", recursive=True) as events:
            await alice.create("/secret/plan", b"x", acl=[ALICE_ALL])
            await alice.set("/secret/plan", b"y")
            await alice.delete("/secret/plan")
            await alice.create("/open/note", b"n")
            with trio.fail_after(5):
                event = await events.next_event()
            # the first event the stranger gets is the open one: nothing about /secret/*
            assert (event.type, event.path) == (zkpy.EventType.CREATED, "/open/note")


async def test_auth_survives_a_reconnect(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    async with running_server(data, client_port=port) as first:
        zk_cm = zkpy.connect(
            first.address, session_timeout=6.0, auth=[("digest", "alice:wonderland")]
        )
        zk = await zk_cm.__aenter__()
        try:
            await zk.create("/mine", b"m", acl=[ALICE_ALL])
            first.stop()
            await wait_until(lambda: zk.state is zkpy.ConnectionState.SUSPENDED, what="suspend")
            async with running_server(data, client_port=port):
                await wait_until(lambda: zk.connected, timeout=10, what="reconnect")
                assert (await zk.get("/mine"))[0] == b"m"
        finally:
            await zk_cm.__aexit__(None, None, None)


async def test_failed_authentication_is_a_clear_error_and_ends_the_session(
    server: RunningServer,
) -> None:
    async with zkpy.connect(server.address) as zk:
        with pytest.raises(AuthFailedError):
            await zk.add_auth("kerberos", "someone")
        assert zk.state is zkpy.ConnectionState.LOST
    async with zkpy.connect(server.address) as zk:
        with pytest.raises(AuthFailedError):
            await zk.add_auth("digest", "no-colon")


async def test_the_super_user_passes_every_acl(server: RunningServer) -> None:
    async with zkpy.connect(server.address, auth=[("digest", "alice:wonderland")]) as alice:
        await alice.create("/vault", b"gold", acl=[ALICE_ALL])
    async with zkpy.connect(server.address, auth=[("digest", "root:rootpw")]) as root:
        assert (await root.get("/vault"))[0] == b"gold"
        await root.set_acl("/vault", zkpy.OPEN_ACL_UNSAFE)
    async with zkpy.connect(server.address) as anyone:
        assert (await anyone.get("/vault"))[0] == b"gold"


# ---- TLS -----------------------------------------------------------------------------------


def _write_pem(path: Path, blob: trustme.Blob) -> str:
    blob.write_to_path(str(path))
    return str(path)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    other_ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("alice@example", common_name="alice")
    stranger_cert = other_ca.issue_cert("mallory@example", common_name="mallory")
    client_pem = client_cert.cert_chain_pems[0].bytes()
    subject = x509.load_pem_x509_certificate(client_pem).subject.rfc4514_string()
    files = {
        "client_subject": subject,
        "ca": _write_pem(tmp_path / "ca.pem", ca.cert_pem),
        "server_cert": _write_pem(
            tmp_path / "server.pem", server_cert.private_key_and_cert_chain_pem
        ),
        "client_cert": _write_pem(
            tmp_path / "client.pem", client_cert.private_key_and_cert_chain_pem
        ),
        "stranger_cert": _write_pem(
            tmp_path / "stranger.pem", stranger_cert.private_key_and_cert_chain_pem
        ),
    }
    return files


async def test_tls_clients_and_x509_identities(tmp_path: Path, pki: dict[str, str]) -> None:
    async with running_server(
        tmp_path / "data", tls_cert=pki["server_cert"], tls_ca=pki["ca"]
    ) as server:
        anonymous = tls.client_context(pki["ca"])
        alice = tls.client_context(pki["ca"], pki["client_cert"])
        async with zkpy.connect(server.address, tls=alice) as zk:
            acl = security.make_acl("x509", pki["client_subject"], all=True)
            await zk.create("/alice-only", b"a", acl=[acl])
            assert (await zk.get("/alice-only"))[0] == b"a"
        async with zkpy.connect(server.address, tls=anonymous) as zk:
            with pytest.raises(NoAuthError):
                await zk.get("/alice-only")
        # a client that does not speak TLS gets nowhere
        with pytest.raises(zkpy.errors.ConnectionLossError):
            async with zkpy.connect(server.address, connect_timeout=1.0):
                pass
        # nor does one that does not trust the server's CA
        untrusting = tls.client_context(None)
        with pytest.raises((zkpy.errors.ConnectionLossError, ssl.SSLError)):
            async with zkpy.connect(server.address, tls=untrusting, connect_timeout=1.0):
                pass


async def test_required_client_certificates_refuse_other_cas(
    tmp_path: Path, pki: dict[str, str]
) -> None:
    async with running_server(
        tmp_path / "data", tls_cert=pki["server_cert"], tls_ca=pki["ca"], tls_client_auth="required"
    ) as server:
        good = tls.client_context(pki["ca"], pki["client_cert"])
        async with zkpy.connect(server.address, tls=good) as zk:
            await zk.create("/ok", b"")
        bad = tls.client_context(pki["ca"], pki["stranger_cert"])
        with pytest.raises(zkpy.errors.ConnectionLossError):
            async with zkpy.connect(server.address, tls=bad, connect_timeout=1.0):
                pass
