"""Membership changes (reconfig) in the seeded simulator: hand-made scenarios (grow 3 to 5 and
back under load, refusals, a removed leader, a restart that keeps the committed membership) and
seeded sweeps that mix reconfigs with crashes, partitions and lost messages.

The simulator checks as it runs that a reply goes out only once its record is durable on a
quorum of the voters in force when it was proposed, and, for a reconfig, on a quorum of its new
voters too; at most one leader per epoch whatever the membership; and one record per zxid.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.test_zab_replica import Cluster, disk
from tests.test_zab_sim import HARSH, StallingSimulation, breaks_replica
from zkpy.core.acl import SUPER_ID
from zkpy.core.errors import Code
from zkpy.core.membership import CONFIG_PATH, Membership, MemberSpec, parse_membership
from zkpy.core.requests import ReconfigRequest
from zkpy.core.tree import DataTree
from zkpy.core.txn import Create, Reconfig, TxnRecord
from zkpy.core.types import OPEN_ACL_UNSAFE, Id, make_zxid
from zkpy.testing.sim import (
    RECONFIG_RATE,
    ClientOp,
    Faults,
    InvariantViolation,
    SimDisk,
    Simulation,
)
from zkpy.zab import leader as leader_module
from zkpy.zab.leader import Leading
from zkpy.zab.messages import ServerState, Snapshot

QUIET = Faults(
    crash=0, restart=0, partition=0, heal=0, reset_link=0, duplicate_notification=0, drop=0
)


def spec(member_id: int, *, observer: bool = False) -> MemberSpec:
    return MemberSpec(member_id, "sim", 1, 1, observer=observer)


def started(seed: int = 1, **kw: Any) -> Simulation:
    """A simulation of three voters and two spare members, serving, with a few sessions."""
    sim = Simulation(seed, faults=QUIET, spares=2, **kw)
    sim.run_until(1_500, chaos=False)
    assert sim.sessions, "the load opened sessions"
    return sim


def reconfig(
    sim: Simulation,
    request: ReconfigRequest,
    ids: frozenset[Id] = frozenset({SUPER_ID}),
    ms: int = 800,
) -> ClientOp:
    op = sim.submit_reconfig(request, ids)
    assert op is not None
    sim.run_until(sim.now + ms, chaos=False)
    return op


def leader_of(sim: Simulation) -> int:
    leaders = [
        i
        for i, m in sim.members.items()
        if m.replica is not None and m.replica.state is ServerState.LEADING and m.replica.serving
    ]
    assert len(leaders) == 1, leaders
    return leaders[0]


def voters_everywhere(sim: Simulation) -> set[frozenset[int]]:
    return {m.replica.config.voters for m in sim.members.values() if m.replica is not None}


def serving(sim: Simulation) -> set[int]:
    return {i for i, m in sim.members.items() if m.replica is not None and m.replica.serving}


def test_grow_three_to_five_and_back_while_writes_flow() -> None:
    sim = started()
    assert serving(sim) == {1, 2, 3}, "spares catch up but serve no clients"
    ok_before = sum(op.outcome == "ok" for op in sim.ops.values())
    grow = reconfig(sim, ReconfigRequest(add=(spec(4), spec(5))))
    assert (grow.outcome, grow.error) == ("ok", Code.OK)
    assert voters_everywhere(sim) == {frozenset({1, 2, 3, 4, 5})}
    assert serving(sim) == {1, 2, 3, 4, 5}
    shrink = reconfig(sim, ReconfigRequest(remove=(4, 5)))
    assert shrink.outcome == "ok"
    assert voters_everywhere(sim) == {frozenset({1, 2, 3})}
    assert serving(sim) == {1, 2, 3}
    ok_after = sum(op.outcome == "ok" for op in sim.ops.values())
    assert ok_after > ok_before + 20, "writes kept flowing through both changes"
    sim.settle()
    sim.check_final()
    tree = sim.members[1].replica.tree  # type: ignore[union-attr]
    node = tree.get(CONFIG_PATH)
    assert node is not None
    committed = parse_membership(node.data or b"")
    assert committed.voters == {1, 2, 3}
    assert committed.version == shrink.zxid == node.mzxid, "the version is the committing zxid"


def test_a_change_that_leaves_no_voter_is_refused() -> None:
    sim = started()
    op = reconfig(sim, ReconfigRequest(remove=(1, 2, 3)))
    assert (op.outcome, op.error) == ("failed", Code.BAD_ARGUMENTS)
    assert voters_everywhere(sim) == {frozenset({1, 2, 3})}


def test_a_change_without_a_live_quorum_of_new_voters_is_refused() -> None:
    sim = started()
    sim.crash(4)
    sim.crash(5)
    sim.run_until(sim.now + 300, chaos=False)
    op = reconfig(sim, ReconfigRequest(add=(spec(4), spec(5)), remove=(3,)))
    assert (op.outcome, op.error) == ("failed", Code.NEW_CONFIG_NO_QUORUM)
    assert voters_everywhere(sim) - {frozenset({1, 2, 3})} == set()


def test_two_concurrent_changes_do_not_both_win() -> None:
    sim = started()
    first = sim.submit_reconfig(ReconfigRequest(add=(spec(4),)))
    second = sim.submit_reconfig(ReconfigRequest(add=(spec(5),)))
    assert first is not None
    assert second is not None
    sim.run_until(sim.now + 800, chaos=False)
    outcomes = sorted([(first.outcome, first.error), (second.outcome, second.error)])
    assert outcomes == [("failed", Code.RECONFIG_IN_PROGRESS), ("ok", Code.OK)]
    assert len(voters_everywhere(sim)) == 1
    (voters,) = voters_everywhere(sim)
    assert len(voters) == 4


def test_a_stale_version_is_refused() -> None:
    sim = started()
    first = reconfig(sim, ReconfigRequest(add=(spec(4),)))
    assert first.outcome == "ok"
    stale = reconfig(sim, ReconfigRequest(add=(spec(5),), from_version=0))
    assert (stale.outcome, stale.error) == ("failed", Code.BAD_VERSION)
    current = reconfig(sim, ReconfigRequest(add=(spec(5),), from_version=first.zxid))
    assert current.outcome == "ok"


def test_only_the_super_user_may_change_the_membership() -> None:
    sim = started()
    op = reconfig(sim, ReconfigRequest(add=(spec(4),)), ids=frozenset())
    assert (op.outcome, op.error) == ("failed", Code.NO_AUTH)


def test_a_removed_leader_hands_over_to_the_remaining_voters() -> None:
    sim = started()
    old = leader_of(sim)
    op = reconfig(sim, ReconfigRequest(remove=(old,)), ms=2_000)
    assert op.outcome == "ok"
    new = leader_of(sim)
    assert new != old
    assert old not in serving(sim)
    ok_before = sum(o.outcome == "ok" for o in sim.ops.values())
    sim.run_until(sim.now + 1_000, chaos=False)
    assert sum(o.outcome == "ok" for o in sim.ops.values()) > ok_before + 10


def test_the_followers_of_a_removed_leader_elect_at_once() -> None:
    """They apply the change as their leader does and elect without it, rather than wait
    `sync_limit` ticks for its silence."""
    tick_ms = 50
    for seed in range(5):
        sim = started(seed, tick_ms=tick_ms)
        old = leader_of(sim)
        op = sim.submit_reconfig(ReconfigRequest(remove=(old,)))
        assert op is not None
        start = sim.now
        while not (op.outcome == "ok" and new_leader(sim, old)):
            assert sim.now - start < 5 * tick_ms, f"seed {seed}: no new leader within 5 ticks"
            sim.run_until(sim.now + 10, chaos=False)


def new_leader(sim: Simulation, old: int) -> bool:
    return any(
        i != old and m.replica is not None and m.replica.state is ServerState.LEADING
        for i, m in sim.members.items()
        if m.replica is not None and m.replica.serving
    )


def test_an_observer_is_added_and_serves_without_voting() -> None:
    sim = started()
    op = reconfig(sim, ReconfigRequest(add=(spec(4, observer=True),)))
    assert op.outcome == "ok"
    replica = sim.members[4].replica
    assert replica is not None
    assert replica.state is ServerState.OBSERVING
    assert replica.serving
    assert voters_everywhere(sim) == {frozenset({1, 2, 3})}


def test_a_restart_uses_the_committed_membership_over_the_initial_one() -> None:
    """The members restart with their initial configuration (the TOML's, for real members):
    the membership their data holds wins."""
    sim = started()
    assert reconfig(sim, ReconfigRequest(add=(spec(4), spec(5)), remove=(1,))).outcome == "ok"
    sim.run_until(sim.now + 3_000, chaos=False)  # checkpoints fold the log into the snapshot
    for member_id in list(sim.members):
        sim.crash(member_id)
    for member_id in list(sim.members):
        sim.restart(member_id)
    sim.run_until(sim.now + 3_000, chaos=False)
    assert voters_everywhere(sim) == {frozenset({2, 3, 4, 5})}
    assert serving(sim) == {2, 3, 4, 5}
    sim.settle()
    sim.check_final()


def reconfig_sweep(seeds: range, duration_ms: int, **kw: Any) -> dict[str, int]:
    """Seeded runs with reconfigs amid the default faults: each settled and checked (every
    member up and serving if in the final membership, every member at the same tree, nothing
    left unanswered). The counts of what the reconfigs came to."""
    counts: dict[str, int] = {}
    for seed in seeds:
        sim = Simulation(seed, spares=2, faults=Faults(reconfig=RECONFIG_RATE), **kw)
        try:
            sim.run_until(duration_ms)
            sim.settle()
            sim.check_final()
            check_converged(sim)
        except InvariantViolation:
            raise
        except Exception as err:
            raise AssertionError(f"seed {seed}: {type(err).__name__}: {err}") from err
        for op in sim.ops.values():
            if isinstance(op.request, ReconfigRequest):
                key = op.outcome if op.outcome != "failed" else Code(op.error).name
                counts[key] = counts.get(key, 0) + 1
        counts["changes"] = counts.get("changes", 0) + len(sim.voter_history) - 1
    return counts


def check_converged(sim: Simulation) -> None:
    final = sim.voter_history[-1][1]
    members = sim.members[min(final)].replica
    assert members is not None
    in_force = members.config.members
    trees = {
        i: (hex(m.replica.tree.last_zxid), m.replica.tree.digest())
        for i, m in sim.members.items()
        if m.replica is not None
    }
    assert len(set(trees.values())) == 1, f"seed {sim.seed}: members differ: {trees}"
    assert serving(sim) == set(in_force), f"seed {sim.seed}: {serving(sim)} serve, not {in_force}"
    waiting = {i: m.replica.outstanding for i, m in sim.members.items() if m.replica is not None}
    assert not any(waiting.values()), f"seed {sim.seed}: left unanswered: {waiting}"


def test_sweep_reconfigs_amid_faults() -> None:
    counts = reconfig_sweep(range(30), 8_000)
    assert counts["changes"] > 60, counts
    for outcome in ("ok", "RECONFIG_IN_PROGRESS", "NEW_CONFIG_NO_QUORUM", "BAD_VERSION"):
        assert counts.get(outcome, 0) > 0, counts


def test_sweep_reconfigs_with_an_observer() -> None:
    reconfig_sweep(range(100, 110), 8_000, observers=1)


@breaks_replica
def test_a_leader_that_commits_a_reconfig_on_the_old_quorum_alone_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The checks catch a leader that ignores the new voters' quorum: the new voters are cut
    off right after the proposal, so only the old quorum can hold it."""

    def old_quorum_only(self: Leading, member: int, zxid: int) -> None:
        self.pending = None
        original(self, member, zxid)

    original = Leading._count_ack
    monkeypatch.setattr(leader_module.Leading, "_count_ack", old_quorum_only)
    with pytest.raises(InvariantViolation, match="held it durably"):
        cut_off_new_voters(range(20))


def cut_off_new_voters(seeds: range) -> None:
    """In each seed: replace the leader and one other voter with the two spares, then cut the
    remaining old voter and the spares off before any of them logs the change."""
    for seed in seeds:
        sim = started(seed)
        leader = leader_of(sim)
        kept, dropped = sorted({1, 2, 3} - {leader})
        request = ReconfigRequest(add=(spec(4), spec(5)), remove=(leader, dropped))
        if sim.submit_reconfig(request) is None:
            continue  # no session lives at this moment of this seed
        sim.partition({kept, 4, 5})
        sim.run_until(sim.now + 1_000, chaos=False)
        sim.settle()
        sim.check_final()


def test_cutting_off_the_new_voters_is_safe() -> None:
    """The same scenario with the real leader: no violation, whatever the outcome."""
    cut_off_new_voters(range(20))


def test_a_leader_with_a_reconfig_in_its_log_is_established_by_both_quorums() -> None:
    """Voters 1 and 2 and observers 3 and 4; a reconfig that makes all four voters is logged on
    2, 3 and 4 but was never committed. Establishing the next epoch commits it, so the leader
    needs a quorum of the new voters too, which only the observers can complete: it takes
    them in during discovery, and they become voters. (The election counts the observers'
    votes too, as voters of the logged reconfig, so one of them may lead.)"""
    four = Membership(tuple(spec(i) for i in (1, 2, 3, 4)), 0)
    logged = TxnRecord(make_zxid(1, 1), 0, 0, 0, Reconfig(four.encode()))
    disks = {i: disk([logged], accepted=1) for i in (2, 3, 4)}
    disks[1] = disk([], accepted=1)
    cluster = Cluster(voters=2, observers=2, disks=disks)
    cluster.settle()
    assert cluster.serving_leader() in {2, 3, 4}, "a member that logged the reconfig leads"
    for i in (1, 2, 3, 4):
        replica = cluster.r(i)
        assert replica.config.voters == {1, 2, 3, 4}
        assert replica.state in (ServerState.LEADING, ServerState.FOLLOWING)
    cluster.assert_identical()
    cluster.assert_one_leader_per_epoch()


def test_a_member_that_missed_a_commit_finds_a_leader_it_does_not_know() -> None:
    """Member 3 restarts with {1, 2, 3} in its checkpoint and, uncommitted in its log, the
    reconfig that added 4 and 5; meanwhile 5 leads the five. It must reach 5 (a member of
    the logged reconfig) and follow it, as the voters it knows do."""
    three = Membership(tuple(spec(i) for i in (1, 2, 3)), make_zxid(1, 1))
    five = Membership(tuple(spec(i) for i in (1, 2, 3, 4, 5)), make_zxid(1, 2))
    first = TxnRecord(make_zxid(1, 1), 0, 0, 0, Reconfig(three.encode()))
    second = TxnRecord(make_zxid(1, 2), 0, 0, 0, Reconfig(five.encode()))
    tree = DataTree()
    tree.apply(first)
    stale = Snapshot(tree.last_zxid, tuple(tree.iter_snapshot()), tuple(tree.iter_sessions()))
    tree.apply(second)
    current = Snapshot(tree.last_zxid, tuple(tree.iter_snapshot()), tuple(tree.iter_sessions()))
    disks = {i: SimDisk(1, 1, snapshot=current) for i in (1, 2, 3, 4, 5)}
    cluster = Cluster(voters=5, disks=disks)
    cluster.settle()
    assert cluster.serving_leader() == 5
    cluster.crash(3)
    cluster.disks[3] = SimDisk(1, 1, snapshot=stale, log=[second])
    cluster.restart(3)
    cluster.settle()
    assert cluster.r(3).state is ServerState.FOLLOWING
    assert cluster.r(3).config.voters == {1, 2, 3, 4, 5}
    cluster.assert_identical()


class FirstDown(Cluster):
    """A Cluster whose member 1 is down from the start."""

    def boot(self, i: int, *, pump: bool = True) -> None:
        if i != 1:
            super().boot(i, pump=pump)


def test_voters_of_a_logged_reconfig_take_part_in_the_election() -> None:
    """2 and 3 hold {1, 2, 3} and, logged after it, the reconfig to all five; 4 and 5 applied
    it and logged one more write. With 1 down, 2 and 3 alone are a quorum of the old
    voters, but a leader among them lacks that write and must step down when 4 or 5
    promise it their longer history. They count the logged reconfig's voters too, so the
    vote goes to 5, and the ensemble serves with the write."""
    three = Membership(tuple(spec(i) for i in (1, 2, 3)), make_zxid(1, 1))
    five = Membership(tuple(spec(i) for i in (1, 2, 3, 4, 5)), make_zxid(1, 2))
    first = TxnRecord(make_zxid(1, 1), 0, 0, 0, Reconfig(three.encode()))
    second = TxnRecord(make_zxid(1, 2), 0, 0, 0, Reconfig(five.encode()))
    write = TxnRecord(make_zxid(1, 3), 0, 0, 0, Create("/w", b"", OPEN_ACL_UNSAFE, 0, 1))
    tree = DataTree()
    tree.apply(first)
    old = Snapshot(tree.last_zxid, tuple(tree.iter_snapshot()), tuple(tree.iter_sessions()))
    tree.apply(second)
    new = Snapshot(tree.last_zxid, tuple(tree.iter_snapshot()), tuple(tree.iter_sessions()))
    disks = {i: SimDisk(1, 1, snapshot=old, log=[second]) for i in (2, 3)}
    disks.update({i: SimDisk(1, 1, snapshot=new, log=[write]) for i in (4, 5)})
    cluster = FirstDown(voters=5, disks=disks)
    cluster.settle()
    assert cluster.serving_leader() == 5
    for i in (2, 3, 4, 5):
        assert cluster.r(i).tree.get("/w") is not None
        assert cluster.r(i).config.voters == {1, 2, 3, 4, 5}
    cluster.assert_identical()
    cluster.assert_one_leader_per_epoch()


def test_sweep_reconfigs_with_stalls_and_harsher_faults() -> None:
    """Reconfigs amid the harsher faults and member stalls of test_zab_sim.py."""
    faults = dataclasses.replace(HARSH, reconfig=RECONFIG_RATE)
    for seed in range(20):
        sim = StallingSimulation(seed, faults=faults, spares=2, stall=0.02, stall_ms=(100, 600))
        try:
            sim.run_until(8_000)
            sim.settle()
            sim.check_final()
            check_converged(sim)
        except InvariantViolation:
            raise
        except Exception as err:
            raise AssertionError(f"seed {seed}: {type(err).__name__}: {err}") from err
