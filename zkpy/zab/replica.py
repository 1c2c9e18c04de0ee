"""One member of the ensemble as a pure state machine: election -> discovery -> synchronization ->
broadcast, as leader, follower or observer.

Inputs: `tick(now_ms)`, `receive(sender, message)`, `disconnected(peer)`, and on the client side
`submit(...)`, `sync(...)`, `touch(...)`. Output: `take_ready()`, the work for the caller, in the
shape of raft's Ready loop; `Ready`'s docstring (zkpy.zab.ready) is the contract: what must be
durable before which messages go out, what is applied and answered when, and why `take_ready()`
must wait for the previous Ready.

The `Replica` holds what every state shares (the log kept in memory, the commit and durability
points, the Ready being filled, the local clients' pending requests) and hands each input to its
current role: `Looking` (zkpy.zab.role, with the `Election` of zkpy.zab.election), `Leading`
(zkpy.zab.leader) or `Following` (zkpy.zab.follower, followers and observers). A new role
replaces the old one, and the old one's state goes with it.

The tree holds only committed transactions. Logged but uncommitted entries (the tail) are kept in
`history` until a leader commits them or a new leader's synchronization truncates them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from zkpy.core.membership import CONFIG_PATH, Membership, MemberSpec, parse_membership
from zkpy.core.prep import Prep
from zkpy.core.requests import WriteRequest
from zkpy.core.sessions import SessionTracker
from zkpy.core.tree import ApplyResult, DataTree
from zkpy.core.txn import CloseSession, CreateSession, Reconfig, TxnRecord, encode_record
from zkpy.core.types import Id
from zkpy.zab.election import Election, quorum_size
from zkpy.zab.follower import Following
from zkpy.zab.leader import Leading
from zkpy.zab.messages import (
    EarlyPropose,
    Forward,
    LoggedPropose,
    Notification,
    PeerMessage,
    Propose,
    ServerState,
    Snapshot,
    SyncDone,
    Vote,
)
from zkpy.zab.ready import Ready
from zkpy.zab.role import Looking, Phase, Role

__all__ = ["Phase", "Ready", "Replica", "ReplicaConfig", "quorum_size"]

# messages that gather items while a Ready fills
Batched = Propose | LoggedPropose | EarlyPropose | Forward

_ROLE_NAMES = {
    ServerState.LOOKING: "looking",
    ServerState.FOLLOWING: "follower",
    ServerState.LEADING: "leader",
    ServerState.OBSERVING: "observer",
}


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    """One member's view of the ensemble and its timing and size limits."""

    my_id: int
    voters: frozenset[int]
    observers: frozenset[int] = frozenset()
    tick_ms: int = 200
    finalize_ticks: int = 1  # wait this long for a better vote once a quorum agrees
    init_limit: int = 10  # ticks to get from a decided election to serving
    sync_limit: int = 5  # ticks without hearing from the leader (or a quorum) before giving up
    history_limit: int = 50_000  # logged records kept in memory to sync followers by diff
    history_limit_bytes: int = 128 << 20  # and their encodings' bytes at most (big values)
    max_data_bytes: int = 1 << 20
    reap_interval_ms: int = 60_000  # how often the leader looks for due container / TTL nodes
    local_commit: bool = True  # see `commits_locally`; tests turn it off to drive Commits
    # the members' addresses, where the shell knows them (a reconfig copies them into the
    # new membership it commits); the committed membership, once there is one
    membership: Membership | None = None
    # where followers commit locally, the leader proposes before its own sync while fewer than
    # this many proposals are uncommitted (then says when it has synced: `Logged`); 0: never
    propose_early_below: int = 1

    @property
    def members(self) -> frozenset[int]:
        """Voters and observers."""
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
        """Whether this member observes (never votes, never counts toward a quorum)."""
        return self.my_id in self.observers

    def with_membership(self, membership: Membership) -> ReplicaConfig:
        """This configuration with `membership`'s voters and observers."""
        return replace(
            self, voters=membership.voters, observers=membership.observers, membership=membership
        )

    def current_membership(self) -> Membership:
        """The committed membership, else one made of the voters and observers (with the
        addresses the shell gave, if any), at version 0."""
        if self.membership is not None and self.membership.ids == self.members:
            return self.membership
        known = {m.id: m for m in self.membership.members} if self.membership else {}
        members = tuple(
            replace(known.get(i, MemberSpec(i)), observer=i in self.observers)
            for i in sorted(self.members)
        )
        return Membership(members, 0)


def committed_membership(tree: DataTree) -> Membership | None:
    """The membership the tree's /zookeeper/config holds, if a reconfig ever committed (the
    node a member seeds at zxid 0 from its own configuration does not count)."""
    node = tree.get(CONFIG_PATH)
    if node is None or node.mzxid == 0:
        return None
    return parse_membership(node.data or b"")


class Replica:
    """One member's Zab; see the module docstring."""

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
        where a snapshot would also reset the follower's record of recent changes.

        A membership the tree holds (committed by a reconfig) replaces `config`'s voters and
        observers. A member that is in neither follows a leader without voting or serving
        clients (a new member catching up before a reconfig adds it, or a removed one)."""
        committed = committed_membership(tree)
        if committed is not None:
            config = config.with_membership(committed)
        else:
            tree.seed_config(config.current_membership().encode())
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
        self.history_bytes = sum(len(raw) for _zxid, raw in self.history)
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
        self.election = Election(
            config.my_id,
            config.voters,
            config.observers,
            config.finalize_ticks,
            config.membership.version if config.membership is not None else 0,
        )
        self._role: Role = Looking(self)
        # set while leading: the epoch being established or led, the request preparer and the
        # session tracker
        self.epoch = 0
        self.prep: Prep | None = None
        self.tracker: SessionTracker | None = None
        # (zxid to be applied, session, cxid, forwarding member or None, heartbeat round needed)
        self._syncs_waiting: deque[tuple[int, int, int, int | None, int]] = deque()
        # per peer, the batch being gathered: its place in the Ready's messages, the kind of
        # message (a proposal or Forward) and its items
        self._batches: dict[int, tuple[int, type[Batched], list[Any]]] = {}
        self._touched: set[int] = set()  # sessions heard from, for the leader's next Ping
        self._awaiting_local: set[tuple[int, int]] = set()
        self._start_election()

    # ---- inputs --------------------------------------------------------------------------------

    def tick(self, now_ms: int) -> None:
        """One tick of `config.tick_ms` has passed; `now_ms` is the wall clock."""
        self.ticks += 1
        self.now_ms = now_ms
        self._role.tick()

    def receive(self, sender: int, message: PeerMessage) -> None:
        """A message from member `sender`, which may be outside the membership in force (a new
        member catching up, a removed one, or one that knows a newer membership): election
        counts only voters' votes, and only a leader accepts such a member, as a learner."""
        if sender == self.my_id:
            return
        if isinstance(message, Notification):
            self._on_notification(sender, message)
        else:
            self._role.receive(sender, message)

    def disconnected(self, peer: int) -> None:
        """The FIFO link to `peer` broke: whatever was in flight on it is lost."""
        self._role.disconnected(peer)

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
        self._role.submit(session_id, cxid, request, ids, owner)

    def sync(self, session_id: int, cxid: int) -> None:
        """Answer (in `Ready.synced`) once this member has applied everything the leader had
        proposed when it received the sync."""
        if not self.serving:
            self._ready.rejected.append((session_id, cxid))
            return
        self._awaiting_local.add((session_id, cxid))
        self._role.sync(session_id, cxid)

    def take_ready(self) -> Ready:
        """The work to do now. Calling it also says the previous Ready is durable."""
        self._advance(min(self._pending_durable, self.last_logged))
        self._trim_history()  # once per step: the shell has applied the last one's records
        self._close_batches()
        ready, self._ready = self._ready, Ready()
        self._pending_durable = self.last_logged
        return ready

    def apply(self, record: TxnRecord, *, stats: bool = True) -> ApplyResult:
        """Apply one record of `Ready.committed` to the tree (the caller does, one at a time);
        `stats` as in `DataTree.apply`."""
        result = self.tree.apply(record, stats=stats)
        if self.prep is not None:
            self.prep.applied(record.zxid)
        if self.tracker is not None:
            self._session_effects(self.tracker, record)
        return result

    # ---- status --------------------------------------------------------------------------------

    @property
    def role(self) -> str:
        """looking, follower, leader or observer."""
        return _ROLE_NAMES[self.state]

    @property
    def outstanding(self) -> int:
        """Writes and syncs in flight: a leader's uncommitted proposals, else the local ones."""
        return self._role.outstanding()

    @property
    def awaits_leader(self) -> bool:
        """Whether a follower's clients wait on writes or syncs it sent the leader, whose answer
        comes within about one of the leader's syncs: a shell may stay awake for it rather than
        sleep and be woken (an idle CPU on a VM wakes slowly)."""
        return self._role.awaits_leader()

    def background(self, sender: int, messages: Sequence[PeerMessage]) -> bool:
        """Whether carrying out `messages`, a batch from `sender` not yet received, is work
        that no client waits on, here or at the leader: a follower or observer in broadcast,
        none of whose clients await the leader, given what the leader needs nothing back for
        (commits, heartbeats, a `LoggedPropose` the leader already holds durable). A voter's
        Ack of a `Propose` or `EarlyPropose` may be what a client waits on, so those are never
        background, nor is anything a leader or a looking member does. A shell on a machine
        whose CPUs the members share may let waiting processes run first
        (docs/decisions/0041)."""
        return self._role.background(sender, messages)

    @property
    def is_member(self) -> bool:
        """Whether the membership in force names this member (as a voter or observer)."""
        return self.my_id in self.config.members

    @property
    def membership(self) -> Membership:
        """The membership in force (see `ReplicaConfig.current_membership`)."""
        return self.config.current_membership()

    def tail_membership(self) -> Membership | None:
        """The membership of the last reconfig logged here but not yet committed, if any."""
        found: Membership | None = None
        for record in self._unscheduled:
            if type(record.op) is Reconfig and record.zxid > self.scheduled_zxid:
                found = parse_membership(record.op.config)
        return found

    @property
    def round(self) -> int:
        """The election round this member is in or last decided in."""
        return self.election.round

    @property
    def vote(self) -> Vote:
        """This member's vote in its latest election."""
        return self.election.vote

    # ---- durability and commit (for the roles) -------------------------------------------------

    def _advance(self, durable: int) -> None:
        self.durable_zxid = durable
        self._role.persisted(durable)
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
            if type(record.op) is Reconfig:
                self._activate(parse_membership(record.op.config))
        self._release_syncs()

    def _activate(self, membership: Membership) -> None:
        """A reconfig is committed (and durable here): its membership is in force from now on,
        for elections, quorums and whether this member serves."""
        self.config = self.config.with_membership(membership)
        self.election.reconfigure(self.config.voters, self.config.observers, membership.version)
        self._expect_logged_membership()
        self._role.reconfigured()

    def _expect_logged_membership(self) -> None:
        """Tell the election of the reconfig this member has logged and not seen committed."""
        tail = self.tail_membership()
        if tail is None:
            self.election.expect_also(frozenset(), frozenset())
        else:
            self.election.expect_also(tail.ids, tail.voters)

    def _release_syncs(self) -> None:
        """Answer the syncs whose writes are handed out and whose heartbeat a quorum answered."""
        waiting = self._syncs_waiting
        if not waiting:
            return
        confirmed = self._role.confirmed_round()
        while waiting and waiting[0][0] <= self.scheduled_zxid and waiting[0][4] <= confirmed:
            _zxid, session_id, cxid, member, _round = waiting.popleft()
            if member is None:
                self._ready.synced.append((session_id, cxid))
                self._awaiting_local.discard((session_id, cxid))
            else:
                self._send(member, SyncDone(session_id, cxid))

    def _session_effects(self, tracker: SessionTracker, record: TxnRecord) -> None:
        op = record.op
        if isinstance(op, CreateSession):
            tracker.add(op.session_id, op.timeout_ms, self.now_ms)
        elif isinstance(op, CloseSession):
            tracker.remove(op.session_id)

    def _trim_history(self) -> None:
        """Forget the oldest applied records past `history_limit` records or
        `history_limit_bytes` bytes: a follower further behind is sent a snapshot. Counting
        records alone, writes of big values could hold tens of gigabytes here."""
        config = self.config
        history = self.history
        while (
            len(history) > config.history_limit or self.history_bytes > config.history_limit_bytes
        ):
            if not history or history[0][0] > self.tree.last_zxid:
                break
            zxid, raw = history.popleft()
            self.base_zxid = zxid
            self.history_bytes -= len(raw)

    # ---- the log (for the roles) ---------------------------------------------------------------

    def _log(self, records: Iterable[TxnRecord]) -> None:
        for record in records:
            if record.zxid <= self.last_logged:
                raise ValueError(f"log out of order: {record.zxid:#x} after {self.last_logged:#x}")
            raw = encode_record(record, self._packer)
            self.history.append((record.zxid, raw))
            self.history_bytes += len(raw)
            self._unscheduled.append(record)
            self.last_logged = record.zxid
            self._ready.persist.append(record)

    def _install(self, snapshot: Snapshot) -> None:
        """Replace the tree and the whole log with `snapshot` (a follower behind the leader's
        log)."""
        self.tree = DataTree.from_checkpoint(snapshot.zxid, snapshot.nodes, snapshot.sessions)
        self.history = deque()
        self.history_bytes = 0
        self._unscheduled = deque()
        self.base_zxid = snapshot.zxid
        self.last_logged = snapshot.zxid
        self.durable_zxid = min(self.durable_zxid, snapshot.zxid)
        self._pending_durable = min(self._pending_durable, snapshot.zxid)
        self.commit_zxid = snapshot.zxid
        self.scheduled_zxid = snapshot.zxid
        self._ready.committed = []  # all older than the snapshot, which holds their effects
        self._ready.install = snapshot
        self._ready.persist = []
        self._ready.truncate_after = None
        committed = committed_membership(self.tree)
        if committed is not None and committed != self.config.membership:
            self._activate(committed)

    def _truncate(self, zxid: int) -> None:
        """Drop the logged records after `zxid` (an uncommitted tail a new leader never had)."""
        if zxid < self.scheduled_zxid:
            raise ValueError("asked to truncate committed history")
        while self.history and self.history[-1][0] > zxid:
            self.history_bytes -= len(self.history.pop()[1])
        while self._unscheduled and self._unscheduled[-1].zxid > zxid:
            self._unscheduled.pop()
        self.last_logged = zxid if not self.history else self.history[-1][0]
        self.last_logged = max(self.last_logged, self.base_zxid, self.tree.last_zxid)
        self.durable_zxid = min(self.durable_zxid, self.last_logged)
        self._pending_durable = min(self._pending_durable, self.last_logged)
        self._ready.truncate_after = zxid
        self._ready.persist = [r for r in self._ready.persist if r.zxid <= zxid]

    # ---- messages (for the roles) --------------------------------------------------------------

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
        serving = serving and self.is_member  # a learner outside the membership never serves
        if serving != self.serving:
            self.serving = serving
            self._ready.serving_changed = True

    # ---- roles and election --------------------------------------------------------------------

    def _become(self, role: Role) -> None:
        self._role = role
        self.state = role.state
        role.start()

    def _start_election(self) -> None:
        """Stop serving, fail what local clients wait for, and look for a leader."""
        self._set_serving(False)
        for key in sorted(self._awaiting_local):
            self._ready.rejected.append(key)
        self._awaiting_local = set()
        self.phase = Phase.ELECTION
        self.leader = None
        self.prep = None
        self.tracker = None
        self._syncs_waiting = deque()
        self._become(Looking(self))
        self._expect_logged_membership()
        self.election.start(Vote(self.current_epoch, self.last_logged, self.my_id))
        self._follow_election()

    def _follow_election(self) -> None:
        """Send what the election has to say, and take the role it decided on, if any."""
        for peer, note in self.election.take_messages():
            self._send(peer, note)
        leader = self.election.leader
        if leader is not None:
            self.leader = leader
            if leader == self.my_id:
                self._become(Leading(self))
            else:
                self._become(Following(self, leader))

    def _on_notification(self, sender: int, note: Notification) -> None:
        if self.state is ServerState.LOOKING:
            self.election.receive(sender, note)
            self._follow_election()
        elif note.state is ServerState.LOOKING:
            vote = self._role.current_vote()
            self._send(sender, Notification(self.election.round, vote, self.state))
