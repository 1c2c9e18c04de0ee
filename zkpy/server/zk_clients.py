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
- `/zookeeper/config` is shown with each member's `zk_port` as its client address
  (`membership.with_client_ports`): ZooKeeper's clients connect to what it names.
- `digest` authentication is ZooKeeper's: user:base64(sha1(user:password)).
- SASL DIGEST-MD5 (`sasl`, opcode 102) against the users of `sasl_users_file`
  (`zkpy.wire.sasl`): the connection gains the identity ``sasl:<user>``, and the super identity
  too if the user is `sasl_super_user` (ZooKeeper's zookeeper.superUser).
- The four-letter words (`zkpy.server.zk_words`), sent in place of a handshake, are answered
  and the connection closed.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import stat
import struct
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
from zkpy.core.membership import CONFIG_PATH, with_client_ports
from zkpy.core.requests import GetACLRequest, GetChildrenRequest, GetDataRequest, PingRequest
from zkpy.core.serving import Codec, CodecRead, Decoded, Hello, ServerConnection
from zkpy.core.types import Id, Perm, Stat, WatchedEvent, acl_from_wire
from zkpy.server.clients import ClientServer
from zkpy.server.node import Member
from zkpy.server.zk_words import FOUR_LETTER_WORDS
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
    OP_RECONFIG,
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

_READS = (GetAllChildrenNumber, GetEphemerals, MultiRead, Refusal, SaslRequest, WatchQuery, WhoAmI)
_STAT_REPLIES = frozenset({OP_EXISTS, OP_SET_DATA, OP_SET_ACL, jute.OP_CHECK})
_OP_GET_CONFIG = -4  # not on the wire: a getData of /zookeeper/config, awaiting its reply
_DATA_LENGTH = Stat._fields.index("data_length")
DEFAULT_TRACE_MASK = 306  # ZooKeeper's ZooTrace default, which `gtmk` shows


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


def _client_infos(ids: frozenset[Id]) -> list[tuple[str, str]]:
    """whoAmI's (scheme, user) pairs as ZooKeeper reports them: a digest identity by its user
    name alone, never the password's hash. ZooKeeper's order is its hash set's; this one is
    sorted."""
    return sorted(
        (ident.scheme, ident.id.partition(":")[0] if ident.scheme == "digest" else ident.id)
        for ident in ids
    )


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

    def __init__(
        self, sasl_users: SaslUsers | None = None, zk_ports: Mapping[int, int] | None = None
    ) -> None:
        """`zk_ports`: the members' ZooKeeper ports by id, shown in /zookeeper/config."""
        # (xid, opcode, each op's opcode for a multi) of the requests awaiting replies
        self._waiting: deque[tuple[int, int, tuple[int, ...]]] = deque()
        self._has_read_only = True
        self._sasl_users = sasl_users or SaslUsers()
        self._sasl: sasl.DigestMD5Server | None = None
        self._zk_ports: Mapping[int, int] = zk_ports if zk_ports is not None else {}

    # ---- in --------------------------------------------------------------------------------

    def decode_hello(self, payload: bytes) -> Hello:
        """The ConnectRequest (JuteError, a MarshallingError, if it is not one)."""
        request = ConnectRequest.decode(payload)
        self._has_read_only = request.has_read_only
        return Hello(
            request.session_id,
            request.password,
            request.timeout_ms,
            request.last_zxid_seen,
            request.read_only,
        )

    def decode_request(self, payload: bytes) -> tuple[int, int, Decoded] | None:
        """A core request, a `CodecRead` for ZooKeeper's own reads, or None for a ping."""
        xid, opcode, request = jute.decode_request(payload)
        if type(request) is PingRequest:
            return None
        if type(request) is JuteMulti:
            self._waiting.append((xid, opcode, request.opcodes))
            return xid, opcode, request.request
        if type(request) is GetDataRequest and request.path == CONFIG_PATH:
            self._waiting.append((xid, _OP_GET_CONFIG, ()))
            return xid, opcode, request
        self._waiting.append((xid, opcode, ()))
        if isinstance(request, _READS) or type(request) is GetACLRequest:
            return xid, opcode, CodecRead(request)
        assert not isinstance(request, JuteMulti | PingRequest)
        return xid, opcode, request

    def answer(self, conn: ServerConnection, request: object) -> Any:
        """The body of the reply to one of ZooKeeper's own reads (see `decode_request`)."""
        if type(request) is MultiRead:
            return [_multi_read_result(conn, op, self._zk_ports) for op in request.ops]
        if type(request) is WatchQuery:
            return _query_watches(conn, request)
        if type(request) is GetAllChildrenNumber:
            return _all_children_number(conn, request.path)
        if type(request) is GetEphemerals:
            return _ephemerals(conn, request.prefix)
        if type(request) is WhoAmI:
            return _client_infos(conn.ids)
        if type(request) is SaslRequest:
            return self._sasl_step(conn, request.token)
        if type(request) is GetACLRequest:
            return _get_acl(conn, request)
        if type(request) is Refusal:
            raise error_for_code(request.code, request.message)
        raise TypeError(f"not a jute read: {type(request).__name__}")

    def _sasl_step(self, conn: ServerConnection, token: bytes) -> bytes:
        """One step of the connection's DIGEST-MD5 exchange. Any failure is AUTHFAILED, and
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
        if opcode in (_OP_GET_CONFIG, OP_RECONFIG):
            body = _zookeeper_config(body[0], body[1], self._zk_ports)
            opcode = OP_GET_DATA if opcode == _OP_GET_CONFIG else opcode
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
        read_only: bool = False,
    ) -> bytes:
        """The ConnectResponse; its read-only flag is set for a local session of a member in
        read-only mode (`zkpy.core.readonly`)."""
        return ConnectResponse(
            0, timeout_ms, session_id, password, read_only, self._has_read_only
        ).encode()

    def refusal(self, error: int, message: str) -> bytes:
        """An expired session or a wrong password is answered as ZooKeeper does, with a
        ConnectResponse of timeout 0 (the client reports the session expired), and so is a
        session of the ensemble at a member in read-only mode, as by ZooKeeper 3.8; any other
        refusal (no quorum, a member behind the client, a bad handshake) closes the
        connection without a word, so that the client tries another member."""
        if error in (Code.SESSION_EXPIRED, Code.AUTH_FAILED, Code.NOT_READ_ONLY):
            # ZooKeeper's refusal carries a password of 16 zero bytes, and its read-only
            # server's the readOnly flag
            read_only = error == Code.NOT_READ_ONLY
            return ConnectResponse(0, 0, 0, bytes(16), read_only, self._has_read_only).encode()
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
    OP_RECONFIG: lambda xid, zxid, body: jute.encode_data_reply(xid, zxid, body[0], _stat(body[1])),
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


def _zookeeper_config(
    data: bytes, stat: list[int], zk_ports: Mapping[int, int]
) -> tuple[bytes, list[int]]:
    """/zookeeper/config's data and Stat as ZooKeeper's clients are shown them: the members'
    ZooKeeper ports as their client addresses (`with_client_ports`), and the Stat's dataLength
    that of the text they get."""
    shown = with_client_ports(data, zk_ports)
    fields = list(stat)
    fields[_DATA_LENGTH] = len(shown)
    return shown, fields


def _multi_read_result(
    conn: ServerConnection, op: GetDataRequest | GetChildrenRequest, zk_ports: Mapping[int, int]
) -> MultiResult:
    try:
        body = conn.read_body(op)
    except ZkError as err:
        return MultiResult(OP_ERROR, err=err.code)
    if type(op) is GetDataRequest:
        data, stat = body
        if op.path == CONFIG_PATH:
            data, stat = _zookeeper_config(data, stat, zk_ports)
        return MultiResult(OP_GET_DATA, data=data, stat=_stat(stat))
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
    client listener, whose connections `cons`, `dump` and the watch words report. Backups are
    taken over the msgpack port only: the ZooKeeper port, often open to more clients, does not
    hand out the whole tree."""

    serves_backups = False

    def __init__(
        self,
        sasl_users: SaslUsers | None = None,
        server: ClientServer | None = None,
        zk_ports: Mapping[int, int] | None = None,
    ) -> None:
        """`zk_ports`: the members' ZooKeeper ports by id (those of the ensemble file, and
        this member's own once it listens), which /zookeeper/config shows ZooKeeper's clients
        in place of the msgpack ports."""
        self.sasl_users = sasl_users or SaslUsers()
        self.server = server
        self.zk_ports = zk_ports if zk_ports is not None else {}
        self.trace_mask = DEFAULT_TRACE_MASK  # what `gtmk` shows and `stmk` sets

    def new_codec(self) -> Codec:
        """A codec of its own for each connection (it follows the replies' opcodes and its
        SASL exchange)."""
        return JuteCodec(self.sasl_users, self.zk_ports)

    def hash_credential(self, credential: bytes) -> Id:
        """ZooKeeper's digest (`zookeeper_digest_id`)."""
        return zookeeper_digest_id(credential)

    def command(self, member: Member, first: bytes) -> bytes | None:
        """The answer to a four-letter word, or None if `first` does not start with one.
        ZooKeeper reads the first 4 bytes of a connection and answers them if they are a word:
        a trailing newline (nc, telnet) is allowed."""
        word = first[:4]
        if word == b"stmk":
            return self._set_trace_mask(first[4:])
        if len(first) != 4 and first[4:] not in (b"\n", b"\r\n"):
            return None
        if word == b"gtmk":
            return str(self.trace_mask).encode()
        answer = FOUR_LETTER_WORDS.get(word)
        if answer is None:
            return None
        connections = [] if self.server is None else self.server.connections()
        return answer(member, connections).encode()

    def _set_trace_mask(self, rest: bytes) -> bytes:
        """`stmk` and a big-endian long: the new mask, as ZooKeeper echoes it. zkpy writes no
        trace log, so the mask changes nothing but what `gtmk` shows; ZooKeeper's tools that
        set and read it work. Without the long's 8 bytes in the same read the connection
        closes without a word, as ZooKeeper's does."""
        if len(rest) < 8:
            return b""
        (self.trace_mask,) = struct.unpack_from(">q", rest)
        return str(self.trace_mask).encode()
