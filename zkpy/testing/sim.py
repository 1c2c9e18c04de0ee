"""A seeded simulator of a whole ensemble in one process, in virtual time.

Every member is the pure `Replica` with a simulated disk: what a Ready asks to persist becomes
durable only after a disk delay, and a crash loses whatever is not durable yet. The network has a
FIFO link per ordered pair of members. Faults: crash and restart, partitions and healing, link
resets (the TCP view of a lost message: the link drops what is in flight and both ends learn it
broke), link delays, and duplicated or reordered election notifications (which carry no order).

Invariants are checked as the run goes; the first violation raises `InvariantViolation` with the
seed, so `Simulation(seed=S).run(...)` replays it exactly.

Clients hold their session's connection at one member, as real ones do: the connection lasts
while that member serves (a member drops its clients when it stops), and a session that moves
to another member attaches there first (`AttachSessionRequest`, under a new owner). The final
check walks the committed history: no write may be applied from a connection the session had
left (SESSION_MOVED fencing), whatever the faults.
"""

from __future__ import annotations

import functools
import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zkpy.core.errors import Code
from zkpy.core.requests import (
    AttachSessionRequest,
    CloseSessionRequest,
    CreateRequest,
    CreateSessionRequest,
    SetDataRequest,
    WriteRequest,
)
from zkpy.core.tree import DataTree
from zkpy.core.txn import (
    AttachSession,
    CreateSession,
    ErrorTxn,
    TxnRecord,
    decode_record,
    encode_record,
)
from zkpy.core.types import OPEN_ACL_UNSAFE, zxid_epoch
from zkpy.zab.messages import Notification, PeerMessage, ServerState, Snapshot
from zkpy.zab.replica import Ready, Replica, ReplicaConfig


class InvariantViolation(AssertionError):
    pass


@dataclass(slots=True)
class SimDisk:
    """The durable state of one member, and what it has written but not yet synced."""

    accepted_epoch: int = 0
    current_epoch: int = 0
    snapshot: Snapshot = field(default_factory=lambda: Snapshot(0, (), ()))
    log: list[TxnRecord] = field(default_factory=list)
    log_floor: int = 0  # the log holds every record after this zxid (as the segment log does)

    def write(self, ready: Ready) -> None:
        if ready.epochs is not None:
            self.accepted_epoch, self.current_epoch = ready.epochs
        if ready.install is not None:
            self.snapshot = ready.install
            self.log = []
            self.log_floor = ready.install.zxid
        if ready.truncate_after is not None:
            self.log = [r for r in self.log if r.zxid <= ready.truncate_after]
        self.log.extend(ready.persist)

    def checkpoint(self, tree: DataTree, committed: int) -> None:
        """Fold the committed log into the snapshot, as the shell's checkpoints do."""
        if tree.last_zxid > committed or tree.last_zxid <= self.snapshot.zxid:
            return
        # as the shell's storage does, the log keeps the records after the previous checkpoint
        self.log_floor = self.snapshot.zxid
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
    id: int
    config: ReplicaConfig
    disk: SimDisk = field(default_factory=SimDisk)
    replica: Replica | None = None
    busy: bool = False  # a Ready is being made durable
    sending: bool = False  # a Ready's messages are going out: take no other Ready meanwhile
    incarnation: int = 0
    last_applied: int = 0
    serving_changes: int = 0  # client connections last only while this stays the same

    def boot(self, now_ms: int) -> None:
        self.replica = self.disk.replica(self.config, now_ms)
        self.busy = False
        self.incarnation += 1
        self.last_applied = self.replica.tree.last_zxid

    @property
    def alive(self) -> bool:
        return self.replica is not None


@dataclass(slots=True)
class Faults:
    """Probabilities per scheduling step (every `step_ms` of virtual time)."""

    crash: float = 0.004
    restart: float = 0.05
    partition: float = 0.003
    heal: float = 0.02
    reset_link: float = 0.005
    delay_ms: tuple[int, int] = (0, 6)
    duplicate_notification: float = 0.05
    disk_ms: tuple[int, int] = (1, 4)


@dataclass(slots=True)
class ClientOp:
    session_id: int
    cxid: int
    request: WriteRequest
    member: int
    outcome: str = "pending"  # pending / ok / failed / unknown
    zxid: int = 0
    error: int = 0
    owner: int = 0  # the client connection it was sent on


class Simulation:
    def __init__(
        self,
        seed: int,
        *,
        voters: int = 3,
        observers: int = 0,
        faults: Faults | None = None,
        tick_ms: int = 50,
        history_limit: int = 40,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = faults or Faults()
        self.now = 0
        self.tick_ms = tick_ms
        voter_ids = frozenset(range(1, voters + 1))
        observer_ids = frozenset(range(voters + 1, voters + observers + 1))
        self.members: dict[int, SimMember] = {}
        for member_id in sorted(voter_ids | observer_ids):
            config = ReplicaConfig(
                member_id,
                voter_ids,
                observer_ids,
                tick_ms=tick_ms,
                history_limit=history_limit,
            )
            self.members[member_id] = SimMember(member_id, config)
        self._events: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0
        self.links: dict[tuple[int, int], deque[tuple[int, int, PeerMessage]]] = {}
        self.link_generation: dict[tuple[int, int], int] = {}
        self.blocked: set[tuple[int, int]] = set()
        self.committed: dict[int, bytes] = {}
        self.leaders: dict[int, int] = {}
        self.ops: dict[tuple[int, int], ClientOp] = {}
        self.closed_sessions: set[int] = set()
        self.log: list[str] = []
        self._next_session = 1
        self.sessions: list[int] = []
        self._cxid = 0
        # session -> (member, its incarnation and serving changes then, owner) of its connection
        self.connections: dict[int, tuple[int, int, int, int]] = {}
        self._next_owner = 1
        for member in self.members.values():
            member.boot(self.now)
            self._after_input(member)
            self._schedule(self.rng.randint(0, tick_ms), functools.partial(self._tick, member))

    # ---- scheduling -------------------------------------------------------------------------

    def _schedule(self, delay: int, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._events, (self.now + delay, self._seq, action))

    def run_until(self, end_ms: int, *, chaos: bool = True, load: bool = True) -> None:
        step = 10
        next_step = self.now
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
        self.log.append(f"{self.now:>7} {text}")

    # ---- members ----------------------------------------------------------------------------

    def _tick(self, member: SimMember) -> None:
        if member.replica is not None:
            member.replica.tick(self.now)
            self._after_input(member)
        self._schedule(self.tick_ms, lambda: self._tick(member))

    def _after_input(self, member: SimMember) -> None:
        if member.busy or member.sending or member.replica is None:
            return
        replica = member.replica
        ready = replica.take_ready()
        if ready.serving_changed:
            member.serving_changes += 1
        self._check_ready(member, ready)
        if not ready:
            return
        # the shell's order: messages that promise nothing, persist, the rest of the messages,
        # then apply what was committed (while the disk works, inputs keep arriving)
        if ready.needs_storage:
            early, late = ready.split_messages()
            self._send_messages(member, early)
            ready.messages = late
            member.busy = True
            incarnation = member.incarnation
            delay = self.rng.randint(*self.faults.disk_ms)
            self._schedule(delay, lambda: self._durable(member, incarnation, ready))
        else:
            self._send_all(member, ready)
            self._answer(member, ready)
            self._after_input(member)

    def _durable(self, member: SimMember, incarnation: int, ready: Ready) -> None:
        if member.incarnation != incarnation or member.replica is None:
            return  # crashed meanwhile: the write never happened
        member.disk.write(ready)
        member.busy = False
        self._send_all(member, ready)
        self._answer(member, ready)
        if self.rng.random() < 0.1:
            member.disk.checkpoint(member.replica.tree, member.replica.commit_zxid)
        self._after_input(member)

    def _check_ready(self, member: SimMember, ready: Ready) -> None:
        """Checks made as a Ready is taken (tests extend it)."""
        replica = member.replica
        assert replica is not None
        if ready.serving_changed and replica.serving and replica.state is ServerState.LEADING:
            other = self.leaders.setdefault(replica.epoch, member.id)
            if other != member.id:
                self._violation(f"two leaders established in epoch {replica.epoch}")
            self.note(f"member {member.id} leads epoch {replica.epoch}")

    def _answer(self, member: SimMember, ready: Ready) -> None:
        replica = member.replica
        assert replica is not None
        for record in ready.committed:
            result = replica.apply(record)
            if record.zxid <= member.last_applied:
                self._violation(
                    f"member {member.id} applied {record.zxid:#x} after {member.last_applied:#x}"
                )
            member.last_applied = record.zxid
            encoded = encode_record(record)
            known = self.committed.setdefault(record.zxid, encoded)
            if known != encoded:
                self._violation(f"two different transactions committed at {record.zxid:#x}")
            op = self.ops.get((record.session_id, record.cxid))
            if op is not None and op.member == member.id and op.outcome == "pending":
                op.outcome = "ok" if result.result.error == Code.OK else "failed"
                op.zxid = record.zxid
                op.error = result.result.error
                if isinstance(record.op, CreateSession) and op.outcome == "ok":
                    self.sessions.append(record.session_id)
        for key in ready.rejected:
            op = self.ops.get(key)
            if op is not None and op.member == member.id and op.outcome == "pending":
                op.outcome = "unknown"

    def _violation(self, text: str) -> None:
        raise InvariantViolation(f"seed {self.seed}, t={self.now}ms: {text}")

    # ---- network ----------------------------------------------------------------------------

    def _send_all(self, member: SimMember, ready: Ready) -> None:
        self._send_messages(member, ready.messages)

    def _send_messages(self, member: SimMember, messages: list[tuple[int, PeerMessage]]) -> None:
        # A send to a dead or cut-off peer resets the link, which tells both ends at once; the
        # sender must not take its next Ready then, or that Ready's messages would overtake the
        # rest of these on their FIFO links. Its caller takes the next Ready afterwards.
        member.sending = True
        try:
            for target, message in messages:
                self._send(member.id, target, message)
        finally:
            member.sending = False

    def _send(self, source: int, target: int, message: PeerMessage) -> None:
        if (source, target) in self.blocked or not self.members[target].alive:
            if not isinstance(message, Notification):
                self._reset_link(source, target)
            return
        link = self.links.setdefault((source, target), deque())
        generation = self.link_generation.get((source, target), 0)
        link.append((generation, self._seq, message))
        delay = self.rng.randint(*self.faults.delay_ms)
        self._schedule(delay, lambda: self._deliver(source, target))
        if (
            isinstance(message, Notification)
            and self.rng.random() < self.faults.duplicate_notification
        ):
            later = self.rng.randint(0, 200)
            self._schedule(later, lambda: self._deliver_loose(source, target, message))

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

    def crash(self, member_id: int) -> None:
        member = self.members[member_id]
        self.note(f"crash {member_id}")
        member.replica = None
        member.busy = False
        member.incarnation += 1
        for other in self.members:
            if other != member_id:
                self._reset_link(member_id, other)

    def restart(self, member_id: int) -> None:
        self.note(f"restart {member_id}")
        member = self.members[member_id]
        member.boot(self.now)
        self._after_input(member)

    def partition(self, side: set[int]) -> None:
        self.note(f"partition {sorted(side)}")
        for a in side:
            for b in self.members:
                if b not in side:
                    self.blocked |= {(a, b), (b, a)}
                    self._reset_link(a, b)

    def heal(self) -> None:
        self.note("heal")
        self.blocked.clear()

    # ---- the client workload ----------------------------------------------------------------

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
            self._submit(member, session_id, request, self._connect(member, session_id))
            return
        session_id = self.rng.choice(live)
        if roll < 0.08:
            request = CloseSessionRequest()
            self.closed_sessions.add(session_id)
        elif roll < 0.3:
            request = CreateRequest(f"/e{self._cxid}", b"e", OPEN_ACL_UNSAFE, ephemeral=True)
        elif roll < 0.5:
            request = SetDataRequest("/counter", str(self._cxid).encode())
        else:
            request = CreateRequest(f"/k{self._cxid}", str(self._cxid).encode(), OPEN_ACL_UNSAFE)
        member, owner = self._connection_for(session_id, serving)
        self._submit(member, session_id, request, owner)

    def _connect(self, member: SimMember, session_id: int) -> int:
        """A new connection of `session_id` at `member`: its owner id."""
        owner = self._next_owner
        self._next_owner += 1
        self.connections[session_id] = (
            member.id,
            member.incarnation,
            member.serving_changes,
            owner,
        )
        return owner

    def _connection_for(self, session_id: int, serving: list[SimMember]) -> tuple[SimMember, int]:
        """The session's connection if it still stands (and the client stays), else a new one
        at a random serving member, attached before the request."""
        held = self.connections.get(session_id)
        if held is not None and self.rng.random() < 0.8:
            member = self.members[held[0]]
            if (member.incarnation, member.serving_changes) == held[1:3] and member in serving:
                return member, held[3]
        member = self.rng.choice(serving)
        owner = self._connect(member, session_id)
        self._submit(member, session_id, AttachSessionRequest(), owner)
        return member, owner

    def _submit(
        self, member: SimMember, session_id: int, request: WriteRequest, owner: int
    ) -> None:
        self._cxid += 1
        op = ClientOp(session_id, self._cxid, request, member.id, owner=owner)
        self.ops[(session_id, self._cxid)] = op
        assert member.replica is not None
        member.replica.submit(session_id, self._cxid, request, owner=owner)
        self._after_input(member)

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
        voters = [m for m in serving if m.id in m.config.voters]
        if len(voters) < len(self.members[1].config.voters) // 2 + 1:
            self._violation("the ensemble did not recover a serving quorum after healing")
        digests = {m.id: m.replica.tree.digest() for m in serving if m.replica is not None}
        last = {m.id: m.replica.tree.last_zxid for m in serving if m.replica is not None}
        if len(set(last.values())) == 1 and len(set(digests.values())) != 1:
            self._violation(f"members at the same zxid hold different trees: {digests}")
        top = max(last.values())
        for op in self.ops.values():
            if op.outcome != "ok":
                continue
            if op.zxid > top:
                self._violation(f"acknowledged zxid {op.zxid:#x} is beyond every member")
            request = op.request
            if isinstance(request, CreateRequest) and not request.ephemeral:
                for member in serving:
                    assert member.replica is not None
                    node = member.replica.tree.get(request.path)
                    if member.replica.tree.last_zxid >= op.zxid and node is None:
                        self._violation(
                            f"acknowledged create {request.path} missing on {member.id}"
                        )
        for member in serving:
            assert member.replica is not None
            tree = member.replica.tree
            for session_id in tree.ephemerals:
                if session_id not in tree.sessions:
                    self._violation(f"member {member.id} keeps ephemerals of a closed session")
        self._check_fencing()
        outcomes: dict[str, int] = {}
        for op in self.ops.values():
            outcomes[op.outcome] = outcomes.get(op.outcome, 0) + 1
        return {"outcomes": outcomes, "leaders": dict(self.leaders), "last_zxid": top}


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
    args = parser.parse_args(argv)
    start, _sep, end = args.seeds.partition(":")
    failures = 0
    for seed in range(int(start), int(end)):
        try:
            result = run_seed(
                seed,
                duration_ms=args.duration_ms,
                voters=args.voters,
                observers=args.observers,
            )
        except InvariantViolation as err:
            failures += 1
            print(f"seed {seed}: VIOLATION {err}")
            continue
        print(f"seed {seed}: ok {result['outcomes']} epochs={len(result['leaders'])}")
    print(f"{int(end) - int(start) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
