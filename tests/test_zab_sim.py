"""The seeded ensemble simulator (zkpy.testing.sim): sweeps, exact replay, a hypothesis state
machine driving the faults, and mutations of the protocol that the checker must catch.

On top of the simulator's own invariants (checked as it runs: one leader per epoch, one record per
zxid, monotonic applies; and at the end: acknowledged writes present, no orphan ephemerals) the
tests here check, after settling:
- every member is up, serving, and holds the same tree at the same zxid;
- no member skipped a committed transaction: between two records it applied in a row (or after
  the snapshot it started from), no other committed zxid exists;
- no local client is left waiting (`Replica.outstanding` is 0 everywhere).
Every failure message names the seed, so `Simulation(seed)` replays it.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import zkpy
from zkpy.core.requests import (
    CloseSessionRequest,
    CreateRequest,
    CreateSessionRequest,
    SetDataRequest,
    WriteRequest,
)
from zkpy.core.tree import DataTree
from zkpy.core.types import OPEN_ACL_UNSAFE
from zkpy.testing.sim import (
    Faults,
    InvariantViolation,
    SimMember,
    Simulation,
)
from zkpy.zab import leader
from zkpy.zab.leader import Leading
from zkpy.zab.messages import PeerMessage, ServerState, SyncMode
from zkpy.zab.replica import Ready

QUIET = Faults(
    crash=0,
    restart=0,
    partition=0,
    heal=0,
    reset_link=0,
    delay_ms=(0, 6),
    duplicate_notification=0.05,
    disk_ms=(1, 4),
)


class CheckedSimulation(Simulation):
    """The simulator, recording what each member applied (tree by tree), and checking that it
    drives members as the Ready contract says: no Ready is taken before the previous one is
    durable, and each peer gets a member's messages in the order its Readies hold them."""

    def __init__(self, seed: int, **kw: Any) -> None:
        # filled in before Simulation.__init__ boots the members
        self.runs: dict[int, list[list[int]]] = {}
        self._trees: dict[int, DataTree] = {}
        self._undurable: set[int] = set()
        self._outbox: dict[tuple[int, int], deque[PeerMessage]] = {}
        super().__init__(seed, **kw)

    def _check_ready(self, member: SimMember, ready: Ready) -> None:
        replica = member.replica
        assert replica is not None
        if member.id in self._undurable:
            self.fail(f"member {member.id} took a Ready before its previous one was durable")
        if ready.needs_storage:
            self._undurable.add(member.id)
        for target, message in ready.messages:
            self._outbox.setdefault((member.id, target), deque()).append(message)
        if self._trees.get(member.id) is not replica.tree:  # booted, or installed a snapshot
            self._trees[member.id] = replica.tree
            self.runs.setdefault(member.id, []).append([replica.tree.last_zxid])
        self.runs[member.id][-1].extend(record.zxid for record in ready.committed)
        super()._check_ready(member, ready)

    def _durable(self, member: SimMember, incarnation: int, ready: Ready) -> None:
        if member.incarnation == incarnation:
            self._undurable.discard(member.id)
        super()._durable(member, incarnation, ready)

    def _send(self, source: int, target: int, message: PeerMessage) -> None:
        queue = self._outbox.get((source, target))
        if not queue or queue.popleft() is not message:
            self.fail(f"member {source} sent {type(message).__name__} to {target} out of order")
        super()._send(source, target, message)

    def crash(self, member_id: int) -> None:
        self._undurable.discard(member_id)  # the Ready it was writing, and its messages, are lost
        for link in [link for link in self._outbox if link[0] == member_id]:
            del self._outbox[link]
        super().crash(member_id)

    def fail(self, text: str) -> None:
        raise InvariantViolation(f"seed {self.seed}, t={self.now}ms: {text}")

    def check_no_skips(self) -> None:
        committed = sorted(self.committed)
        for member_id, runs in sorted(self.runs.items()):
            for run in runs:
                for before, after in itertools.pairwise(run):
                    low = bisect.bisect_right(committed, before)
                    high = bisect.bisect_left(committed, after)
                    if high > low:
                        skipped = ", ".join(f"{z:#x}" for z in committed[low:high][:3])
                        self.fail(
                            f"member {member_id} applied {after:#x} right after {before:#x}, "
                            f"skipping committed {skipped}"
                        )

    def check_converged(self) -> dict[str, Any]:
        """After settle(): the simulator's own final check, and the stronger ones above."""
        result = self.check_final()
        states = {
            i: (m.replica.role, m.replica.phase.value) if m.replica else "down"
            for i, m in self.members.items()
        }
        if not all(m.replica is not None and m.replica.serving for m in self.members.values()):
            self.fail(f"not every member serves after settling: {states}")
        trees = {
            i: (hex(m.replica.tree.last_zxid), m.replica.tree.digest())
            for i, m in self.members.items()
            if m.replica is not None
        }
        if len(set(trees.values())) != 1:
            self.fail(f"members differ after settling: {trees}")
        waiting = {
            i: m.replica.outstanding
            for i, m in self.members.items()
            if m.replica is not None and m.replica.outstanding
        }
        if waiting:
            self.fail(f"requests left unanswered after settling: {waiting}")
        self.check_no_skips()
        return result


class StallingSimulation(CheckedSimulation):
    """Adds what the simulator's faults lack: a member that stalls (a long GC pause, a stuck
    disk): it neither ticks nor handles anything while its links stay up and its inbox queues,
    then resumes. A link that breaks meanwhile is news it handles first when it resumes. Ticks
    also jitter a little, so members' clocks drift apart."""

    def __init__(
        self, seed: int, *, stall: float = 0.01, stall_ms: tuple[int, int] = (100, 700), **kw: Any
    ) -> None:
        self.stall_chance = stall
        self.stall_ms = stall_ms
        self.stalled_until: dict[int, int] = {}
        self.broken_meanwhile: dict[int, list[int]] = {}
        super().__init__(seed, **kw)

    def _awake(self, member_id: int, action: Any) -> bool:
        """False (and `action` retried on resuming) while the member is stalled."""
        until = self.stalled_until.get(member_id, 0)
        if until > self.now:
            self._schedule(until - self.now, action)
            return False
        member = self.members[member_id]
        for peer in self.broken_meanwhile.pop(member_id, []):
            if member.replica is not None:
                member.replica.disconnected(peer)
                super()._after_input(member)
        return True

    def _tick(self, member: SimMember) -> None:
        if member.replica is not None and self.stalled_until.get(member.id, 0) <= self.now:
            self._awake(member.id, None)
            member.replica.tick(self.now)
            self._after_input(member)
        jitter = self.rng.randint(-self.tick_ms // 5, self.tick_ms // 5)
        self._schedule(self.tick_ms + jitter, lambda: self._tick(member))

    def _deliver(self, source: int, target: int) -> None:
        if self._awake(target, lambda: self._deliver(source, target)):
            super()._deliver(source, target)

    def _deliver_loose(self, source: int, target: int, message: PeerMessage) -> None:
        if self._awake(target, lambda: self._deliver_loose(source, target, message)):
            super()._deliver_loose(source, target, message)

    def _durable(self, member: SimMember, incarnation: int, ready: Ready) -> None:
        if self._awake(member.id, lambda: self._durable(member, incarnation, ready)):
            super()._durable(member, incarnation, ready)

    def _after_input(self, member: SimMember) -> None:
        if self.stalled_until.get(member.id, 0) <= self.now:
            super()._after_input(member)

    def _reset_link(self, a: int, b: int) -> None:
        stalled = [i for i in (a, b) if self.stalled_until.get(i, 0) > self.now]
        if not stalled:
            super()._reset_link(a, b)
            return
        for pair in ((a, b), (b, a)):
            self.link_generation[pair] = self.link_generation.get(pair, 0) + 1
            self.links.pop(pair, None)
        for here, there in ((a, b), (b, a)):
            member = self.members[here]
            if here in stalled:
                self.broken_meanwhile.setdefault(here, []).append(there)
            elif member.replica is not None:
                member.replica.disconnected(there)
                self._after_input(member)

    def crash(self, member_id: int) -> None:
        self.broken_meanwhile.pop(member_id, None)
        super().crash(member_id)

    def _serving_members(self) -> list[SimMember]:
        return [
            m for m in super()._serving_members() if self.stalled_until.get(m.id, 0) <= self.now
        ]

    def _maybe_fault(self) -> None:
        super()._maybe_fault()
        if self.rng.random() < self.stall_chance:
            victim = self.rng.choice(sorted(self.members))
            until = self.now + self.rng.randint(*self.stall_ms)
            self.stalled_until[victim] = max(until, self.stalled_until.get(victim, 0))
            self.note(f"stall {victim} until {until}")

    def settle(self, ms: int = 4000) -> None:
        self.stall_chance = 0
        super().settle(ms)


def run_checked(
    seed: int, duration_ms: int, cls: type[CheckedSimulation] = CheckedSimulation, **settings: Any
) -> dict[str, Any]:
    """One seeded run with chaos and load, settled and checked. Any failure names the seed."""
    sim = cls(seed, **settings)
    try:
        sim.run_until(duration_ms)
        sim.settle()
        return sim.check_converged()
    except InvariantViolation:
        raise
    except Exception as err:  # a replica that raises is a failure of this seed too
        raise AssertionError(f"seed {seed}, t={sim.now}ms: {type(err).__name__}: {err}") from err


# ---- seeded sweeps -------------------------------------------------------------------------------


def test_sweep_three_voters() -> None:
    commits = 0
    for seed in range(25):
        result = run_checked(seed, 8_000)
        commits += result["outcomes"].get("ok", 0)
        assert len(result["leaders"]) >= 1
    assert commits > 25 * 100, "the runs did real work"


def test_sweep_five_voters_and_an_observer() -> None:
    for seed in range(6):
        run_checked(seed, 8_000, voters=5, observers=1)


HARSH = Faults(
    crash=0.01,
    restart=0.05,
    partition=0.01,
    heal=0.02,
    reset_link=0.02,
    delay_ms=(0, 30),
    disk_ms=(1, 40),
)


@pytest.mark.parametrize(
    ("voters", "observers", "seeds", "stall", "stall_ms"),
    [(3, 0, range(70), 0.02, (100, 600)), (5, 1, range(10), 0.01, (200, 700))],
)
def test_sweep_with_stalled_members_and_harsher_faults(
    voters: int, observers: int, seeds: range, stall: float, stall_ms: tuple[int, int]
) -> None:
    """Stalls are how a follower times out while its link stays up (and a slow clock lets a
    prospective leader linger): the paths of the hand-made scenarios in test_zab_replica.py."""
    stalls = 0
    for seed in seeds:
        sim = StallingSimulation(
            seed, voters=voters, observers=observers, faults=HARSH, stall=stall, stall_ms=stall_ms
        )
        try:
            sim.run_until(8_000)
            sim.settle()
            sim.check_converged()
        except InvariantViolation:
            raise
        except Exception as err:
            raise AssertionError(f"seed {seed} (stalling): {type(err).__name__}: {err}") from err
        stalls += sum(" stall " in line for line in sim.log)
    assert stalls > len(seeds), "the stall fault fired"


def test_sweep_with_messages_lost_and_overtaken_apart_from_partitions() -> None:
    """Lost messages and links that fall behind, at high rates and with no other fault."""
    faults = Faults(crash=0, restart=0, partition=0, heal=0, reset_link=0, drop=0.01, reorder=0.05)
    counts = {"lost": 0, "held back": 0, "out of order": 0}
    events = 0
    for seed in range(10):
        sim = CheckedSimulation(seed, faults=faults)
        sim.run_until(6_000)
        sim.settle()
        result = sim.check_converged()
        events += result["events"]
        for kind, count in sim.message_fault_counts.items():
            counts[kind] += count
    assert all(count > 10 for count in counts.values()), counts
    assert events > 1_000, "the clients' watches fired"


# ---- replay --------------------------------------------------------------------------------------


def test_a_seed_replays_exactly() -> None:
    def run(seed: int) -> tuple[list[str], dict[str, Any], dict[int, bytes], list[str]]:
        sim = CheckedSimulation(seed)
        sim.run_until(6_000)
        sim.settle()
        result = sim.check_converged()
        digests = [m.replica.tree.digest() for m in sim.members.values() if m.replica]
        return sim.log, result, dict(sim.committed), digests

    first = run(11)
    second = run(11)
    assert first[0] == second[0]
    assert len(first[0]) >= 5, "the run met faults and an election to replay"
    assert first[1] == second[1]
    assert first[2] == second[2]
    assert first[3] == second[3]
    assert run(12)[0] != first[0], "another seed is another run"


# ---- the checker catches broken protocols --------------------------------------------------------


def first_violation(seeds: range, duration_ms: int = 8_000) -> int | None:
    """The first seed whose run fails: an invariant broken, or a replica raising on history
    that diverged (e.g. a reap that names a node the member's tree lacks)."""
    for seed in seeds:
        try:
            run_checked(seed, duration_ms)
        except AssertionError as err:  # InvariantViolation, or what `run_checked` wraps
            violation = str(err)
        else:
            continue
        assert f"seed {seed}" in violation
        return seed
    return None


# These break the leader on purpose by patching its role (zkpy.zab.leader); in the compiled
# build, compiled code calls its own functions and methods directly, past the patch. They test
# the simulator, which is the same in both builds.
breaks_replica = pytest.mark.skipif(
    zkpy.compiled(),
    reason="patches the leader, which compiled code calls past the patch (setup.py)",
)


@breaks_replica
def test_a_leader_that_commits_without_a_quorum_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leader, "quorum_size", lambda voters: 1)
    assert first_violation(range(12)) is not None


@breaks_replica
def test_a_leader_that_always_syncs_by_diff_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def always_diff(self: Leading, peer: Any) -> tuple[SyncMode, int, None, int]:
        return SyncMode.DIFF, 0, None, peer.last_zxid

    monkeypatch.setattr(Leading, "_sync_plan", always_diff)
    assert first_violation(range(12)) is not None


# ---- hypothesis drives the faults ----------------------------------------------------------------

MEMBER = st.integers(1, 4)


class EnsembleMachine(RuleBasedStateMachine):
    """Three voters (and maybe an observer); hypothesis picks the faults, the time and the load."""

    def __init__(self) -> None:
        super().__init__()
        self.sim: CheckedSimulation | None = None

    @initialize(seed=st.integers(0, 2**20), observer=st.booleans())
    def start(self, seed: int, observer: bool) -> None:
        self.sim = CheckedSimulation(seed, voters=3, observers=int(observer), faults=QUIET)
        self.sim.run_until(1_000, chaos=False, load=False)  # a first leader, usually

    @property
    def s(self) -> CheckedSimulation:
        assert self.sim is not None
        return self.sim

    def _member(self, number: int) -> int:
        return (number - 1) % len(self.s.members) + 1

    @rule(ms=st.integers(5, 2000))
    def advance(self, ms: int) -> None:
        self.s.run_until(self.s.now + ms, chaos=False, load=False)

    @rule(number=MEMBER)
    def crash(self, number: int) -> None:
        member = self.s.members[self._member(number)]
        if member.alive:
            self.s.crash(member.id)

    @rule(number=MEMBER)
    def restart(self, number: int) -> None:
        member = self.s.members[self._member(number)]
        if not member.alive:
            self.s.restart(member.id)

    @rule(side=st.sets(MEMBER, min_size=1, max_size=2))
    def partition(self, side: set[int]) -> None:
        self.s.partition({self._member(n) for n in side})

    @precondition(lambda self: self.sim is not None and bool(self.sim.blocked))
    @rule()
    def heal(self) -> None:
        self.s.heal()

    @rule(a=MEMBER, b=MEMBER)
    def reset_link(self, a: int, b: int) -> None:
        a, b = self._member(a), self._member(b)
        if a != b:
            self.s._reset_link(a, b)

    @rule(
        number=MEMBER,
        kinds=st.lists(
            st.sampled_from(["session", "create", "ephemeral", "set", "close"]),
            min_size=1,
            max_size=6,
        ),
    )
    def write(self, number: int, kinds: list[str]) -> None:
        """Writes at a serving member if there is one (else they are rejected), then 30 ms."""
        serving = [m for m in self.s.members.values() if m.replica and m.replica.serving]
        pool = serving or [m for m in self.s.members.values() if m.replica]
        if pool:
            member = pool[number % len(pool)]
            for kind in kinds:
                submit_write(self.s, member, kind)
        self.s.run_until(self.s.now + 30, chaos=False, load=False)

    @invariant()
    def one_leader_per_epoch(self) -> None:
        if self.sim is None:
            return
        leading: dict[int, int] = {}
        for member in self.s.members.values():
            replica = member.replica
            if replica is None or replica.state is not ServerState.LEADING or not replica.serving:
                continue
            assert replica.epoch not in leading, f"seed {self.s.seed}: two leaders now"
            leading[replica.epoch] = member.id
            assert self.s.leaders.get(replica.epoch) == member.id, (
                f"seed {self.s.seed}: {member.id} leads epoch {replica.epoch}, "
                f"recorded for {self.s.leaders.get(replica.epoch)}"
            )

    def teardown(self) -> None:
        if self.sim is not None:
            self.sim.settle()
            self.sim.check_converged()


def submit_write(sim: Simulation, member: SimMember, kind: str) -> None:
    """A client write at `member`, booked the way the simulator books its own load."""
    assert member.replica is not None
    live = [s for s in sim.sessions if s not in sim.closed_sessions]
    cxid = sim._cxid + 1
    request: WriteRequest
    if kind == "session" or not live:
        session_id = sim._next_session
        sim._next_session += 1
        request = CreateSessionRequest(session_id, 1_000_000, b"pw")
    else:
        session_id = live[cxid % len(live)]
        if kind == "close":
            request = CloseSessionRequest()
            sim.closed_sessions.add(session_id)
        elif kind == "set":
            request = SetDataRequest(f"/k{cxid - 1}", b"v")
        else:
            request = CreateRequest(
                f"/k{cxid}", b"d", OPEN_ACL_UNSAFE, ephemeral=kind == "ephemeral"
            )
    sim._submit(member, session_id, request, owner=0)


TestEnsembleMachine = EnsembleMachine.TestCase
TestEnsembleMachine.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
