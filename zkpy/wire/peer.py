"""The peer protocol: Zab messages between members, as msgpack arrays ``[tag, fields...]``.

Transaction records travel in their log encoding (`encode_record`), so a follower logs the very
bytes the leader logged. Decoding checks shapes and raises `MarshallingError` on anything else.
"""

from __future__ import annotations

from typing import Any

import msgpack

from zkpy.core.errors import MarshallingError
from zkpy.core.requests import (
    AttachSessionRequest,
    CheckRequest,
    CloseSessionRequest,
    CreateRequest,
    CreateSessionRequest,
    DeleteRequest,
    MultiRequest,
    SetACLRequest,
    SetDataRequest,
    WriteRequest,
)
from zkpy.core.txn import decode_record, encode_record
from zkpy.core.types import Id
from zkpy.wire.client import decode_request_fields, request_fields
from zkpy.zab.messages import (
    Ack,
    AckEpoch,
    AckNewLeader,
    Commit,
    FollowerInfo,
    Forward,
    LoggedPropose,
    NewEpoch,
    NewLeader,
    Notification,
    PeerMessage,
    Ping,
    Propose,
    ServerState,
    Snapshot,
    SyncDone,
    SyncMode,
    SyncRequest,
    UpToDate,
    Vote,
)

_WRITES = (
    CreateRequest,
    DeleteRequest,
    SetDataRequest,
    SetACLRequest,
    CheckRequest,
    MultiRequest,
    CloseSessionRequest,
)

_TAGS: dict[type, int] = {
    Notification: 1,
    FollowerInfo: 2,
    NewEpoch: 3,
    AckEpoch: 4,
    NewLeader: 5,
    AckNewLeader: 6,
    UpToDate: 7,
    Propose: 8,
    Ack: 9,
    Commit: 10,
    Ping: 11,
    Forward: 12,
    SyncRequest: 13,
    SyncDone: 14,
    LoggedPropose: 15,
}


def _fields(message: PeerMessage) -> list[Any]:
    match message:
        case Notification(round_, vote, state):
            return [round_, vote.epoch, vote.zxid, vote.leader, int(state)]
        case FollowerInfo(accepted, last, committed, observer):
            return [accepted, last, committed, observer]
        case NewEpoch(epoch):
            return [epoch]
        case AckEpoch(current, last, committed):
            return [current, last, committed]
        case NewLeader(epoch, mode, truncate_after, snapshot, records):
            snap = (
                None
                if snapshot is None
                else [snapshot.zxid, list(snapshot.nodes), list(snapshot.sessions)]
            )
            return [epoch, int(mode), truncate_after, snap, [encode_record(r) for r in records]]
        case AckNewLeader(epoch, last):
            return [epoch, last]
        case UpToDate(commit_zxid):
            return [commit_zxid]
        case Propose(records) | LoggedPropose(records):
            return [[encode_record(r) for r in records]]
        case Ack(zxid) | Commit(zxid):
            return [zxid]
        case Ping(sessions, round_):
            return [list(sessions), round_]
        case Forward(writes):
            return [
                [
                    [session_id, cxid, _request_out(request), _ids_out(ids), owner]
                    for session_id, cxid, request, ids, owner in writes
                ]
            ]
        case SyncRequest(session_id, cxid) | SyncDone(session_id, cxid):
            return [session_id, cxid]
    raise TypeError(f"not a peer message: {message!r}")


_OP_CREATE_SESSION = -10
_OP_ATTACH_SESSION = -12  # member-made requests: no client opcode has these numbers
_NO_IDS: frozenset[Id] = frozenset()


def _ids_out(ids: frozenset[Id]) -> list[list[str]]:
    if not ids:  # most sessions have no identities
        return []
    return [[ident.scheme, ident.id] for ident in sorted(ids, key=lambda i: (i.scheme, i.id))]


def _ids_in(fields: list[list[str]]) -> frozenset[Id]:
    if not fields:
        return _NO_IDS
    return frozenset(Id(scheme, ident) for scheme, ident in fields)


def _request_out(request: WriteRequest) -> list[Any]:
    if isinstance(request, CreateSessionRequest):
        return [_OP_CREATE_SESSION, request.session_id, request.timeout_ms, request.password]
    if isinstance(request, AttachSessionRequest):
        return [_OP_ATTACH_SESSION]
    return request_fields(request)


def _request_in(fields: list[Any]) -> WriteRequest:
    if fields and fields[0] == _OP_CREATE_SESSION:
        return CreateSessionRequest(fields[1], fields[2], fields[3])
    if fields and fields[0] == _OP_ATTACH_SESSION:
        return AttachSessionRequest()
    _opcode, request = decode_request_fields(fields)
    if not isinstance(request, _WRITES):
        raise MarshallingError(f"{type(request).__name__} cannot be forwarded")
    return request


def encode_message(message: PeerMessage) -> bytes:
    packed: bytes = msgpack.packb([_TAGS[type(message)], *_fields(message)], use_bin_type=True)
    return packed


def decode_message(payload: bytes) -> PeerMessage:
    try:
        value = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=False)
        return _decode(value)
    except MarshallingError:
        raise
    except Exception as err:
        raise MarshallingError(f"bad peer message ({type(err).__name__}: {err})") from None


def _decode(value: Any) -> PeerMessage:
    tag, *f = value
    if tag == 1:
        return Notification(f[0], Vote(f[1], f[2], f[3]), ServerState(f[4]))
    if tag == 2:
        return FollowerInfo(f[0], f[1], f[2], bool(f[3]))
    if tag == 3:
        return NewEpoch(f[0])
    if tag == 4:
        return AckEpoch(f[0], f[1], f[2])
    if tag == 5:
        snap = None
        if f[3] is not None:
            zxid, nodes, sessions = f[3]
            snap = Snapshot(zxid, tuple(map(tuple, nodes)), tuple(map(tuple, sessions)))
        records = tuple(decode_record(raw) for raw in f[4])
        return NewLeader(f[0], SyncMode(f[1]), f[2], snap, records)
    if tag == 6:
        return AckNewLeader(f[0], f[1])
    if tag == 7:
        return UpToDate(f[0])
    if tag == 8:
        return Propose(tuple(decode_record(raw) for raw in f[0]))
    if tag == 9:
        return Ack(f[0])
    if tag == 10:
        return Commit(f[0])
    if tag == 11:
        return Ping(tuple(f[0]), f[1])
    if tag == 12:
        return Forward(
            tuple(
                (session_id, cxid, _request_in(request), _ids_in(ids), owner)
                for session_id, cxid, request, ids, owner in f[0]
            )
        )
    if tag == 13:
        return SyncRequest(f[0], f[1])
    if tag == 14:
        return SyncDone(f[0], f[1])
    if tag == 15:
        return LoggedPropose(tuple(decode_record(raw) for raw in f[0]))
    raise MarshallingError(f"unknown peer message tag {tag!r}")
