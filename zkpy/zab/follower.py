"""The following role, for followers and observers alike: report to the leader, accept its
epoch, synchronize the log as it says (diff, truncate or snapshot), then log and acknowledge its
proposals and apply what it commits. An observer never acknowledges and never commits on its own:
it waits for the leader's Commit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from zkpy.core.requests import WriteRequest
from zkpy.core.txn import Reconfig, TxnRecord
from zkpy.core.types import Id, make_zxid, zxid_epoch
from zkpy.zab.messages import (
    Ack,
    AckEpoch,
    AckNewLeader,
    Commit,
    EarlyPropose,
    FollowerInfo,
    Forward,
    Logged,
    LoggedPropose,
    NewEpoch,
    NewLeader,
    PeerMessage,
    Ping,
    Propose,
    ServerState,
    SyncDone,
    SyncMode,
    SyncRequest,
    UpToDate,
    Vote,
)
from zkpy.zab.role import Phase, Role

if TYPE_CHECKING:
    from zkpy.zab.replica import Replica

# What only a leader sends: hearing one of these keeps a follower from timing out.
_FROM_LEADER = (
    NewEpoch,
    NewLeader,
    UpToDate,
    Propose,
    LoggedPropose,
    EarlyPropose,
    Logged,
    Commit,
    Ping,
    SyncDone,
)

# Proposals whose Ack from this member the leader may be waiting for: a quorum that includes it.
_ACK_AWAITED = (Propose, EarlyPropose)


class Following(Role):
    """This member follows (or observes) `leader`; see the module docstring."""

    def __init__(self, replica: Replica, leader: int) -> None:
        """Follow (or observe, as the configuration says) `leader`; `start` reports to it."""
        super().__init__(replica)
        config = replica.config
        self.observer = config.is_observer
        self.state = ServerState.OBSERVING if self.observer else ServerState.FOLLOWING
        self.leader = leader
        self.last_heard = replica.ticks
        # the last zxid the leader said it had logged (LoggedPropose or Logged)
        self.leader_logged = 0
        self.synchronized = False  # got this leader's NewLeader
        self.owed_ack = 0  # logged here, its Ack left for the next message to the leader

    def start(self) -> None:
        """Discovery begins: tell the leader where this member's history stands."""
        self.replica.phase = Phase.DISCOVERY
        self._send_follower_info()

    # ---- inputs --------------------------------------------------------------------------------

    def tick(self) -> None:
        """Give up on a leader not heard from within the limit; repeat FollowerInfo meanwhile."""
        replica = self.replica
        limit = replica.config.sync_limit if replica.serving else replica.config.init_limit
        if replica.ticks - self.last_heard > limit:
            replica._start_election()
        elif replica.phase is Phase.DISCOVERY:
            self._send_follower_info()

    def receive(self, sender: int, message: PeerMessage) -> None:
        """A message from the leader (anything from another member is ignored)."""
        if sender != self.leader:
            return
        if isinstance(message, _FROM_LEADER):  # not a FollowerInfo from a "leader" that follows
            self.last_heard = self.replica.ticks
        match message:
            case Propose(records):
                self._on_propose(records)
            case LoggedPropose(records) | EarlyPropose(records):
                self._on_local_quorum_propose(records, type(message) is LoggedPropose)
            case Logged(zxid):
                self._on_logged(zxid)
            case Commit(zxid):
                self._on_commit(zxid)
            case Ping(_sessions, round_):
                self._on_ping(round_)
            case NewEpoch(epoch):
                self._on_new_epoch(epoch)
            case NewLeader():
                self._on_new_leader(message)
            case UpToDate(commit_zxid):
                self._on_up_to_date(commit_zxid)
            case SyncDone(session_id, cxid):
                self._on_sync_done(session_id, cxid)

    def disconnected(self, peer: int) -> None:
        """Losing the link to the leader loses whatever was in flight: elect again."""
        if peer == self.leader:
            self.replica._start_election()

    def submit(
        self, session_id: int, cxid: int, request: WriteRequest, ids: frozenset[Id], owner: int
    ) -> None:
        """Forward a local client's write to the leader (batched with the step's others)."""
        self._pay_ack()
        self.replica._send_batched(self.leader, Forward, (session_id, cxid, request, ids, owner))

    def sync(self, session_id: int, cxid: int) -> None:
        """Ask the leader; its SyncDone comes after the commits this member must apply first."""
        self._pay_ack()
        self.replica._send(self.leader, SyncRequest(session_id, cxid))

    def persisted(self, durable_zxid: int) -> None:
        """Logged by the leader and by this member: on a quorum of two, so committed."""
        if self.leader_logged:
            replica = self.replica
            replica.commit_zxid = max(replica.commit_zxid, min(durable_zxid, self.leader_logged))

    def reconfigured(self) -> None:
        """A reconfig committed: a member whose role changed (voter and observer acknowledge
        differently) joins again, and so does every member when the leader is no voter any
        more (it steps down as it applies the same record: electing at once saves waiting
        `sync_limit` for its silence); otherwise it serves if and only if it is a member."""
        replica = self.replica
        config = replica.config
        if config.is_observer != self.observer or self.leader not in config.voters:
            replica._start_election()
        elif replica.phase is Phase.BROADCAST:
            replica._set_serving(True)  # which a member outside the membership never does

    def awaits_leader(self) -> bool:
        """Local clients wait on writes or syncs this member sent the leader: its proposal or
        word on them comes within about one of its syncs."""
        return (
            not self.observer
            and self.replica.phase is Phase.BROADCAST
            and bool(self.replica._awaiting_local)
        )

    def background(self, sender: int, messages: Sequence[PeerMessage]) -> bool:
        """From the leader, in broadcast, with no local client awaiting it, and (for a voter)
        no proposal whose Ack the leader may be waiting for (see `Replica.background`)."""
        replica = self.replica
        if sender != self.leader or replica.phase is not Phase.BROADCAST:
            return False
        if replica._awaiting_local:
            return False
        return self.observer or not any(type(m) in _ACK_AWAITED for m in messages)

    def current_vote(self) -> Vote:
        """This member follows `leader`."""
        replica = self.replica
        return Vote(replica.current_epoch, replica.last_logged, self.leader)

    # ---- discovery and synchronization ---------------------------------------------------------

    def _send_follower_info(self) -> None:
        replica = self.replica
        info = FollowerInfo(
            replica.accepted_epoch, replica.last_logged, replica.scheduled_zxid, self.observer
        )
        replica._send(self.leader, info)

    def _on_new_epoch(self, epoch: int) -> None:
        replica = self.replica
        if replica.phase is Phase.SYNCHRONIZATION and epoch == replica.accepted_epoch:
            return  # a repeat: the leader answered each of our FollowerInfo messages
        if epoch < replica.accepted_epoch or replica.phase is not Phase.DISCOVERY:
            replica._start_election()
            return
        if epoch > replica.accepted_epoch:
            replica.accepted_epoch = epoch
            replica._ready.epochs = (replica.accepted_epoch, replica.current_epoch)
        replica.phase = Phase.SYNCHRONIZATION
        replica._send(
            self.leader,
            AckEpoch(replica.current_epoch, replica.last_logged, replica.scheduled_zxid),
        )

    def _on_new_leader(self, message: NewLeader) -> None:
        replica = self.replica
        # only after acknowledging this leader's NewEpoch on this link, and only once: a second
        # one answers an AckEpoch this member sent before it went back to election and joined
        # the same leader again, planned from a log it may no longer have
        if (
            message.epoch != replica.accepted_epoch
            or replica.phase is not Phase.SYNCHRONIZATION
            or self.synchronized
            or (
                message.mode is SyncMode.DIFF
                and message.records
                and message.records[0].zxid <= replica.last_logged
            )
        ):
            replica._start_election()
            return
        self.synchronized = True
        if message.mode is SyncMode.SNAP:
            assert message.snapshot is not None
            replica._install(message.snapshot)
            self.leader_logged = 0
        elif message.mode is SyncMode.TRUNC:
            replica._truncate(message.truncate_after)
            self.leader_logged = min(self.leader_logged, replica.last_logged)
        replica._log(message.records)
        replica.current_epoch = message.epoch
        replica._ready.epochs = (replica.accepted_epoch, replica.current_epoch)
        replica._send(self.leader, AckNewLeader(message.epoch, replica.last_logged))

    def _on_up_to_date(self, commit_zxid: int) -> None:
        replica = self.replica
        if replica.phase is not Phase.SYNCHRONIZATION:
            replica._start_election()
            return
        replica.phase = Phase.BROADCAST
        replica.commit_zxid = max(replica.commit_zxid, min(commit_zxid, replica.last_logged))
        replica._apply_committed()
        if replica._role is self:  # a reconfig it just applied may have sent it to election
            replica._set_serving(True)

    # ---- broadcast -----------------------------------------------------------------------------

    def _on_propose(self, records: tuple[TxnRecord, ...], *, may_owe: bool = False) -> bool:
        """Log proposals and acknowledge them; False (and a new election) if they do not
        follow this member's log in the current epoch. `may_owe`: the leader has them durable
        or says so soon (a LoggedPropose or an EarlyPropose), see `_may_owe`."""
        replica = self.replica
        if replica.phase is not Phase.BROADCAST and replica.phase is not Phase.SYNCHRONIZATION:
            replica._start_election()
            return False
        epoch = replica.current_epoch
        if any(zxid_epoch(r.zxid) != epoch for r in records):
            replica._start_election()
            return False
        if records and records[0].zxid != self._next_expected_zxid():
            replica._start_election()  # a gap or a repeat: this link lost or replayed something
            return False
        replica._log(records)
        if not self.observer and records:
            if may_owe and self._may_owe(records):
                self.owed_ack = records[-1].zxid
            else:
                self.owed_ack = 0  # this Ack covers it
                replica._send(self.leader, Ack(records[-1].zxid))
        return True

    def _may_owe(self, records: tuple[TxnRecord, ...]) -> bool:
        """Whether this member may hold back its Ack of proposals that the leader has made (or
        is making) durable until its next message to the leader (a Forward, a SyncRequest, or
        at the latest its answer to the next heartbeat): when they are all its own clients'
        writes, none a reconfig, in an ensemble of three voters. The other follower's Ack then
        makes the leader's quorum without a wake-up of the leader for this one, and this
        member commits them itself (docs/decisions/0038)."""
        replica = self.replica
        if len(replica.config.voters) != 3:
            return False
        awaiting = replica._awaiting_local
        for record in records:
            if (record.session_id, record.cxid) not in awaiting or type(record.op) is Reconfig:
                return False
        return True

    def _pay_ack(self) -> None:
        """Send the Ack held back by `_may_owe`, ahead of the message about to go."""
        if self.owed_ack:
            self.replica._send(self.leader, Ack(self.owed_ack))
            self.owed_ack = 0

    def _on_local_quorum_propose(self, records: tuple[TxnRecord, ...], logged: bool) -> None:
        """Proposals this member commits itself once they are durable here and at the leader:
        `logged` (a LoggedPropose) if the leader has them durable already, else (an
        EarlyPropose) a `Logged` says when.

        The leader sends these only where it and one follower are a quorum (never to an
        observer, nor while a reconfig is in flight): it decides, not this member's view of
        the membership, which may lag the leader's by a commit."""
        if self._on_propose(records, may_owe=True) and records and logged and not self.observer:
            self.leader_logged = records[-1].zxid

    def _next_expected_zxid(self) -> int:
        replica = self.replica
        if zxid_epoch(replica.last_logged) == replica.current_epoch:
            return replica.last_logged + 1
        return make_zxid(replica.current_epoch, 1)

    def _on_commit(self, zxid: int) -> None:
        replica = self.replica
        replica.commit_zxid = max(replica.commit_zxid, min(zxid, replica.last_logged))
        replica._apply_committed()

    def _on_logged(self, zxid: int) -> None:
        """The leader's log is durable up to `zxid`: commit what this member has made durable
        of it (the two copies are a quorum). Only a voter counts it (see
        `_on_local_quorum_propose`), and only for the epoch it is synchronized to."""
        replica = self.replica
        if self.observer or zxid_epoch(zxid) != replica.current_epoch:
            return
        if replica.phase is not Phase.BROADCAST and replica.phase is not Phase.SYNCHRONIZATION:
            return
        self.leader_logged = max(self.leader_logged, zxid)
        self.persisted(replica.durable_zxid)
        replica._apply_committed()

    def _on_ping(self, round_: int) -> None:
        """Echo the heartbeat's round, with the sessions this member's clients kept alive."""
        replica = self.replica
        touched, replica._touched = tuple(sorted(replica._touched)), set()
        self._pay_ack()
        replica._send(self.leader, Ping(touched, round_))

    def _on_sync_done(self, session_id: int, cxid: int) -> None:
        """Every Commit the leader sent before it is in (or, where followers commit logged
        proposals themselves, every such proposal): answer once those are applied here, which
        waits for this member's own log to be durable."""
        replica = self.replica
        target = max(replica.commit_zxid, self.leader_logged)
        replica._syncs_waiting.append((target, session_id, cxid, None, 0))
        replica._release_syncs()
