"""What a member does in each of its states, as swappable role objects (raft's step functions).

The `Replica` holds the state every role shares: the log, the commit and durability points, the
Ready being filled, the local clients' pending requests. A role holds only what its own state
needs (a leader's view of its followers, a follower's leader), so going back to election drops
it with the role object. `Looking` is here; `Leading` is in zkpy.zab.leader, `Following` in
zkpy.zab.follower.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING

from zkpy.core.requests import WriteRequest
from zkpy.core.types import Id
from zkpy.zab.messages import PeerMessage, ServerState, Vote

if TYPE_CHECKING:
    from zkpy.zab.replica import Replica


class Phase(enum.Enum):
    """Where a member stands in Zab: choosing a leader, then discovery, sync and broadcast."""

    ELECTION = "election"
    DISCOVERY = "discovery"
    SYNCHRONIZATION = "synchronization"
    BROADCAST = "broadcast"


class Role:
    """The base of every role: what a member in `state` does with each input. The defaults are
    those of a member that neither leads nor follows."""

    def __init__(self, replica: Replica) -> None:
        """A role of `replica`, whose shared state it reads and changes."""
        self.replica = replica
        self.state = ServerState.LOOKING

    def start(self) -> None:
        """The member has just taken this role."""

    def tick(self) -> None:
        """One tick of the member's clock has passed (`Replica.ticks` counts them)."""

    def receive(self, sender: int, message: PeerMessage) -> None:
        """A peer message other than an election Notification."""

    def disconnected(self, peer: int) -> None:
        """The FIFO link to `peer` broke."""

    def submit(
        self, session_id: int, cxid: int, request: WriteRequest, ids: frozenset[Id], owner: int
    ) -> None:
        """A local client's write, while the member serves."""
        self.replica._ready.rejected.append((session_id, cxid))

    def sync(self, session_id: int, cxid: int) -> None:
        """A local client's sync, while the member serves."""
        self.replica._ready.rejected.append((session_id, cxid))

    def reconfigured(self) -> None:
        """A new membership is committed: `replica.config` holds it now."""

    def persisted(self, durable_zxid: int) -> None:
        """A step begins: the previous Ready is durable, the log up to `durable_zxid`."""

    def current_vote(self) -> Vote:
        """The vote to tell a looking member: who this member follows or leads."""
        replica = self.replica
        return Vote(replica.current_epoch, replica.last_logged, replica.my_id)

    def confirmed_round(self) -> int:
        """The latest heartbeat round a quorum has answered (only a leader sends them)."""
        return 0

    def outstanding(self) -> int:
        """Writes and syncs still in flight."""
        return len(self.replica._awaiting_local)

    def awaits_leader(self) -> bool:
        """Whether local clients wait on what this member sent the leader (see
        `Replica.awaits_leader`)."""
        return False

    def background(self, sender: int, messages: Sequence[PeerMessage]) -> bool:
        """Whether carrying out `messages` from `sender` is work no client waits on (see
        `Replica.background`)."""
        return False


class Looking(Role):
    """Electing a leader: the member's `Election` does the work, ticked from here."""

    def tick(self) -> None:
        """Repeat the vote, or decide once a quorum has agreed long enough."""
        replica = self.replica
        replica.election.tick()
        replica._follow_election()
