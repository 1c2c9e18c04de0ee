"""The leading role: discovery (choose the new epoch), synchronization (bring each follower's log
to the leader's) and broadcast (propose, count acknowledgements, commit), plus heartbeats,
session expiry, reaping container and TTL nodes, and the leader's side of `sync`."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zkpy.core.membership import Membership, parse_membership
from zkpy.core.prep import Prep
from zkpy.core.requests import (
    CloseSessionRequest,
    PreppedRequest,
    ReapRequest,
    ReconfigRequest,
    WriteRequest,
)
from zkpy.core.sessions import SessionTracker
from zkpy.core.txn import Reconfig, TxnRecord, decode_record
from zkpy.core.types import Id, make_zxid, zxid_counter, zxid_epoch
from zkpy.zab.election import quorum_size
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
    Snapshot,
    SyncMode,
    SyncRequest,
    UpToDate,
    Vote,
)
from zkpy.zab.role import Phase, Role

if TYPE_CHECKING:
    from zkpy.zab.replica import Replica

MAX_COUNTER = 0xFFFFFFFF  # the low half of a zxid: a new epoch restarts it
MAX_REAPS_PER_CHECK = 10_000  # ZooKeeper's default container deletions per minute


@dataclass(slots=True)
class _Peer:
    """What the leader knows of one follower or observer."""

    accepted_epoch: int = -1
    last_zxid: int = 0
    committed_zxid: int = 0
    observer: bool = False
    epoch_acked: bool = False
    promised: bool = False  # acked our epoch after reporting a lower one: counts toward a quorum
    synced: bool = False  # got NewLeader; receives proposals from then on
    up_to_date: bool = False
    acked_zxid: int = 0
    logged_sent: int = 0  # the last zxid it knows the leader logged: it commits those itself
    last_heard_tick: int = 0
    pinged_round: int = 0  # the latest heartbeat round it answered


class Leading(Role):
    """This member leads (or is establishing) an epoch; see the module docstring."""

    def __init__(self, replica: Replica) -> None:
        """Lead, with no follower known yet; `start` begins discovery."""
        super().__init__(replica)
        self.state = ServerState.LEADING
        config = replica.config
        self.voters = config.voters
        self.observers = config.observers
        self.quorum = quorum_size(len(config.voters))
        self.commits_locally = config.commits_locally
        self.propose_early_below = config.propose_early_below
        self.peers: dict[int, _Peer] = {}
        self.established = False
        self.started = replica.ticks
        self.counter = 0
        # this leadership's proposals not yet committed, and each voter's highest ack: acks are
        # cumulative (a follower logs and acknowledges in order, over a FIFO link)
        self.uncommitted: deque[int] = deque()
        self.acked: dict[int, int] = {}
        # a reconfig proposed and not yet committed: its zxid and membership. It and everything
        # after it commit only on a quorum of the old voters and a quorum of the new ones.
        self.pending: tuple[int, Membership] | None = None
        # once it has committed: the last zxid proposed while it was in flight and the old
        # voters, whose quorum those proposals still need (as ZooKeeper's do)
        self.carried: tuple[int, frozenset[int]] | None = None
        self.counted = config.voters  # whose acknowledgements count: old and new voters
        self.tail_voters: frozenset[int] = frozenset()
        self.ping_round = 0
        self.sync_heartbeat_sent = False
        self.next_reap_ms = 0  # set when the epoch is established

    def start(self) -> None:
        """Discovery begins: wait for a quorum's FollowerInfo to choose the epoch."""
        replica = self.replica
        pending = replica.tail_membership()
        # the voters of a reconfig in this leader's uncommitted log: establishing needs them too
        self.tail_voters = pending.voters if pending is not None else frozenset()
        replica.phase = Phase.DISCOVERY
        replica.epoch = 0
        self._check_discovery()

    # ---- inputs --------------------------------------------------------------------------------

    def tick(self) -> None:
        """Give up an epoch not established within init_limit; once established, heartbeat,
        check that a quorum still answers, and expire sessions."""
        replica = self.replica
        if not self.established:
            if replica.ticks - self.started > replica.config.init_limit:
                replica._start_election()
            else:
                self._resend_discovery()
            return
        self._heartbeat()
        self._check_quorum()
        if replica.serving:
            self._expire_sessions()
            self._reap_nodes()

    def receive(self, sender: int, message: PeerMessage) -> None:
        """A message from a follower or observer."""
        if isinstance(message, FollowerInfo):
            self._on_follower_info(sender, message)
            return
        peer = self.peers.get(sender)
        if peer is None:
            return
        peer.last_heard_tick = self.replica.ticks
        match message:
            case Ack(zxid) if peer.up_to_date and not peer.observer:
                self._count_ack(sender, zxid)
            case AckEpoch():
                self._on_ack_epoch(sender, peer, message)
            case AckNewLeader(epoch, last_zxid) if epoch == self.replica.epoch and peer.synced:
                self._on_ack_new_leader(sender, peer, last_zxid)
            case Ping(sessions, round_):
                self._on_ping(peer, sessions, round_)
            case Forward(writes):
                if self.established:
                    for session_id, cxid, request, ids, owner in writes:
                        self._propose(session_id, cxid, request, ids, owner, sender)
            case SyncRequest(session_id, cxid):
                if self.established:
                    self._leader_sync(sender, session_id, cxid)

    def disconnected(self, peer: int) -> None:
        """Forget the follower: it starts a new session when it comes back."""
        if peer in self.peers:
            del self.peers[peer]
            self._check_quorum()

    def submit(
        self, session_id: int, cxid: int, request: WriteRequest, ids: frozenset[Id], owner: int
    ) -> None:
        """Propose a local client's write."""
        self._propose(session_id, cxid, request, ids, owner)

    def sync(self, session_id: int, cxid: int) -> None:
        """A local client's sync: see `_leader_sync`."""
        self._leader_sync(None, session_id, cxid)

    def persisted(self, durable_zxid: int) -> None:
        """The leader's own log counts as one acknowledgement, once durable."""
        if self.established:
            self._count_ack(self.replica.my_id, durable_zxid)
        self.sync_heartbeat_sent = False

    def current_vote(self) -> Vote:
        """This member leads its epoch."""
        replica = self.replica
        return Vote(replica.epoch, replica.last_logged, replica.my_id)

    def outstanding(self) -> int:
        """Proposals not yet committed."""
        return len(self.uncommitted)

    # ---- discovery and synchronization ---------------------------------------------------------

    def _self_vote(self) -> int:
        """1 if this leader is a voter of the membership in force. It may not be one: a voter
        of a reconfig it has logged and not seen committed (establishing commits it)."""
        return 1 if self.replica.my_id in self.voters else 0

    def _voters_with(self, predicate: str) -> int:
        count = self._self_vote()
        for member, peer in self.peers.items():
            if member in self.voters and getattr(peer, predicate):
                count += 1
        return count

    def _check_discovery(self) -> None:
        replica = self.replica
        if replica.epoch == 0 and self._voters_with_known_epoch() >= self.quorum:
            self._choose_epoch()
        if replica.epoch and self._voters_with("promised") >= self.quorum:
            if replica.phase is Phase.DISCOVERY:
                if not self._tail_quorum_promised():
                    return
                self._begin_synchronization()
            self._check_established()

    def _tail_quorum_promised(self) -> bool:
        """Whether a quorum of the voters of the reconfig in this leader's uncommitted log (if
        any) has promised the epoch. Each reported its history as it did: one with a longer
        history than this leader's made it step down (`_on_ack_epoch`), for it may hold
        proposals that such a quorum committed after that reconfig, which this leader lacks."""
        tail = self.tail_voters
        if not tail:
            return True
        count = sum(1 for m, p in self.peers.items() if m in tail and p.promised)
        count += self.replica.my_id in tail
        return count >= quorum_size(len(tail))

    def _voters_with_known_epoch(self) -> int:
        return self._self_vote() + sum(
            1 for m, p in self.peers.items() if m in self.voters and p.accepted_epoch >= 0
        )

    def _choose_epoch(self) -> None:
        """One above every accepted epoch of a quorum: no other leader can have chosen it."""
        replica = self.replica
        epochs = [p.accepted_epoch for m, p in self.peers.items() if m in self.voters]
        replica.epoch = max([replica.accepted_epoch, *epochs]) + 1
        replica.accepted_epoch = replica.epoch
        replica._ready.epochs = (replica.accepted_epoch, replica.current_epoch)
        for member, peer in sorted(self.peers.items()):
            if peer.accepted_epoch >= 0:
                replica._send(member, NewEpoch(replica.epoch))

    def _begin_synchronization(self) -> None:
        replica = self.replica
        replica.phase = Phase.SYNCHRONIZATION
        replica.current_epoch = replica.epoch
        replica._ready.epochs = (replica.accepted_epoch, replica.current_epoch)
        replica.prep = Prep(replica.tree, max_data_bytes=replica.config.max_data_bytes)
        for member, peer in sorted(self.peers.items()):
            if peer.epoch_acked and not peer.synced:
                self._sync_follower(member, peer)

    def _on_follower_info(self, sender: int, info: FollowerInfo) -> None:
        replica = self.replica
        peer = self.peers.get(sender)
        if peer is not None and peer.accepted_epoch >= 0 and not peer.epoch_acked:
            peer.accepted_epoch = info.accepted_epoch  # it may have promised another leader
            if replica.epoch:
                replica._send(sender, NewEpoch(replica.epoch))
            return
        # A FollowerInfo after its AckEpoch (the link is FIFO) means the follower went back to
        # election and starts a new session: forget the old one and synchronize it again.
        # A member outside the membership (one catching up before a reconfig adds it, or a
        # removed one) is a learner: synced and sent proposals, but in no quorum until a
        # reconfig makes it a voter.
        if sender not in self.voters | self.tail_voters and not self.established:
            return  # observers and learners join an established leader
        observer = sender in self.observers or (sender not in self.voters and info.observer)
        peer = _Peer(
            info.accepted_epoch,
            info.last_zxid,
            info.committed_zxid,
            observer,
            last_heard_tick=replica.ticks,
        )
        self.peers[sender] = peer
        if replica.epoch:
            if info.accepted_epoch > replica.epoch:
                del self.peers[sender]
                return
            replica._send(sender, NewEpoch(replica.epoch))
        else:
            self._check_discovery()

    def _on_ack_epoch(self, sender: int, peer: _Peer, message: AckEpoch) -> None:
        replica = self.replica
        if (message.current_epoch, message.last_zxid) > (
            replica.current_epoch,
            replica.last_logged,
        ) and replica.phase is Phase.DISCOVERY:
            replica._start_election()  # someone has a newer history: not our turn
            return
        peer.epoch_acked = True
        # An ack of an epoch it already held may be a promise made to another leader that
        # chose the same epoch: sync such a follower, but never count it.
        peer.promised = peer.accepted_epoch < replica.epoch
        peer.last_zxid = message.last_zxid
        peer.committed_zxid = message.committed_zxid
        if replica.phase is Phase.DISCOVERY:
            self._check_discovery()
        elif not peer.synced:
            self._sync_follower(sender, peer)

    def _on_ack_new_leader(self, sender: int, peer: _Peer, last_zxid: int) -> None:
        peer.up_to_date = True
        peer.acked_zxid = last_zxid
        if self.established:
            self.replica._send(sender, UpToDate(self.replica.commit_zxid))
            self._count_ack(sender, last_zxid)
        else:
            self._check_established()

    def _sync_follower(self, member: int, peer: _Peer) -> None:
        """Bring `member` to the leader's log: diff, truncate + diff, or snapshot + diff."""
        replica = self.replica
        mode, truncate_after, snapshot, start = self._sync_plan(peer)
        records = tuple(decode_record(raw) for zxid, raw in replica.history if zxid > start)
        replica._send(member, NewLeader(replica.epoch, mode, truncate_after, snapshot, records))
        peer.synced = True

    def _has_logged(self, zxid: int) -> bool:
        replica = self.replica
        if zxid == replica.base_zxid:
            return True
        history = replica.history
        if not history or zxid < history[0][0] or zxid > replica.last_logged:
            return False
        return any(logged == zxid for logged, _raw in history)

    def _sync_plan(self, peer: _Peer) -> tuple[SyncMode, int, Snapshot | None, int]:
        """DIFF when the follower's last entry is in our log (logs match up to it, as zxids are
        unique); TRUNC its uncommitted tail back to its committed point when that is in our log;
        SNAP when it is behind everything we keep. Its tree never moves backwards."""
        if self._has_logged(peer.last_zxid):
            return SyncMode.DIFF, 0, None, peer.last_zxid
        if self._has_logged(peer.committed_zxid):
            return SyncMode.TRUNC, peer.committed_zxid, None, peer.committed_zxid
        tree = self.replica.tree
        snapshot = Snapshot(
            tree.last_zxid, tuple(tree.iter_snapshot()), tuple(tree.iter_sessions())
        )
        return SyncMode.SNAP, 0, snapshot, tree.last_zxid

    def _check_established(self) -> None:
        """A quorum (this leader included) has acknowledged NewLeader: start broadcasting."""
        replica = self.replica
        if self.established or replica.phase is not Phase.SYNCHRONIZATION:
            return
        if self._voters_with("up_to_date") < self.quorum:
            return
        pending = replica.tail_membership()
        if pending is not None and not self._new_quorum_promised(pending):
            return
        self.established = True
        replica.phase = Phase.BROADCAST
        replica.commit_zxid = replica.last_logged
        last = replica.last_logged
        self.counter = zxid_counter(last) if zxid_epoch(last) == replica.epoch else 0
        self.next_reap_ms = replica.now_ms + replica.config.reap_interval_ms
        tracker = replica.tracker = SessionTracker(replica.config.tick_ms)
        for session_id, info in replica.tree.sessions.items():
            tracker.add(session_id, info.timeout_ms, replica.now_ms)
        for member, peer in sorted(self.peers.items()):
            if peer.up_to_date:
                replica._send(member, UpToDate(replica.commit_zxid))
                peer.acked_zxid = max(peer.acked_zxid, peer.last_zxid)
        replica._apply_committed()
        if replica._role is self:  # a reconfig it just committed may have made it step down
            replica._set_serving(True)

    def _new_quorum_promised(self, pending: Membership) -> bool:
        """Whether a quorum of the voters of the reconfig in this leader's uncommitted log has
        promised this epoch and synced: establishing commits the whole log, that reconfig
        included, which needs a quorum of the new voters as well as of the old."""
        replica = self.replica
        count = sum(
            1
            for member, peer in self.peers.items()
            if member in pending.voters and peer.promised and peer.up_to_date
        )
        if replica.my_id in pending.voters:
            count += 1
        return count >= quorum_size(len(pending.voters))

    def _resend_discovery(self) -> None:
        replica = self.replica
        if replica.epoch:
            for member, peer in sorted(self.peers.items()):
                if not peer.epoch_acked:
                    replica._send(member, NewEpoch(replica.epoch))

    # ---- broadcast -----------------------------------------------------------------------------

    def _propose(
        self,
        session_id: int,
        cxid: int,
        request: PreppedRequest,
        ids: frozenset[Id],
        owner: int = 0,
        origin: int = 0,
    ) -> None:
        """Order a write and send it to the followers; `origin` (a follower the write came
        from, or 0) hears it first, as its client waits for it.

        With nothing else in flight (fewer than `propose_early_below` uncommitted proposals)
        the write's waiting member hears it before the leader's own sync, so that the two
        syncs overlap: the origin, or every follower for a write of the leader's own client
        (which waits for the first Ack)."""
        replica = self.replica
        prep = replica.prep
        assert prep is not None
        if self.counter >= MAX_COUNTER:
            if replica._role is self:
                replica._start_election()  # a new epoch restarts the counter
            return
        self.counter += 1
        zxid = make_zxid(replica.epoch, self.counter)
        if type(request) is ReconfigRequest:
            record = self._prepare_reconfig(request, zxid, session_id, cxid, ids, owner)
        else:
            record = prep.prepare(
                request,
                zxid=zxid,
                session_id=session_id,
                cxid=cxid,
                now_ms=replica.now_ms,
                ids=ids,
                owner=owner,
            )
        replica._log((record,))
        early = len(self.uncommitted) < self.propose_early_below
        self.uncommitted.append(zxid)
        first = self.peers.get(origin)
        if first is not None:
            self._send_proposal(origin, first, record, early)
        for member, peer in self.peers.items():
            if member != origin:
                # only the client's member waits on the write: the others hear of it after
                # the leader's sync, in one LoggedPropose, which keeps their syncs off the
                # disk that the two syncs the client waits for share
                self._send_proposal(member, peer, record, early and first is None)

    def _send_proposal(self, member: int, peer: _Peer, record: TxnRecord, early: bool) -> None:
        """Queue the record for one follower. Where it commits locally: as an EarlyPropose
        that leaves before the leader's sync when `early` (little is in flight: the syncs overlap),
        and a `Logged` that leaves after it; else as a LoggedPropose after it (under load a
        batch costs one message, and its syncs one after another cost less than the CPU
        saved).

        Each peer's link is written in turn when the step ends, and on loopback a write runs
        the receiver's side of TCP too: the first peer queued hears the batch tens of
        microseconds before the next. While a reconfig is in flight, two members may not be a
        quorum of the new voters, so every follower waits for the Commit."""
        if not peer.synced:
            return
        commits_locally = self.commits_locally and self.pending is None and self.carried is None
        if not commits_locally or peer.observer or member not in self.voters:
            self.replica._send_batched(member, Propose, record)
        elif early:
            self.replica._send_batched(member, EarlyPropose, record)
            self.replica._send(member, Logged(record.zxid))  # leaves once the leader synced
            peer.logged_sent = record.zxid
        else:
            self.replica._send_batched(member, LoggedPropose, record)
            peer.logged_sent = record.zxid

    def _prepare_reconfig(
        self,
        request: ReconfigRequest,
        zxid: int,
        session_id: int,
        cxid: int,
        ids: frozenset[Id],
        owner: int,
    ) -> TxnRecord:
        """The record of a reconfig (or of its refusal); an accepted one is in flight from now
        until it commits."""
        replica = self.replica
        prep = replica.prep
        assert prep is not None
        record = prep.prepare_reconfig(
            request,
            zxid=zxid,
            session_id=session_id,
            cxid=cxid,
            now_ms=replica.now_ms,
            ids=ids,
            owner=owner,
            current=replica.membership,
            reachable=self._in_sync(),
            in_flight=self.pending is not None or self.carried is not None,
        )
        op = record.op
        if type(op) is Reconfig:
            membership = parse_membership(op.config)
            self.pending = (zxid, membership)
            self.counted = self.voters | membership.voters
        return record

    def _in_sync(self) -> frozenset[int]:
        """This leader and the members that acknowledge its proposals and answered lately."""
        replica = self.replica
        sync_limit = replica.config.sync_limit
        return frozenset(
            [replica.my_id]
            + [
                member
                for member, peer in self.peers.items()
                if peer.up_to_date
                and not peer.observer
                and replica.ticks - peer.last_heard_tick <= sync_limit
            ]
        )

    def reconfigured(self) -> None:
        """A reconfig committed: count the new voters from now on, and the old ones too for
        what was proposed while it was in flight. A leader that is no voter any more steps
        down, and the new voters elect one of their own."""
        replica = self.replica
        config = replica.config
        old = self.voters
        self.voters = config.voters
        self.observers = config.observers
        self.quorum = quorum_size(len(config.voters))
        self.commits_locally = config.commits_locally
        self.pending = None
        last = self.uncommitted[-1] if self.uncommitted else 0
        if last > replica.commit_zxid:
            self.carried = (last, old)
        self.counted = config.voters | (old if self.carried is not None else frozenset())
        self.acked = {m: z for m, z in self.acked.items() if m in self.counted}
        for member, peer in self.peers.items():
            if member in config.members:
                peer.observer = member in config.observers
        if replica.my_id not in config.voters:
            replica._start_election()

    def _carried_point(self) -> int:
        """How far the log may commit while proposals made during the last reconfig are
        uncommitted: those need a quorum of the old voters as well as of the new."""
        carried = self.carried
        assert carried is not None
        last, old = carried
        point = self._logged_by_quorum(self.voters)
        both = min(point, self._logged_by_quorum(old))
        if both < last:
            return both
        self.carried = None
        self.counted = self.voters
        self.acked = {m: z for m, z in self.acked.items() if m in self.voters}
        return point

    def _logged_by_quorum(self, voters: frozenset[int]) -> int:
        """The highest zxid that a quorum of `voters` has logged (0: none yet)."""
        acked = self.acked
        logged = sorted((acked[m] for m in voters if m in acked), reverse=True)
        quorum = quorum_size(len(voters))
        return logged[quorum - 1] if len(logged) >= quorum else 0

    def _count_ack(self, member: int, zxid: int) -> None:
        """`member` has logged everything up to `zxid`: commit what a quorum of voters has
        (while a reconfig is in flight, it and what follows it need both quorums)."""
        acked = self.acked
        if member not in self.counted or zxid <= acked.get(member, 0):
            return
        acked[member] = zxid
        pending = self.pending
        if pending is not None:
            logged_by_quorum = self._logged_by_quorum(self.voters)
            if logged_by_quorum >= pending[0]:
                new = self._logged_by_quorum(pending[1].voters)
                logged_by_quorum = max(pending[0] - 1, min(logged_by_quorum, new))
        elif self.carried is not None:
            logged_by_quorum = self._carried_point()
        else:
            quorum = self.quorum
            if len(acked) < quorum:
                return
            logged_by_quorum = sorted(acked.values(), reverse=True)[quorum - 1]
        replica = self.replica
        committed = replica.commit_zxid
        uncommitted = self.uncommitted
        while uncommitted and uncommitted[0] <= logged_by_quorum:
            committed = uncommitted.popleft()
        if committed > replica.commit_zxid:
            replica.commit_zxid = committed
            self._send_commits(committed)
            replica._apply_committed()
            replica._release_syncs()

    def _send_commits(self, committed: int) -> None:
        replica = self.replica
        commits_locally = self.commits_locally
        for peer_id, peer in self.peers.items():
            if not peer.up_to_date:
                continue
            if commits_locally and not peer.observer and committed <= peer.logged_sent:
                continue  # it commits what it was sent logged as soon as it logs it too
            replica._send(peer_id, Commit(committed))

    def _leader_sync(self, member: int | None, session_id: int, cxid: int) -> None:
        """A sync is answered once (1) a quorum has answered a heartbeat sent after it came,
        so this member was still the leader then (a deposed leader that has not noticed yet
        cannot answer it: Raft's ReadIndex), and (2) everything proposed before it is applied."""
        if not self.sync_heartbeat_sent:
            self._heartbeat()
            self.sync_heartbeat_sent = True  # one heartbeat round serves every sync of a Ready
        replica = self.replica
        replica._syncs_waiting.append(
            (replica.last_logged, session_id, cxid, member, self.ping_round)
        )
        replica._release_syncs()

    def _on_ping(self, peer: _Peer, sessions: tuple[int, ...], round_: int) -> None:
        """A follower's answer to a heartbeat, with the sessions its clients kept alive."""
        replica = self.replica
        peer.pinged_round = max(peer.pinged_round, round_)
        tracker = replica.tracker
        if tracker is not None:
            for session_id in sessions:
                tracker.touch(session_id, replica.now_ms)
        replica._release_syncs()

    def _heartbeat(self) -> None:
        self.ping_round += 1
        replica = self.replica
        for member, peer in sorted(self.peers.items()):
            if peer.up_to_date:
                replica._send(member, Ping((), self.ping_round))

    def confirmed_round(self) -> int:
        """The latest heartbeat round that a quorum (this leader included) has answered."""
        rounds = [self.ping_round] * self._self_vote() + [
            peer.pinged_round
            for member, peer in self.peers.items()
            if member in self.voters and peer.up_to_date
        ]
        rounds.sort(reverse=True)
        quorum = self.quorum
        return rounds[quorum - 1] if len(rounds) >= quorum else 0

    def _check_quorum(self) -> None:
        """Step down when fewer than a quorum of voters are connected (before the epoch is
        established) or have been heard from within sync_limit ticks (after)."""
        replica = self.replica
        if not self.established:
            if len(self.voters) > 1:
                alive = self._self_vote() + sum(1 for m in self.peers if m in self.voters)
                if alive < self.quorum and replica.phase is not Phase.DISCOVERY:
                    replica._start_election()
            return
        sync_limit = replica.config.sync_limit
        recent = self._self_vote() + sum(
            1
            for member, peer in self.peers.items()
            if member in self.voters
            and peer.up_to_date
            and replica.ticks - peer.last_heard_tick <= sync_limit
        )
        if recent < self.quorum:
            replica._start_election()

    def _expire_sessions(self) -> None:
        replica = self.replica
        tracker, prep = replica.tracker, replica.prep
        assert tracker is not None and prep is not None
        for session_id in tracker.expired(replica.now_ms):
            if prep.session_alive(session_id):
                self._propose(session_id, 0, CloseSessionRequest(), frozenset())

    def _reap_nodes(self) -> None:
        """Every `reap_interval_ms`, propose the deletion of the container and TTL nodes that
        have come due in the applied tree. Prep checks each again against the writes in
        flight, so a node that has just got a child or a change stays."""
        replica = self.replica
        now_ms = replica.now_ms
        if now_ms < self.next_reap_ms:
            return
        self.next_reap_ms = now_ms + replica.config.reap_interval_ms
        for path, version in replica.tree.reap_candidates(now_ms, MAX_REAPS_PER_CHECK):
            self._propose(0, 0, ReapRequest(path, version), frozenset())
