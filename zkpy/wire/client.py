"""The client protocol: msgpack messages between clients and servers (see docs/protocol.md).

Every frame holds one msgpack value. The first frame each way is a handshake map; after that
requests are arrays ``[xid, opcode, args...]`` and server frames are arrays
``[xid, zxid, error, body]``. Server frames with xid -1 are watch events and with xid -2 ping
replies. Decoding checks the shape of everything and raises `MarshallingError` on a mismatch;
the meaning (a valid path, a known session) is checked later by prep and the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from zkpy.core.errors import Code, MarshallingError
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
XID_AUTH = -4
XID_SET_WATCHES = -8

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
OP_REMOVE_WATCHES = 18
OP_CLOSE = -11
OP_AUTH = 100
OP_SET_WATCHES = 101
OP_ADD_WATCH = 106

FLAG_EPHEMERAL = 1
FLAG_SEQUENTIAL = 2

MAX_MULTI_OPS = 1000


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
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
    """The client's first frame: which session to start or resume."""

    session_id: int = 0
    password: bytes = b""
    timeout_ms: int = 10_000
    last_zxid: int = 0
    version: int = PROTOCOL_VERSION

    def encode(self) -> bytes:
        return encode_frame(
            pack(
                {
                    "v": self.version,
                    "session_id": self.session_id,
                    "password": self.password,
                    "timeout_ms": self.timeout_ms,
                    "last_zxid": self.last_zxid,
                }
            )
        )

    @classmethod
    def decode(cls, payload: bytes) -> Handshake:
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
        )


@dataclass(frozen=True, slots=True)
class HandshakeReply:
    session_id: int = 0
    password: bytes = b""
    timeout_ms: int = 0
    zxid: int = 0
    max_frame: int = 0
    server_id: int = 0
    error: int = Code.OK
    message: str = ""

    def encode(self) -> bytes:
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
        return encode_frame(pack(body))

    @classmethod
    def decode(cls, payload: bytes) -> HandshakeReply:
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
    match request:
        case CreateRequest(path, data, acl, ephemeral, sequential):
            flags = (FLAG_EPHEMERAL if ephemeral else 0) | (FLAG_SEQUENTIAL if sequential else 0)
            return [OP_CREATE, path, data, _acl_out(acl), flags]
        case DeleteRequest(path, version):
            return [OP_DELETE, path, version]
        case ExistsRequest(path, watch):
            return [OP_EXISTS, path, watch]
        case GetDataRequest(path, watch):
            return [OP_GET_DATA, path, watch]
        case SetDataRequest(path, data, version):
            return [OP_SET_DATA, path, data, version]
        case GetACLRequest(path):
            return [OP_GET_ACL, path]
        case SetACLRequest(path, acl, version):
            return [OP_SET_ACL, path, _acl_out(acl), version]
        case SyncRequest(path):
            return [OP_SYNC, path]
        case GetChildrenRequest(path, watch):
            return [OP_GET_CHILDREN, path, watch]
        case CheckRequest(path, version):
            return [OP_CHECK, path, version]
        case MultiRequest(ops):
            return [OP_MULTI, [request_fields(op) for op in ops]]
        case RemoveWatchesRequest(path, mode):
            return [OP_REMOVE_WATCHES, path, 0 if mode is None else int(mode)]
        case CloseSessionRequest():
            return [OP_CLOSE]
        case AuthRequest(scheme, credential):
            return [OP_AUTH, scheme, credential]
        case SetWatchesRequest(last_zxid, data, exist, child, persistent, recursive):
            return [
                OP_SET_WATCHES,
                last_zxid,
                list(data),
                list(exist),
                list(child),
                list(persistent),
                list(recursive),
            ]
        case AddWatchRequest(path, mode):
            return [OP_ADD_WATCH, path, int(mode)]
        case PingRequest():
            return [OP_PING]
    raise TypeError(f"cannot encode {request!r}")


def encode_request(xid: int, request: Request) -> bytes:
    return encode_frame(pack([xid, *request_fields(request)]))


PING_FRAME = encode_frame(pack([XID_PING, OP_PING]))


# ---- requests: server side decoding -------------------------------------------------------


def _expect(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MarshallingError(f"{what} must be {kind.__name__}, not {type(value).__name__}")
    return value


def _acl_in(value: Any) -> tuple[ACL, ...]:
    _expect(value, list, "acl")
    try:
        for entry in value:
            _expect(entry, list, "acl entry")
        return acl_from_wire(value)
    except (TypeError, ValueError):
        raise MarshallingError("acl entries must be [perms:int, scheme:str, id:str]") from None


def _args(fields: list[Any], count: int, name: str) -> list[Any]:
    if len(fields) != count:
        raise MarshallingError(f"{name} takes {count} arguments, got {len(fields)}")
    return fields


def decode_request_fields(fields: list[Any]) -> tuple[int, Request]:
    """Decode ``[opcode, args...]``; return the opcode and the typed request."""
    if not fields:
        raise MarshallingError("request lacks an opcode")
    opcode = _expect(fields[0], int, "opcode")
    args = fields[1:]
    if opcode == OP_CREATE:
        path, data, acl, flags = _args(args, 4, "create")
        _expect(flags, int, "flags")
        if flags & ~(FLAG_EPHEMERAL | FLAG_SEQUENTIAL):
            raise MarshallingError(f"unknown create flags {flags}")
        return opcode, CreateRequest(
            _expect(path, str, "path"),
            _expect(data, bytes, "data"),
            _acl_in(acl),
            bool(flags & FLAG_EPHEMERAL),
            bool(flags & FLAG_SEQUENTIAL),
        )
    if opcode == OP_DELETE:
        path, version = _args(args, 2, "delete")
        return opcode, DeleteRequest(_expect(path, str, "path"), _expect(version, int, "version"))
    if opcode in (OP_EXISTS, OP_GET_DATA, OP_GET_CHILDREN):
        path, watch = _args(args, 2, "read")
        path = _expect(path, str, "path")
        watch = _expect(watch, bool, "watch")
        if opcode == OP_EXISTS:
            return opcode, ExistsRequest(path, watch)
        if opcode == OP_GET_DATA:
            return opcode, GetDataRequest(path, watch)
        return opcode, GetChildrenRequest(path, watch)
    if opcode == OP_SET_DATA:
        path, data, version = _args(args, 3, "set_data")
        return opcode, SetDataRequest(
            _expect(path, str, "path"), _expect(data, bytes, "data"), _expect(version, int, "ver")
        )
    if opcode == OP_GET_ACL:
        (path,) = _args(args, 1, "get_acl")
        return opcode, GetACLRequest(_expect(path, str, "path"))
    if opcode == OP_SET_ACL:
        path, acl, version = _args(args, 3, "set_acl")
        return opcode, SetACLRequest(
            _expect(path, str, "path"), _acl_in(acl), _expect(version, int, "version")
        )
    if opcode == OP_SYNC:
        (path,) = _args(args, 1, "sync")
        return opcode, SyncRequest(_expect(path, str, "path"))
    if opcode == OP_CHECK:
        path, version = _args(args, 2, "check")
        return opcode, CheckRequest(_expect(path, str, "path"), _expect(version, int, "version"))
    if opcode == OP_MULTI:
        (ops,) = _args(args, 1, "multi")
        _expect(ops, list, "multi ops")
        if len(ops) > MAX_MULTI_OPS:
            raise MarshallingError(f"a multi holds at most {MAX_MULTI_OPS} operations")
        decoded: list[MultiOp] = []
        for op in ops:
            inner_code, inner = decode_request_fields(_expect(op, list, "multi op"))
            if not isinstance(inner, CreateRequest | DeleteRequest | SetDataRequest | CheckRequest):
                raise MarshallingError(f"opcode {inner_code} is not allowed in a multi")
            decoded.append(inner)
        return opcode, MultiRequest(tuple(decoded))
    if opcode == OP_REMOVE_WATCHES:
        path, mode = _args(args, 2, "remove_watches")
        _expect(mode, int, "mode")
        return opcode, RemoveWatchesRequest(_expect(path, str, "path"), _watch_mode(mode, True))
    if opcode == OP_CLOSE:
        _args(args, 0, "close")
        return opcode, CloseSessionRequest()
    if opcode == OP_AUTH:
        scheme, credential = _args(args, 2, "auth")
        return opcode, AuthRequest(
            _expect(scheme, str, "scheme"), _expect(credential, bytes, "credential")
        )
    if opcode == OP_SET_WATCHES:
        last_zxid, *lists = _args(args, 6, "set_watches")
        _expect(last_zxid, int, "last_zxid")
        path_lists = [_path_list(item) for item in lists]
        return opcode, SetWatchesRequest(last_zxid, *path_lists)
    if opcode == OP_PING:
        _args(args, 0, "ping")
        return opcode, PingRequest()
    if opcode == OP_ADD_WATCH:
        path, mode = _args(args, 2, "add_watch")
        watch_mode = _watch_mode(_expect(mode, int, "mode"), False)
        if watch_mode not in (WatchMode.PERSISTENT, WatchMode.PERSISTENT_RECURSIVE):
            raise MarshallingError("add_watch mode must be 4 (persistent) or 5 (recursive)")
        return opcode, AddWatchRequest(_expect(path, str, "path"), watch_mode)
    raise MarshallingError(f"unknown opcode {opcode}")


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
    """Decode a request frame into (xid, opcode, request).

    Raises MarshallingError; its `xid` attribute is set when the xid could be read, so that the
    server can answer that request before it closes the connection.
    """
    value = unpack(payload)
    if not isinstance(value, list) or not value:
        raise MarshallingError("a request must be an array [xid, opcode, args...]")
    xid = value[0]
    if not isinstance(xid, int) or isinstance(xid, bool) or not -(2**31) <= xid < 2**31:
        raise MarshallingError("xid must be a 32-bit integer")
    try:
        opcode, request = decode_request_fields(value[1:])
    except MarshallingError as err:
        err.xid = xid  # type: ignore[attr-defined]
        raise
    return xid, opcode, request


def is_ping(payload: bytes) -> bool:
    return payload == PING_FRAME[4:]


# ---- replies and events -------------------------------------------------------------------


def encode_reply(xid: int, zxid: int, error: int, body: Any) -> bytes:
    return encode_frame(pack([xid, zxid, error, body]))


def encode_event(event: WatchedEvent) -> bytes:
    return encode_frame(pack([XID_EVENT, event.zxid, 0, [int(event.type), event.path]]))


def stat_out(stat: Stat | None) -> list[int] | None:
    return None if stat is None else stat.to_wire()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_ONLY_INT = frozenset({int})


def stat_in(value: Any) -> Stat:
    # set(map(type, ...)) runs in C: a reply's stat is checked in a fraction of a microsecond
    if type(value) is not list or len(value) != 11 or not set(map(type, value)) <= _ONLY_INT:
        raise MarshallingError("a stat is an array of 11 integers")
    return Stat.from_wire(value)


def acl_in(value: Any) -> tuple[ACL, ...]:
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
    if not isinstance(body, list) or len(body) != 2:
        raise MarshallingError("an event body is [type, path]")
    kind, path = body
    if not _is_int(kind):
        raise MarshallingError(f"unknown event type {kind!r}")
    try:
        return WatchedEvent(EventType(kind), _expect(path, str, "path"), zxid)
    except ValueError:
        raise MarshallingError(f"unknown event type {kind}") from None
