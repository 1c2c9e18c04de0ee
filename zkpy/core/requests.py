"""What clients ask for, as typed values. The wire layer decodes frames into these; prep turns
the write requests into transactions and the server answers the reads from its tree."""

from __future__ import annotations

from dataclasses import dataclass

from zkpy.core.types import ACL, WatchMode


@dataclass(frozen=True, slots=True)
class CreateRequest:
    path: str
    data: bytes
    acl: tuple[ACL, ...]
    ephemeral: bool = False
    sequential: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    path: str
    version: int = -1


@dataclass(frozen=True, slots=True)
class SetDataRequest:
    path: str
    data: bytes
    version: int = -1


@dataclass(frozen=True, slots=True)
class SetACLRequest:
    path: str
    acl: tuple[ACL, ...]
    version: int = -1


@dataclass(frozen=True, slots=True)
class CheckRequest:
    path: str
    version: int


MultiOp = CreateRequest | DeleteRequest | SetDataRequest | CheckRequest


@dataclass(frozen=True, slots=True)
class MultiRequest:
    ops: tuple[MultiOp, ...]


@dataclass(frozen=True, slots=True)
class CreateSessionRequest:
    session_id: int
    timeout_ms: int
    password: bytes


@dataclass(frozen=True, slots=True)
class CloseSessionRequest:
    pass


WriteRequest = (
    CreateRequest
    | DeleteRequest
    | SetDataRequest
    | SetACLRequest
    | CheckRequest
    | MultiRequest
    | CreateSessionRequest
    | CloseSessionRequest
)


@dataclass(frozen=True, slots=True)
class GetDataRequest:
    path: str
    watch: bool = False


@dataclass(frozen=True, slots=True)
class ExistsRequest:
    path: str
    watch: bool = False


@dataclass(frozen=True, slots=True)
class GetChildrenRequest:
    path: str
    watch: bool = False


@dataclass(frozen=True, slots=True)
class GetACLRequest:
    path: str


@dataclass(frozen=True, slots=True)
class SyncRequest:
    path: str


@dataclass(frozen=True, slots=True)
class AddWatchRequest:
    path: str
    mode: WatchMode  # PERSISTENT or PERSISTENT_RECURSIVE


@dataclass(frozen=True, slots=True)
class RemoveWatchesRequest:
    path: str
    mode: WatchMode | None  # None removes every kind of watch on the path


@dataclass(frozen=True, slots=True)
class SetWatchesRequest:
    """Re-register watches after a reconnect, firing at once for what changed since last_zxid."""

    last_zxid: int
    data: tuple[str, ...] = ()
    exist: tuple[str, ...] = ()
    child: tuple[str, ...] = ()
    persistent: tuple[str, ...] = ()
    recursive: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PingRequest:
    """A heartbeat (any xid); the usual form is the fixed frame ``[-2, 11]``."""


@dataclass(frozen=True, slots=True)
class AuthRequest:
    scheme: str
    credential: bytes


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
