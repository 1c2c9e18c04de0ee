"""The ip ACL scheme: an address or a CIDR network, matched against each connection's peer
address; malformed ids are refused with InvalidACL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import zkpy
from tests.conftest import RawConnection
from tests.ensemble_harness import Ensemble, connect_to
from zkpy.core import acl as acls
from zkpy.core import ipacl
from zkpy.core.errors import Code
from zkpy.core.requests import GetDataRequest, SetDataRequest
from zkpy.core.types import Perm
from zkpy.errors import InvalidACLError, NoAuthError
from zkpy.security import ACL, CREATOR_ALL_ACL, Id, make_digest_acl
from zkpy.testing import RunningServer


def ip(ident: str, perms: int = Perm.ALL) -> ACL:
    return ACL(perms, Id("ip", ident))


@asynccontextmanager
async def raw_from(source: str, port: int) -> AsyncIterator[RawConnection]:
    """A hand-driven connection whose socket is bound to the loopback address `source`."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    try:
        conn = RawConnection(stream)
        assert not (await conn.handshake()).error
        yield conn
    finally:
        await trio.aclose_forcefully(stream)


async def read_error(source: str, port: int, path: str) -> int:
    async with raw_from(source, port) as conn:
        await conn.request(1, GetDataRequest(path))
        _zxid, error, _body = await conn.reply_to(1)
        return error


async def test_an_ip_acl_lets_in_its_address_and_no_other(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:  # from 127.0.0.1
        # the creator is not locked out of a node it gave its own address
        await zk.create("/mine", b"v1", acl=[ip("127.0.0.1")])
        assert (await zk.get("/mine"))[0] == b"v1"
        await zk.set("/mine", b"v2")
        await zk.create("/mine/child", b"")
        await zk.create("/net", b"n", acl=[ip("127.0.0.0/8", Perm.READ)])
        await zk.create("/two", b"t", acl=[ip("127.0.0.2/32", Perm.READ | Perm.WRITE)])
        assert (await zk.get("/net"))[0] == b"n"
        with pytest.raises(NoAuthError):
            await zk.get("/two")

    port = server.port
    assert await read_error("127.0.0.2", port, "/mine") == Code.NO_AUTH
    assert await read_error("127.0.0.2", port, "/net") == Code.OK
    assert await read_error("127.0.0.2", port, "/two") == Code.OK
    async with raw_from("127.0.0.2", port) as conn:  # writes are checked on the address too
        await conn.request(2, SetDataRequest("/mine", b"x", -1))
        assert (await conn.reply_to(2))[1] == Code.NO_AUTH
        await conn.request(3, SetDataRequest("/two", b"from .2", -1))
        assert (await conn.reply_to(3))[1] == Code.OK
    async with zkpy.connect(server.address) as zk:
        assert (await zk.get("/mine"))[0] == b"v2"


@pytest.mark.parametrize(
    "ident",
    [
        "",
        "abc",
        "999.1.1.1",
        "10.0.0.0/33",
        "10.0.0.0/-1",
        "::1/129",
        "10.0.0.1 ",
        "1.2.3",
        "010.0.0.1",
        "fe80::1%eth0",
        "10.0.0.0/8/8",
        "x" * 1000,
    ],
)
async def test_a_malformed_ip_id_is_invalid_acl(server: RunningServer, ident: str) -> None:
    async with zkpy.connect(server.address) as zk:
        with pytest.raises(InvalidACLError):
            await zk.create("/bad", b"", acl=[ip(ident)])
        await zk.create("/good", b"")
        with pytest.raises(InvalidACLError):
            await zk.set_acl("/good", [ip(ident)])
        assert await zk.exists("/bad") is None


async def test_auth_acls_do_not_take_the_address(server: RunningServer) -> None:
    """An address is not a proven identity: `auth` expands to what the session proved only."""
    async with zkpy.connect(server.address) as zk:
        with pytest.raises(InvalidACLError):
            await zk.create("/a", b"", acl=CREATOR_ALL_ACL)
        await zk.add_auth("digest", "alice:pw")
        await zk.create("/a", b"", acl=CREATOR_ALL_ACL)
        acl, _stat = await zk.get_acl("/a")
        assert acl == [make_digest_acl("alice", "pw", all=True)]


@pytest.mark.parametrize(
    ("ident", "address", "expected"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "127.0.0.2", False),
        ("127.0.0.0/8", "127.9.9.9", True),
        ("10.1.2.3/8", "10.200.0.1", True),  # host bits under the prefix: the whole network
        ("10.0.0.0/8", "11.0.0.1", False),
        ("0.0.0.0/0", "192.0.2.1", True),
        ("::1", "::1", True),
        ("0:0:0:0:0:0:0:1", "::1", True),
        ("fd00::/8", "fd12:3456::1", True),
        ("fd00::/8", "fe80::1", False),
        ("fe80::/10", "fe80::1%eth0", True),  # the zone of a link-local peer is ignored
        ("127.0.0.1", "::ffff:127.0.0.1", True),  # IPv4 over an IPv6 socket
        ("::/0", "127.0.0.1", False),  # the families do not mix
        ("127.0.0.1", "?", False),
        ("garbage", "127.0.0.1", False),
    ],
)
def test_matching(ident: str, address: str, expected: bool) -> None:
    ids = frozenset({Id("ip", address), Id("digest", "u:x")})
    assert ipacl.matches(ident, ids) is expected
    assert acls.allows([ip(ident, Perm.READ)], Perm.READ, ids) is expected
    assert not acls.allows([ip(ident, Perm.READ)], Perm.WRITE, ids)


async def test_a_follower_forwards_the_address_to_the_leader(tmp_path: Path) -> None:
    """Writes are checked on the leader: it must see the address of the follower's client."""
    with Ensemble(tmp_path) as ens:
        ens.start_all()
        await ens.wait_all_serving()
        leader = await ens.leader()
        follower = next(m for m in ens.members.values() if m is not leader)
        async with connect_to(follower) as zk:
            await zk.create("/here", b"v1", acl=[ip("127.0.0.0/8")])
            await zk.set("/here", b"v2")
            await zk.create("/here/child", b"")
            await zk.create("/elsewhere", b"", acl=[ip("192.0.2.0/24"), ip("::1", Perm.READ)])
            with pytest.raises(NoAuthError):
                await zk.set("/elsewhere", b"x")
            assert (await zk.get("/here"))[0] == b"v2"
