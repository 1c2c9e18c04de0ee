"""What clients ask for, as typed values. The wire layer decodes frames into these; prep turns
the write requests into transactions and the server answers the reads from its tree.

Values with `Final` fields (mypy keeps them unchanged), not frozen dataclasses: a frozen one
costs several times as much to construct, and every request is decoded into one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from zkpy.core.membership import MemberSpec
from zkpy.core.types import ACL, WatchMode


@dataclass(slots=True, unsafe_hash=True)
class CreateRequest:
    """Create a node; `ephemeral` ties it to the session, `sequential` appends a counter.

    `container` makes a container node (deleted once its last child is), `ttl_ms` (over 0) a
    TTL node (deleted once it has had no children and no change for that long): both are
    persistent, and prep refuses them with `ephemeral`, and `container` with `sequential`
    or a ttl. `data` None is ZooKeeper's null data (a jute client may send it): it reads back
    as null over the jute protocol and as empty bytes over the msgpack one."""

    path: Final[str]
    data: Final[bytes | None]
    acl: Final[tuple[ACL, ...]]
    ephemeral: Final[bool] = False
    sequential: Final[bool] = False
    container: Final[bool] = False
    ttl_ms: Final[int] = 0


@dataclass(slots=True, unsafe_hash=True)
class DeleteRequest:
    """Delete a childless node if its version is `version` (-1: any version)."""

    path: Final[str]
    version: Final[int] = -1


@dataclass(slots=True, unsafe_hash=True)
class SetDataRequest:
    """Replace a node's data if its version is `version` (-1: any version); None is null data
    (see `CreateRequest`)."""

    path: Final[str]
    data: Final[bytes | None]
    version: Final[int] = -1


@dataclass(slots=True, unsafe_hash=True)
class SetACLRequest:
    """Replace a node's ACL if its ACL version is `version` (-1: any version)."""

    path: Final[str]
    acl: Final[tuple[ACL, ...]]
    version: Final[int] = -1


@dataclass(slots=True, unsafe_hash=True)
class CheckRequest:
    """In a multi: require the node's version to be `version`, changing nothing."""

    path: Final[str]
    version: Final[int]


MultiOp = CreateRequest | DeleteRequest | SetDataRequest | CheckRequest


@dataclass(slots=True, unsafe_hash=True)
class MultiRequest:
    """Operations applied atomically: all of them, or none if any one fails."""

    ops: Final[tuple[MultiOp, ...]]


@dataclass(slots=True, unsafe_hash=True)
class CreateSessionRequest:
    """Open a session. Made by the member that took the handshake, which picks the id, the
    negotiated timeout and the password; clients never send it."""

    session_id: Final[int]
    timeout_ms: Final[int]
    password: Final[bytes]


@dataclass(slots=True, unsafe_hash=True)
class CloseSessionRequest:
    """Close the session: its ephemeral nodes are deleted, and it cannot be used again."""


@dataclass(slots=True, unsafe_hash=True)
class AttachSessionRequest:
    """A member took a reconnecting session's connection: from now on only that connection
    (the owner it is submitted with) may write for the session. Made by members, not clients."""


@dataclass(slots=True, unsafe_hash=True)
class ReapRequest:
    """Delete a container or TTL node that has come due, if it still has no children and its
    version is still `version`. Made by the leader (no client can send it): it is prepped to
    an ordinary Delete, so every member applies it and watches fire as for any delete."""

    path: Final[str]
    version: Final[int]


@dataclass(slots=True, unsafe_hash=True)
class ReconfigRequest:
    """Change the membership: take out the members `remove` names, put in `add` (an id already
    a member changes its role or addresses), if the committed membership's version is still
    `from_version` (-1: any). Only the super user may; one change is in flight at a time.

    With `new_members` (ZooKeeper's non-incremental reconfig; `add` and `remove` then empty)
    the membership becomes exactly those members (`Membership.replaced`)."""

    add: Final[tuple[MemberSpec, ...]] = ()
    remove: Final[tuple[int, ...]] = ()
    from_version: Final[int] = -1
    new_members: Final[tuple[MemberSpec, ...] | None] = None


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
    | ReconfigRequest
)


@dataclass(slots=True, unsafe_hash=True)
class GetDataRequest:
    """Read a node's data and Stat, optionally leaving a one-shot data watch."""

    path: Final[str]
    watch: Final[bool] = False


@dataclass(slots=True, unsafe_hash=True)
class ExistsRequest:
    """Read a node's Stat (None if missing), optionally leaving a watch that fires on its
    creation, change or deletion."""

    path: Final[str]
    watch: Final[bool] = False


@dataclass(slots=True, unsafe_hash=True)
class GetChildrenRequest:
    """List a node's children, optionally leaving a one-shot child watch."""

    path: Final[str]
    watch: Final[bool] = False


@dataclass(slots=True, unsafe_hash=True)
class GetACLRequest:
    """Read a node's ACL and Stat."""

    path: Final[str]


@dataclass(slots=True, unsafe_hash=True)
class SyncRequest:
    """Wait until the member has applied every write committed before the request was made,
    so that the next read is current."""

    path: Final[str]


@dataclass(slots=True, unsafe_hash=True)
class AddWatchRequest:
    """Set a persistent watch on `path` (recursive: on its whole subtree) that fires until
    removed."""

    path: Final[str]
    mode: Final[WatchMode]  # PERSISTENT or PERSISTENT_RECURSIVE


@dataclass(slots=True, unsafe_hash=True)
class RemoveWatchesRequest:
    """Remove the session's watches of one kind on `path`."""

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
    """Add an identity to the connection (e.g. scheme ``digest``, credential ``user:password``)."""

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

PreppedRequest = WriteRequest | ReapRequest
"""What the leader's prep takes: the writes members submit, and its own reaping."""
