"""One member of the ensemble as a pure state machine: election -> discovery -> synchronization ->
broadcast, as leader, follower or observer.

Inputs: `tick(now_ms)`, `receive(sender, message)`, `disconnected(peer)`, and on the client side
`submit(...)`, `sync(...)`, `touch(...)`. Output: `take_ready()`, the work for the caller, in the
shape of raft's Ready loop. For each Ready the caller MUST:

1. make durable: `epochs`, then `install` (replace all state), `truncate_after`, `persist`;
2. only then send `messages` (an Ack or AckNewLeader promises that the data is durable); the
   leading messages that `promises_durability` says make no promise may go before step 1, as
   long as each peer still gets its messages in order (`split_messages`);
3. apply `committed` in order, one record at a time with `apply(record)`, and after each one
   send its watch events and its reply before applying the next (so no read sees a state whose
   events have not gone out); then answer `rejected` and `synced`. Step 3 may come before,
   between or after steps 1-2 (the records were made durable by earlier Readies): the shell
   applies last, so that acknowledgements are not held up by the applying, and the simulator
   does the same, with inputs arriving while the disk works;
4. not call `take_ready()` again before steps 1-3 are done: calling it says "the previous Ready
   is durable", which is when the leader counts its own acknowledgement and a follower may apply
   committed entries it has logged.

The tree holds only committed transactions. Logged but uncommitted entries (the tail) are kept in
`history` until a leader commits them or a new leader's synchronization truncates them.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from zkpy.core.prep import Prep
from zkpy.core.requests import CloseSessionRequest, WriteRequest
from zkpy.core.sessions import SessionTracker
from zkpy.core.tree import ApplyResult, DataTree
from zkpy.core.txn import CloseSession, CreateSession, TxnRecord, decode_record, encode_record
from zkpy.core.types import Id, make_zxid, zxid_counter, zxid_epoch
from zkpy.zab.messages import (
    Ack,
    AckEpoch,
    AckNewLeader,
    Commit,
    FollowerInfo,
    Forward,
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
    promises_durability,
)

Batched = Propose | LoggedPropose | Forward  # messages that gather items while a Ready fills

# What only a leader sends: hearing one of these keeps a follower from timing out.
_FROM_LEADER = (NewEpoch, NewLeader, UpToDate, Propose, LoggedPropose, Commit, Ping, SyncDone)


def quorum_size(voters: int) -> int:
    """A strict majority: any two quorums share a member."""
    return voters // 2 + 1


class Phase(enum.Enum):
    ELECTION = "election"
    DISCOVERY = "discovery"
    SYNCHRONIZATION = "synchronization"
    BROADCAST = "broadcast"


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    my_id: int
    voters: frozenset[int]
    observers: frozenset[int] = frozenset()
    tick_ms: int = 200
    finalize_ticks: int = 1  # wait this long for a better vote once a quorum agrees
    init_limit: int = 10  # ticks to get from a decided election to serving
    sync_limit: int = 5  # ticks without hearing from the leader (or a quorum) before giving up
    history_limit: int = 50_000  # logged records kept in memory to sync followers by diff
    max_data_bytes: int = 1 << 20
    local_commit: bool = True  # see `commits_locally`; tests turn it off to drive Commits

    @property
    def members(self) -> frozenset[int]:
        return self.voters | self.observers

    @property
    def commits_locally(self) -> bool:
        """Whether followers commit without the leader's Commit: where the leader and any one
        follower are a quorum (two or three voters), the leader logs each proposal before it
        sends it (`LoggedPropose`), so a follower that has logged it too knows it is on a
        quorum. This saves a round trip per write (Ack -> Commit) and every Commit message."""
        return self.local_commit and quorum_size(len(self.voters)) == 2

    @property
    def is_observer(self) -> bool:
        return self.my_id in self.observers


@dataclass(slots=True)
class Ready:
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
        return bool(
            self.epochs is not None
            or self.install is not None
            or self.truncate_after is not None
            or self.persist
        )

    def __bool__(self) -> bool:
        return bool(
            self.needs_storage
            or self.committed
            or self.rejected
            or self.synced
            or self.messages
            or self.serving_changed
        )


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
    logged_sent: int = 0  # the last zxid sent in a LoggedPropose: it commits those itself
    last_heard_tick: int = 0
    pinged_round: int = 0  # the latest heartbeat round it answered


class Replica:
    def __init__(
        self,
        config: ReplicaConfig,
        tree: DataTree,
        log_tail: Iterable[TxnRecord] = (),
        *,
        accepted_epoch: int = 0,
        current_epoch: int = 0,
        now_ms: int = 0,
        history_base: int | None = None,
    ) -> None:
        """`log_tail` is the member's log: the records after the tree's zxid, and before them
        any committed records the log still keeps (the tree holds those already). With such
        older records, `history_base` is the zxid just before the first of them: a leader
        that restarted can then sync a follower that is behind its last checkpoint by diff,
        where a snapshot would also reset the follower's record of recent changes."""
        if config.my_id not in config.members:
            raise ValueError(f"member {config.my_id} is not in the configuration")
        self.config = config
        self.my_id = config.my_id
        self.tree = tree
        self.accepted_epoch = accepted_epoch
        self.current_epoch = current_epoch
        self._packer = msgpack.Packer(use_bin_type=True)  # for the records this leader makes
        tail = list(log_tail)
        # The log kept in memory, as (zxid, log encoding): plain tuples of an int and bytes,
        # which the garbage collector stops tracking (a deque of tens of thousands of records
        # would make every full collection walk them). Records are decoded again only to sync
        # a follower by diff.
        self.history: deque[tuple[int, bytes]] = deque(
            (record.zxid, encode_record(record)) for record in tail
        )
        # logged records not yet handed out as committed: the tail of `history`
        self._unscheduled: deque[TxnRecord] = deque(r for r in tail if r.zxid > tree.last_zxid)
        # the zxid just before history[0]
        self.base_zxid = tree.last_zxid if history_base is None else history_base
        self.last_logged = max(self.history[-1][0] if self.history else 0, tree.last_zxid)
        self.durable_zxid = self.last_logged
        self.commit_zxid = tree.last_zxid
        self.scheduled_zxid = tree.last_zxid  # committed and handed out to be applied
        self.state = ServerState.LOOKING
        self.phase = Phase.ELECTION
        self.leader: int | None = None
        self.serving = False
        self.ticks = 0
        self.now_ms = now_ms  # wall clock, for session deadlines and txn times
        self._ready = Ready()
        self._pending_durable = self.last_logged
        # election
        self.round = 0
        self.vote = Vote(current_epoch, self.last_logged, self.my_id)
        self._votes: dict[int, Vote] = {}
        self._settled: dict[int, tuple[Vote, ServerState, int]] = {}  # vote, state, round
        self._quorum_since: int | None = None
        # leader
        self.epoch = 0  # the epoch being established or led
        self.prep: Prep | None = None
        self.tracker: SessionTracker | None = None
        self._peers: dict[int, _Peer] = {}
        self._acked_self_epoch = False
        self._established = False
        # this leadership's proposals not yet committed, and each voter's highest ack: acks are
        # cumulative (a follower logs and acknowledges in order, over a FIFO link)
        self._uncommitted: deque[int] = deque()
        self._acked: dict[int, int] = {}
        # (zxid to be applied, session, cxid, forwarding member or None, heartbeat round needed)
        self._syncs_waiting: deque[tuple[int, int, int, int | None, int]] = deque()
        self._ping_round = 0
        self._sync_heartbeat_sent = False
        self._phase_started = 0
        self._counter = 0
        # per peer, the batch being gathered: its place in the Ready's messages, the kind of
        # message (a proposal or Forward) and its items
        self._batches: dict[int, tuple[int, type[Batched], list[Any]]] = {}
        # follower
        self._last_heard_leader = 0
        self._touched: set[int] = set()
        self._awaiting_local: set[tuple[int, int]] = set()
        self._leader_logged = 0  # the last zxid the leader said it had logged (LoggedPropose)
        # an observer is no part of a quorum: it always waits for the leader's Commit
        self._commits_locally = config.commits_locally and not config.is_observer
        self._start_election()

    # ---- inputs --------------------------------------------------------------------------------

    def tick(self, now_ms: int) -> None:
        self.ticks += 1
        self.now_ms = now_ms
        if self.state is ServerState.LOOKING:
            self._election_tick()
        elif self.state is ServerState.LEADING:
            self._leader_tick()
        else:
            self._follower_tick()

    def receive(self, sender: int, message: PeerMessage) -> None:
        if sender not in self.config.members or sender == self.my_id:
            return
        if isinstance(message, Notification):
            self._on_notification(sender, message)
        elif self.state is ServerState.LEADING:
            self._leader_receive(sender, message)
        elif self.state is not ServerState.LOOKING and sender == self.leader:
            if isinstance(message, _FROM_LEADER):  # not a FollowerInfo from a "leader" that follows
                self._last_heard_leader = self.ticks
            self._follower_receive(message)

    def disconnected(self, peer: int) -> None:
        """The FIFO link to `peer` broke: whatever was in flight on it is lost."""
        if self.state is ServerState.LEADING and peer in self._peers:
            del self._peers[peer]
            self._check_leader_quorum()
        elif self.state in (ServerState.FOLLOWING, ServerState.OBSERVING) and peer == self.leader:
            self._start_election()

    def touch(self, session_id: int) -> None:
        """A local client of `session_id` was heard from."""
        if self.tracker is not None:
            self.tracker.touch(session_id, self.now_ms)
        else:
            self._touched.add(session_id)

    def submit(
        self,
        session_id: int,
        cxid: int,
        request: WriteRequest,
        ids: frozenset[Id] = frozenset(),
        owner: int = 0,
    ) -> None:
        """A write from a local client; its record comes back in `Ready.committed` (matched by
        session id and cxid) or, if it cannot be ordered now, in `Ready.rejected`. `owner`
        names the client's connection: the leader refuses the write if the session has been
        attached to another connection since (`zkpy.core.prep`); 0 is not checked."""
        if not self.serving:
            self._ready.rejected.append((session_id, cxid))
            return
        self._awaiting_local.add((session_id, cxid))
        if self.state is ServerState.LEADING:
            self._propose(session_id, cxid, request, ids, owner)
        else:
            assert self.leader is not None
            self._send_batched(self.leader, Forward, (session_id, cxid, request, ids, owner))

    def sync(self, session_id: int, cxid: int) -> None:
        """Answer (in `Ready.synced`) once this member has applied everything the leader had
        proposed when it received the sync."""
        if not self.serving:
            self._ready.rejected.append((session_id, cxid))
            return
        self._awaiting_local.add((session_id, cxid))
        if self.state is ServerState.LEADING:
            self._leader_sync(None, session_id, cxid)
        else:
            assert self.leader is not None
            self._send(self.leader, SyncRequest(session_id, cxid))

    def take_ready(self) -> Ready:
        """The work to do now. Calling it also says the previous Ready is durable."""
        self._advance(min(self._pending_durable, self.last_logged))
        self._trim_history()  # once per step: the shell has applied the last one's records
        self._sync_heartbeat_sent = False
        self._close_batches()
        ready, self._ready = self._ready, Ready()
        self._pending_durable = self.last_logged
        return ready

    # ---- durability and commit --------------------------------------------------------------

    def _advance(self, durable: int) -> None:
        self.durable_zxid = durable
        if self.state is ServerState.LEADING and self._established:
            self._count_ack(self.my_id, self.durable_zxid)
        elif self._leader_logged:
            # Logged by the leader and by this member: on a quorum of two, so committed.
            self.commit_zxid = max(self.commit_zxid, min(durable, self._leader_logged))
        self._apply_committed()

    def _apply_committed(self) -> None:
        """Hand out, in order, the committed records that are durable here."""
        limit = min(self.commit_zxid, self.durable_zxid)
        unscheduled = self._unscheduled
        while unscheduled and unscheduled[0].zxid <= limit:
            record = unscheduled.popleft()
            if record.zxid <= self.scheduled_zxid:
                continue
            self.scheduled_zxid = record.zxid
            self._ready.committed.append(record)
            self._awaiting_local.discard((record.session_id, record.cxid))
        self._release_syncs()

    def apply(self, record: TxnRecord, *, stats: bool = True) -> ApplyResult:
        """Apply one record of `Ready.committed` to the tree (the caller does, one at a time);
        `stats` as in `DataTree.apply`."""
        result = self.tree.apply(record, stats=stats)
        if self.prep is not None:
            self.prep.applied(record.zxid)
        self._session_effects(record)
        return result

    def _session_effects(self, record: TxnRecord) -> None:
        if self.tracker is None:
            return
        op = record.op
        if isinstance(op, CreateSession):
            self.tracker.add(op.session_id, op.timeout_ms, self.now_ms)
        elif isinstance(op, CloseSession):
            self.tracker.remove(op.session_id)

    def _trim_history(self) -> None:
        while len(self.history) > self.config.history_limit:
            if self.history[0][0] > self.tree.last_zxid:
                break
            self.base_zxid = self.history.popleft()[0]

    def _log(self, records: Iterable[TxnRecord]) -> None:
        for record in records:
            if record.zxid <= self.last_logged:
                raise ValueError(f"log out of order: {record.zxid:#x} after {self.last_logged:#x}")
            self.history.append((record.zxid, encode_record(record, self._packer)))
            self._unscheduled.append(record)
            self.last_logged = record.zxid
            self._ready.persist.append(record)

    def _send(self, peer: int, message: PeerMessage) -> None:
        batch = self._batches.pop(peer, None)
        if batch is not None:
            index, kind, items = batch
            self._ready.messages[index] = (peer, kind(tuple(items)))
        self._ready.messages.append((peer, message))

    def _send_batched(self, peer: int, kind: type[Batched], item: Any) -> None:
        """Consecutive proposals (or forwarded writes) to a peer travel as one message."""
        batch = self._batches.get(peer)
        if batch is None or batch[1] is not kind:
            self._send(peer, kind(()))  # a placeholder, replaced when the batch closes
            self._batches[peer] = (len(self._ready.messages) - 1, kind, [item])
        else:
            batch[2].append(item)

    def _close_batches(self) -> None:
        for peer, (index, kind, items) in self._batches.items():
            self._ready.messages[index] = (peer, kind(tuple(items)))
        self._batches = {}

    def _set_serving(self, serving: bool) -> None:
        if serving != self.serving:
            self.serving = serving
            self._ready.serving_changed = True

    # ---- election ------------------------------------------------------------------------------

    def _start_election(self) -> None:
        self._set_serving(False)
        self._fail_local_waiters()
        self.state = ServerState.LOOKING
        self.phase = Phase.ELECTION
        self.leader = None
        self.prep = None
        self.tracker = None
        self._leader_logged = 0
        self._peers = {}
        self._uncommitted = deque()
        self._acked = {}
        self._syncs_waiting = deque()
        self._established = False
        self.round += 1
        self._votes = {}
        self._settled = {}
        self._quorum_since = None
        self.vote = Vote(self.current_epoch, self.last_logged, self.my_id)
        if not self.config.is_observer:
            self._votes[self.my_id] = self.vote
        self._broadcast_vote()
        if self.config.voters == frozenset({self.my_id}):
            self._decide(self.my_id)

    def _fail_local_waiters(self) -> None:
        for key in sorted(self._awaiting_local):
            self._ready.rejected.append(key)
        self._awaiting_local = set()

    def _broadcast_vote(self) -> None:
        note = Notification(self.round, self.vote, self.state)
        for peer in sorted(self.config.members - {self.my_id}):
            self._send(peer, note)

    def _election_tick(self) -> None:
        if self._quorum_since is not None and (
            self.ticks - self._quorum_since >= self.config.finalize_ticks
        ):
            self._decide(self.vote.leader)
            return
        self._broadcast_vote()

    def _my_current_vote(self) -> Vote:
        if self.state is ServerState.LEADING:
            return Vote(self.epoch, self.last_logged, self.my_id)
        assert self.leader is not None
        return Vote(self.current_epoch, self.last_logged, self.leader)

    def _on_notification(self, sender: int, note: Notification) -> None:
        if self.state is not ServerState.LOOKING:
            if note.state is ServerState.LOOKING:
                self._send(sender, Notification(self.round, self._my_current_vote(), self.state))
            return
        if note.state is ServerState.LOOKING:
            if sender in self.config.observers or self.config.is_observer:
                return
            self._on_looking_vote(sender, note)
        else:
            self._settled[sender] = (note.vote, note.state, note.round)
            self._try_join_established()

    def _on_looking_vote(self, sender: int, note: Notification) -> None:
        if note.round > self.round:
            self.round = note.round
            self._votes = {}
            self._quorum_since = None
            own = Vote(self.current_epoch, self.last_logged, self.my_id)
            self.vote = max(own, note.vote)
            self._votes[self.my_id] = self.vote
            self._broadcast_vote()
        elif note.round < self.round:
            self._send(sender, Notification(self.round, self.vote, self.state))
            return
        elif note.vote > self.vote:
            self.vote = note.vote
            self._votes[self.my_id] = self.vote
            self._quorum_since = None
            self._broadcast_vote()
        self._votes[sender] = note.vote
        agreeing = sum(1 for vote in self._votes.values() if vote == self.vote)
        if agreeing >= quorum_size(len(self.config.voters)):
            if self._quorum_since is None:
                self._quorum_since = self.ticks
        else:
            self._quorum_since = None

    def _try_join_established(self) -> None:
        """Join a leader that is already leading, as a quorum of settled members report, or
        lead if a quorum already follows this member after voting for it in this very round
        (it missed their votes while they settled, e.g. because its links came up last)."""
        if not self.config.is_observer:
            followers = sum(
                1
                for member, (vote, state, round_) in self._settled.items()
                if state is ServerState.FOLLOWING
                and vote.leader == self.my_id
                and round_ == self.round
                and member in self.config.voters
            )
            if followers + 1 >= quorum_size(len(self.config.voters)):
                self._decide(self.my_id)
                return
        for sender, (vote, state, _round) in self._settled.items():
            if state is not ServerState.LEADING or vote.leader != sender:
                continue
            backers = sum(
                1
                for member, (other, _s, _r) in self._settled.items()
                if other.leader == sender and member in self.config.voters
            )
            if self.config.is_observer or backers + 1 >= quorum_size(len(self.config.voters)):
                self._decide(sender)
                return

    def _decide(self, leader: int) -> None:
        self.leader = leader
        self._phase_started = self.ticks
        self._last_heard_leader = self.ticks
        if leader == self.my_id:
            self._become_leader()
        else:
            self.state = ServerState.OBSERVING if self.config.is_observer else ServerState.FOLLOWING
            self.phase = Phase.DISCOVERY
            self._send_follower_info()

    # ---- follower / observer --------------------------------------------------------------------

    def _send_follower_info(self) -> None:
        assert self.leader is not None
        info = FollowerInfo(
            self.accepted_epoch, self.last_logged, self.scheduled_zxid, self.config.is_observer
        )
        self._send(self.leader, info)

    def _follower_tick(self) -> None:
        limit = self.config.sync_limit if self.serving else self.config.init_limit
        if self.ticks - self._last_heard_leader > limit:
            self._start_election()
        elif self.phase is Phase.DISCOVERY:
            self._send_follower_info()

    def _follower_receive(self, message: PeerMessage) -> None:
        match message:
            case NewEpoch(epoch):
                self._on_new_epoch(epoch)
            case NewLeader():
                self._on_new_leader(message)
            case UpToDate(commit_zxid):
                self._on_up_to_date(commit_zxid)
            case Propose(records):
                self._on_propose(records)
            case LoggedPropose(records):
                if self._on_propose(records) and records and self._commits_locally:
                    self._leader_logged = records[-1].zxid
            case Commit(zxid):
                self.commit_zxid = max(self.commit_zxid, min(zxid, self.last_logged))
                self._apply_committed()
            case Ping(_sessions, round_):
                touched, self._touched = tuple(sorted(self._touched)), set()
                assert self.leader is not None
                self._send(self.leader, Ping(touched, round_))
            case SyncDone(session_id, cxid):
                # Every Commit the leader sent before it is in (or, where followers commit
                # logged proposals themselves, every such proposal): answer once those are
                # applied here, which waits for this member's own log to be durable.
                target = max(self.commit_zxid, self._leader_logged)
                self._syncs_waiting.append((target, session_id, cxid, None, 0))
                self._release_syncs()

    def _on_new_epoch(self, epoch: int) -> None:
        if self.phase is Phase.SYNCHRONIZATION and epoch == self.accepted_epoch:
            return  # a repeat: the leader answered each of our FollowerInfo messages
        if epoch < self.accepted_epoch or self.phase is not Phase.DISCOVERY:
            self._start_election()
            return
        if epoch > self.accepted_epoch:
            self.accepted_epoch = epoch
            self._ready.epochs = (self.accepted_epoch, self.current_epoch)
        self.phase = Phase.SYNCHRONIZATION
        assert self.leader is not None
        self._send(self.leader, AckEpoch(self.current_epoch, self.last_logged, self.scheduled_zxid))

    def _on_new_leader(self, message: NewLeader) -> None:
        # only after acknowledging this leader's NewEpoch on this link: anything else is stale
        if message.epoch != self.accepted_epoch or self.phase is not Phase.SYNCHRONIZATION:
            self._start_election()
            return
        if message.mode is SyncMode.SNAP:
            assert message.snapshot is not None
            self._install(message.snapshot)
        elif message.mode is SyncMode.TRUNC:
            self._truncate(message.truncate_after)
        self._log(message.records)
        self.current_epoch = message.epoch
        self._ready.epochs = (self.accepted_epoch, self.current_epoch)
        self.phase = Phase.SYNCHRONIZATION
        assert self.leader is not None
        self._send(self.leader, AckNewLeader(message.epoch, self.last_logged))

    def _install(self, snapshot: Snapshot) -> None:
        self.tree = DataTree.from_checkpoint(snapshot.zxid, snapshot.nodes, snapshot.sessions)
        self.history = deque()
        self._unscheduled = deque()
        self.base_zxid = snapshot.zxid
        self.last_logged = snapshot.zxid
        self.durable_zxid = min(self.durable_zxid, snapshot.zxid)
        self._pending_durable = min(self._pending_durable, snapshot.zxid)
        self.commit_zxid = snapshot.zxid
        self.scheduled_zxid = snapshot.zxid
        self._leader_logged = 0
        self._ready.committed = []  # all older than the snapshot, which holds their effects
        self._ready.install = snapshot
        self._ready.persist = []
        self._ready.truncate_after = None

    def _truncate(self, zxid: int) -> None:
        if zxid < self.scheduled_zxid:
            raise ValueError("asked to truncate committed history")
        while self.history and self.history[-1][0] > zxid:
            self.history.pop()
        while self._unscheduled and self._unscheduled[-1].zxid > zxid:
            self._unscheduled.pop()
        self.last_logged = zxid if not self.history else self.history[-1][0]
        self.last_logged = max(self.last_logged, self.base_zxid, self.tree.last_zxid)
        self.durable_zxid = min(self.durable_zxid, self.last_logged)
        self._pending_durable = min(self._pending_durable, self.last_logged)
        self._leader_logged = min(self._leader_logged, self.last_logged)
        self._ready.truncate_after = zxid
        self._ready.persist = [r for r in self._ready.persist if r.zxid <= zxid]

    def _on_up_to_date(self, commit_zxid: int) -> None:
        if self.phase is not Phase.SYNCHRONIZATION:
            self._start_election()
            return
        self.phase = Phase.BROADCAST
        self.commit_zxid = max(self.commit_zxid, min(commit_zxid, self.last_logged))
        self._apply_committed()
        self._set_serving(True)

    def _on_propose(self, records: tuple[TxnRecord, ...]) -> bool:
        """Log proposals and acknowledge them; False (and a new election) if they do not
        follow this member's log in the current epoch."""
        if self.phase not in (Phase.SYNCHRONIZATION, Phase.BROADCAST):
            self._start_election()
            return False
        if any(zxid_epoch(r.zxid) != self.current_epoch for r in records):
            self._start_election()
            return False
        if records and records[0].zxid != self._next_expected_zxid():
            self._start_election()  # a gap or a repeat: this link lost or replayed something
            return False
        self._log(records)
        if not self.config.is_observer and records:
            assert self.leader is not None
            self._send(self.leader, Ack(records[-1].zxid))
        return True

    def _next_expected_zxid(self) -> int:
        if zxid_epoch(self.last_logged) == self.current_epoch:
            return self.last_logged + 1
        return make_zxid(self.current_epoch, 1)

    # ---- leader: discovery and synchronization --------------------------------------------

    def _become_leader(self) -> None:
        self.state = ServerState.LEADING
        self.phase = Phase.DISCOVERY
        self._peers = {}
        self._established = False
        self._acked_self_epoch = False
        self.epoch = 0
        self._check_discovery()

    def _voters_with(self, predicate: str) -> int:
        count = 1  # the leader itself
        for member, peer in self._peers.items():
            if member in self.config.voters and getattr(peer, predicate):
                count += 1
        return count

    def _quorum(self) -> int:
        return quorum_size(len(self.config.voters))

    def _check_discovery(self) -> None:
        known = 1 + sum(
            1 for m, p in self._peers.items() if m in self.config.voters and p.accepted_epoch >= 0
        )
        if self.epoch == 0 and known >= self._quorum():
            epochs = [p.accepted_epoch for m, p in self._peers.items() if m in self.config.voters]
            self.epoch = max([self.accepted_epoch, *epochs]) + 1
            self.accepted_epoch = self.epoch
            self._ready.epochs = (self.accepted_epoch, self.current_epoch)
            for member, peer in sorted(self._peers.items()):
                if peer.accepted_epoch >= 0:
                    self._send(member, NewEpoch(self.epoch))
        if self.epoch and self._voters_with("promised") >= self._quorum():
            if self.phase is Phase.DISCOVERY:
                self.phase = Phase.SYNCHRONIZATION
                self.current_epoch = self.epoch
                self._ready.epochs = (self.accepted_epoch, self.current_epoch)
                self.prep = Prep(self.tree, max_data_bytes=self.config.max_data_bytes)
                for member, peer in sorted(self._peers.items()):
                    if peer.epoch_acked and not peer.synced:
                        self._sync_follower(member, peer)
            self._check_established()

    def _leader_receive(self, sender: int, message: PeerMessage) -> None:
        peer = self._peers.get(sender)
        if isinstance(message, FollowerInfo):
            self._on_follower_info(sender, message)
            return
        if peer is None:
            return
        peer.last_heard_tick = self.ticks
        match message:
            case AckEpoch(current_epoch, last_zxid, committed_zxid):
                if (current_epoch, last_zxid) > (self.current_epoch, self.last_logged) and (
                    self.phase is Phase.DISCOVERY
                ):
                    self._start_election()  # someone has a newer history: not our turn
                    return
                peer.epoch_acked = True
                # An ack of an epoch it already held may be a promise made to another leader
                # that chose the same epoch: sync such a follower, but never count it.
                peer.promised = peer.accepted_epoch < self.epoch
                peer.last_zxid = last_zxid
                peer.committed_zxid = committed_zxid
                if self.phase is Phase.DISCOVERY:
                    self._check_discovery()
                elif not peer.synced:
                    self._sync_follower(sender, peer)
            case AckNewLeader(epoch, last_zxid) if epoch == self.epoch and peer.synced:
                peer.up_to_date = True
                peer.acked_zxid = last_zxid
                if self._established:
                    self._send(sender, UpToDate(self.commit_zxid))
                    self._count_ack(sender, last_zxid)
                else:
                    self._check_established()
            case Ack(zxid) if peer.up_to_date and not peer.observer:
                self._count_ack(sender, zxid)
            case Ping(sessions, round_):
                peer.pinged_round = max(peer.pinged_round, round_)
                if self.tracker is not None:
                    for session_id in sessions:
                        self.tracker.touch(session_id, self.now_ms)
                self._release_syncs()
            case Forward(writes):
                if self._established:
                    for session_id, cxid, request, ids, owner in writes:
                        self._propose(session_id, cxid, request, ids, owner)
            case SyncRequest(session_id, cxid):
                if self._established:
                    self._leader_sync(sender, session_id, cxid)

    def _on_follower_info(self, sender: int, info: FollowerInfo) -> None:
        observer = sender in self.config.observers
        peer = self._peers.get(sender)
        if peer is not None and peer.accepted_epoch >= 0 and not peer.epoch_acked:
            peer.accepted_epoch = info.accepted_epoch  # it may have promised another leader
            if self.epoch:
                self._send(sender, NewEpoch(self.epoch))
            return
        # A FollowerInfo after its AckEpoch (the link is FIFO) means the follower went back to
        # election and starts a new session: forget the old one and synchronize it again.
        if observer and not self._established:
            return  # observers join an established leader
        peer = _Peer(
            info.accepted_epoch,
            info.last_zxid,
            info.committed_zxid,
            observer,
            last_heard_tick=self.ticks,
        )
        self._peers[sender] = peer
        if self.epoch:
            if info.accepted_epoch > self.epoch:
                del self._peers[sender]
                return
            self._send(sender, NewEpoch(self.epoch))
        else:
            self._check_discovery()

    def _sync_follower(self, member: int, peer: _Peer) -> None:
        """Bring `member` to the leader's log: diff, truncate + diff, or snapshot + diff."""
        mode, truncate_after, snapshot, start = self._sync_plan(peer)
        records = tuple(decode_record(raw) for zxid, raw in self.history if zxid > start)
        self._send(member, NewLeader(self.epoch, mode, truncate_after, snapshot, records))
        peer.synced = True

    def _has_logged(self, zxid: int) -> bool:
        if zxid == self.base_zxid:
            return True
        if not self.history or zxid < self.history[0][0] or zxid > self.last_logged:
            return False
        return any(logged == zxid for logged, _raw in self.history)

    def _sync_plan(self, peer: _Peer) -> tuple[SyncMode, int, Snapshot | None, int]:
        """DIFF when the follower's last entry is in our log (logs match up to it, as zxids are
        unique); TRUNC its uncommitted tail back to its committed point when that is in our log;
        SNAP when it is behind everything we keep. Its tree never moves backwards."""
        if self._has_logged(peer.last_zxid):
            return SyncMode.DIFF, 0, None, peer.last_zxid
        if self._has_logged(peer.committed_zxid):
            return SyncMode.TRUNC, peer.committed_zxid, None, peer.committed_zxid
        snapshot = Snapshot(
            self.tree.last_zxid, tuple(self.tree.iter_snapshot()), tuple(self.tree.iter_sessions())
        )
        return SyncMode.SNAP, 0, snapshot, self.tree.last_zxid

    def _check_established(self) -> None:
        if self._established or self.phase is not Phase.SYNCHRONIZATION:
            return
        if self._voters_with("up_to_date") < self._quorum():
            return
        self._established = True
        self.phase = Phase.BROADCAST
        self.commit_zxid = self.last_logged
        self._counter = (
            zxid_counter(self.last_logged) if zxid_epoch(self.last_logged) == (self.epoch) else 0
        )
        self.tracker = SessionTracker(self.config.tick_ms)
        for session_id, info in self.tree.sessions.items():
            self.tracker.add(session_id, info.timeout_ms, self.now_ms)
        for member, peer in sorted(self._peers.items()):
            if peer.up_to_date:
                self._send(member, UpToDate(self.commit_zxid))
                peer.acked_zxid = max(peer.acked_zxid, peer.last_zxid)
        self._apply_committed()
        self._set_serving(True)

    # ---- leader: broadcast -----------------------------------------------------------------

    def _propose(
        self,
        session_id: int,
        cxid: int,
        request: WriteRequest,
        ids: frozenset[Id],
        owner: int = 0,
    ) -> None:
        assert self.prep is not None
        if self._counter >= 0xFFFFFFFF:
            self._start_election()  # a new epoch restarts the counter
            return
        self._counter += 1
        zxid = make_zxid(self.epoch, self._counter)
        record = self.prep.prepare(
            request,
            zxid=zxid,
            session_id=session_id,
            cxid=cxid,
            now_ms=self.now_ms,
            ids=ids,
            owner=owner,
        )
        self._log((record,))
        self._uncommitted.append(zxid)
        commits_locally = self._commits_locally
        for member, peer in self._peers.items():
            if not peer.synced:
                continue
            if commits_locally and not peer.observer:
                self._send_batched(member, LoggedPropose, record)
                peer.logged_sent = zxid
            else:
                self._send_batched(member, Propose, record)

    def _count_ack(self, member: int, zxid: int) -> None:
        """`member` has logged everything up to `zxid`: commit what a quorum of voters has."""
        if member not in self.config.voters or zxid <= self._acked.get(member, 0):
            return
        self._acked[member] = zxid
        quorum = self._quorum()
        if len(self._acked) < quorum:
            return
        logged_by_quorum = sorted(self._acked.values(), reverse=True)[quorum - 1]
        committed = self.commit_zxid
        uncommitted = self._uncommitted
        while uncommitted and uncommitted[0] <= logged_by_quorum:
            committed = uncommitted.popleft()
        if committed > self.commit_zxid:
            self.commit_zxid = committed
            commits_locally = self._commits_locally
            for peer_id, peer in self._peers.items():
                if not peer.up_to_date:
                    continue
                if commits_locally and not peer.observer and committed <= peer.logged_sent:
                    continue  # it commits what it was sent logged as soon as it logs it too
                self._send(peer_id, Commit(committed))
            self._apply_committed()
            self._release_syncs()

    def _leader_sync(self, member: int | None, session_id: int, cxid: int) -> None:
        """A sync is answered once (1) a quorum has answered a heartbeat sent after it came,
        so this member was still the leader then (a deposed leader that has not noticed yet
        cannot answer it: Raft's ReadIndex), and (2) everything proposed before it is applied."""
        if not self._sync_heartbeat_sent:
            self._heartbeat()
            self._sync_heartbeat_sent = True  # one heartbeat round serves every sync of a Ready
        self._syncs_waiting.append((self.last_logged, session_id, cxid, member, self._ping_round))
        self._release_syncs()

    def _heartbeat(self) -> None:
        self._ping_round += 1
        for member, peer in sorted(self._peers.items()):
            if peer.up_to_date:
                self._send(member, Ping((), self._ping_round))

    def _confirmed_round(self) -> int:
        """The latest heartbeat round that a quorum (this leader included) has answered."""
        if self.state is not ServerState.LEADING:
            return 0
        rounds = [self._ping_round] + [
            peer.pinged_round
            for member, peer in self._peers.items()
            if member in self.config.voters and peer.up_to_date
        ]
        rounds.sort(reverse=True)
        quorum = self._quorum()
        return rounds[quorum - 1] if len(rounds) >= quorum else 0

    def _release_syncs(self) -> None:
        waiting = self._syncs_waiting
        if not waiting:
            return
        confirmed = self._confirmed_round()
        while waiting and waiting[0][0] <= self.scheduled_zxid and waiting[0][4] <= confirmed:
            _zxid, session_id, cxid, member, _round = waiting.popleft()
            if member is None:
                self._ready.synced.append((session_id, cxid))
                self._awaiting_local.discard((session_id, cxid))
            else:
                self._send(member, SyncDone(session_id, cxid))

    def _leader_tick(self) -> None:
        if not self._established:
            if self.ticks - self._phase_started > self.config.init_limit:
                self._start_election()
            else:
                self._resend_discovery()
            return
        self._heartbeat()
        self._check_leader_quorum()
        if self.serving:
            self._expire_sessions()

    def _resend_discovery(self) -> None:
        if self.epoch:
            for member, peer in sorted(self._peers.items()):
                if not peer.epoch_acked:
                    self._send(member, NewEpoch(self.epoch))

    def _check_leader_quorum(self) -> None:
        if self.state is not ServerState.LEADING or not self._established:
            if self.state is ServerState.LEADING and len(self.config.voters) > 1:
                alive = 1 + sum(1 for m in self._peers if m in self.config.voters)
                if alive < self._quorum() and self.phase is not Phase.DISCOVERY:
                    self._start_election()
            return
        recent = 1 + sum(
            1
            for member, peer in self._peers.items()
            if member in self.config.voters
            and peer.up_to_date
            and self.ticks - peer.last_heard_tick <= self.config.sync_limit
        )
        if recent < self._quorum():
            self._start_election()

    def _expire_sessions(self) -> None:
        assert self.tracker is not None and self.prep is not None
        for session_id in self.tracker.expired(self.now_ms):
            if self.prep.session_alive(session_id):
                self._propose(session_id, 0, CloseSessionRequest(), frozenset())

    # ---- status ----------------------------------------------------------------------------

    @property
    def role(self) -> str:
        return {
            ServerState.LOOKING: "looking",
            ServerState.FOLLOWING: "follower",
            ServerState.LEADING: "leader",
            ServerState.OBSERVING: "observer",
        }[self.state]

    @property
    def outstanding(self) -> int:
        if self.state is ServerState.LEADING:
            return len(self._uncommitted)
        return len(self._awaiting_local)
