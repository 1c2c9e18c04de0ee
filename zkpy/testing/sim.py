"""A seeded simulator of a whole ensemble in one process, in virtual time.

Every member is the pure `Replica`, carried out by the members' own executor
(`zkpy.server.executor.ReadyExecutor`, the very code a member runs) over a simulated disk and
simulated links: what a Ready asks to persist becomes durable only after a disk delay, and a
crash loses whatever is not durable yet. The network has a FIFO link per ordered pair of
members. Faults, each with its own rate: crash and restart, partitions and healing, link resets
(the TCP view of a lost connection: the link drops what is in flight and both ends learn it
broke), a message lost on its way (its link breaks, and both ends learn it a little later),
messages held back on one link while others overtake them, link delays, and duplicated or
reordered election notifications (which carry no order).

Clients hold their session's connection at one member, as real ones do: the connection lasts
while that member serves (a member drops its clients when it stops), and a session that moves
to another member attaches there first (`AttachSessionRequest`, under a new owner). Each
connection watches the whole tree (a persistent recursive watch) and hears its replies and
events from the executor, as a member's client connection does.

Invariants are checked as the run goes; the first violation raises `InvariantViolation` with the
seed, so `Simulation(seed=S).run(...)` replays it exactly:
- at most one leader established per epoch; one record per zxid; each member applies in order;
- a reply for a write goes out only once its record is durable on a quorum of voters, and on
  the member that answers it (a member applies only what its own log holds);
- on a connection, replies come in the order the requests were sent, and a watch event never
  comes after a reply that shows its change, nor after a later event;
- a successful write never belongs to a session that is closed, nor comes on a connection
  whose client was told its session had closed.
The final check walks the committed history: acknowledged writes are everywhere, no ephemeral
outlives its session, and no write was applied from a connection the session had left
(SESSION_MOVED fencing), whatever the faults.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zkpy.core.acl import SUPER_ID
from zkpy.core.errors import Code
from zkpy.core.membership import MemberSpec, parse_membership
from zkpy.core.requests import (
    AttachSessionRequest,
    CloseSessionRequest,
    CreateRequest,
    CreateSessionRequest,
    ReconfigRequest,
    SetDataRequest,
    WriteRequest,
)
from zkpy.core.tree import ApplyResult, DataTree
from zkpy.core.txn import (
    AttachSession,
    CreateSession,
    ErrorTxn,
    Reconfig,
    TxnRecord,
    decode_record,
    encode_record,
)
from zkpy.core.types import OPEN_ACL_UNSAFE, Id, WatchedEvent, WatchMode, zxid_epoch
from zkpy.core.watches import ChangeLog
from zkpy.server.executor import ReadyExecutor
from zkpy.zab.messages import Notification, PeerMessage, ServerState, Snapshot
from zkpy.zab.replica import Phase, Ready, Replica, ReplicaConfig, quorum_size

TTL_MS = 500  # the workload's TTL nodes, and how often leaders reap: both well inside a run
REAP_INTERVAL_MS = 1_000
RECONFIG_RATE = 0.01  # per 10 ms step: a reconfig every second or so of virtual time


class InvariantViolation(AssertionError):
    """A run broke an invariant; the message names the seed and the virtual time."""


@dataclass(slots=True)
class SimDisk:
    """The durable state of one member (the executor's `Storage`): a Ready's writes land all at
    once when the simulator makes it durable, and survive crashes."""

    accepted_epoch: int = 0
    current_epoch: int = 0
    snapshot: Snapshot = field(default_factory=lambda: Snapshot(0, (), ()))
    log: list[TxnRecord] = field(default_factory=list)
    log_floor: int = 0  # the log holds every record after this zxid (as the segment log does)

    @property
    def durable_zxid(self) -> int:
        """The last zxid the disk holds."""
        return max(self.snapshot.zxid, self.log[-1].zxid if self.log else 0)

    def persists_inline(self, ready: Ready) -> bool:
        """Never: the simulator makes each Ready durable after a disk delay."""
        return False

    def persist(self, ready: Ready) -> None:
        """Write the Ready, as one synced write."""
        self.write(ready)

    def write(self, ready: Ready) -> None:
        """Write what a Ready asks to persist, in the order a member does."""
        if ready.epochs is not None:
            self.accepted_epoch, self.current_epoch = ready.epochs
        if ready.install is not None:
            self.snapshot = ready.install
            self.log = []
            self.log_floor = ready.install.zxid
        if ready.truncate_after is not None:
            self.log = [r for r in self.log if r.zxid <= ready.truncate_after]
        self.log.extend(ready.persist)

    def holds(self, zxid: int) -> bool:
        """Whether the disk holds the record of `zxid` (in its snapshot or its log)."""
        if zxid <= self.snapshot.zxid:
            return True
        index = bisect.bisect_left(self.log, zxid, key=lambda record: record.zxid)
        return index < len(self.log) and self.log[index].zxid == zxid

    def checkpoint(self, tree: DataTree, committed: int) -> None:
        """Fold the committed log into the snapshot, as the shell's checkpoints do (if the
        tree holds only committed records, and more than the snapshot)."""
        if tree.last_zxid > committed or tree.last_zxid <= self.snapshot.zxid:
            return
        # as the shell's storage does, the log keeps the records after the previous checkpoint
        self.fold(tree, keep_after=self.snapshot.zxid)

    def fold(self, tree: DataTree, *, keep_after: int) -> None:
        """Make the tree the snapshot, keeping the log's records after `keep_after`."""
        self.log_floor = keep_after
        self.snapshot = Snapshot(
            tree.last_zxid, tuple(tree.iter_snapshot()), tuple(tree.iter_sessions())
        )
        self.log = [r for r in self.log if r.zxid > self.log_floor]

    def replica(self, config: ReplicaConfig, now_ms: int = 0) -> Replica:
        """A replica restarted from this disk, as `Member` restarts one from its storage."""
        snap = self.snapshot
        tree = DataTree.from_checkpoint(snap.zxid, snap.nodes, snap.sessions)
        retained = bool(self.log) and self.log[0].zxid <= snap.zxid
        return Replica(
            config,
            tree,
            list(self.log),
            accepted_epoch=self.accepted_epoch,
            current_epoch=self.current_epoch,
            now_ms=now_ms,
            history_base=self.log_floor if retained else None,
        )


@dataclass(slots=True)
class SimMember:
    """One member: its disk, and while it is up, its replica and executor."""

    id: int
    config: ReplicaConfig
    disk: SimDisk = field(default_factory=SimDisk)
    replica: Replica | None = None
    executor: ReadyExecutor | None = None
    incarnation: int = 0
    last_applied: int = 0
    serving_changes: int = 0  # client connections last only while this stays the same

    @property
    def alive(self) -> bool:
        """Whether the member is up (not crashed)."""
        return self.replica is not None


class SimLinks:
    """A member's links and hooks in the simulator (the executor's `Transport` and `Hooks`)."""

    def __init__(self, sim: Simulation, member: SimMember) -> None:
        self.sim = sim
        self.member = member

    def send(self, peer: int, message: PeerMessage) -> None:
        """Put the message on the simulated link to `peer`."""
        self.sim._send(self.member.id, peer, message)

    def flush(self) -> None:
        """Nothing: simulated links carry each message as it is sent."""

    def on_ready(self, ready: Ready) -> None:
        """Check each Ready as it is taken (`Simulation._check_ready`)."""
        if ready.serving_changed:
            self.member.serving_changes += 1
        self.sim._check_ready(self.member, ready)

    def on_session_closed(self, session_id: int) -> None:
        """Tell the session's clients at this member that it closed."""
        self.sim.clients.session_closed(self.member, session_id)

    def on_session_attached(self, session_id: int, owner: int) -> None:
        """End the session's other connections at this member."""
        self.sim.clients.session_attached(self.member, session_id, owner)

    def on_serving_changed(self, serving: bool) -> None:
        """A member that stops serving drops its clients."""
        if not serving:
            self.sim.clients.drop_at(self.member)


@dataclass(slots=True)
class Faults:
    """Probabilities per scheduling step (every `step_ms` of virtual time), or per message for
    `drop` and `reorder`."""

    crash: float = 0.004
    restart: float = 0.05
    partition: float = 0.003
    heal: float = 0.02
    reset_link: float = 0.005
    delay_ms: tuple[int, int] = (0, 6)
    duplicate_notification: float = 0.05
    disk_ms: tuple[int, int] = (1, 4)
    drop: float = 0.001  # a message is lost: its link breaks, both ends learn it later
    reorder: float = 0.01  # a link holds back its messages a while (others overtake them)
    reconfig: float = 0.0  # a client asks to add or remove a member (with `spares` members)


@dataclass(slots=True)
class ClientOp:
    """A client's write, and what the client heard of it."""

    session_id: int
    cxid: int
    request: WriteRequest
    member: int
    outcome: str = "pending"  # pending / ok / failed / unknown
    zxid: int = 0
    error: int = 0
    owner: int = 0  # the client connection it was sent on


@dataclass(slots=True)
class SimConnection:
    """A client's connection to a member, as the client sees it."""

    owner: int
    session_id: int
    member: int
    incarnation: int
    serving_changes: int
    last_reply_zxid: int = 0
    last_reply_cxid: int = 0
    last_event_zxid: int = 0
    session_closed: bool = False
    ended: bool = False


class SimClients:
    """The clients' connections to members, and the checks of what each one hears."""

    def __init__(self, members: dict[int, SimMember], violation: Callable[[str], None]) -> None:
        self.members = members
        self.violation = violation
        self.by_session: dict[int, SimConnection] = {}  # each session's latest connection
        self.open: dict[int, SimConnection] = {}  # owner -> each connection still open
        self.events = 0
        self._next_owner = 1

    def connect(self, member: SimMember, session_id: int) -> int:
        """A new connection of `session_id` at `member`, watching the whole tree: its owner id.
        The session's previous connection ends (its client moved)."""
        owner = self._next_owner
        self._next_owner += 1
        old = self.by_session.get(session_id)
        if old is not None:
            self.end(old)
        connection = SimConnection(
            owner, session_id, member.id, member.incarnation, member.serving_changes
        )
        self.by_session[session_id] = connection
        self.open[owner] = connection
        executor = member.executor
        assert executor is not None
        executor.watches.add(owner, "/", WatchMode.PERSISTENT_RECURSIVE)
        executor.register_event_sink(owner, functools.partial(self.heard, connection))
        return owner

    def standing(self, session_id: int) -> SimConnection | None:
        """The session's connection, if it is open and its member has neither restarted nor
        stopped serving since it was made."""
        held = self.by_session.get(session_id)
        if held is None or held.ended:
            return None
        member = self.members[held.member]
        if (member.incarnation, member.serving_changes) != (held.incarnation, held.serving_changes):
            return None
        return held

    def end(self, connection: SimConnection) -> None:
        """The connection closes; its member forgets its watches."""
        connection.ended = True
        self.open.pop(connection.owner, None)
        member = self.members[connection.member]
        if member.executor is not None and member.incarnation == connection.incarnation:
            member.executor.drop_watcher(connection.owner)

    def drop_at(self, member: SimMember) -> None:
        """A member that stops serving (or crashes) drops its client connections."""
        for connection in [c for c in self.open.values() if c.member == member.id]:
            self.end(connection)

    def session_closed(self, member: SimMember, session_id: int) -> None:
        """The member tells the session's clients there that it closed."""
        for connection in self.open.values():
            if connection.session_id == session_id and connection.member == member.id:
                connection.session_closed = True

    def session_attached(self, member: SimMember, session_id: int, owner: int) -> None:
        """The session moved to the connection `owner`: its others at this member end."""
        for connection in [c for c in self.open.values() if c.member == member.id]:
            if connection.session_id == session_id and connection.owner != owner:
                self.end(connection)

    def replied(self, op: ClientOp, zxid: int, session_alive: bool) -> None:
        """A reply reaches the client. Replies on a connection come in request order; a write
        of a session succeeds only while the session lives, and not after its client heard it
        closed."""
        connection = self.open.get(op.owner)
        if connection is None:
            return
        if op.cxid <= connection.last_reply_cxid or zxid <= connection.last_reply_zxid:
            self.violation(
                f"connection {connection.owner} got the reply to {op.cxid} ({zxid:#x}) after "
                f"the one to {connection.last_reply_cxid} ({connection.last_reply_zxid:#x})"
            )
        connection.last_reply_zxid = zxid
        connection.last_reply_cxid = op.cxid
        if op.outcome != "ok" or isinstance(op.request, CloseSessionRequest):
            return
        if connection.session_closed or not session_alive:
            self.violation(
                f"write {zxid:#x} of closed session {op.session_id} succeeded on "
                f"connection {connection.owner}"
            )

    def heard(self, connection: SimConnection, event: WatchedEvent) -> None:
        """A watch event reaches the client: after the events before it, and before any reply
        that shows its change."""
        self.events += 1
        if not self.members[connection.member].disk.holds(event.zxid):
            self.violation(
                f"member {connection.member} sent the event of {event.zxid:#x} before its own "
                "log held it"
            )
        if event.zxid <= connection.last_reply_zxid:
            self.violation(
                f"connection {connection.owner} got the event of {event.zxid:#x} after a reply "
                f"at {connection.last_reply_zxid:#x}"
            )
        if event.zxid < connection.last_event_zxid:
            self.violation(
                f"connection {connection.owner} got the event of {event.zxid:#x} after one at "
                f"{connection.last_event_zxid:#x}"
            )
        connection.last_event_zxid = event.zxid


class Simulation:
    """A seeded run of a whole ensemble; `executor` is the executor class members run (tests
    pass a broken one to show the checks catch it)."""

    def __init__(
        self,
        seed: int,
        *,
        voters: int = 3,
        observers: int = 0,
        faults: Faults | None = None,
        tick_ms: int = 50,
        history_limit: int = 40,
        executor: type[ReadyExecutor] = ReadyExecutor,
        spares: int = 0,
    ) -> None:
        """`spares`: members outside the initial membership, running from the start as
        learners, for the reconfigs (`Faults.reconfig`) to add, as voters or observers."""
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = faults or Faults()
        self.executor_class = executor
        self.now = 0
        self.tick_ms = tick_ms
        voter_ids = frozenset(range(1, voters + 1))
        observer_ids = frozenset(range(voters + 1, voters + observers + 1))
        spare_ids = frozenset(range(voters + observers + 1, voters + observers + spares + 1))
        self.voters = voter_ids
        # each committed membership's voters, from the zxid that committed it
        self.voter_history: list[tuple[int, frozenset[int]]] = [(0, voter_ids)]
        self.members: dict[int, SimMember] = {}
        for member_id in sorted(voter_ids | observer_ids | spare_ids):
            config = ReplicaConfig(
                member_id,
                voter_ids,
                observer_ids,
                tick_ms=tick_ms,
                history_limit=history_limit,
                reap_interval_ms=REAP_INTERVAL_MS,
            )
            self.members[member_id] = SimMember(member_id, config)
        self._events: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0
        self.links: dict[tuple[int, int], deque[tuple[int, int, PeerMessage]]] = {}
        self.link_generation: dict[tuple[int, int], int] = {}
        self.link_held_until: dict[tuple[int, int], int] = {}
        # the generation of a link in which it lost a message (what follows is lost too)
        self.link_broken: dict[tuple[int, int], int] = {}
        self.blocked: set[tuple[int, int]] = set()
        self.message_faults = True  # drop and reorder messages (off while settling)
        self.message_fault_counts = {"lost": 0, "held back": 0, "out of order": 0}
        self.committed: dict[int, bytes] = {}
        self.leaders: dict[int, int] = {}
        self.ops: dict[tuple[int, int], ClientOp] = {}
        self.closed_sessions: set[int] = set()
        self.log: list[str] = []
        self._next_session = 1
        self.sessions: list[int] = []
        self._cxid = 0
        self.clients = SimClients(self.members, self._violation)
        for member in self.members.values():
            self._boot(member)
            self._schedule(self.rng.randint(0, tick_ms), functools.partial(self._tick, member))

    # ---- scheduling -------------------------------------------------------------------------

    def _schedule(self, delay: int, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._events, (self.now + delay, self._seq, action))

    def run_until(self, end_ms: int, *, chaos: bool = True, load: bool = True) -> None:
        """Run events (and, every 10 ms, maybe a fault and a client write) up to `end_ms`."""
        step = 10
        next_step = self.now
        self.message_faults = chaos
        while self._events and self._events[0][0] <= end_ms:
            when, _seq, action = heapq.heappop(self._events)
            while next_step <= when:
                self.now = next_step
                if chaos:
                    self._maybe_fault()
                if load:
                    self._maybe_client_op()
                next_step += step
            self.now = when
            action()
        self.now = end_ms

    def note(self, text: str) -> None:
        """Add a line to the run's log (compared when a seed is replayed)."""
        self.log.append(f"{self.now:>7} {text}")

    # ---- members ----------------------------------------------------------------------------

    def _boot(self, member: SimMember) -> None:
        """Start a member from its disk, with an executor over the disk and its links."""
        replica = member.disk.replica(member.config, self.now)
        member.replica = replica
        member.incarnation += 1
        member.last_applied = replica.tree.last_zxid
        links = SimLinks(self, member)
        member.executor = self.executor_class(
            replica,
            member.disk,
            links,
            links,
            change_log=ChangeLog(start_zxid=replica.tree.last_zxid),
            checkpoint_interval=lambda: self.rng.randint(5, 60),
            last_checkpoint_zxid=member.disk.snapshot.zxid,
        )
        self._after_input(member)

    def _tick(self, member: SimMember) -> None:
        if member.replica is not None:
            member.replica.tick(self.now)
            self._after_input(member)
        self._schedule(self.tick_ms, lambda: self._tick(member))

    def _after_input(self, member: SimMember) -> None:
        """Have the member's executor carry out what its replica has; a Ready that must be
        durable first becomes durable after a disk delay (unless the member crashes first).
        While a Ready is in progress the executor takes nothing: it advances when done."""
        executor = member.executor
        if executor is None:
            return
        ready = executor.advance()
        if ready is not None:
            incarnation = member.incarnation
            delay = self.rng.randint(*self.faults.disk_ms)
            self._schedule(delay, lambda: self._durable(member, incarnation, ready))

    def _durable(self, member: SimMember, incarnation: int, ready: Ready) -> None:
        executor = member.executor
        if member.incarnation != incarnation or executor is None:
            return  # crashed meanwhile: the write never happened
        executor.persist(ready)
        executor.durable()
        if executor.checkpoint_due():
            tree = executor.tree
            keep_after = executor.checkpoint_started(tree.last_zxid)
            member.disk.fold(tree, keep_after=keep_after)
            executor.checkpoint_written(tree.last_zxid)
        self._after_input(member)

    def _check_ready(self, member: SimMember, ready: Ready) -> None:
        """Checks made as a Ready is taken (tests extend it)."""
        replica = member.replica
        assert replica is not None
        if replica.serving and (replica.phase is not Phase.BROADCAST or not replica.is_member):
            self._violation(f"member {member.id} serves in {replica.phase.value} as {replica.role}")
        if ready.serving_changed and replica.serving and replica.state is ServerState.LEADING:
            other = self.leaders.setdefault(replica.epoch, member.id)
            if other != member.id:
                self._violation(f"two leaders established in epoch {replica.epoch}")
            self.note(f"member {member.id} leads epoch {replica.epoch}")
        for record in ready.committed:
            if record.zxid <= member.last_applied:
                self._violation(
                    f"member {member.id} applied {record.zxid:#x} after {member.last_applied:#x}"
                )
            member.last_applied = record.zxid
            encoded = encode_record(record)
            first = record.zxid not in self.committed
            known = self.committed.setdefault(record.zxid, encoded)
            if known != encoded:
                self._violation(f"two different transactions committed at {record.zxid:#x}")
            if first and type(record.op) is Reconfig:
                voters = parse_membership(record.op.config).voters
                bisect.insort(self.voter_history, (record.zxid, voters))
                self.note(f"membership {sorted(voters)} committed at {record.zxid:#x}")

    def voters_at(self, zxid: int) -> frozenset[int]:
        """The voters of the membership in force when `zxid` was proposed."""
        index = bisect.bisect_left(self.voter_history, zxid, key=lambda entry: entry[0])
        return self.voter_history[index - 1][1]

    def _violation(self, text: str) -> None:
        raise InvariantViolation(f"seed {self.seed}, t={self.now}ms: {text}")

    # ---- network ----------------------------------------------------------------------------

    def _send(self, source: int, target: int, message: PeerMessage) -> None:
        """A message onto the FIFO link source -> target (a send to a dead or cut-off peer
        resets the link, which tells both ends at once)."""
        pair = (source, target)
        if pair in self.blocked or not self.members[target].alive:
            if not isinstance(message, Notification):
                self._reset_link(source, target)
            return
        if self.link_broken.get(pair, -1) == self.link_generation.get(pair, 0):
            return  # lost with the message before it, until both ends learn the link broke
        faults = self.faults
        chaos = self.message_faults
        if chaos and self.rng.random() < faults.drop:
            self._lose(source, target)
            return
        if chaos and self.rng.random() < faults.reorder:
            if isinstance(message, Notification):  # they carry no order: deliver it out of it
                self.message_fault_counts["out of order"] += 1
                later = self.rng.randint(0, 200)
                self._schedule(later, lambda: self._deliver_loose(source, target, message))
                return
            self.message_fault_counts["held back"] += 1
            held = self.now + self.rng.randint(20, 150)
            self.link_held_until[pair] = max(held, self.link_held_until.get(pair, 0))
        link = self.links.setdefault(pair, deque())
        generation = self.link_generation.get(pair, 0)
        link.append((generation, self._seq, message))
        delay = max(
            self.rng.randint(*faults.delay_ms), self.link_held_until.get(pair, 0) - self.now
        )
        self._schedule(delay, lambda: self._deliver(source, target))
        if isinstance(message, Notification) and self.rng.random() < faults.duplicate_notification:
            later = self.rng.randint(0, 200)
            self._schedule(later, lambda: self._deliver_loose(source, target, message))

    def _lose(self, source: int, target: int) -> None:
        """A message is lost on its way: what follows it on the link is lost too, and both ends
        learn the link broke a little later (as TCP does)."""
        pair = (source, target)
        generation = self.link_generation.get(pair, 0)
        self.link_broken[pair] = generation
        self.message_fault_counts["lost"] += 1
        self.note(f"lost a message {source} -> {target}")

        def detect() -> None:
            if self.link_generation.get(pair, 0) == generation:
                self._reset_link(source, target)

        self._schedule(self.rng.randint(1, 50), detect)

    def _deliver(self, source: int, target: int) -> None:
        link = self.links.get((source, target))
        if not link:
            return
        generation, _seq, message = link.popleft()
        if generation != self.link_generation.get((source, target), 0):
            return
        member = self.members[target]
        if member.replica is None:
            return
        member.replica.receive(source, message)
        self._after_input(member)

    def _deliver_loose(self, source: int, target: int, message: PeerMessage) -> None:
        member = self.members[target]
        if member.replica is not None and (source, target) not in self.blocked:
            member.replica.receive(source, message)
            self._after_input(member)

    def _reset_link(self, a: int, b: int) -> None:
        """Both directions of a connection break; both ends are told, if they are up."""
        for pair in ((a, b), (b, a)):
            self.link_generation[pair] = self.link_generation.get(pair, 0) + 1
            self.links.pop(pair, None)
        for here, there in ((a, b), (b, a)):
            member = self.members[here]
            if member.replica is not None:
                member.replica.disconnected(there)
                self._after_input(member)

    # ---- faults -----------------------------------------------------------------------------

    def _maybe_fault(self) -> None:
        f = self.faults
        rng = self.rng
        ids = sorted(self.members)
        if rng.random() < f.crash:
            victim = self.members[rng.choice(ids)]
            if victim.alive:
                self.crash(victim.id)
        if rng.random() < f.restart:
            for member in self.members.values():
                if not member.alive:
                    self.restart(member.id)
                    break
        if rng.random() < f.partition:
            side = set(rng.sample(ids, rng.randint(1, len(ids) // 2)))
            self.partition(side)
        if rng.random() < f.heal and self.blocked:
            self.heal()
        if rng.random() < f.reset_link:
            a, b = rng.sample(ids, 2)
            self._reset_link(a, b)
        if rng.random() < f.reconfig:
            self._maybe_reconfig()

    def _maybe_reconfig(self) -> None:
        """A client asks a serving member to add a non-member (voter or observer) or remove a
        member, sometimes against a stale version, sometimes leaving no voter (refused)."""
        serving = self._serving_members()
        if not serving:
            return
        rng = self.rng
        member = rng.choice(serving)
        assert member.replica is not None
        current = member.replica.membership
        outside = sorted(set(self.members) - current.ids)
        removable = sorted(current.observers if len(current.voters) <= 2 else current.ids)
        for _ in range(2 if rng.random() < 0.2 else 1):  # two at once: one is refused
            roll = rng.random()
            request: ReconfigRequest
            if outside and (roll < 0.6 or not removable):
                spec = MemberSpec(rng.choice(outside), "sim", 1, 1, observer=rng.random() < 0.2)
                request = ReconfigRequest(add=(spec,))
            elif removable and roll < 0.95:
                request = ReconfigRequest(remove=(rng.choice(removable),))
            else:
                request = ReconfigRequest(remove=tuple(sorted(current.voters)))
            version = current.version if rng.random() < 0.7 else rng.choice([-1, 1])
            request = ReconfigRequest(request.add, request.remove, version)
            self.submit_reconfig(request)

    def submit_reconfig(
        self, request: ReconfigRequest, ids: frozenset[Id] = frozenset({SUPER_ID})
    ) -> ClientOp | None:
        """A client of a live session asks a serving member for `request` (as the super
        user, unless `ids` says otherwise); None if no member serves or no session lives."""
        serving = self._serving_members()
        live = [s for s in self.sessions if s not in self.closed_sessions]
        if not serving or not live:
            return None
        self.note(f"reconfig: add {request.add} remove {request.remove}")
        session_id = self.rng.choice(live)
        member, owner = self._connection_for(session_id, serving)
        self._submit(member, session_id, request, owner, ids)
        return self.ops[(session_id, self._cxid)]

    def crash(self, member_id: int) -> None:
        """The member stops at once: what its disk had not made durable is lost, and so are
        its client connections."""
        member = self.members[member_id]
        self.note(f"crash {member_id}")
        self.clients.drop_at(member)
        member.replica = None
        member.executor = None
        member.incarnation += 1
        for other in self.members:
            if other != member_id:
                self._reset_link(member_id, other)

    def restart(self, member_id: int) -> None:
        """The member starts again from its disk."""
        self.note(f"restart {member_id}")
        self._boot(self.members[member_id])

    def partition(self, side: set[int]) -> None:
        """Cut every link between `side` and the rest."""
        self.note(f"partition {sorted(side)}")
        for a in side:
            for b in self.members:
                if b not in side:
                    self.blocked |= {(a, b), (b, a)}
                    self._reset_link(a, b)

    def heal(self) -> None:
        """Lift every partition."""
        self.note("heal")
        self.blocked.clear()

    # ---- the clients --------------------------------------------------------------------------

    def _serving_members(self) -> list[SimMember]:
        return [m for m in self.members.values() if m.replica is not None and m.replica.serving]

    def _maybe_client_op(self) -> None:
        if self.rng.random() > 0.5:
            return
        serving = self._serving_members()
        if not serving:
            return
        live = [s for s in self.sessions if s not in self.closed_sessions]
        request: WriteRequest
        roll = self.rng.random()
        if not live or roll < 0.05:
            session_id = self._next_session
            self._next_session += 1
            request = CreateSessionRequest(session_id, 1_000_000, b"pw")
            member = self.rng.choice(serving)
            owner = self.clients.connect(member, session_id)
            self._submit(member, session_id, request, owner)
            return
        session_id = self.rng.choice(live)
        if roll < 0.08:
            request = CloseSessionRequest()
            self.closed_sessions.add(session_id)
        elif roll < 0.3:
            request = CreateRequest(f"/e{self._cxid}", b"e", OPEN_ACL_UNSAFE, ephemeral=True)
        elif roll < 0.5:
            request = SetDataRequest("/counter", str(self._cxid).encode())
        elif roll < 0.55:  # reaped by the leader a while after, amid the faults
            request = CreateRequest(f"/t{self._cxid}", b"t", OPEN_ACL_UNSAFE, ttl_ms=TTL_MS)
        else:
            request = CreateRequest(f"/k{self._cxid}", str(self._cxid).encode(), OPEN_ACL_UNSAFE)
        member, owner = self._connection_for(session_id, serving)
        self._submit(member, session_id, request, owner)

    def _connection_for(self, session_id: int, serving: list[SimMember]) -> tuple[SimMember, int]:
        """The session's connection if it still stands (and the client stays), else a new one
        at a random serving member, attached before the request."""
        held = self.clients.standing(session_id)
        if held is not None and self.rng.random() < 0.8:
            member = self.members[held.member]
            if member in serving:
                return member, held.owner
        member = self.rng.choice(serving)
        owner = self.clients.connect(member, session_id)
        self._submit(member, session_id, AttachSessionRequest(), owner)
        return member, owner

    def _submit(
        self,
        member: SimMember,
        session_id: int,
        request: WriteRequest,
        owner: int,
        ids: frozenset[Id] = frozenset(),
    ) -> None:
        """A client's write at `member`, on the connection `owner` (0: none); the executor
        tells the client its outcome."""
        self._cxid += 1
        op = ClientOp(session_id, self._cxid, request, member.id, owner=owner)
        self.ops[(session_id, self._cxid)] = op
        assert member.replica is not None and member.executor is not None
        member.executor.expect_reply((session_id, self._cxid), functools.partial(self._reply, op))
        member.replica.submit(session_id, self._cxid, request, ids, owner=owner)
        self._after_input(member)

    def _reply(self, op: ClientOp, result: ApplyResult | None) -> None:
        """The client hears the outcome of its write."""
        if result is None:
            if op.outcome == "pending":
                op.outcome = "unknown"
            return
        zxid = result.record.zxid
        op.outcome = "ok" if result.result.error == Code.OK else "failed"
        op.zxid = zxid
        op.error = result.result.error
        reconfig = result.record.op
        also = parse_membership(reconfig.config).voters if type(reconfig) is Reconfig else None
        self._check_durable(zxid, also or frozenset())
        if not self.members[op.member].disk.holds(zxid):
            self._violation(f"member {op.member} answered {zxid:#x} before its own log held it")
        if isinstance(result.record.op, CreateSession) and op.outcome == "ok":
            self.sessions.append(op.session_id)
        member = self.members[op.member]
        assert member.replica is not None
        self.clients.replied(op, zxid, op.session_id in member.replica.tree.sessions)

    def _check_durable(self, zxid: int, also: frozenset[int] = frozenset()) -> None:
        """A record is answered only once a quorum of voters holds it durably: of the voters
        in force when it was proposed, and of `also` (a reconfig's new voters)."""
        for voters in (self.voters_at(zxid), also):
            if not voters:
                continue
            holding = sum(1 for i in voters if self.members[i].disk.holds(zxid))
            if holding < quorum_size(len(voters)):
                self._violation(
                    f"a reply for {zxid:#x} went out while only {holding} of voters "
                    f"{sorted(voters)} held it durably"
                )

    def _check_acknowledged(self, serving: list[SimMember], top: int) -> None:
        """Every acknowledged write is within the members' history, and every acknowledged
        create is on each member that has applied that far."""
        for op in self.ops.values():
            if op.outcome != "ok":
                continue
            if op.zxid > top:
                self._violation(f"acknowledged zxid {op.zxid:#x} is beyond every member")
            request = op.request
            if not isinstance(request, CreateRequest) or request.ephemeral or request.ttl_ms:
                continue
            for member in serving:
                assert member.replica is not None
                tree = member.replica.tree
                if tree.last_zxid >= op.zxid and tree.get(request.path) is None:
                    self._violation(f"acknowledged create {request.path} missing on {member.id}")

    def _check_ephemerals(self, serving: list[SimMember]) -> None:
        """No member keeps an ephemeral of a closed session."""
        for member in serving:
            assert member.replica is not None
            tree = member.replica.tree
            if any(session_id not in tree.sessions for session_id in tree.ephemerals):
                self._violation(f"member {member.id} keeps ephemerals of a closed session")

    def _check_fencing(self) -> None:
        """In the committed history, every write of a session came on the connection that
        created it or it was last attached to, within the epoch (a leader knows the owners of
        its own epoch only; every connection of an epoch attaches in it)."""
        owners: dict[int, int] = {}
        epoch = -1
        for zxid in sorted(self.committed):
            if zxid_epoch(zxid) != epoch:
                epoch, owners = zxid_epoch(zxid), {}
            record = decode_record(self.committed[zxid])
            op = self.ops.get((record.session_id, record.cxid))
            if op is None or type(record.op) is ErrorTxn:
                continue
            if type(record.op) is AttachSession or type(record.op) is CreateSession:
                owners[record.session_id] = op.owner
            elif owners.get(record.session_id, op.owner) != op.owner:
                self._violation(
                    f"{zxid:#x} applied a write of session {record.session_id} from a "
                    "connection it had left"
                )

    # ---- ending a run -----------------------------------------------------------------------

    def settle(self, ms: int = 4000) -> None:
        """Heal everything, restart everyone, and let the ensemble converge without faults."""
        self.heal()
        for member in self.members.values():
            if not member.alive:
                self.restart(member.id)
        self.run_until(self.now + ms, chaos=False, load=False)

    def check_final(self) -> dict[str, Any]:
        """After `settle`: every member serves the same tree, every acknowledged write is there,
        and no member holds an ephemeral of a closed session."""
        serving = self._serving_members()
        final_voters = self.voter_history[-1][1]
        voters = [m for m in serving if m.id in final_voters]
        if len(voters) < quorum_size(len(final_voters)):
            self._violation("the ensemble did not recover a serving quorum after healing")
        digests = {m.id: m.replica.tree.digest() for m in serving if m.replica is not None}
        last = {m.id: m.replica.tree.last_zxid for m in serving if m.replica is not None}
        if len(set(last.values())) == 1 and len(set(digests.values())) != 1:
            self._violation(f"members at the same zxid hold different trees: {digests}")
        top = max(last.values())
        self._check_acknowledged(serving, top)
        self._check_ephemerals(serving)
        self._check_fencing()
        outcomes: dict[str, int] = {}
        for op in self.ops.values():
            outcomes[op.outcome] = outcomes.get(op.outcome, 0) + 1
        events = self.clients.events
        return {
            "outcomes": outcomes,
            "leaders": dict(self.leaders),
            "last_zxid": top,
            "events": events,
        }


def run_seed(seed: int, *, duration_ms: int = 20_000, **settings: Any) -> dict[str, Any]:
    """One seeded run: chaos and load, then settle and check. Raises InvariantViolation."""
    sim = Simulation(seed, **settings)
    sim.run_until(duration_ms)
    sim.settle()
    return sim.check_final()


def main(argv: list[str] | None = None) -> int:
    """`python -m zkpy.testing.sim --seeds 0:500 --duration-ms 30000`: a long seeded sweep."""
    import argparse

    parser = argparse.ArgumentParser(description="Seeded sweep of the ensemble simulator.")
    parser.add_argument("--seeds", default="0:100", help="START:END (END excluded)")
    parser.add_argument("--duration-ms", type=int, default=20_000)
    parser.add_argument("--voters", type=int, default=3)
    parser.add_argument("--observers", type=int, default=0)
    parser.add_argument(
        "--reconfig",
        action="store_true",
        help="two spare members, and clients that add and remove members amid the faults",
    )
    args = parser.parse_args(argv)
    extra: dict[str, Any] = {}
    if args.reconfig:
        extra = {"spares": 2, "faults": Faults(reconfig=RECONFIG_RATE)}
    start, _sep, end = args.seeds.partition(":")
    failures = 0
    for seed in range(int(start), int(end)):
        try:
            result = run_seed(
                seed,
                duration_ms=args.duration_ms,
                voters=args.voters,
                observers=args.observers,
                **extra,
            )
        except InvariantViolation as err:
            failures += 1
            print(f"seed {seed}: VIOLATION {err}")
            continue
        print(
            f"seed {seed}: ok {result['outcomes']} epochs={len(result['leaders'])} "
            f"events={result['events']}"
        )
    print(f"{int(end) - int(start) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
