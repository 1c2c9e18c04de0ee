"""Reconfig and getConfig over both client protocols, and the membership text they carry: kazoo's
reconfig (ZooKeeper's opcode 16) and getData of /zookeeper/config, zkpy's client call and its
blocking twin, and the parsers behind them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest
import trio
from kazoo.exceptions import BadArgumentsError as KazooBadArguments
from kazoo.exceptions import BadVersionError as KazooBadVersion
from kazoo.exceptions import NoAuthError as KazooNoAuth

import zkpy
import zkpy.sync
from tests.test_zk_kazoo import kz, started, stopped
from zkpy.core.acl import digest_id
from zkpy.core.errors import BadArgumentsError
from zkpy.core.membership import (
    Membership,
    MemberSpec,
    parse_member,
    parse_membership,
    parse_server_line,
    with_client_ports,
)
from zkpy.errors import BadVersionError, NewConfigNoQuorumError, NoAuthError
from zkpy.testing.ports import free_port
from zkpy.testing.server import RunningServer, running_server
from zkpy.wire.peer import HandshakeError, PeerIdentity, ensemble_digest

SUPER = ("super", "test")
AS_SUPER = [("digest", "super:test")]


ZOOKEEPER_SUPER = "super:D/InIHSb7yEEbrWz8b9l71RjZJU="  # ZooKeeper's digest of super:test


@pytest.fixture
async def member(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(
        tmp_path / "data", tick_ms=50, zk_port=free_port(), super_digest=digest_id(*SUPER).id
    ) as server:
        yield server


@pytest.fixture
async def zk_member(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """A member whose super user is ZooKeeper's (its digest, as kazoo's harness sets it)."""
    async with running_server(
        tmp_path / "data", tick_ms=50, zk_port=free_port(), super_digest=ZOOKEEPER_SUPER
    ) as server:
        yield server


async def test_the_configuration_is_readable_before_any_reconfig(zk_member: RunningServer) -> None:
    """/zookeeper/config shows the member's starting membership, in ZooKeeper's form, from the
    start (at zxid 0, as ZooKeeper shows a static configuration), and a reconfig replaces it."""
    plain = await started(zk_member)
    admin = await started(zk_member, auth_data=[("digest", "super:test")])
    try:
        data, stat = await kz(plain.get, "/zookeeper/config")
        membership = parse_membership(data)
        assert membership.voters == {zk_member.config.server_id}
        assert data.decode().startswith(f"server.{zk_member.config.server_id}=")
        assert stat.mzxid == 0
        assert sorted(await kz(plain.get_children, "/zookeeper")) == ["config", "quota"]
        joining = "server.7=10.0.0.7:2888:2888:observer;10.0.0.7:2181"
        changed, changed_stat = await kz(admin.reconfig, joining, None, None)
        assert await kz(plain.get, "/zookeeper/config") == (changed, changed_stat)
        assert changed_stat.mzxid > 0
        assert parse_membership(changed).observers == {7}
    finally:
        for client in (admin, plain):
            await stopped(client)


async def test_kazoo_adds_and_removes_an_observer(zk_member: RunningServer) -> None:
    joining = "server.100=0.0.0.0:3001:3002:observer;0.0.0.0:3003"
    admin = await started(zk_member, auth_data=[("digest", "super:test")])
    plain = await started(zk_member)
    try:
        data, stat = await kz(admin.reconfig, joining=joining, leaving=None, new_members=None)
        assert joining.encode() in data
        config, config_stat = await kz(plain.get, "/zookeeper/config")
        assert config == data
        assert config_stat.mzxid == stat.mzxid
        assert data.decode().splitlines()[-1] == f"version={stat.mzxid:x}"
        data, stat = await kz(admin.reconfig, joining=None, leaving="100", new_members=None)
        assert joining.encode() not in data
        with pytest.raises(KazooBadVersion):
            await kz(plain.reconfig, joining, None, None, from_config=stat.mzxid + 1)
        with pytest.raises(KazooNoAuth):
            await kz(plain.reconfig, joining=joining, leaving=None, new_members=None)
        with pytest.raises(KazooBadArguments):
            await kz(plain.reconfig, joining="some thing", leaving=None, new_members=None)
    finally:
        for client in (admin, plain):
            await stopped(client)


async def test_the_zkpy_client_changes_the_membership(member: RunningServer) -> None:
    async with zkpy.connect(member.address, auth=AS_SUPER) as zk:
        data, stat = await zk.reconfig(add=["7=10.0.0.7:2181:2888:observer"])
        membership = parse_membership(data)
        assert membership.observers == {7}
        assert membership.version == stat.mzxid
        with pytest.raises(BadVersionError):
            await zk.reconfig(remove=[7], from_version=stat.mzxid - 1)
        with pytest.raises(NewConfigNoQuorumError):  # member 8 is not running
            await zk.reconfig(add=["8=10.0.0.8:2181:2888"])
        data, _stat = await zk.reconfig(remove=[7], from_version=stat.mzxid)
        assert parse_membership(data).ids == {1}
        with pytest.raises(BadArgumentsError):
            await zk.reconfig(remove=[1])  # no voter would be left
        # the whole membership instead (a member alone has no peer port to restate: the
        # ensemble tests restate real members' lines)
        with pytest.raises(BadArgumentsError):  # no voter would be left
            await zk.reconfig(new_members=["7=10.0.0.7:2181:2888:observer"])
        with pytest.raises(BadArgumentsError, match="not both"):
            await zk.reconfig(remove=[7], new_members=["7=10.0.0.7:2181:2888:observer"])
    async with zkpy.connect(member.address) as zk:
        with pytest.raises(NoAuthError):
            await zk.reconfig(add=["7=10.0.0.7:2181:2888:observer"])


async def test_the_blocking_client_has_the_twin(member: RunningServer) -> None:
    def body() -> bytes:
        with zkpy.sync.connect(member.address, auth=AS_SUPER) as zk:
            data, _stat = zk.reconfig(add=[MemberSpec(9, "h9", 2181, 2888, observer=True)])
            return data

    data = await trio.to_thread.run_sync(body)
    assert parse_membership(data).observers == {9}


def test_members_in_both_notations() -> None:
    spec = parse_member("4=10.0.0.4:2181:2888:observer")
    assert spec == MemberSpec(4, "10.0.0.4", 2181, 2888, observer=True)
    assert parse_server_line(spec.line()) == spec
    line = "server.5=h:1:2:participant;other:3"
    assert parse_server_line(line).line() == line
    for bad in ("4=h:1", "x=h:1:2", "4=h:1:2:leader", "0=h:1:2", "4=h:0:2", "4=a b:1:2"):
        with pytest.raises(BadArgumentsError):
            parse_member(bad)
    for bad in ("server.1=h", "srv.1=h:1:2", "server.1=h:1:2:boss;3", "some thing"):
        with pytest.raises(BadArgumentsError):
            parse_server_line(bad)


def test_a_change_is_checked_against_the_membership() -> None:
    three = Membership(tuple(MemberSpec(i, "h", 1, 2) for i in (1, 2, 3)), 5)
    assert three.changed([MemberSpec(4, "h", 1, 2)], [1], 9).voters == {2, 3, 4}
    assert three.changed([MemberSpec(3, "h", 1, 2, observer=True)], [], 9).observers == {3}
    with pytest.raises(BadArgumentsError, match="not in the configuration"):
        three.changed([], [7], 9)
    with pytest.raises(BadArgumentsError, match="twice"):
        three.changed([MemberSpec(4, "h", 1, 2)], [4], 9)
    with pytest.raises(BadArgumentsError, match="without a voter"):
        three.changed([], [1, 2, 3], 9)
    with pytest.raises(BadArgumentsError, match="add or remove"):
        three.changed([], [], 9)
    assert parse_membership(three.encode()) == three


def test_a_whole_new_membership_replaces_the_old() -> None:
    """A non-incremental reconfig: the members left out go, new ones come, a changed role or
    peer address is taken, and every listed member keeps the client address on record (a
    ZooKeeper client restates the lines with its own port)."""
    three = Membership(tuple(MemberSpec(i, f"h{i}", 2180 + i, 2888) for i in (1, 2, 3)), 5)
    restated = [MemberSpec(i, f"h{i}", 9000 + i, 2888) for i in (1, 2)]
    shrunk = three.replaced(restated, 9)
    assert shrunk == Membership(three.members[:2], 9)
    grown = three.replaced([*three.members, MemberSpec(4, "h4", 2184, 2888)], 9)
    assert grown.voters == {1, 2, 3, 4}
    assert grown.member(4) == MemberSpec(4, "h4", 2184, 2888)
    moved = three.replaced(
        [MemberSpec(1, "new1", 9001, 3888, observer=True), *three.members[1:]], 9
    )
    one = moved.member(1)
    assert one == MemberSpec(1, "new1", 2181, 3888, True, 0, "h1")
    assert one.line() == "server.1=new1:3888:3888:observer;h1:2181"
    assert moved.observers == {1}
    with pytest.raises(BadArgumentsError, match="change the membership"):
        three.replaced([MemberSpec(i, f"h{i}", 1, 2888) for i in (1, 2, 3)], 9)
    with pytest.raises(BadArgumentsError, match="twice"):
        three.replaced([three.members[0], three.members[0]], 9)
    with pytest.raises(BadArgumentsError, match="without a voter"):
        three.replaced([MemberSpec(4, "h4", 1, 2, observer=True)], 9)


def test_zookeepers_view_of_the_config_names_the_zookeeper_ports() -> None:
    """Each member with a known ZooKeeper port gets it as its client port, its client host and
    the rest of its line kept; other lines, and text that is no server line, stay as they are."""
    text = (
        b"server.1=10.0.0.1:2888:2888:participant;10.0.0.1:2181\n"
        b"server.2=10.0.0.2:2888:2888:observer;2181\n"
        b"server.3=10.0.0.3:2888:3888:participant;10.0.0.3:2181\n"
        b"server.4=10.0.0.4:2888:2888:participant\n"
        b"server.x=junk;1\n"
        b"version=10000002a"
    )
    assert with_client_ports(text, {1: 2281, 2: 2282, 4: 2284, 9: 2289}) == (
        b"server.1=10.0.0.1:2888:2888:participant;10.0.0.1:2281\n"
        b"server.2=10.0.0.2:2888:2888:observer;2282\n"
        b"server.3=10.0.0.3:2888:3888:participant;10.0.0.3:2181\n"
        b"server.4=10.0.0.4:2888:2888:participant\n"
        b"server.x=junk;1\n"
        b"version=10000002a"
    )
    assert with_client_ports(text, {}) is text
    three = Membership(tuple(MemberSpec(i, f"10.0.0.{i}", 2181, 2888) for i in (1, 2, 3)), 7)
    shown = parse_membership(with_client_ports(three.encode(), {3: 2283}))
    assert shown.member(3) == MemberSpec(3, "10.0.0.3", 2283, 2888)
    assert shown.members[:2] == three.members[:2]
    assert shown.version == 7


def _identity(me: int, rows: list[tuple[int, str, int]]) -> PeerIdentity:
    return PeerIdentity(
        member_id=me,
        ensemble=ensemble_digest(rows),
        peers=frozenset(r[0] for r in rows if r[0] != me),
        secret=b"s3cret",
        members=tuple(rows),
        address=("10.0.0.9", 2888 + me),
    )


def test_the_peer_handshake_takes_a_member_the_verifier_does_not_know() -> None:
    """A new member lists itself; the old ones do not list it yet: they still accept it (and
    learn where it listens), but not a view that places a member they list elsewhere, nor a
    hello without a member list (an older zkpy)."""
    old_rows = [(1, "h1", 2181), (2, "h2", 2181), (3, "h3", 2181)]
    verifier = _identity(1, old_rows)
    nonce = b"c" * 16
    joiner = _identity(4, [*old_rows, (4, "h4", 2181)])
    hello = joiner.hello(verifier.challenge(nonce), 1, b"h" * 16)
    prover, answer = verifier.check_hello(hello.payload, nonce)
    assert prover == 4
    joiner.check_answer(answer, hello, 1)
    assert PeerIdentity.stated_address(hello.payload) == ("10.0.0.9", 2892)
    elsewhere = _identity(4, [(1, "h1", 9999), (4, "h4", 2181)])
    hello = elsewhere.hello(verifier.challenge(nonce), 1, b"h" * 16)
    with pytest.raises(HandshakeError, match="another ensemble"):
        verifier.check_hello(hello.payload, nonce)
    fields = msgpack.unpackb(joiner.hello(verifier.challenge(nonce), 1, b"h" * 16).payload)
    del fields["members"]
    with pytest.raises(HandshakeError, match="upgrade"):
        verifier.check_hello(msgpack.packb(fields), nonce)
