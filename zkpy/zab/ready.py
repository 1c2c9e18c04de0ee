"""`Ready`: the work one step of a `Replica` hands to its shell, and the order the shell owes it."""

from __future__ import annotations

from dataclasses import dataclass, field

from zkpy.core.txn import TxnRecord
from zkpy.zab.messages import PeerMessage, Snapshot, promises_durability


@dataclass(slots=True)
class Ready:
    """The work of one step, taken with `Replica.take_ready()`. Field by field, in the order
    the shell carries it out:

    Durable state (step 1), written in this order, all of it before any message that
    `promises_durability` leaves (one synced storage transaction may hold all four):

    - `epochs`: (accepted epoch, current epoch) to store, replacing the stored pair; None
      leaves it. A leader's NewEpoch and a follower's AckEpoch and AckNewLeader in `messages`
      promise these.
    - `install`: a whole tree (nodes and sessions at `install.zxid`) that replaces the
      checkpoint and the whole log; the replica's `tree` is already this state (the shell
      drops whatever it derived from the old tree, such as its record of recent changes).
      `persist` then holds only records that follow it.
    - `truncate_after`: drop every logged record after this zxid (never a committed one).
    - `persist`: records to append to the log, in zxid order, after any truncation. A leader's
      LoggedPropose and a follower's Ack and AckNewLeader promise these.

    Messages (step 2):

    - `messages`: (peer, message) pairs; each peer's must go out in this order over its FIFO
      link. `split_messages()` parts them into those that may leave before step 1 (proposals,
      commits, pings, votes: the leader's fsync and its followers' then run in parallel) and
      those that must wait for it (an acknowledgement, an epoch announcement, a logged
      proposal, and anything after one of these to the same peer).

    Applying and answering (step 3). Every committed record was made durable by an earlier
    Ready (`Replica` hands out only what is durable here), so this may run before, between or
    after steps 1-2 of this Ready; `ReadyExecutor` runs it before step 1:

    - `committed`: records to apply in order, one at a time with `Replica.apply(record)`. After
      each, send its watch events and then its reply (matched by session id and cxid) before
      applying the next, so that no read sees a state whose events have not gone out.
    - `rejected`: (session id, cxid) of local writes and syncs that will never be answered here
      (the member stopped serving, or was not serving): answer them with an error after the
      `committed` records of this Ready.
    - `synced`: (session id, cxid) of local syncs that are now complete: every write the leader
      had when the sync reached it is in `committed` of this Ready or an earlier one; answer
      them after applying `committed`.
    - `serving_changed`: `Replica.serving` flipped in this step; the shell opens or closes its
      client listener after applying `committed` and answering.

    Then (step 4) the shell calls `take_ready()` again, and only then: that call says "the
    previous Ready is durable". The leader counts its own acknowledgement at that moment and a
    follower may hand out committed records it has logged, so calling early acknowledges
    records that are not on disk.
    """

    committed: list[TxnRecord] = field(default_factory=list)
    rejected: list[tuple[int, int]] = field(default_factory=list)
    synced: list[tuple[int, int]] = field(default_factory=list)
    epochs: tuple[int, int] | None = None
    install: Snapshot | None = None
    truncate_after: int | None = None
    persist: list[TxnRecord] = field(default_factory=list)
    messages: list[tuple[int, PeerMessage]] = field(default_factory=list)
    serving_changed: bool = False

    def split_messages(
        self,
    ) -> tuple[list[tuple[int, PeerMessage]], list[tuple[int, PeerMessage]]]:
        """(may go before persisting, must wait for it), keeping each peer's order."""
        early: list[tuple[int, PeerMessage]] = []
        late: list[tuple[int, PeerMessage]] = []
        held: set[int] = set()
        for peer, message in self.messages:
            if peer in held or promises_durability(message):
                held.add(peer)
                late.append((peer, message))
            else:
                early.append((peer, message))
        return early, late

    @property
    def needs_storage(self) -> bool:
        """Whether step 1 has anything to write."""
        return bool(
            self.epochs is not None
            or self.install is not None
            or self.truncate_after is not None
            or self.persist
        )

    def __bool__(self) -> bool:
        """Whether there is anything to do."""
        return bool(
            self.needs_storage
            or self.committed
            or self.rejected
            or self.synced
            or self.messages
            or self.serving_changed
        )
