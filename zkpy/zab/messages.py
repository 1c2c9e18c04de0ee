"""Peer messages of the Zab-like protocol: frozen values, encoded by zkpy.wire.peer.

Election traffic (`Notification`) may be lost, duplicated or reordered. Everything else travels on
a FIFO link between a follower and its leader; if that link breaks, the follower goes back to
election and resynchronises, so a lost message is never silently skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from zkpy.core.requests import WriteRequest
from zkpy.core.txn import TxnRecord
from zkpy.core.types import Id


class ServerState(IntEnum):
    """A member's state as election notifications report it."""

    LOOKING = 0
    FOLLOWING = 1
    LEADING = 2
    OBSERVING = 3


@dataclass(frozen=True, slots=True, order=True)
class Vote:
    """A proposed leader, ordered by how up to date its history is (epoch, zxid), then id."""

    epoch: int
    zxid: int
    leader: int


@dataclass(frozen=True, slots=True)
class Notification:
    """Election: the sender's current vote, its election round and its state."""

    round: int
    vote: Vote
    state: ServerState


@dataclass(frozen=True, slots=True)
class FollowerInfo:
    """Follower -> its chosen leader: where its history stands (discovery begins)."""

    accepted_epoch: int
    last_zxid: int
    committed_zxid: int  # what its tree holds: committed history, the same on every member
    observer: bool = False


@dataclass(frozen=True, slots=True)
class NewEpoch:
    """Leader -> follower: the epoch it proposes to lead, above every epoch a quorum accepted."""

    epoch: int


@dataclass(frozen=True, slots=True)
class AckEpoch:
    """Follower -> leader: it accepted the epoch (durably) and reports its history."""

    current_epoch: int
    last_zxid: int
    committed_zxid: int


class SyncMode(IntEnum):
    """How NewLeader brings a follower's log to the leader's (see NewLeader)."""

    DIFF = 0
    TRUNC = 1
    SNAP = 2


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A whole tree at `zxid`: encoded nodes and sessions, as the tree's checkpoint codec has it."""

    zxid: int
    nodes: tuple[tuple[str, bytes], ...]
    sessions: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class NewLeader:
    """Synchronization: how to bring the follower's log to the leader's, then the new epoch.

    DIFF: append `records`. TRUNC: drop logged entries after `truncate_after`, then append.
    SNAP: replace everything with `snapshot`, then append. The follower persists all of it and
    the epoch before it answers with AckNewLeader.
    """

    epoch: int
    mode: SyncMode
    truncate_after: int
    snapshot: Snapshot | None
    records: tuple[TxnRecord, ...]


@dataclass(frozen=True, slots=True)
class AckNewLeader:
    """Follower -> leader: the synchronized log and the new epoch are durable."""

    epoch: int
    last_zxid: int


@dataclass(frozen=True, slots=True)
class UpToDate:
    """Everything up to `commit_zxid` is committed: start serving."""

    commit_zxid: int


@dataclass(frozen=True, slots=True)
class Propose:
    """Leader -> follower or observer: proposals to log, in zxid order."""

    records: tuple[TxnRecord, ...]


@dataclass(frozen=True, slots=True)
class LoggedPropose:
    """Proposals the leader has already made durable, sent after its fsync instead of before.

    Where two members are a quorum (ensembles of two or three voters), a follower that has
    made these durable too knows they are on a quorum, so it commits them itself without
    waiting for a Commit: the leader's acknowledgement round trip leaves the path of a write.
    """

    records: tuple[TxnRecord, ...]


@dataclass(frozen=True, slots=True)
class EarlyPropose:
    """Proposals sent before the leader's own sync, with a `Logged` to follow once it is done.

    Where two members are a quorum, a leader with nothing else in flight sends a write this way
    to the follower whose client waits for it, so that the two syncs overlap; a follower that
    has made the records durable and heard the `Logged` knows they are on a quorum and commits
    them itself, as with a LoggedPropose (docs/decisions/0038).
    """

    records: tuple[TxnRecord, ...]


@dataclass(frozen=True, slots=True)
class Logged:
    """Leader -> voting follower: the leader's log is durable up to and including `zxid`.

    It follows an `EarlyPropose`, in the Ready that holds the records, among the messages that
    wait for it to be persisted.
    """

    zxid: int


@dataclass(frozen=True, slots=True)
class Ack:
    """The sender has persisted every proposal up to and including `zxid`."""

    zxid: int


@dataclass(frozen=True, slots=True)
class Commit:
    """Every proposal up to and including `zxid` is committed."""

    zxid: int


@dataclass(frozen=True, slots=True)
class Ping:
    """Leader -> follower heartbeat of a numbered round; the follower's reply echoes the round
    (a quorum of replies confirms the leader still leads) and carries the sessions it heard
    from."""

    sessions: tuple[int, ...] = ()
    round: int = 0


ForwardedWrite = tuple[int, int, WriteRequest, frozenset[Id], int]
"""(session id, client xid, request, the session's authenticated identities, the owner: the
connection it came on, which the leader checks against the session's latest attachment)."""


@dataclass(frozen=True, slots=True)
class Forward:
    """Writes a follower received from its clients, in order, for the leader to prep."""

    writes: tuple[ForwardedWrite, ...]


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """Follower -> leader: a local client's sync, answered by SyncDone."""

    session_id: int
    cxid: int


@dataclass(frozen=True, slots=True)
class SyncDone:
    """Sent after the commits of everything proposed before the sync request."""

    session_id: int
    cxid: int


def promises_durability(message: object) -> bool:
    """Whether sending `message` claims that the sender's state is on disk: acknowledgements,
    the leader's epoch announcements and logged proposals. Others (proposals, commits, pings,
    votes) may leave before the Ready that holds them is persisted, so that the leader's fsync
    and its followers' run in parallel."""
    return isinstance(message, _DURABLE)


PeerMessage = (
    Notification
    | FollowerInfo
    | NewEpoch
    | AckEpoch
    | NewLeader
    | AckNewLeader
    | UpToDate
    | Propose
    | LoggedPropose
    | EarlyPropose
    | Logged
    | Ack
    | Commit
    | Ping
    | Forward
    | SyncRequest
    | SyncDone
)

# a tuple: isinstance is quicker
_DURABLE = (Ack, AckEpoch, AckNewLeader, NewEpoch, NewLeader, LoggedPropose, Logged)
