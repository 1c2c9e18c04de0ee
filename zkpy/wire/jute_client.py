"""The client's half of ZooKeeper's jute protocol: requests encoded, replies decoded.

The member's half (requests decoded, replies encoded) is `zkpy.wire.jute`; this half is what a
jute client needs, and what the tests use to check that every record survives a round trip.
"""

from __future__ import annotations

from collections.abc import Iterable

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
    PingRequest,
    SetACLRequest,
    SetDataRequest,
    SetWatchesRequest,
    SyncRequest,
)
from zkpy.core.types import WatchMode
from zkpy.wire.frames import encode_frame
from zkpy.wire.jute import (
    FLAG_CONTAINER,
    FLAG_EPHEMERAL,
    FLAG_SEQUENTIAL,
    FLAG_TTL,
    FLAG_TTL_SEQUENTIAL,
    LONG,
    MAX_MULTI_OPS,
    MULTI_DONE,
    MULTI_HEADER,
    OP_CHECK,
    OP_CREATE,
    OP_CREATE2,
    OP_DELETE,
    OP_ERROR,
    OP_GET_CHILDREN,
    OP_GET_DATA,
    OP_PING,
    OP_SET_DATA,
    OP_SET_WATCHES2,
    REPLY_HEADER,
    REQUEST_HEADER,
    WATCHER_TYPES,
    XID_PING,
    GetAllChildrenNumber,
    GetEphemerals,
    JuteError,
    JuteMulti,
    JuteRequest,
    MultiRead,
    MultiResult,
    Reader,
    SaslRequest,
    WatchQuery,
    WhoAmI,
    write_acl,
    write_bool,
    write_buffer,
    write_int,
    write_strings,
    write_ustring,
)

# ---- requests: encoding (the client's side, and the tests') ----------------------------------


def encode_request(xid: int, opcode: int, request: JuteRequest) -> bytes:
    """One request as a frame: RequestHeader(xid, opcode), then the opcode's record. The
    opcode picks among the records one request type maps to (create or create2, getChildren
    or getChildren2, setWatches or setWatches2)."""
    return encode_frame(REQUEST_HEADER.pack(xid, opcode) + request_record(opcode, request))


def request_record(opcode: int, request: JuteRequest) -> bytes:
    """The record of a request, without its header."""
    if isinstance(request, GetDataRequest | ExistsRequest | GetChildrenRequest):
        return write_ustring(request.path) + write_bool(request.watch)
    if isinstance(request, CreateRequest):
        return _create_record(request)
    if isinstance(request, SetDataRequest):
        return write_ustring(request.path) + write_buffer(request.data) + write_int(request.version)
    if isinstance(request, DeleteRequest | CheckRequest):
        return write_ustring(request.path) + write_int(request.version)
    if isinstance(request, SetACLRequest):
        return write_ustring(request.path) + write_acl(request.acl) + write_int(request.version)
    if isinstance(request, GetACLRequest | SyncRequest | GetAllChildrenNumber):
        return write_ustring(request.path)
    return _other_record(opcode, request)


def _create_record(request: CreateRequest) -> bytes:
    """A CreateRequest, or a CreateTTLRequest (the ttl last) for a TTL node."""
    if request.container:
        flags = FLAG_CONTAINER
    elif request.ttl_ms:
        flags = FLAG_TTL_SEQUENTIAL if request.sequential else FLAG_TTL
    else:
        flags = (FLAG_EPHEMERAL if request.ephemeral else 0) | (
            FLAG_SEQUENTIAL if request.sequential else 0
        )
    record = (
        write_ustring(request.path)
        + write_buffer(request.data)
        + write_acl(request.acl)
        + write_int(flags)
    )
    return record + LONG.pack(request.ttl_ms) if request.ttl_ms else record


def _other_record(opcode: int, request: JuteRequest) -> bytes:
    if isinstance(request, PingRequest | CloseSessionRequest | WhoAmI):
        return b""
    if isinstance(request, AuthRequest):
        return write_int(0) + write_ustring(request.scheme) + write_buffer(request.credential)
    if isinstance(request, SetWatchesRequest):
        return _set_watches_record(opcode, request)
    if isinstance(request, AddWatchRequest):
        mode = 1 if request.mode == WatchMode.PERSISTENT_RECURSIVE else 0
        return write_ustring(request.path) + write_int(mode)
    if isinstance(request, WatchQuery):
        return write_ustring(request.path) + write_int(_watcher_type(request.modes))
    if isinstance(request, GetEphemerals):
        return write_ustring(request.prefix)
    if isinstance(request, SaslRequest):
        return write_buffer(request.token)
    if isinstance(request, JuteMulti):
        return _ops_record(zip(request.opcodes, request.request.ops, strict=True))
    if isinstance(request, MultiRead):
        return _ops_record(
            (OP_GET_DATA if isinstance(op, GetDataRequest) else OP_GET_CHILDREN, op)
            for op in request.ops
        )
    raise TypeError(f"cannot encode {request!r} as opcode {opcode}")


def _set_watches_record(opcode: int, request: SetWatchesRequest) -> bytes:
    lists = [request.data, request.exist, request.child]
    if opcode == OP_SET_WATCHES2:
        lists += [request.persistent, request.recursive]
    elif request.persistent or request.recursive:
        raise TypeError("persistent watches need setWatches2")
    return LONG.pack(request.last_zxid) + b"".join([write_strings(paths) for paths in lists])


def _watcher_type(modes: tuple[WatchMode, ...]) -> int:
    for kind, covered in WATCHER_TYPES.items():
        if covered == modes:
            return kind
    raise TypeError(f"no watcher type covers exactly {modes}")


def _ops_record(ops: Iterable[tuple[int, JuteRequest]]) -> bytes:
    parts = []
    for opcode, op in ops:
        parts.append(MULTI_HEADER.pack(opcode, False, -1))
        parts.append(request_record(opcode, op))
    parts.append(MULTI_DONE)
    return b"".join(parts)


PING_FRAME = encode_request(XID_PING, OP_PING, PingRequest())


# ---- replies: decoding (the client's side, and the tests') -----------------------------------


def decode_reply_header(payload: bytes) -> tuple[int, int, int, Reader]:
    """A reply's (xid, zxid, err) and a reader positioned at its record."""
    reader = Reader(payload)
    xid, zxid, err = reader.unpack(REPLY_HEADER)
    return xid, zxid, err, reader


def decode_event(reader: Reader) -> tuple[int, int, str]:
    """A WatcherEvent record: (type, state, path)."""
    kind, state = reader.int32(), reader.int32()
    path = reader.string("the path")
    reader.end()
    return kind, state, path


def decode_multi_results(reader: Reader) -> list[MultiResult]:
    """A MultiResponse record: the results as `encode_multi_reply` takes them."""
    results: list[MultiResult] = []
    while True:
        opcode, done, _err = reader.unpack(MULTI_HEADER)
        if done:
            reader.end()
            return results
        if len(results) >= MAX_MULTI_OPS:
            raise JuteError(f"a multi holds at most {MAX_MULTI_OPS} operations")
        results.append(_multi_result(reader, opcode))


def _multi_result(reader: Reader, opcode: int) -> MultiResult:
    if opcode == OP_ERROR:
        return MultiResult(opcode, err=reader.int32())
    if opcode in (OP_DELETE, OP_CHECK):
        return MultiResult(opcode)
    if opcode == OP_CREATE:
        return MultiResult(opcode, path=reader.string("the path"))
    if opcode == OP_CREATE2:
        path = reader.string("the path")
        return MultiResult(opcode, path=path, stat=reader.stat())
    if opcode == OP_SET_DATA:
        return MultiResult(opcode, stat=reader.stat())
    if opcode == OP_GET_DATA:
        data = reader.node_data()
        return MultiResult(opcode, data=data, stat=reader.stat())
    if opcode == OP_GET_CHILDREN:
        return MultiResult(opcode, children=reader.strings())
    raise JuteError(f"unknown multi result type {opcode}")
