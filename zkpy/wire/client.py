"""The client protocol: msgpack messages between clients and servers (see docs/protocol.md).

Every frame holds one msgpack value. The first frame each way is a handshake map; after that
requests are arrays ``[xid, opcode, args...]`` and server frames are arrays
``[xid, zxid, error, body]``. Server frames with xid -1 are watch events and with xid -2 ping
replies. Decoding checks the shape of everything and raises `MarshallingError` on a mismatch;
the meaning (a valid path, a known session) is checked later by prep and the server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import msgpack

from zkpy.core.errors import BadArgumentsError, Code, MarshallingError
from zkpy.core.membership import MemberSpec, parse_server_line
from zkpy.core.requests import (
    AddWatchRequest,
    AuthRequest,
    CheckRequest,
    CloseSessionRequest,
    CreateRequest,
    DeleteRequest,
    ExistsRequest,
    GetACLRequest,
    GetChildrenRequest,
    GetDataRequest,
    MultiOp,
    MultiRequest,
    PingRequest,
    ReconfigRequest,
    RemoveWatchesRequest,
    Request,
    SetACLRequest,
    SetDataRequest,
    SetWatchesRequest,
    SyncRequest,
)
from zkpy.core.types import ACL, EventType, Stat, WatchedEvent, WatchMode, acl_from_wire
from zkpy.wire.frames import encode_frame

PROTOCOL_VERSION = 1

XID_EVENT = -1
XID_PING = -2
XID_SESSION = 0  # the cxid of the server's own transactions on a session (its creation, expiry)
XID_AUTH = -4
XID_SET_WATCHES = -8
# xids a client request may not carry: the server's frames and transactions use them. They are
# exactly -2..0, which `decode_request` checks with one chained comparison.
RESERVED_XIDS = frozenset({XID_PING, XID_EVENT, XID_SESSION})

OP_CREATE = 1
OP_DELETE = 2
OP_EXISTS = 3
OP_GET_DATA = 4
OP_SET_DATA = 5
OP_GET_ACL = 6
OP_SET_ACL = 7
OP_SYNC = 9
OP_PING = 11
OP_GET_CHILDREN = 12
OP_CHECK = 13
OP_MULTI = 14
OP_RECONFIG = 16
OP_REMOVE_WATCHES = 18
OP_CLOSE = -11
OP_AUTH = 100
OP_SET_WATCHES = 101
OP_ADD_WATCH = 106

FLAG_EPHEMERAL = 1
FLAG_SEQUENTIAL = 2
FLAG_CONTAINER = 4

MAX_MULTI_OPS = 1000


def new_packer() -> msgpack.Packer:
    """A Packer for `pack` and the encoders below, for one thread to reuse: `msgpack.packb`
    makes a new Packer per call, which costs as much as packing a reply."""
    return msgpack.Packer(use_bin_type=True)


def pack(value: Any, packer: msgpack.Packer | None = None) -> bytes:
    """`value` as msgpack (bytes as bin), through `packer` when the caller reuses one."""
    packed: bytes = (
        msgpack.packb(value, use_bin_type=True) if packer is None else packer.pack(value)
    )
    return packed


def unpack(payload: bytes) -> Any:
    """Decode one frame's msgpack value; any failure is a MarshallingError."""
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)
    except Exception as err:  # msgpack raises several unrelated types for bad input
        raise MarshallingError(f"frame is not valid msgpack ({type(err).__name__})") from None


# ---- handshake -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handshake:
    """The client's first frame: which session to start or resume, and whether a member
    without a quorum may serve it read-only."""

    session_id: int = 0
    password: bytes = b""
    timeout_ms: int = 10_000
    last_zxid: int = 0
    version: int = PROTOCOL_VERSION
    read_only: bool = False

    def encode(self) -> bytes:
        """The handshake as a frame: a msgpack map, so that fields can be added compatibly
        (`read_only` only when set)."""
        body: dict[str, Any] = {
            "v": self.version,
            "session_id": self.session_id,
            "password": self.password,
            "timeout_ms": self.timeout_ms,
            "last_zxid": self.last_zxid,
        }
        if self.read_only:
            body["read_only"] = True
        return encode_frame(pack(body))

    @classmethod
    def decode(cls, payload: bytes) -> Handshake:
        """The handshake in one frame's payload; MarshallingError on a bad shape or another
        protocol version."""
        value = unpack(payload)
        if not isinstance(value, dict):
            raise MarshallingError("handshake must be a map")
        version = _field(value, "v", int)
        if version != PROTOCOL_VERSION:
            raise MarshallingError(f"unsupported protocol version {version}")
        return cls(
            session_id=_field(value, "session_id", int, 0),
            password=_field(value, "password", bytes, b""),
            timeout_ms=_field(value, "timeout_ms", int, 10_000),
            last_zxid=_field(value, "last_zxid", int, 0),
            read_only=_field(value, "read_only", bool, False),
        )


@dataclass(frozen=True, slots=True)
class HandshakeReply:
    """The member's answer to a handshake: the session it opened or resumed and the limits it
    enforces (`read_only`: a session of a member without a quorum, which answers reads only),
    or an error code and message when it refused."""

    session_id: int = 0
    password: bytes = b""
    timeout_ms: int = 0
    zxid: int = 0
    max_frame: int = 0
    server_id: int = 0
    error: int = Code.OK
    message: str = ""
    read_only: bool = False

    def encode(self) -> bytes:
        """The reply as a frame: only the error and message when it refuses."""
        body: dict[str, Any] = {"v": PROTOCOL_VERSION}
        if self.error:
            body.update(error=self.error, message=self.message)
        else:
            body.update(
                session_id=self.session_id,
                password=self.password,
                timeout_ms=self.timeout_ms,
                zxid=self.zxid,
                max_frame=self.max_frame,
                server_id=self.server_id,
            )
            if self.read_only:
                body["read_only"] = True
        return encode_frame(pack(body))

    @classmethod
    def decode(cls, payload: bytes) -> HandshakeReply:
        """The handshake reply in one frame's payload; MarshallingError on a bad shape."""
        value = unpack(payload)
        if not isinstance(value, dict):
            raise MarshallingError("handshake reply must be a map")
        error = _field(value, "error", int, 0)
        if error:
            return cls(error=error, message=_field(value, "message", str, ""))
        return cls(
            session_id=_field(value, "session_id", int),
            password=_field(value, "password", bytes),
            timeout_ms=_field(value, "timeout_ms", int),
            zxid=_field(value, "zxid", int, 0),
            max_frame=_field(value, "max_frame", int, 0),
            server_id=_field(value, "server_id", int, 0),
            read_only=_field(value, "read_only", bool, False),
        )


_MISSING = object()


def _field(value: dict[str, Any], key: str, kind: type, default: Any = _MISSING) -> Any:
    if key not in value:
        if default is _MISSING:
            raise MarshallingError(f"handshake lacks {key!r}")
        return default
    item = value[key]
    if not isinstance(item, kind) or (kind is int and isinstance(item, bool)):
        raise MarshallingError(f"handshake field {key!r} must be {kind.__name__}")
    return item


# ---- requests: client side encoding -------------------------------------------------------


def _acl_out(acl: tuple[ACL, ...]) -> list[list[object]]:
    return [entry.to_wire() for entry in acl]


def request_fields(request: Request) -> list[Any]:
    """The ``[opcode, args...]`` form of a request (without its xid)."""
    # the most frequent requests by exact type tests (see `zkpy.core.txn.op_to_fields` for
    # why not `match`), the rest through a table keyed by exact type
    if type(request) is GetDataRequest:
        return [OP_GET_DATA, request.path, request.watch]
    if type(request) is SetDataRequest:
        return [OP_SET_DATA, request.path, request.data, request.version]
    if type(request) is CreateRequest:
        flags = (
            (FLAG_EPHEMERAL if request.ephemeral else 0)
            | (FLAG_SEQUENTIAL if request.sequential else 0)
            | (FLAG_CONTAINER if request.container else 0)
        )
        fields = [OP_CREATE, request.path, request.data, _acl_out(request.acl), flags]
        if request.ttl_ms:
            fields.append(request.ttl_ms)
        return fields
    encode = _REQUEST_ENCODERS.get(type(request))
    if encode is None:
        raise TypeError(f"cannot encode {request!r}")
    return encode(request)


def _delete_fields(request: DeleteRequest) -> list[Any]:
    return [OP_DELETE, request.path, request.version]


def _exists_fields(request: ExistsRequest) -> list[Any]:
    return [OP_EXISTS, request.path, request.watch]


def _get_acl_fields(request: GetACLRequest) -> list[Any]:
    return [OP_GET_ACL, request.path]


def _set_acl_fields(request: SetACLRequest) -> list[Any]:
    return [OP_SET_ACL, request.path, _acl_out(request.acl), request.version]


def _sync_fields(request: SyncRequest) -> list[Any]:
    return [OP_SYNC, request.path]


def _get_children_fields(request: GetChildrenRequest) -> list[Any]:
    return [OP_GET_CHILDREN, request.path, request.watch]


def _check_fields(request: CheckRequest) -> list[Any]:
    return [OP_CHECK, request.path, request.version]


def _multi_fields(request: MultiRequest) -> list[Any]:
    return [OP_MULTI, [request_fields(op) for op in request.ops]]


def _remove_watches_fields(request: RemoveWatchesRequest) -> list[Any]:
    mode = request.mode
    return [OP_REMOVE_WATCHES, request.path, 0 if mode is None else int(mode)]


def _close_fields(request: CloseSessionRequest) -> list[Any]:
    return [OP_CLOSE]


def _auth_fields(request: AuthRequest) -> list[Any]:
    return [OP_AUTH, request.scheme, request.credential]


def _set_watches_fields(request: SetWatchesRequest) -> list[Any]:
    return [
        OP_SET_WATCHES,
        request.last_zxid,
        list(request.data),
        list(request.exist),
        list(request.child),
        list(request.persistent),
        list(request.recursive),
    ]


def _add_watch_fields(request: AddWatchRequest) -> list[Any]:
    return [OP_ADD_WATCH, request.path, int(request.mode)]


def _ping_fields(request: PingRequest) -> list[Any]:
    return [OP_PING]


def _reconfig_fields(request: ReconfigRequest) -> list[Any]:
    """``[16, [member, ...], [id, ...], from_version]``, each member as its line of the
    dynamic configuration: ``server.N=HOST:PEER_PORT:ELECTION_PORT:ROLE;HOST:CLIENT_PORT``;
    a non-incremental reconfig adds its whole new membership as a fifth field, the first two
    lists empty."""
    adds = [m.line() for m in request.add]
    fields = [OP_RECONFIG, adds, list(request.remove), request.from_version]
    if request.new_members is not None:
        fields.append([m.line() for m in request.new_members])
    return fields


# The requests past the three `request_fields` tests first, by exact type.
_REQUEST_ENCODERS: dict[type, Callable[[Any], list[Any]]] = {
    DeleteRequest: _delete_fields,
    ExistsRequest: _exists_fields,
    GetACLRequest: _get_acl_fields,
    SetACLRequest: _set_acl_fields,
    SyncRequest: _sync_fields,
    GetChildrenRequest: _get_children_fields,
    CheckRequest: _check_fields,
    MultiRequest: _multi_fields,
    RemoveWatchesRequest: _remove_watches_fields,
    CloseSessionRequest: _close_fields,
    AuthRequest: _auth_fields,
    SetWatchesRequest: _set_watches_fields,
    AddWatchRequest: _add_watch_fields,
    PingRequest: _ping_fields,
    ReconfigRequest: _reconfig_fields,
}


def encode_request(xid: int, request: Request, packer: msgpack.Packer | None = None) -> bytes:
    """One request as a frame: ``[xid, opcode, args...]``."""
    return encode_frame(pack([xid, *request_fields(request)], packer))


PING_FRAME = encode_frame(pack([XID_PING, OP_PING]))


# ---- requests: server side decoding -------------------------------------------------------


def _expect(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        _refuse(value, kind, what)
    return value


def _data(value: Any) -> bytes | None:
    """A node's data: bin, or nil for ZooKeeper's null data (a member forwards a jute
    client's write to the leader in this form)."""
    if value is None:
        return None
    return _expect(value, bytes, "data")  # type: ignore[no-any-return]


def _refuse(value: object, kind: type, what: str) -> NoReturn:
    raise MarshallingError(f"{what} must be {kind.__name__}, not {type(value).__name__}")


def _acl_in(value: Any) -> tuple[ACL, ...]:
    _expect(value, list, "acl")
    try:
        for entry in value:
            _expect(entry, list, "acl entry")
        return acl_from_wire(value)
    except (TypeError, ValueError):
        raise MarshallingError("acl entries must be [perms:int, scheme:str, id:str]") from None


def decode_request_fields(fields: list[Any]) -> tuple[int, Request]:
    """Decode ``[opcode, args...]``; return the opcode and the typed request."""
    if not fields:
        raise MarshallingError("request lacks an opcode")
    opcode = fields[0]
    if type(opcode) is not int:
        _refuse(opcode, int, "opcode")
    decode = _REQUEST_DECODERS.get(opcode)
    if decode is None:
        if opcode == OP_PING:
            raise MarshallingError(f"a ping must be exactly the frame {PING_FRAME.hex(' ')}")
        raise MarshallingError(f"unknown opcode {opcode}")
    return opcode, decode(fields)


# One decoder per opcode, each given the whole ``[opcode, args...]`` list. A table instead of a
# chain of comparisons, and plain `type(...) is` checks before the explaining `_expect` calls:
# every request a member serves goes through here (the frequent ones in about a microsecond).


def _arity(fields: list[Any], count: int, name: str) -> None:
    if len(fields) != count + 1:
        raise MarshallingError(f"{name} takes {count} arguments, got {len(fields) - 1}")


def _path(value: object) -> str:
    if type(value) is not str:
        _refuse(value, str, "path")
    return value


def _read_args(fields: list[Any]) -> tuple[str, bool]:
    _arity(fields, 2, "read")
    _, path, watch = fields
    if type(watch) is not bool:
        _refuse(watch, bool, "watch")
    return _path(path), watch


def _decode_get_data(fields: list[Any]) -> Request:
    return GetDataRequest(*_read_args(fields))


def _decode_exists(fields: list[Any]) -> Request:
    return ExistsRequest(*_read_args(fields))


def _decode_get_children(fields: list[Any]) -> Request:
    return GetChildrenRequest(*_read_args(fields))


def _decode_set_data(fields: list[Any]) -> Request:
    _arity(fields, 3, "set_data")
    _, path, data, version = fields
    if type(data) is not bytes and data is not None:
        _refuse(data, bytes, "data")
    if type(version) is not int:
        _refuse(version, int, "ver")
    return SetDataRequest(_path(path), data, version)


def _decode_create(fields: list[Any]) -> Request:
    ttl_ms = 0
    if len(fields) == 6:  # a TTL node's create carries its ttl (over 0) last
        ttl_ms = _expect(fields[5], int, "ttl")
        if ttl_ms <= 0:
            raise MarshallingError(
                f"create takes 4 arguments, or 5 with a ttl over 0, not {ttl_ms}"
            )
        fields = fields[:5]
    _arity(fields, 4, "create")
    _, path, data, acl, flags = fields
    _expect(flags, int, "flags")
    if flags & ~(FLAG_EPHEMERAL | FLAG_SEQUENTIAL | FLAG_CONTAINER):
        raise MarshallingError(f"unknown create flags {flags}")
    return CreateRequest(
        _path(path),
        _data(data),
        _acl_in(acl),
        bool(flags & FLAG_EPHEMERAL),
        bool(flags & FLAG_SEQUENTIAL),
        bool(flags & FLAG_CONTAINER),
        ttl_ms,
    )


def _decode_delete(fields: list[Any]) -> Request:
    _arity(fields, 2, "delete")
    _, path, version = fields
    return DeleteRequest(_path(path), _expect(version, int, "version"))


def _decode_get_acl(fields: list[Any]) -> Request:
    _arity(fields, 1, "get_acl")
    return GetACLRequest(_path(fields[1]))


def _decode_set_acl(fields: list[Any]) -> Request:
    _arity(fields, 3, "set_acl")
    _, path, acl, version = fields
    return SetACLRequest(_path(path), _acl_in(acl), _expect(version, int, "version"))


def _decode_sync(fields: list[Any]) -> Request:
    _arity(fields, 1, "sync")
    return SyncRequest(_path(fields[1]))


def _decode_check(fields: list[Any]) -> Request:
    _arity(fields, 2, "check")
    _, path, version = fields
    return CheckRequest(_path(path), _expect(version, int, "version"))


_MULTI_OPCODES = frozenset({OP_CREATE, OP_DELETE, OP_SET_DATA, OP_CHECK})


def _decode_multi(fields: list[Any]) -> Request:
    _arity(fields, 1, "multi")
    ops = _expect(fields[1], list, "multi ops")
    if len(ops) > MAX_MULTI_OPS:
        raise MarshallingError(f"a multi holds at most {MAX_MULTI_OPS} operations")
    decoded: list[MultiOp] = []
    for op in ops:
        _expect(op, list, "multi op")
        if op and type(op[0]) is int and op[0] not in _MULTI_OPCODES:
            # refused before decoding: a multi nested in a multi would recurse
            raise MarshallingError(f"opcode {op[0]} is not allowed in a multi")
        inner_code, inner = decode_request_fields(op)
        if not isinstance(inner, CreateRequest | DeleteRequest | SetDataRequest | CheckRequest):
            raise MarshallingError(f"opcode {inner_code} is not allowed in a multi")
        decoded.append(inner)
    return MultiRequest(tuple(decoded))


def _decode_remove_watches(fields: list[Any]) -> Request:
    _arity(fields, 2, "remove_watches")
    _, path, mode = fields
    _expect(mode, int, "mode")
    return RemoveWatchesRequest(_path(path), _watch_mode(mode, True))


def _decode_close(fields: list[Any]) -> Request:
    _arity(fields, 0, "close")
    return CloseSessionRequest()


def _decode_auth(fields: list[Any]) -> Request:
    _arity(fields, 2, "auth")
    _, scheme, credential = fields
    return AuthRequest(_expect(scheme, str, "scheme"), _expect(credential, bytes, "credential"))


def _decode_set_watches(fields: list[Any]) -> Request:
    _arity(fields, 6, "set_watches")
    _, last_zxid, *lists = fields
    _expect(last_zxid, int, "last_zxid")
    path_lists = [_path_list(item) for item in lists]
    return SetWatchesRequest(last_zxid, *path_lists)


def _decode_add_watch(fields: list[Any]) -> Request:
    _arity(fields, 2, "add_watch")
    _, path, mode = fields
    watch_mode = _watch_mode(_expect(mode, int, "mode"), False)
    if watch_mode not in (WatchMode.PERSISTENT, WatchMode.PERSISTENT_RECURSIVE):
        raise MarshallingError("add_watch mode must be 4 (persistent) or 5 (recursive)")
    return AddWatchRequest(_path(path), watch_mode)


def _decode_reconfig(fields: list[Any]) -> Request:
    if len(fields) != 5:  # with new members; else add, remove and from_version
        _arity(fields, 3, "reconfig")
    add = _server_lines(fields[1], "add")
    remove = tuple(_expect(i, int, "member id") for i in _expect(fields[2], list, "remove"))
    from_version = _expect(fields[3], int, "from_version")
    if len(fields) == 4:
        return ReconfigRequest(add, remove, from_version)
    if add or remove:
        raise MarshallingError("a reconfig gives add and remove, or new members, not both")
    return ReconfigRequest(from_version=from_version, new_members=_server_lines(fields[4], "new"))


def _server_lines(value: object, name: str) -> tuple[MemberSpec, ...]:
    try:
        texts = _expect(value, list, name)
        return tuple(parse_server_line(_expect(text, str, "member")) for text in texts)
    except BadArgumentsError as err:
        raise MarshallingError(str(err)) from None


_REQUEST_DECODERS: dict[int, Callable[[list[Any]], Request]] = {
    OP_GET_DATA: _decode_get_data,
    OP_EXISTS: _decode_exists,
    OP_GET_CHILDREN: _decode_get_children,
    OP_SET_DATA: _decode_set_data,
    OP_CREATE: _decode_create,
    OP_DELETE: _decode_delete,
    OP_GET_ACL: _decode_get_acl,
    OP_SET_ACL: _decode_set_acl,
    OP_SYNC: _decode_sync,
    OP_CHECK: _decode_check,
    OP_MULTI: _decode_multi,
    OP_REMOVE_WATCHES: _decode_remove_watches,
    OP_CLOSE: _decode_close,
    OP_AUTH: _decode_auth,
    OP_SET_WATCHES: _decode_set_watches,
    OP_ADD_WATCH: _decode_add_watch,
    OP_RECONFIG: _decode_reconfig,
}


def _watch_mode(value: int, allow_any: bool) -> WatchMode | None:
    if allow_any and value == 0:
        return None
    try:
        return WatchMode(value)
    except ValueError:
        raise MarshallingError(f"unknown watch mode {value}") from None


def _path_list(value: Any) -> tuple[str, ...]:
    _expect(value, list, "path list")
    return tuple(_expect(item, str, "path") for item in value)


def decode_request(payload: bytes) -> tuple[int, int, Request]:
    """Decode a request frame (other than the ping, which `is_ping` recognises by its bytes)
    into (xid, opcode, request).

    Raises MarshallingError; its `xid` attribute is set when the xid could be read and is not
    reserved, so that the server can answer that request before it closes the connection. A
    reserved xid (`RESERVED_XIDS`) gets no `xid`: a reply carrying it would pass for a watch
    event or a ping reply.
    """
    value = unpack(payload)
    if not isinstance(value, list) or not value:
        raise MarshallingError("a request must be an array [xid, opcode, args...]")
    xid = value[0]
    if type(xid) is not int or not -(2**31) <= xid < 2**31:  # (a bool is not of type int)
        raise MarshallingError("xid must be a 32-bit integer")
    if -2 <= xid <= 0:
        raise MarshallingError(
            f"xid {xid} is reserved (-1 marks events, -2 pings, 0 the server's own transactions)"
        )
    try:
        opcode, request = decode_request_fields(value[1:])
    except MarshallingError as err:
        err.xid = xid  # type: ignore[attr-defined]
        raise
    return xid, opcode, request


def is_ping(payload: bytes) -> bool:
    """Whether a frame's payload is the fixed ping ``[-2, 11]`` (tested before any decoding)."""
    return payload == PING_FRAME[4:]


# ---- replies and events -------------------------------------------------------------------


def encode_reply(
    xid: int, zxid: int, error: int, body: Any, packer: msgpack.Packer | None = None
) -> bytes:
    """One reply as a frame: ``[xid, zxid, error, body]``."""
    return encode_frame(pack([xid, zxid, error, body], packer))


def encode_event(event: WatchedEvent, packer: msgpack.Packer | None = None) -> bytes:
    """One watch event as a frame: a reply with the event xid and ``[type, path]`` as body."""
    return encode_frame(pack([XID_EVENT, event.zxid, 0, [int(event.type), event.path]], packer))


def stat_out(stat: Stat | None) -> list[int] | None:
    """A Stat in its wire form (None stays None: exists on a missing node)."""
    return None if stat is None else stat.to_wire()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_ONLY_INT = {int}
_new_tuple = tuple.__new__


def stat_in(value: Any) -> Stat:
    """A Stat from its wire form, checking it is 11 integers."""
    # {*map(type, ...)} runs in C: a reply's stat is checked in a fraction of a microsecond
    if type(value) is not list or len(value) != 11 or {*map(type, value)} != _ONLY_INT:
        raise MarshallingError("a stat is an array of 11 integers")
    return _new_tuple(Stat, value)  # Stat._make without its length check, made just above


def acl_in(value: Any) -> tuple[ACL, ...]:
    """An ACL from its wire form, checking every entry's shape."""
    return _acl_in(value)


def decode_server_frame(payload: bytes) -> tuple[int, int, int, Any]:
    """Decode a reply, event or ping reply: (xid, zxid, error, body)."""
    value = unpack(payload)
    if not isinstance(value, list) or len(value) != 4:
        raise MarshallingError("a server frame is an array [xid, zxid, error, body]")
    xid, zxid, error, body = value
    if type(xid) is not int or type(zxid) is not int or type(error) is not int:
        raise MarshallingError("xid, zxid and error must be integers")
    return xid, zxid, error, body


def decode_event(body: Any, zxid: int) -> WatchedEvent:
    """The watch event an event frame's body describes; MarshallingError on a bad shape."""
    if not isinstance(body, list) or len(body) != 2:
        raise MarshallingError("an event body is [type, path]")
    kind, path = body
    if not _is_int(kind):
        raise MarshallingError(f"unknown event type {kind!r}")
    try:
        return WatchedEvent(EventType(kind), _expect(path, str, "path"), zxid)
    except ValueError:
        raise MarshallingError(f"unknown event type {kind}") from None
