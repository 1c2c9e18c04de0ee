"""kazoo, ZooKeeper's Python client, unchanged against a member's `zk_port`: the data model,
watches, transactions and digest auth, both protocols in one scenario, and what bad bytes on
the ZooKeeper port cost (that connection only).

kazoo is thread-based: every kazoo call runs in a worker thread (`kz`), so the member, which
runs in this test's trio loop, keeps serving meanwhile."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
)
from kazoo.protocol.states import EventType
from kazoo.security import make_acl, make_digest_acl

import zkpy
from tests.conftest import RawConnection, wait_until
from zkpy.core.membership import CONFIG_PATH, parse_membership
from zkpy.core.requests import (
    AddWatchRequest,
    CreateRequest,
    GetChildrenRequest,
    GetDataRequest,
    SetDataRequest,
)
from zkpy.core.types import OPEN_ACL_UNSAFE, WatchMode
from zkpy.testing import RunningServer, running_server
from zkpy.testing.ports import free_port
from zkpy.wire import jute, jute_client
from zkpy.wire.frames import FrameDecoder
from zkpy.wire.jute import (
    ConnectRequest,
    ConnectResponse,
    GetAllChildrenNumber,
    GetEphemerals,
    MultiRead,
    Reader,
    WatchQuery,
    WhoAmI,
)

TICK_MS = 500  # sessions of 1 to 10 s: kazoo's default of 10 s fits


@pytest.fixture
async def member(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "data", tick_ms=TICK_MS, zk_port=free_port()) as server:
        yield server


def zk_port(server: RunningServer) -> int:
    """The member's ZooKeeper port (the fixture always sets one)."""
    port = server.config.zk_port
    assert port is not None
    return port


async def kz(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a (blocking) kazoo method in a worker thread."""
    return await trio.to_thread.run_sync(functools.partial(function, *args, **kwargs))


async def started(server: RunningServer, **kwargs: Any) -> KazooClient:
    client = KazooClient(hosts=f"127.0.0.1:{zk_port(server)}", timeout=5, **kwargs)
    await kz(client.start, timeout=10)
    return client


async def stopped(client: KazooClient) -> None:
    await kz(client.stop)
    await kz(client.close)


@pytest.fixture
async def kazoo(member: RunningServer) -> AsyncIterator[KazooClient]:
    client = await started(member)
    try:
        yield client
    finally:
        await stopped(client)


# ---- the data model ------------------------------------------------------------------------


async def test_create_read_update_delete(kazoo: KazooClient) -> None:
    assert await kz(kazoo.create, "/app/config", b"v1", makepath=True) == "/app/config"
    data, stat = await kz(kazoo.get, "/app/config")
    assert (data, stat.version, stat.dataLength) == (b"v1", 0, 2)
    with pytest.raises(NodeExistsError):
        await kz(kazoo.create, "/app/config", b"again")
    stat = await kz(kazoo.set, "/app/config", b"v22")
    assert (stat.version, stat.dataLength) == (1, 3)
    assert await kz(kazoo.get_children, "/app") == ["config"]
    children, parent = await kz(kazoo.get_children, "/app", include_data=True)
    assert (children, parent.numChildren) == (["config"], 1)
    with pytest.raises(NotEmptyError):
        await kz(kazoo.delete, "/app")
    await kz(kazoo.delete, "/app", recursive=True)
    assert await kz(kazoo.exists, "/app") is None
    with pytest.raises(NoNodeError):
        await kz(kazoo.get, "/app/config")
    _path, created = await kz(kazoo.create, "/s", b"x", include_data=True)
    assert created.czxid == created.mzxid
    assert created.dataLength == 1


async def test_ephemerals_and_sequentials(member: RunningServer, kazoo: KazooClient) -> None:
    await kz(kazoo.create, "/q", b"")
    first = await kz(kazoo.create, "/q/n-", b"", sequence=True)
    second = await kz(kazoo.create, "/q/n-", b"", sequence=True, ephemeral=True)
    assert (first, second) == ("/q/n-0000000000", "/q/n-0000000001")
    owner = await started(member)
    mine = await kz(owner.create, "/q/mine", b"", ephemeral=True)
    stat = await kz(kazoo.exists, mine)
    assert stat.ephemeralOwner == owner.client_id[0] != 0
    await stopped(owner)  # closes the session: its ephemeral goes
    assert await kz(kazoo.get_children, "/q") == ["n-0000000000", "n-0000000001"]


async def test_versions_are_compare_and_set(kazoo: KazooClient) -> None:
    await kz(kazoo.create, "/v", b"0")
    await kz(kazoo.set, "/v", b"1", version=0)
    with pytest.raises(BadVersionError):
        await kz(kazoo.set, "/v", b"stale", version=0)
    with pytest.raises(BadVersionError):
        await kz(kazoo.delete, "/v", version=5)
    assert (await kz(kazoo.get, "/v"))[0] == b"1"
    await kz(kazoo.delete, "/v", version=1)


async def test_a_transaction_is_all_or_nothing(kazoo: KazooClient) -> None:
    await kz(kazoo.create, "/t", b"")
    tx = kazoo.transaction()
    tx.check("/t", 0)
    tx.create("/t/a", b"a")
    tx.set_data("/t", b"done")
    created, path, stat = await kz(tx.commit)
    assert (created, path, stat.version) == (True, "/t/a", 1)
    assert (await kz(kazoo.get, "/t"))[0] == b"done"


async def test_a_failed_transaction_changes_nothing(kazoo: KazooClient) -> None:
    await kz(kazoo.create, "/f", b"")
    tx = kazoo.transaction()
    tx.create("/f/a", b"a")
    tx.check("/f", 7)
    results = await kz(tx.commit)
    assert [type(result) for result in results] == [RolledBackError, BadVersionError]
    assert await kz(kazoo.exists, "/f/a") is None


# ---- watches -------------------------------------------------------------------------------


async def test_a_data_watch_and_a_child_watch_fire(kazoo: KazooClient) -> None:
    seen: list[tuple[str, str]] = []
    await kz(kazoo.create, "/w", b"")
    await kz(kazoo.get, "/w", watch=lambda e: seen.append((e.type, e.path)))
    await kz(kazoo.get_children, "/w", watch=lambda e: seen.append((e.type, e.path)))
    await kz(kazoo.exists, "/w/later", watch=lambda e: seen.append((e.type, e.path)))
    await kz(kazoo.create, "/w/later", b"")
    await kz(kazoo.set, "/w", b"changed")
    await wait_until(lambda: len(seen) == 3, what="three watch events")
    assert sorted(seen) == [
        (EventType.CHANGED, "/w"),
        (EventType.CHILD, "/w"),
        (EventType.CREATED, "/w/later"),
    ]


async def test_the_event_leaves_before_the_reply_that_shows_the_change(
    member: RunningServer,
) -> None:
    """ZooKeeper's ordering promise, on the wire: the notification (xid -1) of a watch the
    connection holds comes before the reply to its own write that caused it."""
    async with zkpy.connect(member.address) as zk:
        await zk.create("/ordered", b"0")
    conn = await RawJute.open(member)
    try:
        await conn.request(1, jute.OP_GET_DATA, GetDataRequest("/ordered", watch=True))
        await conn.send(2, jute.OP_SET_DATA, SetDataRequest("/ordered", b"1"))
        xids = [(await conn.frame())[0], (await conn.frame())[0]]
        assert xids == [jute.XID_NOTIFICATION, 2]
    finally:
        await conn.stream.aclose()


async def test_a_kazoo_watch_fires_on_a_msgpack_write_and_back(
    member: RunningServer, kazoo: KazooClient
) -> None:
    fired = threading.Event()
    await kz(kazoo.create, "/mixed", b"kazoo")
    await kz(kazoo.get, "/mixed", watch=lambda event: fired.set())
    async with zkpy.connect(member.address) as zk:
        data, _stat = await zk.get("/mixed")
        assert data == b"kazoo"
        await zk.set("/mixed", b"msgpack")
        await wait_until(fired.is_set, what="kazoo's watch")
        assert (await kz(kazoo.get, "/mixed"))[0] == b"msgpack"

        watch = zkpy.WatchFuture()
        await zk.exists("/mixed/child", watch=watch)
        await kz(kazoo.create, "/mixed/child", b"")
        with trio.fail_after(10):
            event = await watch.wait()
        assert (event.type, event.path) == (zkpy.EventType.CREATED, "/mixed/child")


# ---- auth ----------------------------------------------------------------------------------


async def test_digest_auth_as_zookeeper_computes_it(member: RunningServer) -> None:
    owner = await started(member, auth_data=[("digest", "alice:secret")])
    stranger = await started(member)
    friend = await started(member)
    wrong = await started(member, auth_data=[("digest", "alice:guess")])
    try:
        acl = make_digest_acl("alice", "secret", all=True)
        await kz(owner.create, "/private", b"mine", acl=[acl])
        assert (await kz(owner.get, "/private"))[0] == b"mine"
        for outsider in (stranger, wrong):
            with pytest.raises(NoAuthError):
                await kz(outsider.get, "/private")
        await kz(friend.add_auth, "digest", "alice:secret")
        assert (await kz(friend.get, "/private"))[0] == b"mine"
        acls, _stat = await kz(owner.get_acls, "/private")
        assert [(a.id.scheme, a.id.id) for a in acls] == [("digest", acl.id.id)]
    finally:
        for client in (owner, stranger, friend, wrong):
            await stopped(client)


# ---- bad input and four-letter words -------------------------------------------------------


class RawJute:
    """A hand-driven jute connection."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(1 << 30)
        self.frames: list[bytes] = []
        self.greeting = ConnectResponse()

    @classmethod
    async def open(cls, member: RunningServer, hello: ConnectRequest | None = None) -> RawJute:
        stream = await trio.open_tcp_stream("127.0.0.1", zk_port(member))
        conn = cls(stream)
        await stream.send_all((hello or ConnectRequest(timeout_ms=5000)).encode())
        conn.greeting = ConnectResponse.decode(await conn.payload())
        return conn

    async def payload(self) -> bytes:
        with trio.fail_after(10):
            while not self.frames:
                data = await self.stream.receive_some(1 << 16)
                if not data:
                    raise EOFError("the member closed the connection")
                self.frames += self.decoder.feed(data)
        return self.frames.pop(0)

    async def frame(self) -> tuple[int, int, int]:
        xid, zxid, err, _reader = await self.reply()
        return xid, zxid, err

    async def reply(self) -> tuple[int, int, int, Reader]:
        return jute_client.decode_reply_header(await self.payload())

    async def send(self, xid: int, opcode: int, request: Any) -> None:
        await self.stream.send_all(jute_client.encode_request(xid, opcode, request))

    async def request(self, xid: int, opcode: int, request: Any) -> tuple[int, int, int]:
        await self.send(xid, opcode, request)
        return await self.frame()


async def closed_without_a_word(stream: trio.SocketStream) -> bool:
    with trio.fail_after(10):
        received = b""
        while data := await stream.receive_some(1 << 16):
            received += data
    return received == b""


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x05hello",  # a frame that is no ConnectRequest
        b"\x00\x7f\xff\xff",  # a length over the frame limit
        b"\xff\xff\xff\xfe",  # a negative length
    ],
)
async def test_garbage_closes_that_connection_only(
    member: RunningServer, kazoo: KazooClient, garbage: bytes
) -> None:
    await kz(kazoo.create, "/alive", b"")
    stream = await trio.open_tcp_stream("127.0.0.1", zk_port(member))
    await stream.send_all(garbage)
    assert await closed_without_a_word(stream)
    conn = await RawJute.open(member)
    await conn.stream.send_all(b"\x00\x00\x00\x09" + b"\x00\x00\x00\x01\x00\x00\x00\x04x")
    xid, _zxid, err = await conn.frame()
    assert (xid, err) == (1, -5)
    assert await closed_without_a_word(conn.stream)
    await kz(kazoo.set, "/alive", b"still")  # the other connection is served on
    async with zkpy.connect(member.address) as zk:
        assert (await zk.get("/alive"))[0] == b"still"


async def test_an_unknown_session_is_answered_as_expired(member: RunningServer) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", zk_port(member))
    await stream.send_all(ConnectRequest(timeout_ms=5000, session_id=0x77, password=b"x").encode())
    conn = RawJute(stream)
    response = ConnectResponse.decode(await conn.payload())
    assert (response.timeout_ms, response.session_id) == (0, 0)
    assert response.password == bytes(16)  # as ZooKeeper's refusal


async def test_a_client_ahead_of_the_member_is_closed_without_a_word(member: RunningServer) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", zk_port(member))
    await stream.send_all(ConnectRequest(last_zxid_seen=1 << 40, timeout_ms=5000).encode())
    assert await closed_without_a_word(stream)


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        (b"ruok", "imok"),
        (b"isro", "rw"),
        (b"srvr", "Mode: standalone"),
        (b"stat", "Node count: "),
        (b"mntr", "zk_server_state\tstandalone"),
        (b"conf", "tickTime=500"),
        (b"envi", "zookeeper.version=3.8"),
    ],
)
async def test_four_letter_words(member: RunningServer, word: bytes, expected: str) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", zk_port(member))
    await stream.send_all(word)
    answer = b""
    with trio.fail_after(10):
        while data := await stream.receive_some(1 << 16):
            answer += data
    assert expected in answer.decode()


async def test_zookeepers_own_reads(member: RunningServer) -> None:
    """multiRead, getAllChildrenNumber, getEphemerals and whoAmI, which zkpy's own protocol
    does not have."""
    async with zkpy.connect(member.address) as zk:
        await zk.create("/r/a/b", b"deep", makepath=True)
    conn = await RawJute.open(member)
    try:
        ephemeral = CreateRequest("/r/e", b"", OPEN_ACL_UNSAFE, ephemeral=True)
        assert (await conn.request(1, jute.OP_CREATE, ephemeral))[2] == 0
        await conn.send(2, jute.OP_GET_ALL_CHILDREN_NUMBER, GetAllChildrenNumber("/r"))
        assert (await conn.reply())[3].int32() == 3
        await conn.send(3, jute.OP_GET_EPHEMERALS, GetEphemerals("/r"))
        assert (await conn.reply())[3].strings() == ("/r/e",)
        await conn.send(4, jute.OP_WHO_AM_I, WhoAmI())
        reader = (await conn.reply())[3]
        assert [(reader.string("scheme"), reader.string("id")) for _ in range(reader.int32())] == [
            ("ip", "127.0.0.1")
        ]
        reads = MultiRead(
            (GetDataRequest("/r/a/b"), GetChildrenRequest("/r"), GetDataRequest("/missing"))
        )
        await conn.send(5, jute.OP_MULTI_READ, reads)
        results = jute_client.decode_multi_results((await conn.reply())[3])
        assert [(r.opcode, r.data, r.children, r.err) for r in results] == [
            (jute.OP_GET_DATA, b"deep", (), 0),
            (jute.OP_GET_CHILDREN, b"", ("a", "e"), 0),
            (jute.OP_ERROR, b"", (), -101),
        ]
        assert results[0].stat is not None
        assert results[0].stat.data_length == 4
    finally:
        await conn.stream.aclose()


async def test_add_check_and_remove_a_persistent_watch(member: RunningServer) -> None:
    async with zkpy.connect(member.address) as zk:
        await zk.create("/p/q", b"", makepath=True)
        conn = await RawJute.open(member)
        try:
            recursive = AddWatchRequest("/p", WatchMode.PERSISTENT_RECURSIVE)
            await conn.send(1, jute.OP_ADD_WATCH, recursive)
            xid, _zxid, err, reader = await conn.reply()
            assert (xid, err, reader.int32()) == (1, 0, 0)
            for round_ in (1, 2):  # persistent: it fires every time
                await zk.set("/p/q", str(round_).encode())
                xid, _zxid, _err, reader = await conn.reply()
                assert xid == jute.XID_NOTIFICATION
                assert jute_client.decode_event(reader) == (3, 3, "/p/q")  # changed, connected
            query = WatchQuery("/p", (WatchMode.PERSISTENT_RECURSIVE,), remove=False)
            assert await conn.request(2, jute.OP_CHECK_WATCHES, query) == (2, _zxid, 0)
            child = WatchQuery("/p", (WatchMode.CHILD,), remove=False)
            assert (await conn.request(3, jute.OP_CHECK_WATCHES, child))[2] == -121
            removal = WatchQuery("/p", (WatchMode.PERSISTENT_RECURSIVE,), remove=True)
            assert (await conn.request(4, jute.OP_REMOVE_WATCHES, removal))[2] == 0
            assert (await conn.request(5, jute.OP_REMOVE_WATCHES, removal))[2] == -121
        finally:
            await conn.stream.aclose()


@pytest.mark.parametrize(
    ("requested", "granted"), [(60_000, 20 * TICK_MS), (10, 2 * TICK_MS), (4000, 4000)]
)
async def test_the_session_timeout_is_negotiated(
    member: RunningServer, requested: int, granted: int
) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", zk_port(member))
    await stream.send_all(ConnectRequest(timeout_ms=requested).encode())
    response = ConnectResponse.decode(await RawJute(stream).payload())
    assert response.timeout_ms == granted
    assert response.session_id != 0
    assert len(response.password) == 16
    assert response.has_read_only


async def test_a_client_without_the_read_only_flag_gets_none(member: RunningServer) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", zk_port(member))
    await stream.send_all(ConnectRequest(timeout_ms=4000, has_read_only=False).encode())
    response = ConnectResponse.decode(await RawJute(stream).payload())
    assert not response.has_read_only
    assert response.session_id != 0


async def test_four_bytes_that_are_no_word_close_the_connection_without_a_word(
    member: RunningServer,
) -> None:
    """As ZooKeeper answers them (read as a frame's length, they are over any limit)."""
    stream = await trio.open_tcp_stream("127.0.0.1", zk_port(member))
    await stream.send_all(b"xyzw")
    assert await closed_without_a_word(stream)


async def test_a_reused_xid_closes_that_connection_and_its_write_still_commits(
    member: RunningServer,
) -> None:
    """A write that reuses the xid of one still in flight is answered -5 at once, out of the
    reply order; the earlier write's reply, made when it commits, must still find its own
    shape (a create's path), and the member serves on."""
    conn = await RawJute.open(member)
    create = jute_client.encode_request(
        7, jute.OP_CREATE, CreateRequest("/x", b"", OPEN_ACL_UNSAFE)
    )
    again = jute_client.encode_request(7, jute.OP_SET_DATA, SetDataRequest("/x", b"again"))
    await conn.stream.send_all(create + again)
    answers = []
    with contextlib.suppress(EOFError):
        while True:
            answers.append(await conn.frame())
    assert [(xid, err) for xid, _zxid, err in answers][:1] == [(7, -5)]
    async with zkpy.connect(member.address) as zk:

        async def created() -> bool:
            return await zk.exists("/x") is not None

        await wait_until(created, what="the create, committed")
        assert (await zk.get("/x"))[0] == b""


async def test_a_session_moves_between_the_protocols(member: RunningServer) -> None:
    """A session opened over ZooKeeper's protocol resumes over zkpy's with its id and password:
    one session table. The older connection is closed, and both ephemerals are the session's."""
    conn = await RawJute.open(member)
    session, password = conn.greeting.session_id, conn.greeting.password
    first = CreateRequest("/e1", b"", OPEN_ACL_UNSAFE, ephemeral=True)
    assert (await conn.request(1, jute.OP_CREATE, first))[2] == 0
    async with RawConnection.open(member.port) as raw:
        reply = await raw.handshake(session_id=session, password=password, timeout_ms=5000)
        assert (reply.error, reply.session_id) == (0, session)
        assert await closed_without_a_word(conn.stream)
        await raw.request(1, CreateRequest("/e2", b"", OPEN_ACL_UNSAFE, ephemeral=True))
        assert (await raw.reply_to(1))[1] == 0
        async with zkpy.connect(member.address) as zk:
            for path in ("/e1", "/e2"):
                stat = await zk.exists(path)
                assert stat is not None
                assert stat.ephemeral_owner == session


async def test_get_acl_without_admin_hides_digest_hashes(member: RunningServer) -> None:
    """As ZooKeeper 3.8: READ suffices to read an ACL, ADMIN to see its digest hashes."""
    owner = await started(member, auth_data=[("digest", "alice:secret")])
    reader = await started(member)
    try:
        alice = make_digest_acl("alice", "secret", all=True)
        await kz(owner.create, "/acl", b"", acl=[alice, make_acl("world", "anyone", read=True)])
        assert (await kz(owner.get_acls, "/acl"))[0][0].id.id == alice.id.id
        ids = [(entry.id.scheme, entry.id.id) for entry in (await kz(reader.get_acls, "/acl"))[0]]
        assert ids == [("digest", "alice:x"), ("world", "anyone")]
    finally:
        await stopped(owner)
        await stopped(reader)


async def test_the_config_names_the_zookeeper_port_to_zookeepers_clients(tmp_path: Path) -> None:
    """ZooKeeper's clients connect to the client address /zookeeper/config names (Curator's
    ensemble tracker, updateServerList): on the ZooKeeper port it is the member's zk_port, in
    getData and multiRead alike, with the Stat's dataLength that of the text sent; zkpy's own
    clients read the msgpack port there."""
    async with (
        running_server(tmp_path / "data", client_port=free_port(), zk_port=free_port()) as member,
        zkpy.connect(member.address) as zk,
    ):
        native, native_stat = await zk.get(CONFIG_PATH)
        conn = await RawJute.open(member)
        try:
            await conn.send(1, jute.OP_GET_DATA, GetDataRequest(CONFIG_PATH))
            reader = (await conn.reply())[3]
            data, stat = reader.buffer(), reader.stat()
            await conn.send(2, jute.OP_MULTI_READ, MultiRead((GetDataRequest(CONFIG_PATH),)))
            (result,) = jute_client.decode_multi_results((await conn.reply())[3])
        finally:
            await conn.stream.aclose()
    assert parse_membership(native).members[0].client_port == member.port
    (line,) = [line for line in data.decode().splitlines() if line.startswith("server.")]
    assert line.endswith(f";127.0.0.1:{zk_port(member)}")
    assert parse_membership(data).members[0].client_port == zk_port(member)
    assert stat.data_length == len(data)
    assert stat._replace(data_length=0) == native_stat._replace(data_length=0)
    assert (result.data, result.stat) == (data, stat)
