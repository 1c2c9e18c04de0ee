"""ZooKeeper's client protocol (jute records over TCP), as a pure codec beside the msgpack one.

Every frame is a 4-byte big-endian length and that many bytes (`zkpy.wire.frames`, with a
`jute.maxbuffer`-like limit: `new_frame_decoder`). The first frame each way is the connect
handshake (`ConnectRequest`, `ConnectResponse`), which has no header. After it a request is a
RequestHeader (xid, opcode) and the opcode's record; a reply is a ReplyHeader (xid, zxid, err)
and, when err is 0, the opcode's response record. Watch events come with xid -1, ping replies
with -2, auth replies with -4.

Records decode into zkpy's core requests (`zkpy.core.requests`) wherever one means the same
thing, so that both listeners share one prep, tree, session table and watch manager. The few
ZooKeeper requests with no core counterpart decode into the small records defined here
(`JuteMulti`, `MultiRead`, `WatchQuery`, `GetAllChildrenNumber`, `GetEphemerals`, `WhoAmI`),
and requests zkpy cannot serve yet decode into a `Refusal` carrying ZooKeeper's error code.

Decoding is bounded: every length and count is checked against the bytes actually present
before anything is allocated, and anything malformed raises `JuteError` (a MarshallingError),
never another exception. Field orders follow ZooKeeper's `zookeeper.jute`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
    SetACLRequest,
    SetDataRequest,
    SetWatchesRequest,
    SyncRequest,
)
from zkpy.core.types import ACL, Stat, WatchedEvent, WatchMode, acl_from_wire
from zkpy.wire.frames import FrameDecoder, encode_frame

DEFAULT_MAX_BUFFER = 0xFFFFF  # ZooKeeper's default jute.maxbuffer: the largest frame read
MAX_MULTI_OPS = 1000  # as the msgpack protocol: a multi holds at most this many operations

XID_NOTIFICATION = -1
XID_PING = -2
XID_AUTH = -4
XID_SET_WATCHES = -8

# ZooKeeper's opcodes (ZooDefs.OpCode)
OP_NOTIFICATION = 0
OP_CREATE = 1
OP_DELETE = 2
OP_EXISTS = 3
OP_GET_DATA = 4
OP_SET_DATA = 5
OP_GET_ACL = 6
OP_SET_ACL = 7
OP_GET_CHILDREN = 8
OP_SYNC = 9
OP_PING = 11
OP_GET_CHILDREN2 = 12
OP_CHECK = 13
OP_MULTI = 14
OP_CREATE2 = 15
OP_RECONFIG = 16
OP_CHECK_WATCHES = 17
OP_REMOVE_WATCHES = 18
OP_CREATE_CONTAINER = 19
OP_DELETE_CONTAINER = 20
OP_CREATE_TTL = 21
OP_MULTI_READ = 22
OP_AUTH = 100
OP_SET_WATCHES = 101
OP_SASL = 102
OP_GET_EPHEMERALS = 103
OP_GET_ALL_CHILDREN_NUMBER = 104
OP_SET_WATCHES2 = 105
OP_ADD_WATCH = 106
OP_WHO_AM_I = 107
OP_CREATE_SESSION = -10
OP_CLOSE_SESSION = -11
OP_ERROR = -1

# CreateMode flags
FLAG_EPHEMERAL = 1
FLAG_SEQUENTIAL = 2
FLAG_CONTAINER = 4
FLAG_TTL = 5
FLAG_TTL_SEQUENTIAL = 6

# Watcher.Event.KeeperState: the state a watch event reports
STATE_SYNC_CONNECTED = 3

# Watcher.WatcherType (checkWatches and removeWatches) -> the zkpy watch modes it covers: a
# ZooKeeper "data" watch is what zkpy splits into data and exist watches
WATCHER_TYPES: dict[int, tuple[WatchMode, ...]] = {
    1: (WatchMode.CHILD,),
    2: (WatchMode.DATA, WatchMode.EXIST),
    3: tuple(WatchMode),
    4: (WatchMode.PERSISTENT,),
    5: (WatchMode.PERSISTENT_RECURSIVE,),
}
# AddWatchModes -> zkpy's persistent watch modes
ADD_WATCH_MODES: dict[int, WatchMode] = {
    0: WatchMode.PERSISTENT,
    1: WatchMode.PERSISTENT_RECURSIVE,
}

INT = struct.Struct(">i")
LONG = struct.Struct(">q")
REQUEST_HEADER = struct.Struct(">ii")
REPLY_HEADER = struct.Struct(">iqi")
MULTI_HEADER = struct.Struct(">i?i")
STAT = struct.Struct(">qqqqiiiqiiq")
_CONNECT_REQUEST = struct.Struct(">iqiqi")  # ... and the password's length
_CONNECT_RESPONSE = struct.Struct(">iiqi")  # ... and the password's length
_EVENT = struct.Struct(">iqiiii")  # reply header, type, state, path length
MULTI_DONE = MULTI_HEADER.pack(-1, True, -1)
_HEADER_ONLY_LENGTH = INT.pack(REPLY_HEADER.size)
_NULL_LENGTH = INT.pack(-1)


class JuteError(MarshallingError):
    """A jute frame that cannot be decoded. `xid` is the request's xid when it could be read
    (and is not the notification xid), so that the listener can answer it before closing."""

    def __init__(self, message: str, xid: int | None = None) -> None:
        super().__init__(message)
        self.xid = xid


def new_frame_decoder(max_buffer: int = DEFAULT_MAX_BUFFER) -> FrameDecoder:
    """A frame decoder that refuses (FrameTooLargeError) any length over `max_buffer` as soon
    as its 4 bytes arrive; a negative length reads as one over 2 GiB, so it is refused too."""
    return FrameDecoder(max_buffer)


# ---- reading ---------------------------------------------------------------------------------


class Reader:
    """Reads jute primitives from one frame's payload, checking every length against the bytes
    left before it slices: no read allocates more than the frame holds."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def _take(self, size: int) -> int:
        start = self.pos
        if size > len(self.data) - start:
            raise JuteError("the record ends early")
        self.pos = start + size
        return start

    def unpack(self, fmt: struct.Struct) -> tuple[int, ...]:
        """Several fixed-size fields at once."""
        values: tuple[int, ...] = fmt.unpack_from(self.data, self._take(fmt.size))
        return values

    def int32(self) -> int:
        """A jute int: 4 bytes, big-endian, signed."""
        value: int = INT.unpack_from(self.data, self._take(4))[0]
        return value

    def int64(self) -> int:
        """A jute long: 8 bytes, big-endian, signed."""
        value: int = LONG.unpack_from(self.data, self._take(8))[0]
        return value

    def boolean(self) -> bool:
        """A jute boolean: one byte, any non-zero value true (as Java's readBoolean)."""
        return self.data[self._take(1)] != 0

    def length(self, size: int) -> bytes | None:
        """`size` bytes (None for jute's null, -1)."""
        if size == -1:
            return None
        if size < 0:
            raise JuteError(f"negative length {size}")
        start = self._take(size)
        return self.data[start : start + size]

    def buffer(self) -> bytes:
        """A jute buffer where null means nothing else than empty (a password, a credential)."""
        value = self.length(self.int32())
        return b"" if value is None else value

    def node_data(self) -> bytes | None:
        """A node's data: a jute buffer, None for null (kept apart from empty, as ZooKeeper
        keeps it)."""
        return self.length(self.int32())

    def ustring(self) -> str | None:
        """A jute ustring (strict UTF-8), None for null."""
        raw = self.length(self.int32())
        if raw is None:
            return None
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise JuteError("a string is not valid UTF-8") from None

    def string(self, what: str) -> str:
        """A ustring that may not be null (a path, a scheme)."""
        value = self.ustring()
        if value is None:
            raise JuteError(f"{what} is null")
        return value

    def count(self, least: int) -> int:
        """A vector's length, bounded by the bytes left (each element takes at least `least`);
        a null vector counts as empty."""
        size = self.int32()
        if size == -1:
            return 0
        if size < 0 or size * least > len(self.data) - self.pos:
            raise JuteError(f"a vector of {size} elements does not fit in the record")
        return size

    def strings(self) -> tuple[str, ...]:
        """A vector<ustring> (null elements are refused)."""
        return tuple(self.string("a vector element") for _ in range(self.count(4)))

    def acl(self) -> tuple[ACL, ...]:
        """A vector<ACL>: perms, then the Id's scheme and id. A null scheme or id reads as
        empty: kazoo writes an empty string as null, so its ``auth`` ACL arrives that way."""
        entries = []
        for _ in range(self.count(12)):
            perms = self.int32()
            scheme = self.ustring() or ""
            entries.append((perms, scheme, self.ustring() or ""))
        return acl_from_wire(tuple(entries))

    def stat(self) -> Stat:
        """A Stat: its eleven fields in one struct call."""
        return Stat._make(self.unpack(STAT))

    def end(self) -> None:
        """The record must use the whole frame: trailing bytes are a malformed frame."""
        if self.pos != len(self.data):
            raise JuteError(f"{len(self.data) - self.pos} bytes after the end of the record")


# ---- writing ---------------------------------------------------------------------------------


def write_int(value: int) -> bytes:
    """A jute int."""
    return INT.pack(value)


def write_buffer(value: bytes | None) -> bytes:
    """A jute buffer: its length, then its bytes; None is null (length -1)."""
    if value is None:
        return _NULL_LENGTH
    return INT.pack(len(value)) + value


def write_ustring(value: str) -> bytes:
    """A jute ustring: its UTF-8 length, then its UTF-8 bytes."""
    raw = value.encode()
    return INT.pack(len(raw)) + raw


def write_bool(value: bool) -> bytes:
    """A jute boolean: one byte, 1 or 0."""
    return b"\x01" if value else b"\x00"


def write_strings(values: Sequence[str]) -> bytes:
    """A vector<ustring>."""
    return INT.pack(len(values)) + b"".join([write_ustring(value) for value in values])


def write_acl(acl: Sequence[ACL]) -> bytes:
    """A vector<ACL>: each entry's perms, scheme and id."""
    parts = [INT.pack(len(acl))]
    for entry in acl:
        parts.append(INT.pack(entry.perms))
        parts.append(write_ustring(entry.id.scheme))
        parts.append(write_ustring(entry.id.id))
    return b"".join(parts)


# ---- the connect handshake -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """The client's first frame. `has_read_only` says whether it carried the trailing readOnly
    flag (clients before ZooKeeper 3.4 omit it, and must get a response without it)."""

    protocol_version: int = 0
    last_zxid_seen: int = 0
    timeout_ms: int = 0
    session_id: int = 0
    password: bytes = b""
    read_only: bool = False
    has_read_only: bool = True

    def encode(self) -> bytes:
        """The request as a frame."""
        body = _CONNECT_REQUEST.pack(
            self.protocol_version,
            self.last_zxid_seen,
            self.timeout_ms,
            self.session_id,
            len(self.password),
        )
        flag = write_bool(self.read_only) if self.has_read_only else b""
        return encode_frame(body + self.password + flag)

    @classmethod
    def decode(cls, payload: bytes) -> ConnectRequest:
        """The connect request in one frame's payload; JuteError on a bad shape."""
        reader = Reader(payload)
        version, last_zxid, timeout, session_id, size = reader.unpack(_CONNECT_REQUEST)
        password = reader.length(size) or b""
        has_read_only = reader.pos < len(payload)
        read_only = reader.boolean() if has_read_only else False
        reader.end()
        return cls(version, last_zxid, timeout, session_id, password, read_only, has_read_only)


@dataclass(frozen=True, slots=True)
class ConnectResponse:
    """The member's answer to a ConnectRequest. A refused session (expired, or a wrong
    password) is answered as ZooKeeper does: timeout 0, session id 0, a password of 16 zero
    bytes."""

    protocol_version: int = 0
    timeout_ms: int = 0
    session_id: int = 0
    password: bytes = b""
    read_only: bool = False
    has_read_only: bool = True

    def encode(self) -> bytes:
        """The response as a frame (the readOnly flag only if the request carried one)."""
        body = _CONNECT_RESPONSE.pack(
            self.protocol_version, self.timeout_ms, self.session_id, len(self.password)
        )
        flag = write_bool(self.read_only) if self.has_read_only else b""
        return encode_frame(body + self.password + flag)

    @classmethod
    def decode(cls, payload: bytes) -> ConnectResponse:
        """The connect response in one frame's payload; JuteError on a bad shape."""
        reader = Reader(payload)
        version, timeout, session_id, size = reader.unpack(_CONNECT_RESPONSE)
        password = reader.length(size) or b""
        has_read_only = reader.pos < len(payload)
        read_only = reader.boolean() if has_read_only else False
        reader.end()
        return cls(version, timeout, session_id, password, read_only, has_read_only)


# ---- records with no core request ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JuteMulti:
    """A multi (14): the core request, and each operation's ZooKeeper opcode, which decides the
    shape of its result (create answers with the path, create2 with the path and Stat)."""

    request: MultiRequest
    opcodes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MultiRead:
    """A multiRead (22): reads answered together, each with its own result or error."""

    ops: tuple[GetDataRequest | GetChildrenRequest, ...]


@dataclass(frozen=True, slots=True)
class WatchQuery:
    """checkWatches (17) or removeWatches (18): the connection's watches on `path` of the given
    modes, checked or removed; NO_WATCHER when there is none."""

    path: str
    modes: tuple[WatchMode, ...]
    remove: bool


@dataclass(frozen=True, slots=True)
class GetAllChildrenNumber:
    """getAllChildrenNumber (104): how many nodes are below `path`, at any depth."""

    path: str


@dataclass(frozen=True, slots=True)
class GetEphemerals:
    """getEphemerals (103): the session's ephemeral nodes whose path starts with `prefix`
    (all of them for "" or "/")."""

    prefix: str


@dataclass(frozen=True, slots=True)
class SaslRequest:
    """sasl (102, SetSASLRequest): the client's next SASL token, answered with the server's
    (`zkpy.wire.sasl`) in a SetSASLResponse."""

    token: bytes


@dataclass(frozen=True, slots=True)
class WhoAmI:
    """whoAmI (107): the connection's identities."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A well-formed request zkpy cannot serve (yet): answered with `code` in its turn, and the
    connection stays open, as ZooKeeper answers a request it has disabled."""

    code: int
    message: str


JuteRequest = (
    CreateRequest
    | DeleteRequest
    | SetDataRequest
    | SetACLRequest
    | CheckRequest
    | CloseSessionRequest
    | GetDataRequest
    | ExistsRequest
    | GetChildrenRequest
    | GetACLRequest
    | SyncRequest
    | AddWatchRequest
    | SetWatchesRequest
    | AuthRequest
    | PingRequest
    | JuteMulti
    | MultiRead
    | WatchQuery
    | GetAllChildrenNumber
    | GetEphemerals
    | WhoAmI
    | SaslRequest
    | Refusal
    | ReconfigRequest
)


# ---- requests: decoding (the member's side) --------------------------------------------------


def decode_request(payload: bytes) -> tuple[int, int, JuteRequest]:
    """Decode a request frame (after the handshake) into (xid, opcode, request).

    Raises JuteError; its `xid` is set when the header could be read and the xid is not the
    notification xid (-1: a reply carrying it would pass for a watch event).
    """
    if len(payload) < 8:
        raise JuteError("a request starts with an 8-byte header (xid, type)")
    xid, opcode = REQUEST_HEADER.unpack_from(payload)
    if xid == XID_NOTIFICATION:
        raise JuteError("xid -1 is reserved for watch events")
    decode = _REQUEST_DECODERS.get(opcode)
    try:
        if decode is None:
            raise JuteError(f"unknown opcode {opcode}")
        reader = Reader(payload, 8)
        request = decode(reader)
        reader.end()
    except JuteError as err:
        err.xid = xid
        raise
    return xid, opcode, request


def _decode_create(reader: Reader) -> JuteRequest:
    path = reader.string("the path")
    data = reader.node_data()
    acl = reader.acl()
    flags = reader.int32()
    return _create(path, data, acl, flags)


def _create(path: str, data: bytes | None, acl: tuple[ACL, ...], flags: int) -> JuteRequest:
    """A create, createContainer's too; a TTL mode needs createTTL (its ttl), as in ZooKeeper."""
    if 0 <= flags <= FLAG_EPHEMERAL | FLAG_SEQUENTIAL:
        return CreateRequest(
            path, data, acl, bool(flags & FLAG_EPHEMERAL), bool(flags & FLAG_SEQUENTIAL)
        )
    if flags == FLAG_CONTAINER:
        return CreateRequest(path, data, acl, container=True)
    return Refusal(Code.BAD_ARGUMENTS, f"create mode {flags} needs createTTL or is unknown")


def _decode_create_container(reader: Reader) -> JuteRequest:
    path = reader.string("the path")
    data = reader.node_data()
    acl = reader.acl()
    if reader.int32() != FLAG_CONTAINER:
        return Refusal(Code.BAD_ARGUMENTS, "createContainer needs the container mode")
    return CreateRequest(path, data, acl, container=True)


def _decode_create_ttl(reader: Reader) -> JuteRequest:
    """CreateTTLRequest: a create's fields, then the ttl (prep checks its range)."""
    path = reader.string("the path")
    data = reader.node_data()
    acl = reader.acl()
    flags = reader.int32()
    ttl_ms = reader.int64()
    if flags not in (FLAG_TTL, FLAG_TTL_SEQUENTIAL):
        return Refusal(Code.BAD_ARGUMENTS, f"createTTL needs a TTL mode, not {flags}")
    if ttl_ms <= 0:
        return Refusal(Code.BAD_ARGUMENTS, f"a ttl must be over 0 milliseconds, not {ttl_ms}")
    return CreateRequest(path, data, acl, sequential=flags == FLAG_TTL_SEQUENTIAL, ttl_ms=ttl_ms)


def _decode_delete(reader: Reader) -> JuteRequest:
    path = reader.string("the path")
    return DeleteRequest(path, reader.int32())


def _decode_exists(reader: Reader) -> JuteRequest:
    path = reader.string("the path")
    return ExistsRequest(path, reader.boolean())


def _decode_get_data(reader: Reader) -> JuteRequest:
    path = reader.string("the path")
    return GetDataRequest(path, reader.boolean())


def _decode_set_data(reader: Reader) -> JuteRequest:
    path = reader.string("the path")
    data = reader.node_data()
    return SetDataRequest(path, data, reader.int32())


def _decode_get_acl(reader: Reader) -> JuteRequest:
    return GetACLRequest(reader.string("the path"))


def _decode_set_acl(reader: Reader) -> JuteRequest:
    path = reader.string("the path")
    acl = reader.acl()
    return SetACLRequest(path, acl, reader.int32())


def _decode_get_children(reader: Reader) -> JuteRequest:
    path = reader.string("the path")
    return GetChildrenRequest(path, reader.boolean())


def _decode_sync(reader: Reader) -> JuteRequest:
    return SyncRequest(reader.string("the path"))


def _decode_ping(reader: Reader) -> JuteRequest:
    return PingRequest()


def _decode_check(reader: Reader) -> JuteRequest:
    path = reader.string("the path")
    return CheckRequest(path, reader.int32())


def _decode_close(reader: Reader) -> JuteRequest:
    return CloseSessionRequest()


def _decode_multi(reader: Reader) -> JuteRequest:
    ops: list[MultiOp] = []
    opcodes: list[int] = []
    refusal: Refusal | None = None
    while (opcode := _next_op(reader, len(opcodes))) is not None:
        decode = _MULTI_DECODERS.get(opcode)
        if decode is None:
            raise JuteError(f"opcode {opcode} is not allowed in a multi")
        op = decode(reader)
        opcodes.append(opcode)
        if isinstance(op, Refusal):
            refusal = refusal or op
        elif isinstance(op, CreateRequest | DeleteRequest | SetDataRequest | CheckRequest):
            ops.append(op)
    if refusal is not None:
        return refusal
    return JuteMulti(MultiRequest(tuple(ops)), tuple(opcodes))


def _decode_multi_read(reader: Reader) -> JuteRequest:
    ops: list[GetDataRequest | GetChildrenRequest] = []
    # the watch flags are read and ignored: ZooKeeper sets no watch from a multiRead
    while (opcode := _next_op(reader, len(ops))) is not None:
        if opcode == OP_GET_DATA:
            path = reader.string("the path")
            reader.boolean()
            ops.append(GetDataRequest(path))
        elif opcode == OP_GET_CHILDREN:
            path = reader.string("the path")
            reader.boolean()
            ops.append(GetChildrenRequest(path))
        else:
            raise JuteError(f"opcode {opcode} is not allowed in a multiRead")
    return MultiRead(tuple(ops))


def _next_op(reader: Reader, count: int) -> int | None:
    """The opcode in the next MultiHeader, or None at the closing one (done set); `count`
    operations have been read before it."""
    opcode, done, _err = reader.unpack(MULTI_HEADER)
    if done:
        return None
    if count >= MAX_MULTI_OPS:
        raise JuteError(f"a multi holds at most {MAX_MULTI_OPS} operations")
    return opcode


def _decode_watch_query(reader: Reader, remove: bool) -> JuteRequest:
    path = reader.string("the path")
    kind = reader.int32()
    modes = WATCHER_TYPES.get(kind)
    if modes is None:
        raise JuteError(f"unknown watcher type {kind}")
    return WatchQuery(path, modes, remove)


def _decode_check_watches(reader: Reader) -> JuteRequest:
    return _decode_watch_query(reader, False)


def _decode_remove_watches(reader: Reader) -> JuteRequest:
    return _decode_watch_query(reader, True)


def _decode_auth(reader: Reader) -> JuteRequest:
    reader.int32()  # the AuthPacket's type: unused by ZooKeeper too
    scheme = reader.string("the auth scheme")
    return AuthRequest(scheme, reader.buffer())


def _decode_set_watches(reader: Reader) -> JuteRequest:
    last_zxid = reader.int64()
    return SetWatchesRequest(last_zxid, reader.strings(), reader.strings(), reader.strings())


def _decode_set_watches2(reader: Reader) -> JuteRequest:
    last_zxid = reader.int64()
    data, exist, child = reader.strings(), reader.strings(), reader.strings()
    return SetWatchesRequest(last_zxid, data, exist, child, reader.strings(), reader.strings())


def _decode_add_watch(reader: Reader) -> JuteRequest:
    path = reader.string("the path")
    mode = reader.int32()
    watch_mode = ADD_WATCH_MODES.get(mode)
    if watch_mode is None:
        raise JuteError(f"unknown addWatch mode {mode}")
    return AddWatchRequest(path, watch_mode)


def _decode_get_ephemerals(reader: Reader) -> JuteRequest:
    return GetEphemerals(reader.ustring() or "")


def _decode_get_all_children_number(reader: Reader) -> JuteRequest:
    return GetAllChildrenNumber(reader.string("the path"))


def _decode_who_am_i(reader: Reader) -> JuteRequest:
    return WhoAmI()


def _decode_reconfig(reader: Reader) -> JuteRequest:
    """ZooKeeper's reconfig: joining server lines and leaving ids (incremental), or the whole
    new membership's server lines (non-incremental), each list comma-separated, and the config
    version to match (-1: any)."""
    joining, leaving, new_members = reader.ustring(), reader.ustring(), reader.ustring()
    from_version = reader.int64()
    try:
        if new_members:
            if joining or leaving:
                raise BadArgumentsError("joining and leaving, or new members, not both")
            return ReconfigRequest(from_version=from_version, new_members=_members(new_members))
        add = tuple(parse_server_line(line) for line in (joining or "").split(",") if line)
        remove = tuple(int(i) for i in (leaving or "").split(",") if i.strip())
    except (BadArgumentsError, ValueError) as err:
        return Refusal(Code.BAD_ARGUMENTS, f"bad reconfig: {err}")
    return ReconfigRequest(add, remove, from_version)


def _members(text: str) -> tuple[MemberSpec, ...]:
    """A non-incremental reconfig's members: ``server.N=...`` entries separated by commas (or
    new lines, as in the dynamic-configuration file zkCli's ``reconfig -file`` reads). A
    ``version=`` entry is ignored, as ZooKeeper ignores it there."""
    entries = (entry.strip() for entry in text.replace("\n", ",").split(","))
    return tuple(
        parse_server_line(entry) for entry in entries if entry and not entry.startswith("version=")
    )


def _decode_sasl(reader: Reader) -> JuteRequest:
    return SaslRequest(reader.buffer())


_REQUEST_DECODERS: dict[int, Callable[[Reader], JuteRequest]] = {
    OP_GET_DATA: _decode_get_data,
    OP_EXISTS: _decode_exists,
    OP_SET_DATA: _decode_set_data,
    OP_GET_CHILDREN: _decode_get_children,
    OP_GET_CHILDREN2: _decode_get_children,
    OP_CREATE: _decode_create,
    OP_CREATE2: _decode_create,
    OP_DELETE: _decode_delete,
    OP_PING: _decode_ping,
    OP_GET_ACL: _decode_get_acl,
    OP_SET_ACL: _decode_set_acl,
    OP_SYNC: _decode_sync,
    OP_CHECK: _decode_check,
    OP_MULTI: _decode_multi,
    OP_MULTI_READ: _decode_multi_read,
    OP_CREATE_CONTAINER: _decode_create_container,
    OP_CREATE_TTL: _decode_create_ttl,
    OP_CHECK_WATCHES: _decode_check_watches,
    OP_REMOVE_WATCHES: _decode_remove_watches,
    OP_CLOSE_SESSION: _decode_close,
    OP_AUTH: _decode_auth,
    OP_SET_WATCHES: _decode_set_watches,
    OP_SET_WATCHES2: _decode_set_watches2,
    OP_ADD_WATCH: _decode_add_watch,
    OP_GET_EPHEMERALS: _decode_get_ephemerals,
    OP_GET_ALL_CHILDREN_NUMBER: _decode_get_all_children_number,
    OP_WHO_AM_I: _decode_who_am_i,
    OP_RECONFIG: _decode_reconfig,
    OP_SASL: _decode_sasl,
}

_MULTI_DECODERS: dict[int, Callable[[Reader], JuteRequest]] = {
    OP_CREATE: _decode_create,
    OP_CREATE2: _decode_create,
    OP_CREATE_CONTAINER: _decode_create_container,
    OP_CREATE_TTL: _decode_create_ttl,
    OP_DELETE: _decode_delete,
    OP_SET_DATA: _decode_set_data,
    OP_CHECK: _decode_check,
}


# ---- replies and events: encoding (the member's side) ----------------------------------------


def encode_header(xid: int, zxid: int, err: int) -> bytes:
    """A reply with no record: any error, and the replies of delete, check/removeWatches,
    setWatches, closeSession, auth (xid -4) and ping (xid -2)."""
    return _HEADER_ONLY_LENGTH + REPLY_HEADER.pack(xid, zxid, err)


def _reply(xid: int, zxid: int, body: bytes) -> bytes:
    return encode_frame(REPLY_HEADER.pack(xid, zxid, 0) + body)


def encode_path_reply(xid: int, zxid: int, path: str) -> bytes:
    """create's (CreateResponse) and sync's (SyncResponse) reply: a path."""
    return _reply(xid, zxid, write_ustring(path))


def encode_create2_reply(xid: int, zxid: int, path: str, stat: Stat) -> bytes:
    """create2's reply (Create2Response): the created path and the new node's Stat."""
    return _reply(xid, zxid, write_ustring(path) + STAT.pack(*stat))


def encode_stat_reply(xid: int, zxid: int, stat: Stat) -> bytes:
    """exists', setData's, setACL's and check's reply: a Stat."""
    return _reply(xid, zxid, STAT.pack(*stat))


def encode_data_reply(xid: int, zxid: int, data: bytes | None, stat: Stat) -> bytes:
    """getData's reply (GetDataResponse): the data (None: null) and the Stat."""
    return _reply(xid, zxid, write_buffer(data) + STAT.pack(*stat))


def encode_acl_reply(xid: int, zxid: int, acl: Sequence[ACL], stat: Stat) -> bytes:
    """getACL's reply (GetACLResponse): the ACL and the Stat."""
    return _reply(xid, zxid, write_acl(acl) + STAT.pack(*stat))


def encode_children_reply(xid: int, zxid: int, children: Sequence[str]) -> bytes:
    """getChildren's (GetChildrenResponse) and getEphemerals' reply: a vector of strings."""
    return _reply(xid, zxid, write_strings(children))


def encode_children2_reply(xid: int, zxid: int, children: Sequence[str], stat: Stat) -> bytes:
    """getChildren2's reply (GetChildren2Response): the children and the parent's Stat."""
    return _reply(xid, zxid, write_strings(children) + STAT.pack(*stat))


def encode_sasl_reply(xid: int, zxid: int, token: bytes) -> bytes:
    """sasl's reply (SetSASLResponse): the server's next SASL token."""
    return _reply(xid, zxid, write_buffer(token))


def encode_int_reply(xid: int, zxid: int, value: int) -> bytes:
    """A reply of one int: getAllChildrenNumber's count, and addWatch's, which ZooKeeper
    answers with an ErrorResponse holding 0."""
    return _reply(xid, zxid, INT.pack(value))


def encode_who_am_i_reply(xid: int, zxid: int, ids: Sequence[tuple[str, str]]) -> bytes:
    """whoAmI's reply: the connection's identities as (scheme, id) ClientInfo records."""
    parts = [INT.pack(len(ids))]
    for scheme, user in ids:
        parts.append(write_ustring(scheme))
        parts.append(write_ustring(user))
    return _reply(xid, zxid, b"".join(parts))


@dataclass(frozen=True, slots=True)
class MultiResult:
    """One operation's result in a multi or multiRead reply. `opcode` is the result's type,
    and says which fields it carries: create the path, create2 the path and the Stat, delete
    and check nothing, setData the Stat, getData the data and the Stat, getChildren the
    children, OP_ERROR the error code (0 for an operation rolled back because another
    failed)."""

    opcode: int
    path: str = ""
    stat: Stat | None = None
    data: bytes | None = b""
    children: tuple[str, ...] = ()
    err: int = 0


def encode_multi_reply(xid: int, zxid: int, results: Sequence[MultiResult]) -> bytes:
    """multi's and multiRead's reply (MultiResponse): a MultiHeader and a record per result,
    then the closing header. ZooKeeper's header err is 0 even when the multi failed: the
    failure is in the results."""
    parts = [REPLY_HEADER.pack(xid, zxid, 0)]
    for result in results:
        parts.append(_multi_result(result))
    parts.append(MULTI_DONE)
    return encode_frame(b"".join(parts))


def _multi_result(result: MultiResult) -> bytes:
    opcode = result.opcode
    if opcode in (OP_CREATE_CONTAINER, OP_CREATE_TTL):
        opcode = OP_CREATE2  # ZooKeeper answers these with a create2 result: path and Stat
    if opcode == OP_ERROR:
        return MULTI_HEADER.pack(OP_ERROR, False, result.err) + INT.pack(result.err)
    record = MULTI_HEADER.pack(opcode, False, 0)
    if opcode in (OP_DELETE, OP_CHECK):
        return record
    if opcode in (OP_CREATE, OP_CREATE2):
        record += write_ustring(result.path)
    elif opcode == OP_GET_DATA:
        record += write_buffer(result.data)
    elif opcode == OP_GET_CHILDREN:
        return record + write_strings(result.children)
    elif opcode != OP_SET_DATA:
        raise ValueError(f"no multi result has type {opcode}")
    if opcode == OP_CREATE:
        return record
    if result.stat is None:
        raise ValueError(f"a multi result of type {opcode} needs a Stat")
    return record + STAT.pack(*result.stat)


def encode_event(event: WatchedEvent, state: int = STATE_SYNC_CONNECTED) -> bytes:
    """A watch notification: a reply header with xid -1 and the event's zxid, then a
    WatcherEvent (type, state, path). zkpy's event types are ZooKeeper's numbers."""
    raw = event.path.encode()
    head = _EVENT.pack(XID_NOTIFICATION, event.zxid, 0, int(event.type), state, len(raw))
    return encode_frame(head + raw)
