"""ZooKeeper's client protocol on a member's second client port (`zk_port`).

The listener is the msgpack one (`zkpy.server.clients`) with another `Dialect`: the same socket
loops, limits and TLS, the same `serving.ServerConnection` rules, so a session opened here is an
ordinary session (one tree, prep, session table and watch manager for both protocols). What
differs lives here:

- `JuteCodec` (one per connection) turns jute frames into core requests (`zkpy.wire.jute`) and
  the machine's replies into jute records. A jute reply's shape depends on the request's opcode
  (create or create2, getChildren or getChildren2 ...), and replies leave in request order, so
  the codec keeps the opcodes of the requests awaiting replies in a FIFO.
- ZooKeeper's requests that zkpy's core has no request for (multiRead, whoAmI, getEphemerals,
  getAllChildrenNumber, checkWatches and removeWatches by watcher type) are `CodecRead`s that
  `JuteCodec.answer` answers from the member's tree and watch registry.
- `digest` authentication is ZooKeeper's: user:base64(sha1(user:password)).
- SASL DIGEST-MD5 (`sasl`, opcode 102) against the users of `sasl_users_file`
  (`zkpy.wire.sasl`): the connection gains the identity ``sasl:<user>``, and the super identity
  too if the user is `sasl_super_user` (ZooKeeper's zookeeper.superUser).
- The four-letter words (`ruok`, `srvr`, `stat`, `mntr`, `conf`, `envi`, `isro`, `cons`, `dump`,
  `wchs`, `wchc`, `wchp`), sent in place of a handshake, are answered as ZooKeeper 3.8 prints
  them, and the connection closed.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import platform
import resource
import secrets
import stat
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from zkpy.core import acl as acls
from zkpy.core import paths
from zkpy.core.errors import (
    AuthFailedError,
    Code,
    NoAuthError,
    NoNodeError,
    NoWatcherError,
    ZkError,
    error_for_code,
)
from zkpy.core.requests import GetACLRequest, GetChildrenRequest, GetDataRequest, PingRequest
from zkpy.core.serving import Codec, CodecRead, Decoded, Hello, ServerConnection
from zkpy.core.types import Id, Perm, Stat, WatchedEvent, acl_from_wire
from zkpy.server.clients import ClientConnection, ClientServer
from zkpy.server.metrics import MeteredCodec
from zkpy.server.node import Member
from zkpy.wire import jute, sasl
from zkpy.wire.jute import (
    OP_ADD_WATCH,
    OP_CREATE,
    OP_CREATE2,
    OP_CREATE_CONTAINER,
    OP_CREATE_TTL,
    OP_ERROR,
    OP_EXISTS,
    OP_GET_ACL,
    OP_GET_ALL_CHILDREN_NUMBER,
    OP_GET_CHILDREN,
    OP_GET_CHILDREN2,
    OP_GET_DATA,
    OP_GET_EPHEMERALS,
    OP_MULTI,
    OP_MULTI_READ,
    OP_PING,
    OP_SASL,
    OP_SET_ACL,
    OP_SET_DATA,
    OP_SYNC,
    OP_WHO_AM_I,
    ConnectRequest,
    ConnectResponse,
    GetAllChildrenNumber,
    GetEphemerals,
    JuteMulti,
    MultiRead,
    MultiResult,
    Refusal,
    SaslRequest,
    WatchQuery,
    WhoAmI,
)

ZOOKEEPER_VERSION = "3.8.0-zkpy"
"""The version the four-letter words report: the ZooKeeper release whose protocol is served."""

_READS = (GetAllChildrenNumber, GetEphemerals, MultiRead, Refusal, SaslRequest, WatchQuery, WhoAmI)
_STAT_REPLIES = frozenset({OP_EXISTS, OP_SET_DATA, OP_SET_ACL, jute.OP_CHECK})


def zookeeper_digest_id(credential: bytes) -> Id:
    """The identity ZooKeeper's `digest` scheme gives for ``user:password``: the user, and the
    base64 of the SHA-1 of the whole credential (what kazoo's `make_digest_acl` names)."""
    try:
        text = credential.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthFailedError("digest credentials must be UTF-8") from None
    user, sep, _password = text.partition(":")
    if not sep or not user:
        raise AuthFailedError("digest credentials must be 'user:password'")
    digest = base64.b64encode(hashlib.sha1(credential).digest()).decode("ascii")
    return Id("digest", f"{user}:{digest}")


def _stat(fields: list[int]) -> Stat:
    return Stat._make(fields)


class SaslUsers:
    """Who may authenticate with SASL DIGEST-MD5: user name -> password, and the user that is
    super (none if "")."""

    def __init__(self, users: Mapping[str, str] | None = None, super_user: str = "") -> None:
        self.users: Mapping[str, str] = users or {}
        self.super_user = super_user


def load_sasl_users(path: str | Path) -> dict[str, str]:
    """The ``user:password`` lines of a SASL users file (blank lines and ``#`` comments are
    skipped). ValueError, naming the file, if it cannot be read, is readable by group or
    others (it holds passwords: chmod 600), or holds a line that is not ``user:password``."""
    path = Path(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"sasl_users_file {path}: {err}") from None
    if mode & 0o077:
        raise ValueError(
            f"sasl_users_file {path} holds passwords and is readable by others "
            f"(mode {mode:04o}): chmod 600 it"
        )
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"sasl_users_file {path}, line {number}: not user:password")
        users[user] = password
    return users


class JuteCodec:
    """ZooKeeper's jute protocol as a `serving.Codec`, for one connection."""

    def __init__(self, sasl_users: SaslUsers | None = None) -> None:
        # (xid, opcode, each op's opcode for a multi) of the requests awaiting replies
        self._waiting: deque[tuple[int, int, tuple[int, ...]]] = deque()
        self._has_read_only = True
        self._sasl_users = sasl_users or SaslUsers()
        self._sasl: sasl.DigestMD5Server | None = None

    # ---- in --------------------------------------------------------------------------------

    def decode_hello(self, payload: bytes) -> Hello:
        """The ConnectRequest (JuteError, a MarshallingError, if it is not one)."""
        request = ConnectRequest.decode(payload)
        self._has_read_only = request.has_read_only
        return Hello(
            request.session_id, request.password, request.timeout_ms, request.last_zxid_seen
        )

    def decode_request(self, payload: bytes) -> tuple[int, int, Decoded] | None:
        """A core request, a `CodecRead` for ZooKeeper's own reads, or None for a ping."""
        xid, opcode, request = jute.decode_request(payload)
        if type(request) is PingRequest:
            return None
        if type(request) is JuteMulti:
            self._waiting.append((xid, opcode, request.opcodes))
            return xid, opcode, request.request
        self._waiting.append((xid, opcode, ()))
        if isinstance(request, _READS) or type(request) is GetACLRequest:
            return xid, opcode, CodecRead(request)
        assert not isinstance(request, JuteMulti | PingRequest)
        return xid, opcode, request

    def answer(self, conn: ServerConnection, request: object) -> Any:
        """The body of the reply to one of ZooKeeper's own reads (see `decode_request`)."""
        if type(request) is MultiRead:
            return [_multi_read_result(conn, op) for op in request.ops]
        if type(request) is WatchQuery:
            return _query_watches(conn, request)
        if type(request) is GetAllChildrenNumber:
            return _all_children_number(conn, request.path)
        if type(request) is GetEphemerals:
            return _ephemerals(conn, request.prefix)
        if type(request) is WhoAmI:
            return sorted((ident.scheme, ident.id) for ident in conn.ids)
        if type(request) is SaslRequest:
            return self._sasl_step(conn, request.token)
        if type(request) is GetACLRequest:
            return _get_acl(conn, request)
        if type(request) is Refusal:
            raise error_for_code(request.code, request.message)
        raise TypeError(f"not a jute read: {type(request).__name__}")

    def _sasl_step(self, conn: ServerConnection, token: bytes) -> bytes:
        """One round of the connection's DIGEST-MD5 exchange. Any failure is AUTHFAILED, and
        the connection closes after it, as ZooKeeper closes it."""
        users = self._sasl_users
        if not users.users:
            raise AuthFailedError("SASL is not configured on this member (sasl_users_file)")
        if self._sasl is None:
            self._sasl = sasl.DigestMD5Server(users.users, secrets.token_urlsafe(24))
        answer = self._sasl.step(token)
        user = self._sasl.user
        if user is not None:
            gained = {Id("sasl", user)}
            if users.super_user and user == users.super_user:
                gained.add(acls.SUPER_ID)
            conn.ids = conn.ids | gained
        return answer

    # ---- out -------------------------------------------------------------------------------

    def _opcode_of(self, xid: int) -> tuple[int, tuple[int, ...]]:
        """The opcode of the request `xid` answers (replies leave in request order); OP_ERROR
        for an error reply to a request that was never decoded."""
        waiting = self._waiting
        if waiting and waiting[0][0] == xid:
            _xid, opcode, ops = waiting.popleft()
            return opcode, ops
        return OP_ERROR, ()

    def pong(self, zxid: int) -> bytes:
        """The ping reply: a header with xid -2."""
        return jute.encode_header(jute.XID_PING, zxid, 0)

    def null_data(self) -> None:
        """Null data reads back null (a buffer of length -1), as in ZooKeeper."""
        return None

    def reply(self, xid: int, zxid: int, error: int, body: Any) -> bytes:
        """The reply record the request's opcode calls for. A -5 is the one reply that may
        leave out of request order (bad input: the connection closes after it, while writes
        before it may still commit and be answered), so it takes no opcode from the FIFO."""
        if error == Code.MARSHALLING_ERROR:
            return jute.encode_header(xid, zxid, error)
        opcode, ops = self._opcode_of(xid)
        if opcode == OP_MULTI and isinstance(body, list):
            results = [
                _multi_result(op, result, error != 0) for op, result in zip(ops, body, strict=True)
            ]
            return jute.encode_multi_reply(xid, zxid, results)
        if error != 0:
            return jute.encode_header(xid, zxid, error)
        return _encode_body(xid, zxid, opcode, body)

    def event(self, event: WatchedEvent) -> bytes:
        """A notification (xid -1)."""
        return jute.encode_event(event)

    def greeting(
        self,
        session_id: int,
        password: bytes,
        timeout_ms: int,
        zxid: int,
        max_frame: int,
        server_id: int,
    ) -> bytes:
        """The ConnectResponse (read-only flag false: a member that serves takes writes)."""
        return ConnectResponse(
            0, timeout_ms, session_id, password, False, self._has_read_only
        ).encode()

    def refusal(self, error: int, message: str) -> bytes:
        """An expired session or a wrong password is answered as ZooKeeper does, with a
        ConnectResponse of timeout 0 (the client reports the session expired); any other
        refusal (no quorum, a member behind the client, a bad handshake) closes the
        connection without a word, so that the client tries another member."""
        if error in (Code.SESSION_EXPIRED, Code.AUTH_FAILED):
            # ZooKeeper's refusal carries a password of 16 zero bytes
            return ConnectResponse(0, 0, 0, bytes(16), False, self._has_read_only).encode()
        return b""

    def status(self, status: dict[str, Any]) -> bytes:
        """Never asked: status comes through the four-letter words here."""
        return b""


def _encode_body(xid: int, zxid: int, opcode: int, body: Any) -> bytes:
    """A successful reply of `opcode`, from the body the serving machine made (the msgpack
    protocol's shapes: Stats as lists, [data, stat], [children, stat] ...)."""
    if opcode in _STAT_REPLIES:
        if body is None:  # exists on a missing node (its watch is set), check
            error = Code.NO_NODE if opcode == OP_EXISTS else Code.OK
            return jute.encode_header(xid, zxid, error)
        return jute.encode_stat_reply(xid, zxid, _stat(body))
    encode = _ENCODERS.get(opcode)
    if encode is None:
        return jute.encode_header(xid, zxid, 0)  # delete, closeSession, auth, setWatches ...
    return encode(xid, zxid, body)


_ENCODERS: dict[int, Callable[[int, int, Any], bytes]] = {
    OP_GET_DATA: lambda xid, zxid, body: jute.encode_data_reply(xid, zxid, body[0], _stat(body[1])),
    OP_GET_CHILDREN: lambda xid, zxid, body: jute.encode_children_reply(xid, zxid, body[0]),
    OP_GET_CHILDREN2: lambda xid, zxid, body: jute.encode_children2_reply(
        xid, zxid, body[0], _stat(body[1])
    ),
    OP_CREATE: lambda xid, zxid, body: jute.encode_path_reply(xid, zxid, body[0]),
    OP_CREATE2: lambda xid, zxid, body: jute.encode_create2_reply(
        xid, zxid, body[0], _stat(body[1])
    ),
    # ZooKeeper answers createContainer and createTTL with a Create2Response
    OP_CREATE_CONTAINER: lambda xid, zxid, body: jute.encode_create2_reply(
        xid, zxid, body[0], _stat(body[1])
    ),
    OP_CREATE_TTL: lambda xid, zxid, body: jute.encode_create2_reply(
        xid, zxid, body[0], _stat(body[1])
    ),
    OP_SYNC: jute.encode_path_reply,
    OP_GET_ACL: lambda xid, zxid, body: jute.encode_acl_reply(
        xid, zxid, acl_from_wire(body[0]), _stat(body[1])
    ),
    OP_ADD_WATCH: lambda xid, zxid, body: jute.encode_int_reply(xid, zxid, 0),
    OP_GET_ALL_CHILDREN_NUMBER: jute.encode_int_reply,
    OP_GET_EPHEMERALS: jute.encode_children_reply,
    OP_WHO_AM_I: jute.encode_who_am_i_reply,
    OP_SASL: jute.encode_sasl_reply,
    OP_MULTI_READ: jute.encode_multi_reply,
}


def _multi_result(opcode: int, result: list[Any], failed: bool) -> MultiResult:
    """One operation's result from the machine's [error, value] pair; in a failed multi every
    result is an error (0 for the operations rolled back)."""
    error, value = result
    if failed or error != 0:
        return MultiResult(OP_ERROR, err=error)
    if opcode == OP_CREATE:
        return MultiResult(OP_CREATE, path=value[0])
    if opcode in (OP_CREATE2, OP_CREATE_CONTAINER, OP_CREATE_TTL):
        return MultiResult(OP_CREATE2, path=value[0], stat=_stat(value[1]))
    if opcode == OP_SET_DATA:
        return MultiResult(OP_SET_DATA, stat=_stat(value))
    return MultiResult(opcode)  # delete, check


def _multi_read_result(
    conn: ServerConnection, op: GetDataRequest | GetChildrenRequest
) -> MultiResult:
    try:
        body = conn.read_body(op)
    except ZkError as err:
        return MultiResult(OP_ERROR, err=err.code)
    if type(op) is GetDataRequest:
        return MultiResult(OP_GET_DATA, data=body[0], stat=_stat(body[1]))
    return MultiResult(OP_GET_CHILDREN, children=tuple(body[0]))


def _get_acl(conn: ServerConnection, request: GetACLRequest) -> list[Any]:
    """getACL as ZooKeeper 3.8 answers it: READ or ADMIN lets a client read the ACL, but
    without ADMIN the hash of every digest id is hidden (``user:x``), so that READ does not
    hand out the hashes to try passwords against."""
    body: list[Any] = conn.read_body(request)
    node = conn.view.tree.get(paths.validate(request.path))
    if node is None or acls.allows(node.acl, Perm.ADMIN, conn.ids):
        return body
    hidden = [
        [perms, scheme, f"{ident.partition(':')[0]}:x" if scheme == "digest" else ident]
        for perms, scheme, ident in body[0]
    ]
    return [hidden, body[1]]


def _query_watches(conn: ServerConnection, query: WatchQuery) -> None:
    """checkWatches or removeWatches: NO_WATCHER unless the connection holds a watch of one of
    the query's modes on its path (removeWatches removes every one of them)."""
    path = paths.validate(query.path)
    watches = conn.view.watches
    if query.remove:
        found = [watches.remove(conn.watcher, path, mode) for mode in query.modes]
    else:
        found = [watches.has(conn.watcher, path, mode) for mode in query.modes]
    if not any(found):
        raise NoWatcherError(path=path)


def _all_children_number(conn: ServerConnection, path: str) -> int:
    """How many nodes are below `path` at any depth (ZooKeeper checks READ on `path` only)."""
    tree = conn.view.tree
    node = tree.get(paths.validate(path))
    if node is None:
        raise NoNodeError(path=path)
    if not acls.allows(node.acl, Perm.READ, conn.ids):
        raise NoAuthError("READ not allowed", path=path)
    return sum(1 for _ in tree.descendants(path))


def _ephemerals(conn: ServerConnection, prefix: str) -> list[str]:
    """The session's ephemeral nodes whose path starts with `prefix` ("" or "/": all)."""
    owned = conn.view.tree.ephemerals_of(conn.session_id)
    if prefix in ("", "/"):
        return sorted(owned)
    return sorted(path for path in owned if path.startswith(prefix))


class JuteDialect:
    """ZooKeeper's client protocol, as `zkpy.server.clients.Dialect`. `server` is the member's
    client listener, whose connections `cons`, `dump` and the watch words report."""

    def __init__(
        self, sasl_users: SaslUsers | None = None, server: ClientServer | None = None
    ) -> None:
        self.sasl_users = sasl_users or SaslUsers()
        self.server = server

    def new_codec(self) -> Codec:
        """A codec of its own for each connection (it follows the replies' opcodes and its
        SASL exchange)."""
        return JuteCodec(self.sasl_users)

    def hash_credential(self, credential: bytes) -> Id:
        """ZooKeeper's digest (`zookeeper_digest_id`)."""
        return zookeeper_digest_id(credential)

    def command(self, member: Member, first: bytes) -> bytes | None:
        """The answer to a four-letter word, or None if `first` does not start with one.
        ZooKeeper reads the first 4 bytes of a connection and answers them if they are a word:
        a trailing newline (nc, telnet) is allowed."""
        word = first[:4]
        if len(first) != 4 and first[4:] not in (b"\n", b"\r\n"):
            return None
        answer = FOUR_LETTER_WORDS.get(word)
        if answer is not None:
            connections = [] if self.server is None else self.server.connections()
            return answer(member, connections).encode()
        if word in NOT_SERVED_WORDS:
            return word + b" is not executed because it is not in the whitelist.\n"
        return None


NOT_SERVING = "This ZooKeeper instance is not currently serving requests\n"
_LAST_OPS = {
    OP_PING: "PING",
    jute.OP_CREATE_SESSION: "SESS",
    jute.OP_CLOSE_SESSION: "CLOS",
    OP_CREATE: "CREA",
    OP_CREATE2: "CREA",
    OP_CREATE_CONTAINER: "CREA",
    OP_CREATE_TTL: "CREA",
    jute.OP_DELETE: "DELE",
    OP_SET_DATA: "SETD",
    OP_SET_ACL: "SETA",
    jute.OP_CHECK: "CHEC",
    OP_MULTI: "MULT",
    OP_MULTI_READ: "MLTR",
    OP_SYNC: "SYNC",
    OP_EXISTS: "EXIS",
    OP_GET_DATA: "GETD",
    OP_GET_ACL: "GETA",
    OP_GET_CHILDREN: "GETC",
    OP_GET_CHILDREN2: "GETC",
    OP_GET_ALL_CHILDREN_NUMBER: "GETACN",
    OP_GET_EPHEMERALS: "GETE",
    jute.OP_SET_WATCHES: "SETW",
    jute.OP_SET_WATCHES2: "STW2",
    jute.OP_CHECK_WATCHES: "CHKW",
    jute.OP_REMOVE_WATCHES: "REMW",
    OP_ADD_WATCH: "ADDW",
    OP_WHO_AM_I: "HOMI",
    jute.OP_RECONFIG: "RECO",
    OP_SASL: "SASL",
    jute.OP_AUTH: "AUTH",
}
"""The operation names ZooKeeper's `cons` prints as `lop` (its FinalRequestProcessor's)."""


def _mode(status: dict[str, Any]) -> str:
    role = str(status["role"])
    return role if role in ("leader", "follower", "observer", "standalone") else "looking"


def _ms(seconds: float) -> int:
    """A latency in whole milliseconds, as ZooKeeper reports them."""
    return 0 if seconds == math.inf else int(seconds * 1000)


def _latencies(member: Member) -> str:
    """ZooKeeper's `min/avg/max` over every request answered (ms; the average to 4 places)."""
    metrics = member.metrics
    count = sum(stats.latency.count for stats in metrics.ops.values())
    total = sum(stats.latency.sum for stats in metrics.ops.values())
    average = round(total * 1000 / count, 4) if count else 0.0
    return f"{_ms(metrics.latency_min)}/{average}/{_ms(metrics.latency_max)}"


def _server_stats(member: Member, status: dict[str, Any]) -> str:
    """ZooKeeper's ServerStats lines, shared by `srvr` and `stat`."""
    return (
        f"Latency min/avg/max: {_latencies(member)}\n"
        f"Received: {member.metrics.received}\n"
        f"Sent: {member.metrics.sent}\n"
        f"Connections: {status['connections']}\n"
        f"Outstanding: {status['outstanding']}\n"
        f"Zxid: {status['committed_zxid']:#x}\n"
        f"Mode: {_mode(status)}\n"
        f"Node count: {status['znodes']}\n"
    )


def _srvr(member: Member, connections: list[ClientConnection]) -> str:
    status = member.status()
    if not status["serving"]:
        return NOT_SERVING
    return f"Zookeeper version: {ZOOKEEPER_VERSION}\n{_server_stats(member, status)}"


def _stat_word(member: Member, connections: list[ClientConnection]) -> str:
    status = member.status()
    if not status["serving"]:
        return NOT_SERVING
    clients = "".join(_connection_line(conn, brief=True) + "\n" for conn in connections)
    return (
        f"Zookeeper version: {ZOOKEEPER_VERSION}\nClients:\n{clients}\n"
        f"{_server_stats(member, status)}"
    )


def _peer_address(conn: ClientConnection) -> str:
    """``/host:port`` of the client, as Java prints a socket address."""
    stream: Any = conn.stream
    while hasattr(stream, "transport_stream"):  # TLS over the socket
        stream = stream.transport_stream
    try:
        host, port = stream.socket.getpeername()[:2]
    except (AttributeError, OSError):
        return "/?"
    return f"/{host}:{port}"


def _connection_line(conn: ClientConnection, brief: bool = False) -> str:
    """One connection as ZooKeeper's `dumpConnectionInfo` prints it (ms and hex zxids)."""
    codec = conn.rules.codec
    if not isinstance(codec, MeteredCodec):
        return f" {_peer_address(conn)}[1](queued={conn.rules.queued})"
    line = (
        f" {_peer_address(conn)}[1](queued={conn.rules.queued},recved={codec.received},"
        f"sent={codec.sent}"
    )
    session_id = conn.session_id
    if brief or not session_id:
        return line + ")"
    now, clock = time.time(), time.perf_counter()
    last_response = codec.last_response or clock
    average = int(codec.latency_sum * 1000 / codec.answered) if codec.answered else 0
    fields = [
        f"sid={session_id:#x}",
        f"lop={_LAST_OPS.get(codec.last_opcode, 'NA')}",
        f"est={int(codec.established * 1000)}",
        f"to={conn.rules.timeout_ms}",
    ]
    if codec.last_xid >= 0:
        fields.append(f"lcxid={codec.last_xid:#x}")
    fields += [
        f"lzxid={codec.last_zxid & 0xFFFFFFFFFFFFFFFF:#x}",
        f"lresp={int((now - (clock - last_response)) * 1000) if codec.last_response else 0}",
        f"llat={_ms(codec.last_latency)}",
        f"minlat={_ms(codec.latency_min)}",
        f"avglat={average}",
        f"maxlat={_ms(codec.latency_max)}",
    ]
    return f"{line},{','.join(fields)})"


def _cons(member: Member, connections: list[ClientConnection]) -> str:
    if not member.status()["serving"]:
        return NOT_SERVING
    return "".join(_connection_line(conn) + "\n" for conn in connections) + "\n"


def _dump(member: Member, connections: list[ClientConnection]) -> str:
    """Sessions (with their timeouts), ephemeral nodes by session, and connections."""
    if not member.status()["serving"]:
        return NOT_SERVING
    tree = member.tree
    lines = ["SessionTracker dump:", f"Global Sessions({len(tree.sessions)}):"]
    for session_id in sorted(tree.sessions):
        lines.append(f"{session_id:#x}\t{tree.sessions[session_id].timeout_ms}ms")
    owners = {owner: paths for owner, paths in tree.ephemerals.items() if paths}
    lines += ["ephemeral nodes dump:", f"Sessions with Ephemerals ({len(owners)}):"]
    for owner in sorted(owners):
        lines.append(f"{owner:#x}:")
        lines += [f"\t{path}" for path in sorted(owners[owner])]
    lines += ["Connections dump:", f"Connections ({len(connections)}):"]
    for conn in connections:
        lines.append(f"\tip: {_peer_address(conn)} sessionId: {conn.session_id:#x}")
    return "\n".join(lines) + "\n"


def _watched(member: Member, connections: list[ClientConnection]) -> dict[int, set[str]]:
    """The paths each session watches here (one connection serves a session)."""
    found: dict[int, set[str]] = {}
    for conn in connections:
        paths_watched = {path for _mode, path in member.watches.registrations(conn.id)}
        if paths_watched and conn.session_id:
            found.setdefault(conn.session_id, set()).update(paths_watched)
    return found


def _wchs(member: Member, connections: list[ClientConnection]) -> str:
    watched = _watched(member, connections)
    paths_watched = set().union(*watched.values()) if watched else set()
    total = sum(len(member.watches.registrations(conn.id)) for conn in connections)
    return (
        f"{len(watched)} connections watching {len(paths_watched)} paths\nTotal watches:{total}\n"
    )


def _wchc(member: Member, connections: list[ClientConnection]) -> str:
    watched = _watched(member, connections)
    lines = []
    for session_id in sorted(watched):
        lines.append(f"{session_id:#x}")
        lines += [f"\t{path}" for path in sorted(watched[session_id])]
    return "".join(line + "\n" for line in lines)


def _wchp(member: Member, connections: list[ClientConnection]) -> str:
    by_path: dict[str, set[int]] = {}
    for session_id, watched_paths in _watched(member, connections).items():
        for path in watched_paths:
            by_path.setdefault(path, set()).add(session_id)
    lines = []
    for path in sorted(by_path):
        lines.append(path)
        lines += [f"\t{session_id:#x}" for session_id in sorted(by_path[path])]
    return "".join(line + "\n" for line in lines)


def _mntr(member: Member, connections: list[ClientConnection]) -> str:
    status = member.status()
    metrics = member.metrics
    count = sum(stats.latency.count for stats in metrics.ops.values())
    total = sum(stats.latency.sum for stats in metrics.ops.values())
    values = {
        "zk_version": ZOOKEEPER_VERSION,
        "zk_server_state": _mode(status),
        "zk_avg_latency": round(total * 1000 / count, 4) if count else 0.0,
        "zk_max_latency": _ms(metrics.latency_max),
        "zk_min_latency": _ms(metrics.latency_min),
        "zk_packets_received": metrics.received,
        "zk_packets_sent": metrics.sent,
        "zk_num_alive_connections": status["connections"],
        "zk_outstanding_requests": status["outstanding"],
        "zk_znode_count": status["znodes"],
        "zk_watch_count": status["watches"],
        "zk_ephemerals_count": sum(len(p) for p in member.tree.ephemerals.values()),
        "zk_global_sessions": status["sessions"],
        "zk_quorum_size": len(member.config.voters) or 1,
        "zk_open_file_descriptor_count": _open_files(),
        "zk_max_file_descriptor_count": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "zk_uptime": status["uptime_ms"],
    }
    return "".join(f"{key}\t{value}\n" for key, value in values.items())


def _open_files() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def _conf(member: Member, connections: list[ClientConnection]) -> str:
    config = member.config
    bounds = member.bounds
    values = {
        "clientPort": config.zk_port,
        "dataDir": config.data_dir,
        "tickTime": config.tick_ms,
        "maxClientCnxns": config.max_connections_per_address,
        "minSessionTimeout": bounds.min_ms,
        "maxSessionTimeout": bounds.max_ms,
        "serverId": config.server_id,
    }
    return "".join(f"{key}={value}\n" for key, value in values.items())


def _envi(member: Member, connections: list[ClientConnection]) -> str:
    values = {
        "zookeeper.version": ZOOKEEPER_VERSION,
        "host.name": member.config.host,
        "python.version": platform.python_version(),
        "os.name": platform.system(),
        "user.dir": os.getcwd(),
    }
    return "Environment:\n" + "".join(f"{key}={value}\n" for key, value in values.items())


def _isro(member: Member, connections: list[ClientConnection]) -> str:
    return "rw" if member.status()["serving"] else "null"


FOUR_LETTER_WORDS: dict[bytes, Callable[[Member, list[ClientConnection]], str]] = {
    b"ruok": lambda member, connections: "imok",
    b"srvr": _srvr,
    b"stat": _stat_word,
    b"mntr": _mntr,
    b"conf": _conf,
    b"isro": _isro,
    b"envi": _envi,
    b"cons": _cons,
    b"dump": _dump,
    b"wchs": _wchs,
    b"wchc": _wchc,
    b"wchp": _wchp,
}

NOT_SERVED_WORDS = frozenset({b"crst", b"dirs", b"gtmk", b"srst", b"stmk"})
"""ZooKeeper's other four-letter words: refused as ZooKeeper refuses a word off its whitelist."""
