"""How identities show on a member's `zk_port`, as ZooKeeper 3.8 shows them: getACL gives a
client without ADMIN on the node each digest identity as `user:x` (the SHA-1 of user:password
is easy to guess from), and the whole identity to one with ADMIN; whoAmI names a digest
identity by its user alone. zkpy's own protocol shows its identities unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kazoo.security import ACL as KazooACL
from kazoo.security import Id as KazooId
from kazoo.security import make_digest_acl

import zkpy
from tests.test_zk_kazoo import TICK_MS, RawJute, kz, started, stopped
from zkpy.core.requests import AuthRequest
from zkpy.core.types import ACL, Id, Perm
from zkpy.testing import RunningServer, running_server
from zkpy.testing.ports import free_port
from zkpy.wire import jute
from zkpy.wire.jute import WhoAmI


@pytest.fixture
async def member(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "data", tick_ms=TICK_MS, zk_port=free_port()) as server:
        yield server


async def test_get_acl_hides_digest_hashes_from_clients_without_admin(
    member: RunningServer,
) -> None:
    owner = await started(member, auth_data=[("digest", "alice:secret")])
    reader = await started(member)
    try:
        alice = make_digest_acl("alice", "secret", all=True)
        everyone_reads = KazooACL(Perm.READ, KazooId("world", "anyone"))
        await kz(owner.create, "/shared", b"", acl=[alice, everyone_reads])
        seen_by_owner, _stat = await kz(owner.get_acls, "/shared")
        seen_by_reader, stat = await kz(reader.get_acls, "/shared")
        assert [(a.perms, a.id.scheme, a.id.id) for a in seen_by_owner] == [
            (Perm.ALL, "digest", alice.id.id),
            (Perm.READ, "world", "anyone"),
        ]
        assert [(a.perms, a.id.scheme, a.id.id) for a in seen_by_reader] == [
            (Perm.ALL, "digest", "alice:x"),
            (Perm.READ, "world", "anyone"),
        ]
        assert stat.aversion == 0
        async with zkpy.connect(member.address) as zk:  # the msgpack protocol: unchanged
            acl, _stat = await zk.get_acl("/shared")
            assert acl[0] == ACL(Perm.ALL, Id("digest", alice.id.id))
    finally:
        for client in (owner, reader):
            await stopped(client)


async def test_who_am_i_names_a_digest_identity_by_its_user(member: RunningServer) -> None:
    conn = await RawJute.open(member)
    try:
        auth = AuthRequest("digest", b"carol:pw")
        assert (await conn.request(jute.XID_AUTH, jute.OP_AUTH, auth))[2] == 0
        await conn.send(2, jute.OP_WHO_AM_I, WhoAmI())
        reader = (await conn.reply())[3]
        infos = [(reader.string("scheme"), reader.string("id")) for _ in range(reader.int32())]
        assert infos == [("digest", "carol"), ("ip", "127.0.0.1")]
    finally:
        await conn.stream.aclose()
