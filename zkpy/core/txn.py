"""Transaction records: what prep decided, in the form every member applies identically.

A transaction fixes everything that is not deterministic (zxid, time, session id, the sequential
suffix, the new versions), so `DataTree.apply` only obeys. Records are encoded with msgpack as
flat lists (`encode_record` / `decode_record`); that byte form is what the log stores and what the
leader sends to followers.

Records and operations are values: their fields are `Final`, which mypy enforces, rather than
frozen at run time. A frozen dataclass sets each field through `object.__setattr__`, which made
a record several times slower to construct (docs/decisions/0007), and every write makes several
records and operations on each member (prep, then decoding on each follower).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from zkpy.core.errors import Code
from zkpy.core.types import ACL, acl_from_wire

OP_CREATE = 1
OP_DELETE = 2
OP_SET_DATA = 5
OP_SET_ACL = 7
OP_CHECK = 13
OP_MULTI = 14
OP_CREATE_SESSION = -10
OP_CLOSE_SESSION = -11
OP_ATTACH_SESSION = -12
OP_RECONFIG = 16
OP_ERROR = -1


@dataclass(slots=True, unsafe_hash=True)
class CreateSession:
    """Open a session with the id, negotiated timeout and password its creating member chose."""

    session_id: Final[int]
    timeout_ms: Final[int]
    password: Final[bytes]


@dataclass(slots=True, unsafe_hash=True)
class CloseSession:
    """Close a session: apply deletes its ephemerals (in path order) and forgets it."""

    session_id: Final[int]


@dataclass(slots=True, unsafe_hash=True)
class AttachSession:
    """A session's connection moved to a member: `owner` names that connection (a member-made
    id). It changes no node. Prep refuses the session's writes from any other connection
    (SESSION_MOVED), and a member holding an older connection of the session closes it."""

    session_id: Final[int]
    owner: Final[int]


@dataclass(slots=True, unsafe_hash=True)
class Reconfig:
    """A change of membership: `config` is the whole new membership's text
    (`zkpy.core.membership`), which apply writes to /zookeeper/config. Each member takes the
    new membership as its own once it applies this record."""

    config: Final[bytes]


@dataclass(slots=True, unsafe_hash=True)
class Create:
    """Create a node; everything apply needs is fixed here, the sequential suffix included."""

    path: Final[str]  # final path, sequential suffix included
    data: Final[bytes | None]  # None: ZooKeeper's null data (msgpack nil in the log)
    acl: Final[tuple[ACL, ...]]
    ephemeral_owner: Final[int]
    parent_cversion: Final[int]  # the parent's cversion after this create


@dataclass(slots=True, unsafe_hash=True)
class Delete:
    """Delete a node; prep has checked it exists and has no children."""

    path: Final[str]


@dataclass(slots=True, unsafe_hash=True)
class SetData:
    """Replace a node's data; `version` is the one prep fixed for after the write."""

    path: Final[str]
    data: Final[bytes | None]
    version: Final[int]  # the node's version after this write


@dataclass(slots=True, unsafe_hash=True)
class SetACL:
    """Replace a node's ACL; `aversion` is the one prep fixed for after the write."""

    path: Final[str]
    acl: Final[tuple[ACL, ...]]
    aversion: Final[int]  # the node's aversion after this write


@dataclass(slots=True, unsafe_hash=True)
class Check:
    """A version check inside a multi: changes nothing."""

    path: Final[str]
    version: Final[int]


@dataclass(slots=True, unsafe_hash=True)
class ErrorTxn:
    """A write that prep refused: it still takes its place in the order, and changes nothing."""

    code: Final[int]


@dataclass(slots=True, unsafe_hash=True)
class Multi:
    """An atomic list of operations. A failed multi holds one ErrorTxn per operation."""

    ops: Final[tuple[Op, ...]]

    @property
    def failed(self) -> bool:
        """Whether one of the operations was refused, so none took effect."""
        return any(isinstance(op, ErrorTxn) for op in self.ops)


Op = (
    CreateSession
    | CloseSession
    | AttachSession
    | Create
    | Delete
    | SetData
    | SetACL
    | Check
    | ErrorTxn
    | Multi
    | Reconfig
)


@dataclass(slots=True, unsafe_hash=True)
class TxnRecord:
    """One entry of the history: header (zxid, session, client xid, time) plus the operation.

    `cxid` is the client's request xid, so the member holding that client's connection can match
    the committed record to the waiting request.
    """

    zxid: Final[int]
    session_id: Final[int]
    cxid: Final[int]
    time_ms: Final[int]
    op: Final[Op]
    # the log encoding, once made: a record is encoded for the log and for the followers, and
    # a follower logs the very bytes it received (not part of the value)
    encoded: bytes | None = field(default=None, compare=False, repr=False)


def rolled_back_multi(ops_count: int, failed_index: int, code: int) -> Multi:
    """The record of a failed multi: the failing op's code, OK for ops before, and
    RUNTIME_INCONSISTENCY for ops after it (they were never tried), as ZooKeeper reports it."""
    results = []
    for index in range(ops_count):
        if index < failed_index:
            results.append(ErrorTxn(Code.OK))
        elif index == failed_index:
            results.append(ErrorTxn(code))
        else:
            results.append(ErrorTxn(Code.RUNTIME_INCONSISTENCY))
    return Multi(tuple(results))


def _acl_fields(acl: tuple[ACL, ...]) -> list[list[object]]:
    return [entry.to_wire() for entry in acl]


def _acl_from(fields: Sequence[Sequence[object]]) -> tuple[ACL, ...]:
    return acl_from_wire(fields)


def op_to_fields(op: Op) -> list[Any]:
    """The flat msgpack form of one operation: its opcode, then its fields.

    Exact type tests, the most frequent first, instead of a `match` with class patterns: every
    write is encoded here on the leader, and a pattern that captures positional fields looks
    each one up through `__match_args__`, several times slower (docs/decisions/0007)."""
    if type(op) is SetData:
        return [OP_SET_DATA, op.path, op.data, op.version]
    if type(op) is Create:
        return [
            OP_CREATE,
            op.path,
            op.data,
            _acl_fields(op.acl),
            op.ephemeral_owner,
            op.parent_cversion,
        ]
    if type(op) is Delete:
        return [OP_DELETE, op.path]
    if type(op) is Multi:
        return [OP_MULTI, [op_to_fields(inner) for inner in op.ops]]
    if type(op) is CreateSession:
        return [OP_CREATE_SESSION, op.session_id, op.timeout_ms, op.password]
    if type(op) is CloseSession:
        return [OP_CLOSE_SESSION, op.session_id]
    if type(op) is AttachSession:
        return [OP_ATTACH_SESSION, op.session_id, op.owner]
    if type(op) is SetACL:
        return [OP_SET_ACL, op.path, _acl_fields(op.acl), op.aversion]
    if type(op) is Check:
        return [OP_CHECK, op.path, op.version]
    if type(op) is ErrorTxn:
        return [OP_ERROR, op.code]
    if type(op) is Reconfig:
        return [OP_RECONFIG, op.config]
    raise TypeError(f"not a transaction op: {op!r}")


def op_from_fields(fields: Sequence[Any]) -> Op:
    """The operation `op_to_fields` encoded: the inverse, for the log and the peer links."""
    kind = fields[0]  # the most frequent first: every follower decodes every write here
    if kind == OP_SET_DATA:
        return SetData(fields[1], fields[2], fields[3])
    if kind == OP_CREATE:
        return Create(fields[1], fields[2], _acl_from(fields[3]), fields[4], fields[5])
    if kind == OP_DELETE:
        return Delete(fields[1])
    if kind == OP_SET_ACL:
        return SetACL(fields[1], _acl_from(fields[2]), fields[3])
    if kind == OP_CHECK:
        return Check(fields[1], fields[2])
    if kind == OP_ERROR:
        return ErrorTxn(fields[1])
    if kind == OP_MULTI:
        return Multi(tuple(op_from_fields(inner) for inner in fields[1]))
    if kind == OP_CREATE_SESSION:
        return CreateSession(fields[1], fields[2], fields[3])
    if kind == OP_CLOSE_SESSION:
        return CloseSession(fields[1])
    if kind == OP_ATTACH_SESSION:
        return AttachSession(fields[1], fields[2])
    if kind == OP_RECONFIG:
        return Reconfig(fields[1])
    raise ValueError(f"unknown transaction opcode {kind!r}")


def encode_record(record: TxnRecord, packer: msgpack.Packer | None = None) -> bytes:
    """The record's log encoding (computed once per record, then remembered). A caller that
    encodes many records in one thread passes its own `packer` (msgpack.packb makes one per
    call, which costs as much as the packing)."""
    if record.encoded is not None:
        return record.encoded
    fields = [record.zxid, record.session_id, record.cxid, record.time_ms, op_to_fields(record.op)]
    encoded: bytes = (
        msgpack.packb(fields, use_bin_type=True) if packer is None else packer.pack(fields)
    )
    record.encoded = encoded
    return encoded


def decode_record(raw: bytes) -> TxnRecord:
    """The record `encode_record` made, keeping `raw` as its encoding (a follower logs the very
    bytes the leader sent)."""
    # arrays as tuples: an ACL's entries are then the key of its shared decoded value as they are
    zxid, session_id, cxid, time_ms, fields = msgpack.unpackb(raw, raw=False, use_list=False)
    return TxnRecord(zxid, session_id, cxid, time_ms, op_from_fields(fields), bytes(raw))
