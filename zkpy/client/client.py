"""The trio client: one session over one connection at a time, pipelined requests.

`connect()` opens a session and runs the connection in the background of an ``async with`` block.
Requests are pipelined (many in flight, replies matched by xid, FIFO order kept by the server).
When the connection breaks, requests in flight fail with `ConnectionLossError`, the client moves
to another listed server and resumes its session (and its watches, with the last zxid it saw);
requests made meanwhile wait for that. If the server says the session expired, the client is
LOST for good: every request raises `SessionExpiredError`, as with ZooKeeper's own client.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from zkpy._net.outbox import Flusher, Outbox
from zkpy._net.receiver import SPIN_BEFORE_WAIT_S, Receiver, check_spin
from zkpy.client import builders
from zkpy.client.watches import WatchCallback, WatchStream, WatchTable
from zkpy.core import paths
from zkpy.core.errors import (
    BadArgumentsError,
    Code,
    ConnectionLossError,
    MarshallingError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    NoWatcherError,
    RolledBackError,
    SessionExpiredError,
    ZkError,
    error_for_code,
)
from zkpy.core.requests import (
    AuthRequest,
    CloseSessionRequest,
    CreateRequest,
    DeleteRequest,
    MultiOp,
    MultiRequest,
    RemoveWatchesRequest,
    Request,
    SetDataRequest,
)
from zkpy.core.types import ACL, OPEN_ACL_UNSAFE, Stat, WatchedEvent, WatchMode
from zkpy.errors import single_error
from zkpy.wire import client as wire
from zkpy.wire.frames import DEFAULT_MAX_FRAME, FrameDecoder, FrameTooLargeError

log = logging.getLogger("zkpy.client")

MAX_SERVER_FRAME = 1 << 30  # replies can exceed the request limit (a big get_children)


class ConnectionState(enum.Enum):
    """The client's view of its session, as kazoo names it."""

    CONNECTING = "CONNECTING"  # before the first session is established
    CONNECTED = "CONNECTED"
    SUSPENDED = "SUSPENDED"  # connection lost; the session may still be alive
    LOST = "LOST"  # the session expired or was closed: ephemerals and watches are gone


def parse_hosts(hosts: str | Sequence[str]) -> list[tuple[str, int]]:
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
        self._event = trio.Event()
        if count == 0:
            self._event.set()

    def set(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0:
            self._event.set()

    async def wait(self) -> None:
        await self._event.wait()


@dataclass(slots=True)
class _Pending:
    opcode: int
    done: trio.Event | Countdown
    zxid: int = 0
    error: int = 0
    body: Any = None
    lost: ZkError | None = None
    on_success: Callable[[Any], None] | None = None


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
    ) -> Transaction:
        request = builders.create(path, data, self._client._acl(acl), ephemeral, sequential)
        self._ops.append(request)
        return self

    def delete(self, path: str, version: int = -1) -> Transaction:
        self._ops.append(builders.delete(path, version))
        return self

    def set_data(self, path: str, data: bytes, version: int = -1) -> Transaction:
        self._ops.append(builders.set_data(path, data, version))
        return self

    set = set_data

    def check(self, path: str, version: int) -> Transaction:
        self._ops.append(builders.check(path, version))
        return self

    async def commit(self) -> list[Any]:
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
    """A zkpy session. Make one with `zkpy.connect(...)`."""

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
    ) -> None:
        check_spin(spin_before_wait, "spin_before_wait")
        self.hosts = parse_hosts(hosts)
        self.spin_before_wait = spin_before_wait
        if randomize_hosts:
            random.shuffle(self.hosts)
        self.requested_timeout_ms = int(session_timeout * 1000)
        self.connect_timeout = connect_timeout
        self.tls = tls
        self.default_acl = tuple(default_acl)
        self.session_id = 0
        self.session_password = b""
        self.session_timeout = session_timeout
        self.last_zxid = 0
        self.server: tuple[str, int] | None = None
        self._auth: list[tuple[str, bytes]] = []
        for scheme, credential in auth:
            request = builders.auth(scheme, credential)
            self._auth.append((request.scheme, request.credential))
        self._state = ConnectionState.CONNECTING
        self._state_changed = trio.Event()
        self._listeners: list[Callable[[ConnectionState], Any]] = []
        self._state_channels: list[trio.MemorySendChannel[ConnectionState]] = []
        self._next_xid = 1
        self._pending: dict[int, _Pending] = {}
        self._flusher = Flusher()
        self._outbox: Outbox | None = None  # the current connection's
        self._watches = WatchTable()
        self._closing = False
        self._lost_error: ZkError | None = None
        self._connection_scope: trio.CancelScope | None = None
        self._max_frame = DEFAULT_MAX_FRAME
        self._last_sent = 0.0
        self._packer = wire.new_packer()  # the client lives in one trio run: one thread
        self._last_heard = 0.0
        self._leftover: tuple[list[bytes], FrameDecoder] = ([], FrameDecoder())

    # ---- state -------------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def connected(self) -> bool:
        return self._state is ConnectionState.CONNECTED

    def add_listener(self, listener: Callable[[ConnectionState], Any]) -> None:
        """Call `listener(state)` on every state change (from the client's task: don't block)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[ConnectionState], Any]) -> None:
        self._listeners.remove(listener)

    @asynccontextmanager
    async def state_changes(self) -> AsyncIterator[trio.MemoryReceiveChannel[ConnectionState]]:
        """``async with zk.state_changes() as states: async for state in states: ...``"""
        send, receive = trio.open_memory_channel[ConnectionState](math.inf)
        self._state_channels.append(send)
        try:
            yield receive
        finally:
            self._state_channels.remove(send)
            send.close()

    def _set_state(self, state: ConnectionState) -> None:
        if state is self._state:
            return
        log.debug("session %#x: %s -> %s", self.session_id, self._state.value, state.value)
        self._state = state
        self._state_changed.set()
        self._state_changed = trio.Event()
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:
                log.exception("state listener failed")
        for channel in self._state_channels:
            channel.send_nowait(state)

    async def wait_connected(self) -> None:
        """Wait until the session is connected; raise if it is lost or the client closed."""
        while self._state is not ConnectionState.CONNECTED:
            self._raise_if_dead()
            await self._state_changed.wait()

    def _raise_if_dead(self) -> None:
        if self._lost_error is not None:
            raise self._lost_error
        if self._closing:
            raise ConnectionLossError("the client is closed")

    # ---- connection management -------------------------------------------------------------

    async def _start(self, nursery: trio.Nursery) -> None:
        await nursery.start(self._run)

    async def _run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        attempt = 0
        while not self._closing and self._lost_error is None:
            host = self.hosts[attempt % len(self.hosts)]
            attempt += 1
            try:
                stream = await self._open(host)
            except (OSError, trio.TooSlowError, ConnectionLossError) as err:
                log.debug("cannot reach %s:%d: %s", *host, err)
                if attempt % len(self.hosts) == 0:
                    if not started and attempt >= 3 * len(self.hosts):
                        raise ConnectionLossError(f"no server reachable in {self.hosts}") from err
                    await trio.sleep(min(1.0, 0.05 * attempt) * random.uniform(0.5, 1.0))
                continue
            except SessionExpiredError as err:
                self._lose(err)
                if not started:
                    raise
                break
            if not started:
                started = True
                task_status.started()
            await self._serve_connection(stream)
            if self._lost_error is None and not self._closing:
                self._set_state(ConnectionState.SUSPENDED)
        if not started:
            task_status.started()

    async def _open(self, host: tuple[str, int]) -> trio.abc.Stream:
        with trio.fail_after(self.connect_timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(*host)
            if self.tls is not None:
                stream = trio.SSLStream(stream, self.tls, server_hostname=host[0])
            try:
                await stream.send_all(
                    wire.Handshake(
                        self.session_id,
                        self.session_password,
                        self.requested_timeout_ms,
                        self.last_zxid,
                    ).encode()
                )
                decoder = FrameDecoder(MAX_SERVER_FRAME)
                frames: list[bytes] = []
                while not frames:
                    data = await stream.receive_some(1 << 16)
                    if not data:
                        raise ConnectionLossError("server closed the connection in the handshake")
                    frames = decoder.feed(data)
                reply = wire.HandshakeReply.decode(frames[0])
            except trio.BrokenResourceError as err:  # e.g. reset by a server that is dying
                await trio.aclose_forcefully(stream)
                raise ConnectionLossError(f"connection broken in the handshake: {err}") from err
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        if reply.error:
            await trio.aclose_forcefully(stream)
            raise error_for_code(reply.error, reply.message)
        self.session_id = reply.session_id
        self.session_password = reply.password
        self.session_timeout = reply.timeout_ms / 1000
        self._max_frame = reply.max_frame or DEFAULT_MAX_FRAME
        self.server = host
        self._leftover = frames[1:], decoder
        return stream

    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        resume = self._watches.resume_request(self.last_zxid)
        outbox = self._outbox = Outbox(stream, self._flusher)
        for scheme, credential in self._auth:
            self._queue_internal(wire.XID_AUTH, AuthRequest(scheme, credential))
        if resume is not None:
            self._queue_internal(wire.XID_SET_WATCHES, resume)
        self._flusher.flush()
        self._set_state(ConnectionState.CONNECTED)
        try:
            with trio.CancelScope() as scope:
                self._connection_scope = scope
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_loop, outbox, stream, scope)
                    nursery.start_soon(self._ping_loop, scope)
                    await self._read_loop(stream, scope)
        finally:
            self._connection_scope = None
            self._outbox = None
            outbox.close()
            await trio.aclose_forcefully(stream)
            self._fail_pending(ConnectionLossError(f"connection to {self.server} was lost"))

    def _push(self, frame: bytes) -> None:
        """Queue a frame on the connection; it leaves at the next `self._flusher.flush()`."""
        self._push_untimed(frame)
        self._last_sent = trio.current_time()

    def _push_untimed(self, frame: bytes) -> None:
        """`_push` without noting the time of sending, for callers that queue many frames and
        note it once (reading the clock cost as much as the rest of queuing a frame)."""
        if self._outbox is None:
            raise ConnectionLossError("not connected to any server")
        self._outbox.push(frame)

    def _queue_internal(self, xid: int, request: Request) -> None:
        self._push(wire.encode_request(xid, request))

    async def _write_loop(
        self, outbox: Outbox, stream: trio.abc.Stream, scope: trio.CancelScope
    ) -> None:
        """Sends what a direct flush could not (the socket was full, or TLS)."""
        try:
            await outbox.run_writer(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            scope.cancel()

    async def _ping_loop(self, scope: trio.CancelScope) -> None:
        interval = self.session_timeout / 3
        self._last_sent = trio.current_time()
        while True:
            await trio.sleep(max(0.01, self._last_sent + interval - trio.current_time()))
            if trio.current_time() - self._last_heard > self.session_timeout * 2 / 3:
                log.info("no word from %s for 2/3 of the session timeout", self.server)
                scope.cancel()
                return
            if trio.current_time() - self._last_sent >= interval * 0.9:
                self._push(wire.PING_FRAME)
                self._flusher.flush()

    async def _read_loop(self, stream: trio.abc.Stream, scope: trio.CancelScope) -> None:
        pending_frames, decoder = self._leftover
        self._last_heard = trio.current_time()
        try:
            for frame in pending_frames:
                self._on_frame(frame)
            receiver = Receiver(stream, self.spin_before_wait)
            while True:
                data = await receiver.receive(1 << 16)
                if not data:
                    break
                self._last_heard = trio.current_time()
                for frame in decoder.feed(data):
                    self._on_frame(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except (MarshallingError, FrameTooLargeError) as err:
            log.warning("bad frame from %s: %s", self.server, err)
        scope.cancel()

    def _on_frame(self, frame: bytes) -> None:
        xid, zxid, error, body = wire.decode_server_frame(frame)
        if zxid > self.last_zxid:
            self.last_zxid = zxid
        if xid == wire.XID_EVENT:
            event = wire.decode_event(body, zxid)
            for callback in self._watches.dispatch(event):
                try:
                    callback(event)
                except Exception:
                    log.exception("watch callback failed")
            return
        if xid in (wire.XID_PING, wire.XID_SET_WATCHES):
            return
        if xid == wire.XID_AUTH:
            if error:
                self._lose(error_for_code(error, f"authentication failed: {body}"))
            return
        pending = self._pending.pop(xid, None)
        if pending is None:
            return
        pending.zxid, pending.error, pending.body = zxid, error, body
        if not error and pending.on_success is not None:
            # Registered here, not when the caller resumes: an event for this watch may be the
            # very next frame, handled before the caller's task gets to run.
            pending.on_success(body)
        pending.done.set()
        if error == Code.SESSION_EXPIRED:
            self._lose(SessionExpiredError("the session expired"))
        elif error == Code.SESSION_MOVED and self._connection_scope is not None:
            # the session was attached to another connection (one of ours the ensemble saw
            # late): this one may no longer write; reconnecting attaches the session again
            log.info("session %#x moved away from %s; reconnecting", self.session_id, self.server)
            self._connection_scope.cancel()

    def _fail_pending(self, error: ZkError) -> None:
        pending, self._pending = self._pending, {}
        for item in pending.values():
            item.lost = error
            item.done.set()

    def _lose(self, error: ZkError) -> None:
        """The session is over: fail everything now and from now on."""
        if self._lost_error is not None:
            return
        self._lost_error = error
        self._fail_pending(error)
        for callback in self._watches.fail_all(error):
            fail = getattr(callback, "fail", None)
            if fail is not None:
                fail(error)
        self._set_state(ConnectionState.LOST)
        if self._connection_scope is not None:
            self._connection_scope.cancel()

    async def close(self) -> None:
        """Close the session: its ephemerals are deleted at once. Idempotent."""
        if self._closing or self._lost_error is not None:
            self._closing = True
            return
        if self._state is ConnectionState.CONNECTED:
            with trio.move_on_after(self.connect_timeout):
                try:
                    await self._call(CloseSessionRequest())
                except ZkError:
                    pass
        self._closing = True
        self._lose(SessionExpiredError("the session was closed"))

    # ---- requests ----------------------------------------------------------------------------

    async def _call(self, request: Request, on_success: Callable[[Any], None] | None = None) -> Any:
        """Send `request` and wait for its reply's body. `on_success(body)` runs as the reply
        arrives, before any later frame is handled (that is where watches get registered)."""
        if self._state is not ConnectionState.CONNECTED:
            await self._ready_to_send()
        pending = self._enqueue(request, trio.Event(), on_success)
        self._last_sent = trio.current_time()
        if len(self._pending) == 1 or self._outbox is None:
            self._flusher.flush()  # alone in flight: straight to the socket
        else:
            # other tasks have requests in flight, and more may be queuing theirs in this
            # scheduler turn: the writer sends them all together right after
            self._outbox.send_soon()
        await pending.done.wait()
        return self._outcome(request, pending)

    async def _ready_to_send(self) -> None:
        """Wait (up to a session timeout) for a connection; raise if there will be none."""
        if self._state is not ConnectionState.CONNECTED:
            with trio.move_on_after(self.session_timeout):
                await self.wait_connected()
            if not self.connected:
                self._raise_if_dead()
                raise ConnectionLossError("not connected to any server")

    def _enqueue(
        self,
        request: Request,
        done: trio.Event | Countdown,
        on_success: Callable[[Any], None] | None = None,
    ) -> _Pending:
        """Encode `request` into the outgoing buffer and register who waits for its reply (the
        caller notes `_last_sent`)."""
        xid = self._next_xid
        self._next_xid = xid + 1 if xid < 2**31 - 1 else 1
        frame = wire.encode_request(xid, request, self._packer)
        if len(frame) > self._max_frame:
            raise BadArgumentsError(f"request of {len(frame)} bytes is over the frame limit")
        self._push_untimed(frame)
        pending = _Pending(0, done, on_success=on_success)
        self._pending[xid] = pending
        return pending

    def _outcome(self, request: Request, pending: _Pending) -> Any:
        """The reply's body, or the error it carries, raised."""
        if pending.lost is not None:
            raise pending.lost
        if pending.error:
            if isinstance(request, MultiRequest) and isinstance(pending.body, list):
                # an operation failed: the body holds each operation's outcome (anything else,
                # such as a lost leader, is an error of the whole request, raised below)
                return _MultiFailure(pending.error, pending.body)
            path = getattr(request, "path", None)
            if isinstance(pending.body, str) and pending.body:
                err = error_for_code(pending.error, pending.body)  # the message names the path
                err.path = path
                raise err
            raise error_for_code(pending.error, path=path)
        return pending.body

    def pipeline(self) -> Pipeline:
        """A batch of requests sent together and answered in order, without a task per
        request (not atomic: use `transaction()` for all-or-nothing).

        ``async with zk.pipeline() as p: p.set("/a", b"1"); p.get("/b")`` then ``p.results``.
        """
        return Pipeline(self)

    def _acl(self, acl: Sequence[ACL] | None) -> Sequence[ACL]:
        """The ACL a create uses (the builders check it)."""
        return self.default_acl if acl is None else acl

    async def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        acl: Sequence[ACL] | None = None,
        ephemeral: bool = False,
        sequential: bool = False,
        makepath: bool = False,
        include_data: bool = False,
    ) -> Any:
        """Create a znode; return its path (with the sequential suffix), or (path, Stat) when
        `include_data` is set. `makepath` creates missing parents as persistent empty nodes."""
        request = builders.create(path, data, self._acl(acl), ephemeral, sequential)
        try:
            body = await self._call(request)
        except NoNodeError:
            if not makepath:
                raise
            await self.ensure_path(paths.parent(request.path))
            body = await self._call(request)
        created, stat = body
        return (created, wire.stat_in(stat)) if include_data else created

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

    def _one_shot(self, mode: WatchMode, path: str, watch: WatchCallback) -> Callable[[Any], None]:
        return lambda _body: self._watches.add_one_shot(mode, path, watch)

    async def get(self, path: str, *, watch: WatchCallback | None = None) -> tuple[bytes, Stat]:
        body = await self._call(
            builders.get_data(path, watch is not None),
            None if watch is None else self._one_shot(WatchMode.DATA, path, watch),
        )
        data, stat = body
        return data, wire.stat_in(stat)

    async def exists(self, path: str, *, watch: WatchCallback | None = None) -> Stat | None:
        def register(body: Any) -> None:
            assert watch is not None
            mode = WatchMode.EXIST if body is None else WatchMode.DATA
            self._watches.add_one_shot(mode, path, watch)

        body = await self._call(
            builders.exists(path, watch is not None), None if watch is None else register
        )
        return None if body is None else wire.stat_in(body)

    async def get_children(
        self, path: str, *, watch: WatchCallback | None = None, include_data: bool = False
    ) -> Any:
        """The names of `path`'s children, sorted; with `include_data`, (names, parent Stat)."""
        body = await self._call(
            builders.get_children(path, watch is not None),
            None if watch is None else self._one_shot(WatchMode.CHILD, path, watch),
        )
        children, stat = body
        return (children, wire.stat_in(stat)) if include_data else children

    async def set(self, path: str, data: bytes, version: int = -1) -> Stat:
        return wire.stat_in(await self._call(builders.set_data(path, data, version)))

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

    async def get_acl(self, path: str) -> tuple[list[ACL], Stat]:
        acl, stat = await self._call(builders.get_acl(path))
        return list(wire.acl_in(acl)), wire.stat_in(stat)

    async def set_acl(self, path: str, acl: Sequence[ACL], version: int = -1) -> Stat:
        return wire.stat_in(await self._call(builders.set_acl(path, acl, version)))

    async def add_auth(self, scheme: str, credential: str) -> None:
        """Authenticate this session (``add_auth("digest", "user:password")``); kept across
        reconnects. A refusal raises `AuthFailedError` and ends the session, as in ZooKeeper."""
        request = builders.auth(scheme, credential)
        try:
            await self._call(request)
        except ZkError as err:
            self._lose(err)
            raise
        self._auth.append((scheme, request.credential))

    def transaction(self) -> Transaction:
        return Transaction(self)

    async def _multi(self, request: MultiRequest) -> list[Any]:
        ops = request.ops
        body = await self._call(request)
        if isinstance(body, _MultiFailure):
            return [
                RolledBackError(path=getattr(op, "path", None))
                if code == Code.OK
                else error_for_code(code, path=getattr(op, "path", None))
                for op, (code, _value) in zip(ops, body.results, strict=True)
            ]
        results: list[Any] = []
        for op, (_code, value) in zip(ops, body, strict=True):
            if isinstance(op, CreateRequest):
                results.append(value[0])
            elif isinstance(op, SetDataRequest):
                results.append(wire.stat_in(value))
            else:
                results.append(True)
        return results

    async def remove_watch(self, path: str, watch: WatchCallback) -> bool:
        """Remove a one-shot watch left by ``get`` / ``exists`` / ``get_children`` with
        ``watch=``; the server forgets it too once no other local watch of its kind needs it.
        True if it was still registered (it had not fired)."""
        found, emptied = self._watches.remove_one_shot(path, watch)
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
        first = self._watches.add_stream(stream)
        try:
            if first:
                await self._call(builders.add_watch(path, mode))
            yield stream
        finally:
            stream.close()
            if self._watches.remove_stream(stream) and self.connected:
                with trio.CancelScope(shield=True), trio.move_on_after(self.connect_timeout):
                    try:
                        await self._call(RemoveWatchesRequest(path, mode))
                    except ZkError:
                        pass


class Pipeline:
    """Queue reads and writes, then `execute()` them in one go; results come back in order.

    Each queued call returns the index of its result. `execute(raise_on_error=False)` puts an
    exception instance where a request failed, instead of raising the first error; a request
    refused before sending (a bad path, data that is not bytes) fails there too, not when queued.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._requests: list[Request | ZkError] = []
        self._converters: list[Callable[[Any], Any]] = []
        self.results: list[Any] = []

    def __len__(self) -> int:
        return len(self._requests)

    def _add(self, build: Callable[[], Request], convert: Callable[[Any], Any]) -> int:
        try:
            request: Request | ZkError = build()
        except ZkError as err:
            request = err
        self._requests.append(request)
        self._converters.append(convert)
        return len(self._requests) - 1

    def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        acl: Sequence[ACL] | None = None,
        ephemeral: bool = False,
        sequential: bool = False,
    ) -> int:
        entries = self._client._acl(acl)
        return self._add(
            lambda: builders.create(path, data, entries, ephemeral, sequential),
            lambda body: body[0],
        )

    def get(self, path: str) -> int:
        return self._add(lambda: builders.get_data(path), _data_and_stat)

    def exists(self, path: str) -> int:
        return self._add(
            lambda: builders.exists(path), lambda body: None if body is None else wire.stat_in(body)
        )

    def get_children(self, path: str) -> int:
        return self._add(lambda: builders.get_children(path), lambda body: body[0])

    def set(self, path: str, data: bytes, version: int = -1) -> int:
        return self._add(lambda: builders.set_data(path, data, version), wire.stat_in)

    set_data = set

    def delete(self, path: str, version: int = -1) -> int:
        return self._add(lambda: builders.delete(path, version), lambda body: None)

    async def execute(self, *, raise_on_error: bool = True) -> list[Any]:
        client = self._client
        await client._ready_to_send()
        requests, converters = self._requests, self._converters
        self._requests, self._converters = [], []
        countdown = Countdown(len(requests))
        pending: list[tuple[Request, _Pending] | ZkError] = []
        for request in requests:
            try:
                if isinstance(request, ZkError):  # refused by its builder
                    raise request
                pending.append((request, client._enqueue(request, countdown)))
            except ZkError as err:  # refused before sending (a bad path, an oversize value)
                countdown.set()
                pending.append(err)
        client._last_sent = trio.current_time()
        client._flusher.flush()
        await countdown.wait()
        results: list[Any] = []
        for convert, item in zip(converters, pending, strict=True):
            try:
                if isinstance(item, ZkError):
                    raise item
                results.append(convert(client._outcome(*item)))
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


def _data_and_stat(body: Any) -> tuple[bytes, Stat]:
    return body[0], wire.stat_in(body[1])


@dataclass(slots=True)
class _MultiFailure:
    code: int
    results: list[tuple[int, Any]]


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
) -> AsyncIterator[Client]:
    """Open a session with an ensemble and keep it for the ``async with`` block.

    ``async with zkpy.connect("127.0.0.1:2181,127.0.0.1:2182", session_timeout=10.0) as zk:``
    Leaving the block closes the session (its ephemerals are deleted at once). `auth` is a list of
    (scheme, credential) pairs sent at every (re)connect, like `add_auth`; `tls` an SSL context
    (`zkpy.tls.client_context(ca, certfile, keyfile)`) for servers that speak TLS.
    `spin_before_wait` (seconds, 0 for never, at most 0.01) is how long a read of the
    connection keeps trying before it sleeps, while replies come quickly: one request at a time,
    a reply met awake saves a wake-up (40-60 us on a virtual machine that halts idle CPUs). TLS
    connections do not spin.
    """
    client = Client(
        hosts,
        session_timeout=session_timeout,
        connect_timeout=connect_timeout,
        default_acl=default_acl,
        auth=auth,
        tls=tls,
        spin_before_wait=spin_before_wait,
    )
    try:
        async with trio.open_nursery() as nursery:
            await client._start(nursery)
            try:
                client._raise_if_dead()
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    await client.close()
                nursery.cancel_scope.cancel()
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
