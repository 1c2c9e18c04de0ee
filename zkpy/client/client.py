"""The async client, on trio or asyncio: one session over one connection at a time, pipelined
requests.

`connect()` opens a session and runs the connection in the background of an ``async with`` block.
Requests are pipelined (many in flight, replies matched by xid, FIFO order kept by the server).
When the connection breaks, requests in flight fail with `ConnectionLossError`, the client moves
to another listed server and resumes its session (and its watches, with the last zxid it saw);
requests made meanwhile wait for that. If the server says the session expired, the client is
LOST for good: every request raises `SessionExpiredError`, as with ZooKeeper's own client;
unless it was made with ``new_session_on_expiry=True``: then LOST is followed by a new session
(CONNECTED again, with a new `session_id`), as kazoo's client does.

A client made with ``read_only=True`` may be served by a member cut off from its quorum
(`zkpy.core.readonly`): it is then CONNECTED with `read_only` true, on a session of that
member's own, and writes fail with `NotReadOnlyError`. Meanwhile it asks the other members now
and then whether they serve, and moves to the first that does.

Every protocol rule (what to send, what a server frame means, when to ping or give up) is in
`zkpy.client.connection`, which does no I/O; this module connects sockets, moves bytes between
them and that machine, feeds it the time and wakes the tasks that wait.
"""

from __future__ import annotations

import enum
import logging
import random
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, overload

import anyio
import anyio.abc
import trio

from zkpy._net.outbox import Flusher
from zkpy._net.receiver import SPIN_BEFORE_WAIT_S, check_spin
from zkpy.client import backend, builders
from zkpy.client.backend import BROKEN, Link, OutboxLike, Waiter
from zkpy.client.chroot import split_chroot
from zkpy.client.connection import (
    Call,
    ClientConnection,
    ConnectionLost,
    Event,
    HandshakeRefused,
    RemoteProtocolError,
    SessionLost,
    State,
    WatchFired,
)
from zkpy.client.streams import Feed, WatchStream
from zkpy.client.watches import WatchCallback
from zkpy.core import paths
from zkpy.core.errors import (
    ConnectionLossError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    NotReadOnlyError,
    NoWatcherError,
    SessionExpiredError,
    SessionMovedError,
    ZkError,
)
from zkpy.core.membership import MemberSpec
from zkpy.core.requests import (
    CloseSessionRequest,
    CreateRequest,
    DeleteRequest,
    MultiOp,
    MultiRequest,
    RemoveWatchesRequest,
    Request,
)
from zkpy.core.types import ACL, OPEN_ACL_UNSAFE, Stat, WatchedEvent, WatchMode
from zkpy.errors import single_error

log = logging.getLogger("zkpy.client")

BROKEN_IN_HANDSHAKE = (trio.BrokenResourceError, anyio.BrokenResourceError)
READ_ONLY_SEEK_FIRST_S = 0.5  # a read-only client first asks the others this long after
READ_ONLY_SEEK_MAX_S = 30.0  # and then ever less often, down to once in this long


class ConnectionState(enum.Enum):
    """The client's view of its session, as kazoo names it."""

    CONNECTING = "CONNECTING"  # before the first session is established
    CONNECTED = "CONNECTED"
    SUSPENDED = "SUSPENDED"  # connection lost; the session may still be alive
    LOST = "LOST"  # the session expired or was closed: ephemerals and watches are gone
    # (with `new_session_on_expiry`, CONNECTED follows LOST: a new session, a new session_id)


def parse_hosts(hosts: str | Sequence[str]) -> list[tuple[str, int]]:
    """``"a:1,b:2"`` (or a list of ``"host:port"``) as (host, port) pairs; port 2181 if none."""
    items = hosts.split(",") if isinstance(hosts, str) else list(hosts)
    parsed: list[tuple[str, int]] = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep:
            host, port = item, "2181"
        host = host.strip("[]")
        try:
            parsed.append((host, int(port)))
        except ValueError:
            raise ValueError(f"bad server address {item!r}") from None
    if not parsed:
        raise ValueError("no server address given")
    return parsed


class Countdown:
    """One wake-up for a whole batch of replies: `set()` once per reply, `wait()` for all."""

    def __init__(self, count: int) -> None:
        self.remaining = count
        self._event = backend.new_event()
        if count == 0:
            self._event.set()

    def set(self) -> None:
        """One more reply is in."""
        self.remaining -= 1
        if self.remaining <= 0:
            self._event.set()

    async def wait(self) -> None:
        """Wait until every reply is in."""
        await self._event.wait()


def _first(result: Any) -> Any:
    return result[0]


class Transaction:
    """A multi: queue operations, then `commit()` them atomically (all or nothing).

    `commit()` returns one result per operation, kazoo style: the created path, a Stat, or True;
    if the multi failed, the failing operation's entry is its exception and the others are
    `RolledBackError` (or the error that stopped them).
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._ops: list[MultiOp] = []
        self.committed = False

    def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        acl: Sequence[ACL] | None = None,
        ephemeral: bool = False,
        sequential: bool = False,
        container: bool = False,
        ttl: int | None = None,
    ) -> Transaction:
        """Add a create (its result: the created path)."""
        request = builders.create(
            path, data, self._client._acl(acl), ephemeral, sequential, container, ttl
        )
        self._ops.append(request)
        return self

    def delete(self, path: str, version: int = -1) -> Transaction:
        """Add a delete (its result: True)."""
        self._ops.append(builders.delete(path, version))
        return self

    def set_data(self, path: str, data: bytes, version: int = -1) -> Transaction:
        """Add a set (its result: the node's new Stat)."""
        self._ops.append(builders.set_data(path, data, version))
        return self

    set = set_data

    def check(self, path: str, version: int) -> Transaction:
        """Add a check that the node's version is `version` (its result: True)."""
        self._ops.append(builders.check(path, version))
        return self

    async def commit(self) -> list[Any]:
        """Send the operations as one multi; one result per operation (see the class)."""
        if self.committed:
            raise ValueError("this transaction was already committed")
        request = builders.multi(self._ops)
        self.committed = True
        return await self._client._multi(request)

    async def __aenter__(self) -> Transaction:
        return self

    async def __aexit__(self, kind: object, value: object, traceback: object) -> None:
        if kind is None and not self.committed:
            await self.commit()


class Client:
    """A zkpy session. Make one with `zkpy.connect(...)`.

    The protocol (handshake, xids, replies, pings, watch events, replays) is decided by a
    sans-I/O `ClientConnection`; this class runs its socket: it connects, feeds it what arrives
    and the time, sends what it returns and wakes the tasks waiting for replies.
    """

    def __init__(
        self,
        hosts: str | Sequence[str],
        *,
        session_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        default_acl: Sequence[ACL] = OPEN_ACL_UNSAFE,
        auth: Sequence[tuple[str, str]] = (),
        randomize_hosts: bool = True,
        tls: ssl.SSLContext | None = None,
        spin_before_wait: float = SPIN_BEFORE_WAIT_S,
        new_session_on_expiry: bool = False,
        read_only: bool = False,
    ) -> None:
        check_spin(spin_before_wait, "spin_before_wait")
        self.new_session_on_expiry = new_session_on_expiry
        self.can_be_read_only = read_only
        servers, self.chroot = split_chroot(hosts)
        self.hosts = parse_hosts(servers)
        self.spin_before_wait = spin_before_wait
        if randomize_hosts:
            random.shuffle(self.hosts)
        self.requested_timeout_ms = int(session_timeout * 1000)
        self.connect_timeout = connect_timeout
        self.tls = tls
        self.default_acl = tuple(default_acl)
        self.server: tuple[str, int] | None = None
        self._requested_timeout = session_timeout
        self._conn = ClientConnection(
            self.requested_timeout_ms,
            auth=[builders.auth(scheme, credential) for scheme, credential in auth],
            chroot=self.chroot,
            can_be_read_only=read_only,
        )
        self._state = ConnectionState.CONNECTING
        self._state_changed: Waiter | None = None  # made by the first waiter, on its loop
        self._listeners: list[Callable[[ConnectionState], Any]] = []
        self._state_channels: list[Feed[ConnectionState]] = []
        self._flusher = Flusher()
        self._outbox: OutboxLike | None = None  # the current connection's
        self._closing = False
        self._connection_scope: anyio.CancelScope | None = None
        # the running loop's (trio's or asyncio's), set by `_start`: the request path's own
        self._now: Callable[[], float] = backend.clock()
        self._new_event: Callable[[], Waiter] = backend.new_event
        self._leftover: list[Event] = []  # what came with the handshake reply
        self._next_host: tuple[str, int] | None = None  # where to connect next, if not in turn
        self._heard_serving_at = 0.0  # when a member in a quorum last heard from the session

    # ---- the session, as the protocol machine knows it -----------------------------------------

    @property
    def session_id(self) -> int:
        """The session's id (0 before the first handshake)."""
        return self._conn.session_id

    @property
    def session_password(self) -> bytes:
        """The password that resumes the session on another connection."""
        return self._conn.password

    @property
    def session_timeout(self) -> float:
        """The session timeout in seconds: the negotiated one once connected."""
        if self._conn.session_id == 0:
            return self._requested_timeout
        return self._conn.timeout_ms / 1000

    @property
    def last_zxid(self) -> int:
        """The highest zxid this session has seen from a server."""
        return self._conn.last_zxid

    @property
    def _pending(self) -> deque[Call]:
        return self._conn.pending

    @property
    def _next_xid(self) -> int:
        return self._conn.next_xid

    @_next_xid.setter
    def _next_xid(self, xid: int) -> None:
        self._conn.next_xid = xid

    @property
    def _lost_error(self) -> ZkError | None:
        return self._conn.error

    # ---- state -------------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """CONNECTING, CONNECTED, SUSPENDED or LOST."""
        return self._state

    @property
    def read_only(self) -> bool:
        """Whether the client is connected to a member without a quorum, which answers its
        reads and refuses its writes (with ``read_only=True`` only)."""
        return self._conn.read_only and self._state is ConnectionState.CONNECTED

    @property
    def connected(self) -> bool:
        """Whether requests can be sent now."""
        return self._state is ConnectionState.CONNECTED

    def add_listener(self, listener: Callable[[ConnectionState], Any]) -> None:
        """Call `listener(state)` on every state change (from the client's task: don't block)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[ConnectionState], Any]) -> None:
        """Stop calling `listener`."""
        self._listeners.remove(listener)

    @asynccontextmanager
    async def state_changes(self) -> AsyncIterator[Feed[ConnectionState]]:
        """``async with zk.state_changes() as states: async for state in states: ...``
        (or ``await states.receive()``)."""
        feed = Feed[ConnectionState]()
        self._state_channels.append(feed)
        try:
            yield feed
        finally:
            self._state_channels.remove(feed)
            feed.close()

    def _set_state(self, state: ConnectionState) -> None:
        if state is self._state:
            return
        log.debug("session %#x: %s -> %s", self.session_id, self._state.value, state.value)
        self._state = state
        if self._state_changed is not None:
            self._state_changed.set()
            self._state_changed = None
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:
                log.exception("state listener failed")
        for channel in self._state_channels:
            channel.put(state)

    async def wait_connected(self) -> None:
        """Wait until the session is connected; raise if it is lost or the client closed."""
        while self._state is not ConnectionState.CONNECTED:
            self._raise_if_dead()
            if self._state_changed is None:
                self._state_changed = self._new_event()
            await self._state_changed.wait()

    def _raise_if_dead(self) -> None:
        if self._lost_error is not None:
            raise self._lost_error
        if self._closing:
            raise ConnectionLossError("the client is closed")

    # ---- connection management -------------------------------------------------------------

    async def _start(self, tasks: backend.Tasks) -> None:
        self._now = backend.clock()
        self._new_event = backend.event_class()
        await tasks.start(self._run)

    async def _run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        started = False
        attempt = 0
        while not self._closing and self._lost_error is None:
            host, self._next_host = self._next_host, None
            if host is None:
                host = self.hosts[attempt % len(self.hosts)]
                attempt += 1
            try:
                link = await self._open(host)
            except (OSError, TimeoutError, ConnectionLossError, NotReadOnlyError) as err:
                log.debug("cannot reach %s:%d: %s", *host, err)
                if isinstance(err, NotReadOnlyError):
                    self._expire_if_unheard()
                if attempt % len(self.hosts) == 0:
                    if not started and attempt >= 3 * len(self.hosts):
                        raise ConnectionLossError(f"no server reachable in {self.hosts}") from err
                    await anyio.sleep(min(1.0, 0.05 * attempt) * random.uniform(0.5, 1.0))
                continue
            except SessionExpiredError as err:
                self._lose(err)  # with new_session_on_expiry, the loop goes on with a new one
                if not started:
                    raise
                self._next_host = host  # the new session, where the old one was refused
                continue
            if not started:
                started = True
                task_status.started()
            await self._serve_connection(link)
            if self._state is ConnectionState.CONNECTED and not self._closing:
                self._set_state(ConnectionState.SUSPENDED)
        if not started:
            task_status.started()

    async def _open(self, host: tuple[str, int]) -> Link:
        """Connect to `host` and complete the handshake; raise the refusal if there is one."""
        with anyio.fail_after(self.connect_timeout):
            link = await backend.open_link(host, self.tls, self._flusher, self.spin_before_wait)
            try:
                events = await self._handshake(link, host)
            except BROKEN_IN_HANDSHAKE as err:  # e.g. reset by a server that is dying
                self._conn.connection_lost(ConnectionLossError(str(err)))
                await link.aclose()
                raise ConnectionLossError(f"connection broken in the handshake: {err}") from err
            except BaseException as err:
                self._conn.connection_lost(ConnectionLossError(str(err)))
                with anyio.CancelScope(shield=True):
                    await link.aclose()
                raise
        self.server = host
        self._leftover = events
        return link

    async def _handshake(self, link: Link, host: tuple[str, int]) -> list[Event]:
        conn = self._conn
        conn.connect(self._now(), str(host))
        await link.send_all(conn.data_to_send())
        events: list[Event] = []
        while conn.state is State.HANDSHAKING:
            data = await link.receive(1 << 16)
            if not data:
                raise ConnectionLossError("server closed the connection in the handshake")
            events = conn.receive_data(data, self._now())
        first = events[0]  # what ended the handshake: its reply comes first
        if isinstance(first, HandshakeRefused | ConnectionLost):
            raise first.error
        return events

    def _expire_if_unheard(self) -> None:
        """A member in read-only mode refused the session: it is the ensemble's, and only a
        member in a quorum may resume it. Once the client has reached none for longer than
        the session's timeout, a quorum expires the session (within a tick of the leader's
        clock) and nothing the client does can keep it: the client gives it up as expired,
        the safe side for what it held, and a read-only session follows (`_renews`)."""
        conn = self._conn
        if conn.session_id and self._now() - self._heard_serving_at > conn.timeout_ms / 1000:
            self._lose(SessionExpiredError(f"session {conn.session_id:#x} has expired"))

    async def _serve_connection(self, link: Link) -> None:
        outbox = self._outbox = link.outbox
        self._send_queued()  # the auth and watches the machine replays first
        self._flusher.flush()
        self._set_state(ConnectionState.CONNECTED)
        read_only = self._conn.read_only
        if read_only:
            log.info("connected read-only to %s (it has no quorum)", self.server)
        try:
            with anyio.CancelScope() as scope:
                self._connection_scope = scope
                async with backend.open_tasks() as tasks:
                    tasks.start_soon(self._write_loop, link, scope)
                    tasks.start_soon(self._timer_loop)
                    if read_only:
                        tasks.start_soon(self._seek_serving_member, scope)
                    await self._read_loop(link, scope)
        finally:
            if not read_only:
                self._heard_serving_at = self._conn.last_heard
            self._connection_scope = None
            self._outbox = None
            outbox.close()
            with anyio.CancelScope(shield=True):
                await link.aclose()
            self._handle(
                self._conn.connection_lost(
                    ConnectionLossError(f"connection to {self.server} was lost")
                )
            )

    async def _seek_serving_member(self, scope: anyio.CancelScope) -> None:
        """While connected read-only: ask the other members, now and then, whether they serve
        in a quorum (as kazoo and ZooKeeper's client ask `isro`), and move to the first that
        does. The read-only session is unknown there: a new session follows (`_renews`)."""
        delay = READ_ONLY_SEEK_FIRST_S
        while True:
            await anyio.sleep(delay * random.uniform(0.8, 1.2))
            for host in self.hosts:
                if host != self.server and await backend.member_serves(
                    host, self.tls, self.connect_timeout
                ):
                    log.info("%s:%d serves; leaving the read-only member", *host)
                    self._next_host = host
                    scope.cancel()
                    return
            delay = min(2 * delay, READ_ONLY_SEEK_MAX_S)

    def _send_queued(self) -> None:
        """Queue what the machine has for the connection; it leaves at the next flush."""
        data = self._conn.data_to_send()
        if data and self._outbox is not None:
            self._outbox.push(data)

    async def _write_loop(self, link: Link, scope: anyio.CancelScope) -> None:
        """Sends what a direct flush could not (the socket was full, or TLS; under asyncio,
        everything)."""
        try:
            await link.run_writer()
        except BROKEN:
            scope.cancel()

    async def _timer_loop(self) -> None:
        """Feeds the machine the time when it has something to do: a ping, or giving up on a
        silent server."""
        conn = self._conn
        now = self._now
        while conn.state is State.CONNECTED:
            await anyio.sleep_until(max(now() + 0.01, conn.next_deadline()))
            self._handle(conn.tick(now()))
            self._send_queued()
            self._flusher.flush()

    async def _read_loop(self, link: Link, scope: anyio.CancelScope) -> None:
        leftover, self._leftover = self._leftover, []
        self._handle(leftover)
        conn = self._conn
        try:
            while conn.state is State.CONNECTED:
                data = await link.receive(1 << 16)
                if not data or conn.state is not State.CONNECTED:
                    # (the timer may have ended the connection while this read waited: a
                    # process resumed after a pause runs both at once; its bytes are moot)
                    break
                self._on_data(data)
        except BROKEN:
            pass
        scope.cancel()

    def _on_data(self, data: bytes | bytearray) -> None:
        self._handle(self._conn.receive_data(data, self._now()))
        self._send_queued()
        self._flusher.flush()

    def _handle(self, events: list[Event]) -> None:
        """Carry out what the machine says: wake callers, run watches, end what is over."""
        for event in events:
            if type(event) is Call:
                event.token.set()
            elif type(event) is WatchFired:
                for callback in event.callbacks:
                    try:
                        callback(event.event)
                    except Exception:
                        log.exception("watch callback failed")
            elif type(event) is ConnectionLost:
                self._connection_ended(event.error)
            elif type(event) is SessionLost:
                self._session_ended(event)

    def _connection_ended(self, reason: ZkError) -> None:
        if isinstance(reason, SessionMovedError):
            # the session was attached to another connection (one of ours the ensemble saw
            # late): this one may no longer write; reconnecting attaches the session again
            log.info("session %#x moved away from %s; reconnecting", self.session_id, self.server)
        elif isinstance(reason, RemoteProtocolError):
            log.warning("bad frame from %s: %s", self.server, reason)
        else:
            log.info("%s", reason)
        if self._state is ConnectionState.CONNECTED and not self._closing:
            self._set_state(ConnectionState.SUSPENDED)  # new calls wait for the next connection
        if self._connection_scope is not None:
            self._connection_scope.cancel()

    def _session_ended(self, event: SessionLost) -> None:
        for callback in event.orphans:
            fail = getattr(callback, "fail", None)
            if fail is not None:
                fail(event.error)
        if self._renews(event.error):
            self._conn = self._next_session()
        self._set_state(ConnectionState.LOST)
        if self._connection_scope is not None:
            self._connection_scope.cancel()

    def _renews(self, error: ZkError) -> bool:
        """Whether the end of the session is followed by a new one: it expired (`close()` sets
        `_closing` first; a refused auth is another error) and the client was made with
        `new_session_on_expiry` or `read_only` (a read-only session is a member's own, and
        ends whenever that member joins a quorum again, as with kazoo)."""
        renews = self.new_session_on_expiry or self.can_be_read_only
        return renews and not self._closing and type(error) is SessionExpiredError

    def _next_session(self) -> ClientConnection:
        """A fresh machine for a new session: the same auth and chroot, and the last zxid seen
        (so that the new session never reads older data than the old one did)."""
        old = self._conn
        log.info("session %#x expired; starting a new session", old.session_id)
        conn = ClientConnection(
            self.requested_timeout_ms,
            auth=old.auth,
            chroot=self.chroot,
            can_be_read_only=self.can_be_read_only,
        )
        conn.last_zxid = old.last_zxid
        return conn

    def _lose(self, error: ZkError) -> None:
        """The session is over: fail everything now and from now on."""
        self._handle(self._conn.end_session(error))

    async def close(self) -> None:
        """Close the session: its ephemerals are deleted at once. Idempotent."""
        if self._closing or self._lost_error is not None:
            self._closing = True
            return
        if self._state is ConnectionState.CONNECTED:
            with anyio.move_on_after(self.connect_timeout):
                try:
                    await self._call(CloseSessionRequest())
                except ZkError:
                    pass
        self._closing = True
        self._lose(SessionExpiredError("the session was closed"))

    # ---- requests ----------------------------------------------------------------------------

    async def _call(self, request: Request, watch: WatchCallback | None = None) -> Any:
        """Send `request` and wait for its result. A `watch` is registered as the reply
        arrives, before any later frame is handled."""
        if self._state is not ConnectionState.CONNECTED:
            await self._ready_to_send()
        call = self._send(request, self._new_event(), self._now(), watch)
        outbox = self._outbox
        assert outbox is not None  # `_send` checked
        outbox.push(self._conn.data_to_send())
        if len(self._conn.pending) == 1:
            self._flusher.flush()  # alone in flight: straight to the socket
        else:
            # other tasks have requests in flight, and more may be queuing theirs in this
            # scheduler turn: the writer sends them all together right after
            outbox.send_soon()
        await call.token.wait()
        return call.outcome()

    async def _ready_to_send(self) -> None:
        """Wait (up to a session timeout) for a connection; raise if there will be none."""
        if self._state is not ConnectionState.CONNECTED:
            with anyio.move_on_after(self.session_timeout):
                await self.wait_connected()
            if not self.connected:
                self._raise_if_dead()
                raise ConnectionLossError("not connected to any server")

    def _send(
        self,
        request: Request,
        token: Waiter | Countdown,
        now: float,
        watch: WatchCallback | None = None,
    ) -> Call:
        """Hand `request` to the machine (the caller queues its bytes and flushes)."""
        if self._outbox is None or self._conn.state is not State.CONNECTED:
            raise ConnectionLossError("not connected to any server")
        return self._conn.send_request(request, now, token, watch)

    def pipeline(self) -> Pipeline:
        """A batch of requests sent together and answered in order, without a task per
        request (not atomic: use `transaction()` for all-or-nothing).

        ``async with zk.pipeline() as p: p.set("/a", b"1"); p.get("/b")`` then ``p.results``.
        """
        return Pipeline(self)

    def _acl(self, acl: Sequence[ACL] | None) -> Sequence[ACL]:
        """The ACL a create uses (the builders check it)."""
        return self.default_acl if acl is None else acl

    @overload
    async def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        acl: Sequence[ACL] | None = None,
        ephemeral: bool = False,
        sequential: bool = False,
        container: bool = False,
        ttl: int | None = None,
        makepath: bool = False,
        include_data: Literal[False] = False,
    ) -> str: ...
    @overload
    async def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        acl: Sequence[ACL] | None = None,
        ephemeral: bool = False,
        sequential: bool = False,
        container: bool = False,
        ttl: int | None = None,
        makepath: bool = False,
        include_data: Literal[True],
    ) -> tuple[str, Stat]: ...
    @overload
    async def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        acl: Sequence[ACL] | None = None,
        ephemeral: bool = False,
        sequential: bool = False,
        container: bool = False,
        ttl: int | None = None,
        makepath: bool = False,
        include_data: bool,
    ) -> str | tuple[str, Stat]: ...

    async def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        acl: Sequence[ACL] | None = None,
        ephemeral: bool = False,
        sequential: bool = False,
        container: bool = False,
        ttl: int | None = None,
        makepath: bool = False,
        include_data: bool = False,
    ) -> str | tuple[str, Stat]:
        """Create a znode; return its path (with the sequential suffix), or (path, Stat) when
        `include_data` is set. `makepath` creates missing parents as persistent empty nodes.

        `container=True` makes a container node: the ensemble deletes it once it has had a
        child and has none left. `ttl` (milliseconds) makes a persistent node that is deleted
        once it has had no children and no change for that long. Both are reaped by the
        leader within `container_check_interval_ms` (a minute by default) of becoming due."""
        request = builders.create(path, data, self._acl(acl), ephemeral, sequential, container, ttl)
        try:
            body = await self._call(request)
        except NoNodeError:
            if not makepath:
                raise
            await self.ensure_path(paths.parent(request.path))
            body = await self._call(request)
        created: str = body[0]
        stat: Stat = body[1]
        return (created, stat) if include_data else created

    async def ensure_path(self, path: str, *, acl: Sequence[ACL] | None = None) -> None:
        """Create `path` and any missing ancestors (persistent, empty); no error if present."""
        path = paths.validate(path)
        entries = builders.acl(self._acl(acl))
        if path == "/" or await self.exists(path) is not None:
            return
        for each in [*paths.ancestors(path), path]:
            try:
                await self._call(CreateRequest(each, b"", entries))
            except NodeExistsError:
                pass

    async def get(self, path: str, *, watch: WatchCallback | None = None) -> tuple[bytes, Stat]:
        """The node's data and Stat; `watch` fires once on its next change or deletion."""
        result: tuple[bytes, Stat] = await self._call(
            builders.get_data(path, watch is not None), watch
        )
        return result

    async def exists(self, path: str, *, watch: WatchCallback | None = None) -> Stat | None:
        """The node's Stat, or None; `watch` fires once on its creation, change or deletion."""
        result: Stat | None = await self._call(builders.exists(path, watch is not None), watch)
        return result

    @overload
    async def get_children(
        self,
        path: str,
        *,
        watch: WatchCallback | None = None,
        include_data: Literal[False] = False,
    ) -> list[str]: ...
    @overload
    async def get_children(
        self, path: str, *, watch: WatchCallback | None = None, include_data: Literal[True]
    ) -> tuple[list[str], Stat]: ...
    @overload
    async def get_children(
        self, path: str, *, watch: WatchCallback | None = None, include_data: bool
    ) -> list[str] | tuple[list[str], Stat]: ...

    async def get_children(
        self, path: str, *, watch: WatchCallback | None = None, include_data: bool = False
    ) -> list[str] | tuple[list[str], Stat]:
        """The names of `path`'s children, sorted; with `include_data`, (names, parent Stat)."""
        children: list[str]
        stat: Stat
        children, stat = await self._call(builders.get_children(path, watch is not None), watch)
        return (children, stat) if include_data else children

    async def set(self, path: str, data: bytes, version: int = -1) -> Stat:
        """Replace the node's data (if its version is `version`, unless -1); its new Stat."""
        result: Stat = await self._call(builders.set_data(path, data, version))
        return result

    set_data = set

    async def delete(self, path: str, version: int = -1, *, recursive: bool = False) -> None:
        """Delete a znode; with `recursive`, its whole subtree first (not atomic)."""
        if recursive:
            await self._delete_tree(path)
            return
        await self._call(builders.delete(path, version))

    async def _delete_tree(self, root: str) -> None:
        """Delete `root` and everything below it, deepest first. Iterative (paths may nest
        about 2,000 levels deep, more than Python's recursion allows): each stack entry is a
        path and whether its children have already been put above it."""
        stack: list[tuple[str, bool]] = [(paths.validate(root), False)]
        while stack:
            path, expanded = stack.pop()
            try:
                if not expanded:
                    children = await self.get_children(path)
                    stack.append((path, True))
                    stack.extend((paths.join(path, child), False) for child in children)
                    continue
                await self._call(DeleteRequest(path, -1))
            except NoNodeError:
                continue
            except NotEmptyError:
                stack.append((path, False))  # someone added a child meanwhile: look again

    async def sync(self, path: str = "/") -> str:
        """Make the next read on this session reflect every write committed before the sync."""
        result: str = await self._call(builders.sync(path))
        return result

    async def reconfig(
        self,
        add: Iterable[str | MemberSpec] = (),
        remove: Iterable[int] = (),
        from_version: int = -1,
        new_members: Iterable[str | MemberSpec] | None = None,
    ) -> tuple[bytes, Stat]:
        """Change the ensemble's membership (super user only): add members, given as
        ``"N=HOST:CLIENT_PORT:PEER_PORT[:observer]"`` or `MemberSpec`, and remove members by
        id, if the membership's version is still `from_version` (-1: any). Or give
        `new_members` alone, the whole new membership (ZooKeeper's non-incremental reconfig:
        members left out are removed; a listed member keeps its client address). Returns the
        new membership's text (as /zookeeper/config holds it) and that node's Stat."""
        request = builders.reconfig(add, remove, from_version, new_members)
        result: tuple[bytes, Stat] = await self._call(request)
        return result

    async def get_acl(self, path: str) -> tuple[list[ACL], Stat]:
        """The node's ACL and Stat."""
        result: tuple[list[ACL], Stat] = await self._call(builders.get_acl(path))
        return result

    async def set_acl(self, path: str, acl: Sequence[ACL], version: int = -1) -> Stat:
        """Replace the node's ACL (if its ACL version is `version`, unless -1); its new Stat."""
        result: Stat = await self._call(builders.set_acl(path, acl, version))
        return result

    async def add_auth(self, scheme: str, credential: str) -> None:
        """Authenticate this session (``add_auth("digest", "user:password")``); kept across
        reconnects. A refusal raises `AuthFailedError` and ends the session, as in ZooKeeper."""
        request = builders.auth(scheme, credential)
        try:
            await self._call(request)  # the machine keeps it, for every later connection
        except ZkError as err:
            self._lose(err)
            raise

    def transaction(self) -> Transaction:
        """A new multi to fill and commit (see `Transaction`)."""
        return Transaction(self)

    async def _multi(self, request: MultiRequest) -> list[Any]:
        results: list[Any] = await self._call(request)
        return results

    async def remove_watch(self, path: str, watch: WatchCallback) -> bool:
        """Remove a one-shot watch left by ``get`` / ``exists`` / ``get_children`` with
        ``watch=``; the server forgets it too once no other local watch of its kind needs it.
        True if it was still registered (it had not fired)."""
        found, emptied = self._conn.watches.remove_one_shot(path, watch)
        for mode in emptied:
            try:
                await self._call(builders.remove_watches(path, mode))
            except NoWatcherError:
                pass  # it fired, or the server forgot it with a connection: nothing to remove
        return found

    @asynccontextmanager
    async def watch(self, path: str, *, recursive: bool = False) -> AsyncIterator[WatchStream]:
        """A persistent watch (ZooKeeper's addWatch), as an async iterator of events.

        ``async with zk.watch("/app", recursive=True) as events: async for event in events:``
        With `recursive`, it sees CREATED / DELETED / CHANGED for the path and every descendant;
        otherwise every event on the path itself, CHILD included. Leaving the block removes the
        registration on the server.
        """
        path = paths.validate(path)
        mode = WatchMode.PERSISTENT_RECURSIVE if recursive else WatchMode.PERSISTENT
        stream = WatchStream(path, mode)
        first = self._conn.watches.add_stream(stream)
        try:
            if first:
                await self._call(builders.add_watch(path, mode))
            yield stream
        finally:
            stream.close()
            if self._conn.watches.remove_stream(stream) and self.connected:
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.connect_timeout):
                    try:
                        await self._call(RemoveWatchesRequest(path, mode))
                    except ZkError:
                        pass


class Pipeline:
    """Queue reads and writes, then `execute()` them in one go; results come back in order.

    Each queued call returns the index of its result. `execute(raise_on_error=False)` puts an
    exception instance where a request failed, instead of raising the first error; a request
    refused before sending (a bad path, data that is not bytes) fails there too, not when queued.
    Reads take a `watch` as the client's own calls do; it is set when the read is answered.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._requests: list[Request | ZkError] = []
        self._converters: list[Callable[[Any], Any] | None] = []  # None: the result as it is
        self._watches: list[WatchCallback | None] = []
        self.results: list[Any] = []

    def __len__(self) -> int:
        return len(self._requests)

    def _add(
        self,
        build: Callable[[], Request],
        convert: Callable[[Any], Any] | None = None,
        watch: WatchCallback | None = None,
    ) -> int:
        try:
            request: Request | ZkError = build()
        except ZkError as err:
            request = err
        self._requests.append(request)
        self._converters.append(convert)
        self._watches.append(watch)
        return len(self._requests) - 1

    def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        acl: Sequence[ACL] | None = None,
        ephemeral: bool = False,
        sequential: bool = False,
        container: bool = False,
        ttl: int | None = None,
        include_data: bool = False,
    ) -> int:
        """Queue a create; its result is the created path, or (path, Stat) with `include_data`."""
        entries = self._client._acl(acl)
        return self._add(
            lambda: builders.create(path, data, entries, ephemeral, sequential, container, ttl),
            tuple if include_data else _first,
        )

    def get(self, path: str, *, watch: WatchCallback | None = None) -> int:
        """Queue a read of the node's data; its result is (data, Stat)."""
        return self._add(lambda: builders.get_data(path, watch is not None), watch=watch)

    def exists(self, path: str, *, watch: WatchCallback | None = None) -> int:
        """Queue an exists; its result is the Stat, or None."""
        return self._add(lambda: builders.exists(path, watch is not None), watch=watch)

    def get_children(self, path: str, *, watch: WatchCallback | None = None) -> int:
        """Queue a read of the node's children; its result is their names."""
        return self._add(
            lambda: builders.get_children(path, watch is not None), _first, watch=watch
        )

    def set(self, path: str, data: bytes, version: int = -1) -> int:
        """Queue a set; its result is the node's new Stat."""
        return self._add(lambda: builders.set_data(path, data, version))

    set_data = set

    def delete(self, path: str, version: int = -1) -> int:
        """Queue a delete; its result is None."""
        return self._add(lambda: builders.delete(path, version))

    async def execute(self, *, raise_on_error: bool = True) -> list[Any]:
        """Send everything queued at once and wait for every reply; the results in order."""
        client = self._client
        await client._ready_to_send()
        requests, converters, watches = self._requests, self._converters, self._watches
        self._requests, self._converters, self._watches = [], [], []
        countdown = Countdown(len(requests))
        calls: list[Call | ZkError] = []
        now = client._now()
        for request, watch in zip(requests, watches, strict=True):
            try:
                if isinstance(request, ZkError):  # refused by its builder
                    raise request
                calls.append(client._send(request, countdown, now, watch))
            except ZkError as err:  # refused before sending (a bad path, an oversize value)
                countdown.set()
                calls.append(err)
        client._send_queued()
        client._flusher.flush()
        await countdown.wait()
        results: list[Any] = []
        for convert, item in zip(converters, calls, strict=True):
            try:
                if isinstance(item, ZkError):
                    raise item
                result = item.outcome()
                results.append(result if convert is None else convert(result))
            except ZkError as err:
                if raise_on_error:
                    raise
                results.append(err)
        self.results = results
        return results

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(self, kind: object, value: object, traceback: object) -> None:
        if kind is None and self._requests:
            await self.execute()


@asynccontextmanager
async def connect(
    hosts: str | Sequence[str] = "127.0.0.1:2181",
    *,
    session_timeout: float = 10.0,
    connect_timeout: float = 5.0,
    default_acl: Sequence[ACL] = OPEN_ACL_UNSAFE,
    auth: Sequence[tuple[str, str]] = (),
    tls: ssl.SSLContext | None = None,
    spin_before_wait: float = SPIN_BEFORE_WAIT_S,
    new_session_on_expiry: bool = False,
    read_only: bool = False,
) -> AsyncIterator[Client]:
    """Open a session with an ensemble and keep it for the ``async with`` block.

    ``async with zkpy.connect("127.0.0.1:2181,127.0.0.1:2182", session_timeout=10.0) as zk:``
    Leaving the block closes the session (its ephemerals are deleted at once). A path after
    the servers (``"h1:2181,h2:2181/app"``) is a chroot: every path is then relative to
    ``/app``, which must exist (`zkpy.client.chroot`). `auth` is a list of
    (scheme, credential) pairs sent at every (re)connect, like `add_auth`; `tls` an SSL context
    (`zkpy.tls.client_context(ca, certfile, keyfile)`) for servers that speak TLS.
    `spin_before_wait` (seconds, 0 for never, at most 0.01) is how long a read of the
    connection keeps trying before it sleeps, while replies come quickly: one request at a time,
    a reply met awake saves a wake-up (costly on a virtual machine that halts idle CPUs). TLS
    connections do not spin.

    With `new_session_on_expiry`, an expired session is followed by a new one instead of
    ending the client: the state stream says LOST, then CONNECTED with a new `session_id`
    (kazoo's behaviour). The old session's ephemerals and watches are gone; the recipes that
    stand for something (`Party`, `PersistentNode`) create it again, and locks and leadership
    held under the old session stay lost.

    With `read_only`, a member cut off from its quorum may serve the client (for as long as no
    member in a quorum answers it): `client.read_only` is then true, reads answer from that
    member's tree as it last applied it, writes and `sync` fail with `NotReadOnlyError`. The
    client moves to a member that serves as soon as one answers; its read-only session ends
    there, and a new one follows, as with `new_session_on_expiry` (docs/operations.md).
    """
    client = Client(
        hosts,
        session_timeout=session_timeout,
        connect_timeout=connect_timeout,
        default_acl=default_acl,
        auth=auth,
        tls=tls,
        spin_before_wait=spin_before_wait,
        new_session_on_expiry=new_session_on_expiry,
        read_only=read_only,
    )
    try:
        async with backend.open_tasks() as tasks:
            await client._start(tasks)
            try:
                client._raise_if_dead()
                yield client
            finally:
                with anyio.CancelScope(shield=True):
                    await client.close()
                tasks.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise single_error(group) from None


__all__ = [
    "Client",
    "ConnectionState",
    "Pipeline",
    "Transaction",
    "WatchedEvent",
    "connect",
]
