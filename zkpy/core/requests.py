"""What clients ask for, as typed values. The wire layer decodes frames into these; prep turns
the write requests into transactions and the server answers the reads from its tree.

Values with `Final` fields (mypy keeps them unchanged), not frozen dataclasses: a frozen one
costs several times as much to construct, and every request is decoded into one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from zkpy.core.types import ACL, WatchMode


@dataclass(slots=True, unsafe_hash=True)
class CreateRequest:
    path: Final[str]
    data: Final[bytes]
    acl: Final[tuple[ACL, ...]]
    ephemeral: Final[bool] = False
    sequential: Final[bool] = False


@dataclass(slots=True, unsafe_hash=True)
class DeleteRequest:
    path: Final[str]
    version: Final[int] = -1


@dataclass(slots=True, unsafe_hash=True)
class SetDataRequest:
    path: Final[str]
    data: Final[bytes]
    version: Final[int] = -1


@dataclass(slots=True, unsafe_hash=True)
class SetACLRequest:
    path: Final[str]
    acl: Final[tuple[ACL, ...]]
    version: Final[int] = -1


@dataclass(slots=True, unsafe_hash=True)
class CheckRequest:
    path: Final[str]
    version: Final[int]


MultiOp = CreateRequest | DeleteRequest | SetDataRequest | CheckRequest


@dataclass(slots=True, unsafe_hash=True)
class MultiRequest:
    ops: Final[tuple[MultiOp, ...]]


@dataclass(slots=True, unsafe_hash=True)
class CreateSessionRequest:
    session_id: Final[int]
    timeout_ms: Final[int]
    password: Final[bytes]


@dataclass(slots=True, unsafe_hash=True)
class CloseSessionRequest:
    pass


@dataclass(slots=True, unsafe_hash=True)
class AttachSessionRequest:
    """A member took a reconnecting session's connection: from now on only that connection
    (the owner it is submitted with) may write for the session. Made by members, not clients."""


WriteRequest = (
    CreateRequest
    | DeleteRequest
    | SetDataRequest
    | SetACLRequest
    | CheckRequest
    | MultiRequest
    | CreateSessionRequest
    | CloseSessionRequest
    | AttachSessionRequest
)


@dataclass(slots=True, unsafe_hash=True)
class GetDataRequest:
    path: Final[str]
    watch: Final[bool] = False


@dataclass(slots=True, unsafe_hash=True)
class ExistsRequest:
    path: Final[str]
    watch: Final[bool] = False


@dataclass(slots=True, unsafe_hash=True)
class GetChildrenRequest:
    path: Final[str]
    watch: Final[bool] = False


@dataclass(slots=True, unsafe_hash=True)
class GetACLRequest:
    path: Final[str]


@dataclass(slots=True, unsafe_hash=True)
class SyncRequest:
    path: Final[str]


@dataclass(slots=True, unsafe_hash=True)
class AddWatchRequest:
    path: Final[str]
    mode: Final[WatchMode]  # PERSISTENT or PERSISTENT_RECURSIVE


@dataclass(slots=True, unsafe_hash=True)
class RemoveWatchesRequest:
    path: Final[str]
    mode: Final[WatchMode | None]  # None removes every kind of watch on the path


@dataclass(slots=True, unsafe_hash=True)
class SetWatchesRequest:
    """Re-register watches after a reconnect, firing at once for what changed since last_zxid."""

    last_zxid: Final[int]
    data: Final[tuple[str, ...]] = ()
    exist: Final[tuple[str, ...]] = ()
    child: Final[tuple[str, ...]] = ()
    persistent: Final[tuple[str, ...]] = ()
    recursive: Final[tuple[str, ...]] = ()


@dataclass(slots=True, unsafe_hash=True)
class PingRequest:
    """A heartbeat (any xid); the usual form is the fixed frame ``[-2, 11]``."""


@dataclass(slots=True, unsafe_hash=True)
class AuthRequest:
    scheme: Final[str]
    credential: Final[bytes]


ReadRequest = (
    GetDataRequest
    | ExistsRequest
    | GetChildrenRequest
    | GetACLRequest
    | SyncRequest
    | AddWatchRequest
    | RemoveWatchesRequest
    | SetWatchesRequest
    | AuthRequest
    | PingRequest
)

Request = WriteRequest | ReadRequest
