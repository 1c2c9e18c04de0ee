"""The peer protocol: the handshake that opens a link, then Zab messages between members, as
msgpack arrays ``[tag, fields...]``.

Transaction records travel in their log encoding (`encode_record`), so a follower logs the very
bytes the leader logged. Decoding checks shapes and raises `MarshallingError` on anything else.

The handshake (`PeerIdentity`), three frames of msgpack maps:

1. the listening member (the verifier) sends a challenge: ``{v, id, nonce}``;
2. the connecting member (the prover) answers with a hello: ``{v, id, to, nonce, ensemble,
   proof}``, where `proof` is an HMAC-SHA256 under the shared secret over the direction, the
   ensemble's digest, the prover's and the verifier's ids and both nonces;
3. the verifier checks it and proves itself the same way over the other direction: ``{proof}``.

Binding the verifier's id means a proof made for one member is worthless to another, so a man in
the middle (say, on the port of a member that is down) cannot relay one member's challenge to
another and be taken for the first; binding the ensemble's digest does the same between two
ensembles that share a secret.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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
    ReconfigRequest,
    SetACLRequest,
    SetDataRequest,
    WriteRequest,
)
from zkpy.core.txn import TxnRecord, decode_record, encode_record
from zkpy.core.types import Id
from zkpy.wire.client import decode_request_fields, request_fields
from zkpy.zab.messages import (
    Ack,
    AckEpoch,
    AckNewLeader,
    Commit,
    EarlyPropose,
    FollowerInfo,
    Forward,
    ForwardedWrite,
    Logged,
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
    ReconfigRequest,
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
    Logged: 16,
    EarlyPropose: 17,
}


# One encoder per message type, each giving the fields after the tag; `encode_message` finds
# tag and encoder with one lookup by exact type (Propose, Ack and Commit go through here for
# every write, where a `match` would try the class patterns one by one).


def _notification_fields(m: Notification) -> list[Any]:
    vote = m.vote
    return [m.round, vote.epoch, vote.zxid, vote.leader, int(m.state)]


def _follower_info_fields(m: FollowerInfo) -> list[Any]:
    return [m.accepted_epoch, m.last_zxid, m.committed_zxid, m.observer]


def _new_epoch_fields(m: NewEpoch) -> list[Any]:
    return [m.epoch]


def _ack_epoch_fields(m: AckEpoch) -> list[Any]:
    return [m.current_epoch, m.last_zxid, m.committed_zxid]


def _new_leader_fields(m: NewLeader) -> list[Any]:
    snapshot = m.snapshot
    snap = (
        None if snapshot is None else [snapshot.zxid, list(snapshot.nodes), list(snapshot.sessions)]
    )
    return [m.epoch, int(m.mode), m.truncate_after, snap, [encode_record(r) for r in m.records]]


def _ack_new_leader_fields(m: AckNewLeader) -> list[Any]:
    return [m.epoch, m.last_zxid]


def _up_to_date_fields(m: UpToDate) -> list[Any]:
    return [m.commit_zxid]


def _propose_fields(m: Propose | LoggedPropose | EarlyPropose) -> list[Any]:
    return [[encode_record(r) for r in m.records]]


def _zxid_fields(m: Ack | Commit | Logged) -> list[Any]:
    return [m.zxid]


def _ping_fields(m: Ping) -> list[Any]:
    return [list(m.sessions), m.round]


def _forward_fields(m: Forward) -> list[Any]:
    return [
        [
            [session_id, cxid, _request_out(request), _ids_out(ids), owner]
            for session_id, cxid, request, ids, owner in m.writes
        ]
    ]


def _sync_fields(m: SyncRequest | SyncDone) -> list[Any]:
    return [m.session_id, m.cxid]


_FIELDS: dict[type, Callable[[Any], list[Any]]] = {
    Notification: _notification_fields,
    FollowerInfo: _follower_info_fields,
    NewEpoch: _new_epoch_fields,
    AckEpoch: _ack_epoch_fields,
    NewLeader: _new_leader_fields,
    AckNewLeader: _ack_new_leader_fields,
    UpToDate: _up_to_date_fields,
    Propose: _propose_fields,
    Ack: _zxid_fields,
    Commit: _zxid_fields,
    Ping: _ping_fields,
    Forward: _forward_fields,
    SyncRequest: _sync_fields,
    SyncDone: _sync_fields,
    LoggedPropose: _propose_fields,
    EarlyPropose: _propose_fields,
    Logged: _zxid_fields,
}
_ENCODERS: dict[type, tuple[int, Callable[[Any], list[Any]]]] = {
    kind: (tag, _FIELDS[kind]) for kind, tag in _TAGS.items()
}


_OP_CREATE_SESSION = -10
_OP_ATTACH_SESSION = -12  # member-made requests: no client opcode has these numbers
_NO_IDS: frozenset[Id] = frozenset()


def _ids_out(ids: frozenset[Id]) -> list[list[str]]:
    if not ids:  # most sessions have no identities
        return []
    return [[ident.scheme, ident.id] for ident in sorted(ids, key=lambda i: (i.scheme, i.id))]


def _ids_in(fields: list[Any]) -> frozenset[Id]:
    if not fields:
        return _NO_IDS
    return frozenset(Id(_str(scheme), _str(ident)) for scheme, ident in map(_pair, fields))


def _request_out(request: WriteRequest) -> list[Any]:
    if isinstance(request, CreateSessionRequest):
        return [_OP_CREATE_SESSION, request.session_id, request.timeout_ms, request.password]
    if isinstance(request, AttachSessionRequest):
        return [_OP_ATTACH_SESSION]
    return request_fields(request)


def _request_in(fields: list[Any]) -> WriteRequest:
    if fields and fields[0] == _OP_CREATE_SESSION:
        _, session_id, timeout_ms, password = _pair(fields, 4)
        return CreateSessionRequest(_int(session_id), _int(timeout_ms), _bytes(password))
    if fields and fields[0] == _OP_ATTACH_SESSION:
        _pair(fields, 1)
        return AttachSessionRequest()
    _opcode, request = decode_request_fields(fields)
    if not isinstance(request, _WRITES):
        raise MarshallingError(f"{type(request).__name__} cannot be forwarded")
    return request


def encode_message(message: PeerMessage) -> bytes:
    """The msgpack ``[tag, fields...]`` payload of one peer message (framed by the caller)."""
    encoder = _ENCODERS.get(type(message))
    if encoder is None:
        raise TypeError(f"not a peer message: {message!r}")
    tag, fields = encoder
    packed: bytes = msgpack.packb([tag, *fields(message)], use_bin_type=True)
    return packed


def decode_message(payload: bytes) -> PeerMessage:
    """Decode one peer message, checking its tag, its arity and the type of every field; raise
    `MarshallingError` on anything else (a message that decodes is safe to hand the replica)."""
    try:
        value = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=False)
        if type(value) is not list or not value:
            raise MarshallingError("a peer message is a non-empty array")
        decode = _DECODERS.get(value[0]) if type(value[0]) is int else None
        if decode is None:
            raise MarshallingError(f"unknown peer message tag {value[0]!r}")
        return decode(value)
    except MarshallingError:
        raise
    except Exception as err:  # msgpack raises several unrelated types for bad input
        raise MarshallingError(f"bad peer message ({type(err).__name__}: {err})") from None


# One decoder per tag, each given the whole ``[tag, fields...]`` list. The checks are plain
# `type(...) is` tests: Propose, Ack and Commit pass here for every write.


def _arity(value: list[Any], count: int) -> None:
    if len(value) != count + 1:
        raise MarshallingError(f"peer message {value[0]} has {len(value) - 1} fields, not {count}")


def _int(value: object) -> int:
    if type(value) is not int:
        raise MarshallingError(f"expected an integer, not {type(value).__name__}")
    return value


def _list(value: object) -> list[Any]:
    if type(value) is not list:
        raise MarshallingError(f"expected an array, not {type(value).__name__}")
    return value


def _bytes(value: object) -> bytes:
    if type(value) is not bytes:
        raise MarshallingError(f"expected bytes, not {type(value).__name__}")
    return value


def _str(value: object) -> str:
    if type(value) is not str:
        raise MarshallingError(f"expected a string, not {type(value).__name__}")
    return value


def _records(value: object) -> tuple[TxnRecord, ...]:
    # decode_record refuses anything but bytes-like input (TypeError, caught by the caller)
    records = tuple([decode_record(raw) for raw in _list(value)])
    for record in records:
        if not (
            type(record.zxid) is int
            and type(record.session_id) is int
            and type(record.cxid) is int
            and type(record.time_ms) is int
        ):
            raise MarshallingError("a record's zxid, session, xid and time are integers")
    return records


def _pair(value: object, count: int = 2) -> list[Any]:
    items = _list(value)
    if len(items) != count:
        raise MarshallingError(f"expected {count} items, got {len(items)}")
    return items


def _snapshot(value: object) -> Snapshot | None:
    if value is None:
        return None
    zxid, nodes, sessions = _pair(value, 3)
    return Snapshot(_int(zxid), _entries(nodes, str), _entries(sessions, int))


def _entries(value: object, key: type) -> tuple[tuple[Any, bytes], ...]:
    """A snapshot's ``[key, bytes]`` pairs, checked in one plain loop: a whole tree's worth."""
    entries = []
    for entry in _list(value):
        if not (
            type(entry) is list
            and len(entry) == 2
            and type(entry[0]) is key
            and type(entry[1]) is bytes
        ):
            raise MarshallingError(f"a snapshot entry is [{key.__name__}, bytes]")
        entries.append((entry[0], entry[1]))
    return tuple(entries)


def _notification(v: list[Any]) -> Notification:
    _arity(v, 5)
    return Notification(
        _int(v[1]), Vote(_int(v[2]), _int(v[3]), _int(v[4])), ServerState(_int(v[5]))
    )


def _follower_info(v: list[Any]) -> FollowerInfo:
    _arity(v, 4)
    if type(v[4]) is not bool:
        raise MarshallingError("FollowerInfo's observer flag is a boolean")
    return FollowerInfo(_int(v[1]), _int(v[2]), _int(v[3]), v[4])


def _new_epoch(v: list[Any]) -> NewEpoch:
    _arity(v, 1)
    return NewEpoch(_int(v[1]))


def _ack_epoch(v: list[Any]) -> AckEpoch:
    _arity(v, 3)
    return AckEpoch(_int(v[1]), _int(v[2]), _int(v[3]))


def _new_leader(v: list[Any]) -> NewLeader:
    _arity(v, 5)
    return NewLeader(_int(v[1]), SyncMode(_int(v[2])), _int(v[3]), _snapshot(v[4]), _records(v[5]))


def _ack_new_leader(v: list[Any]) -> AckNewLeader:
    _arity(v, 2)
    return AckNewLeader(_int(v[1]), _int(v[2]))


def _up_to_date(v: list[Any]) -> UpToDate:
    _arity(v, 1)
    return UpToDate(_int(v[1]))


def _propose(v: list[Any]) -> Propose:
    _arity(v, 1)
    return Propose(_records(v[1]))


def _logged_propose(v: list[Any]) -> LoggedPropose:
    _arity(v, 1)
    return LoggedPropose(_records(v[1]))


def _early_propose(v: list[Any]) -> EarlyPropose:
    _arity(v, 1)
    return EarlyPropose(_records(v[1]))


def _ack(v: list[Any]) -> Ack:
    _arity(v, 1)
    return Ack(_int(v[1]))


def _commit(v: list[Any]) -> Commit:
    _arity(v, 1)
    return Commit(_int(v[1]))


def _logged(v: list[Any]) -> Logged:
    _arity(v, 1)
    return Logged(_int(v[1]))


def _ping(v: list[Any]) -> Ping:
    _arity(v, 2)
    return Ping(tuple([_int(session) for session in _list(v[1])]), _int(v[2]))


def _forwarded(value: object) -> ForwardedWrite:
    session_id, cxid, request, ids, owner = _pair(value, 5)
    return (
        _int(session_id),
        _int(cxid),
        _request_in(_list(request)),
        _ids_in(_list(ids)),
        _int(owner),
    )


def _forward(v: list[Any]) -> Forward:
    _arity(v, 1)
    return Forward(tuple([_forwarded(write) for write in _list(v[1])]))


def _sync_request(v: list[Any]) -> SyncRequest:
    _arity(v, 2)
    return SyncRequest(_int(v[1]), _int(v[2]))


def _sync_done(v: list[Any]) -> SyncDone:
    _arity(v, 2)
    return SyncDone(_int(v[1]), _int(v[2]))


_DECODERS: dict[int, Callable[[list[Any]], PeerMessage]] = {
    _TAGS[Notification]: _notification,
    _TAGS[FollowerInfo]: _follower_info,
    _TAGS[NewEpoch]: _new_epoch,
    _TAGS[AckEpoch]: _ack_epoch,
    _TAGS[NewLeader]: _new_leader,
    _TAGS[AckNewLeader]: _ack_new_leader,
    _TAGS[UpToDate]: _up_to_date,
    _TAGS[Propose]: _propose,
    _TAGS[Ack]: _ack,
    _TAGS[Commit]: _commit,
    _TAGS[Ping]: _ping,
    _TAGS[Forward]: _forward,
    _TAGS[SyncRequest]: _sync_request,
    _TAGS[SyncDone]: _sync_done,
    _TAGS[LoggedPropose]: _logged_propose,
    _TAGS[Logged]: _logged,
    _TAGS[EarlyPropose]: _early_propose,
}


# ---- the handshake -------------------------------------------------------------------------

# Bump when the handshake or the messages change shape: members of different versions refuse
# each other (and say why) instead of failing to decode each other's messages.
PEER_PROTOCOL_VERSION = 7
NONCE_BYTES = 16
MAX_HANDSHAKE_FRAME = 4096
"""The largest frame read before the other end has proved itself: the three handshake frames
are about 150 bytes, so nothing unauthenticated can make a member buffer more than this."""

_PROOF_LABEL = b"zkpy peer handshake v5"
_FROM_PROVER = b"P"
_FROM_VERIFIER = b"V"


class HandshakeError(Exception):
    """The other end of a peer connection failed the handshake; the message says how."""


class NotAPeerError(HandshakeError):
    """The first frame on a peer port is not a member's hello (a client, a tool, noise)."""


MAX_HELLO_MEMBERS = 256


def ensemble_digest(members: Iterable[tuple[int, str, int]]) -> bytes:
    """A member's view of its ensemble, bound into its proofs: a digest of the members' (id,
    host, client port), sorted. Peer ports are left out: a member may reach another through a
    proxy, on a port of its own choosing. Roles are left out too: a reconfig changes them."""
    rows = sorted([[member_id, host, port] for member_id, host, port in members])
    return hashlib.sha256(msgpack.packb(rows, use_bin_type=True)).digest()


def _member_rows(value: object) -> tuple[tuple[int, str, int], ...]:
    """The (id, host, client port) rows a hello lists; HandshakeError for any other shape."""
    if value is None:
        raise HandshakeError(
            "the hello lists no members, as zkpy before membership changes sent it: upgrade "
            "every member of an ensemble together"
        )
    if type(value) is not list or not 0 < len(value) <= MAX_HELLO_MEMBERS:
        raise HandshakeError(f"the hello's member list is not 1 to {MAX_HELLO_MEMBERS} members")
    rows = []
    for row in value:
        if (
            type(row) is not list
            or len(row) != 3
            or type(row[0]) is not int
            or type(row[1]) is not str
            or type(row[2]) is not int
        ):
            raise HandshakeError("a member in the hello is not [id, host, client port]")
        rows.append((row[0], row[1], row[2]))
    return tuple(rows)


def _address_in(value: object) -> tuple[str, int] | None:
    if type(value) is list and len(value) == 2 and type(value[0]) is str:
        port = value[1]
        if type(port) is int and 0 < port < 1 << 16:
            return value[0], port
    return None


def _proof(
    secret: bytes,
    direction: bytes,
    prover: int,
    verifier: int,
    challenge_nonce: bytes,
    hello_nonce: bytes,
    ensemble: bytes,
) -> bytes:
    # every part has a fixed length, so no two different inputs make the same message
    message = b"".join(
        [
            _PROOF_LABEL,
            direction,
            ensemble,
            prover.to_bytes(2, "big"),
            verifier.to_bytes(2, "big"),
            challenge_nonce,
            hello_nonce,
        ]
    )
    return hmac.new(secret, message, hashlib.sha256).digest()


def _handshake_map(payload: bytes, what: str) -> dict[str, Any]:
    try:
        value = msgpack.unpackb(payload, raw=False)
    except Exception:  # msgpack raises several unrelated types for bad input
        raise HandshakeError(f"the {what} is not msgpack") from None
    if not isinstance(value, dict):
        raise HandshakeError(f"the {what} is not a map")
    return value


def _nonce(value: object, what: str) -> bytes:
    if type(value) is not bytes or len(value) != NONCE_BYTES:
        raise HandshakeError(f"the {what} carries no {NONCE_BYTES}-byte nonce")
    return value


def _member_id(value: object) -> int:
    if type(value) is not int or not 0 < value < 1 << 16:
        raise HandshakeError(f"bad member id {value!r}")
    return value


def _not_a_peer(payload: bytes) -> NotAPeerError | None:
    """Why the first frame is not a member's hello, or None if it looks like one."""
    try:
        value = msgpack.unpackb(payload, raw=False)
    except Exception:
        return NotAPeerError("the first frame is not msgpack")
    if isinstance(value, dict) and "id" in value and "proof" in value:
        return None
    if isinstance(value, dict) and ("session_id" in value or "cmd" in value):
        return NotAPeerError("a zkpy client's handshake")
    return NotAPeerError("the first frame is not a member's hello")


@dataclass(frozen=True, slots=True)
class Hello:
    """A prover's hello as sent, and the answer its verifier must give."""

    payload: bytes
    expected_answer: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """What one member proves and checks in peer handshakes. Sans-I/O: nonces come in as
    arguments, frames' payloads in and out as bytes."""

    member_id: int
    ensemble: bytes
    peers: frozenset[int]
    secret: bytes = field(repr=False)
    # this member's view of the membership as (id, host, client port), whose digest is
    # `ensemble`, and where its own peer listener is (a member that does not know it yet, one
    # a reconfig is about to add, dials back there)
    members: tuple[tuple[int, str, int], ...] = ()
    address: tuple[str, int] = ("", 0)

    def challenge(self, nonce: bytes) -> bytes:
        """The verifier's first frame."""
        return _pack({"v": PEER_PROTOCOL_VERSION, "id": self.member_id, "nonce": nonce})

    def hello(self, challenge: bytes, verifier: int, nonce: bytes) -> Hello:
        """The prover's answer to `challenge`, from the member it dialled as `verifier`."""
        value = _handshake_map(challenge, "challenge")
        if value.get("v") != PEER_PROTOCOL_VERSION:
            raise HandshakeError(
                f"member {verifier} speaks peer protocol {value.get('v', 'before 5')!r}, this "
                f"member {PEER_PROTOCOL_VERSION}: upgrade every member of an ensemble together"
            )
        if value.get("id") != verifier:
            raise HandshakeError(
                f"the peer port of member {verifier} answers as member {value.get('id')!r}"
            )
        theirs = _nonce(value.get("nonce"), "challenge")
        proof = self._proof(_FROM_PROVER, self.member_id, verifier, theirs, nonce)
        hello = {
            "v": PEER_PROTOCOL_VERSION,
            "id": self.member_id,
            "to": verifier,
            "nonce": nonce,
            "members": [list(row) for row in self.members],
            "peer": list(self.address),
            "proof": proof,
        }
        answer = self._proof(_FROM_VERIFIER, verifier, self.member_id, theirs, nonce)
        return Hello(_pack(hello), answer)

    def check_hello(self, hello: bytes, nonce: bytes) -> tuple[int, bytes]:
        """Check a prover's hello to our challenge of `nonce`; return its member id and our
        answer. Raises NotAPeerError for a frame that is no member's hello at all."""
        refusal = _not_a_peer(hello)
        if refusal is not None:
            raise refusal
        value = _handshake_map(hello, "hello")
        version = value.get("v")
        if version != PEER_PROTOCOL_VERSION:
            raise HandshakeError(
                f"peer protocol version {version!r}, this member speaks "
                f"{PEER_PROTOCOL_VERSION}: upgrade every member of an ensemble together"
            )
        prover = _member_id(value.get("id"))
        rows = _member_rows(value.get("members"))
        if prover not in self.peers and prover not in {row[0] for row in rows}:
            raise HandshakeError(f"unknown member id {prover}")
        if value.get("to") != self.member_id:
            raise HandshakeError(
                f"member {prover}'s hello is meant for member {value.get('to')!r}, not this "
                f"member {self.member_id} (relayed, or a peer port in the wrong place)"
            )
        self._check_same_ensemble(prover, rows)
        ensemble = ensemble_digest(rows)
        theirs = _nonce(value.get("nonce"), "hello")
        proof = value.get("proof")
        expected = _proof(
            self.secret, _FROM_PROVER, prover, self.member_id, nonce, theirs, ensemble
        )
        if type(proof) is not bytes or not hmac.compare_digest(proof, expected):
            raise HandshakeError(f"member {prover} failed to prove the cluster secret")
        answer = _proof(
            self.secret, _FROM_VERIFIER, self.member_id, prover, nonce, theirs, ensemble
        )
        return prover, _pack({"proof": answer})

    def _check_same_ensemble(self, prover: int, rows: tuple[tuple[int, str, int], ...]) -> None:
        """Two views of one ensemble may differ in who is a member (one of them has not heard
        of a reconfig yet) but not in where a member they both list is."""
        mine = {row[0]: row for row in self.members}
        common = [row for row in rows if row[0] in mine]
        if not common or any(mine[row[0]] != row for row in common):
            raise HandshakeError(
                f"member {prover} describes another ensemble (hosts or client ports of members "
                "differ): give every member the same ensemble file"
            )

    @staticmethod
    def stated_address(hello: bytes) -> tuple[str, int] | None:
        """Where the prover of a checked `hello` listens for peers, as it says."""
        try:
            value = msgpack.unpackb(hello, raw=False)
        except Exception:  # checked before: cannot happen, but no input may raise here
            return None
        return _address_in(value.get("peer")) if isinstance(value, dict) else None

    def check_answer(self, answer: bytes, hello: Hello, verifier: int) -> None:
        """Check the verifier's answer to our hello."""
        proof = _handshake_map(answer, "answer").get("proof")
        if type(proof) is not bytes or not hmac.compare_digest(proof, hello.expected_answer):
            raise HandshakeError(f"member {verifier} failed to prove the cluster secret")

    def _proof(
        self, direction: bytes, prover: int, verifier: int, challenge: bytes, hello: bytes
    ) -> bytes:
        return _proof(self.secret, direction, prover, verifier, challenge, hello, self.ensemble)


def _pack(value: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed
