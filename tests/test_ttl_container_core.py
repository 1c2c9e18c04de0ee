"""Container and TTL nodes in the pure core: what prep accepts, how the kind is encoded in the
Stat, which nodes the tree reports due at a given time, how prep re-checks a reap against the
writes in flight, and the leader's periodic reaping through the log."""

from __future__ import annotations

import pytest

from zkpy.core.errors import Code
from zkpy.core.nodekind import CONTAINER_OWNER, MAX_TTL_MS, is_reapable, ttl_of, ttl_owner
from zkpy.core.prep import Prep
from zkpy.core.requests import (
    CloseSessionRequest,
    CreateRequest,
    CreateSessionRequest,
    DeleteRequest,
    PreppedRequest,
    ReapRequest,
    SetDataRequest,
)
from zkpy.core.tree import DataTree
from zkpy.core.txn import Delete, ErrorTxn, TxnRecord
from zkpy.core.types import OPEN_ACL_UNSAFE, Stat, make_zxid
from zkpy.testing.sim import Simulation
from zkpy.wire import client as client_wire
from zkpy.wire import peer as peer_wire
from zkpy.zab.messages import Forward
from zkpy.zab.replica import Replica, ReplicaConfig

S1 = 0x0100_0000_0000_0001
OPEN = OPEN_ACL_UNSAFE


class Core:
    """A tree and its prep; every write is prepped at the next zxid and `now` (ms)."""

    def __init__(self) -> None:
        self.tree = DataTree()
        self.prep = Prep(self.tree)
        self.counter = 0
        self.now = 1_000_000
        self.write(CreateSessionRequest(S1, 30_000, b"pw"))

    def prepare(self, request: PreppedRequest, session: int = S1) -> TxnRecord:
        self.counter += 1
        return self.prep.prepare(
            request, zxid=make_zxid(1, self.counter), session_id=session, cxid=0, now_ms=self.now
        )

    def apply(self, record: TxnRecord) -> None:
        self.tree.apply(record)
        self.prep.applied(record.zxid)

    def write(self, request: PreppedRequest, session: int = S1) -> TxnRecord:
        record = self.prepare(request, session)
        self.apply(record)
        return record

    def stat(self, path: str) -> Stat:
        node = self.tree.get(path)
        assert node is not None, path
        return node.stat()


def refused(core: Core, request: PreppedRequest, session: int = S1) -> int:
    record = core.write(request, session)
    assert isinstance(record.op, ErrorTxn), record
    return record.op.code


# ---- the kind, in ephemeral_owner as ZooKeeper encodes it ------------------------------------


def test_the_owner_encodings_are_zookeepers() -> None:
    assert CONTAINER_OWNER & (2**64 - 1) == 0x8000_0000_0000_0000
    assert ttl_owner(60_000) & (2**64 - 1) == 0xFF00_0000_0000_EA60
    assert ttl_of(ttl_owner(60_000)) == 60_000
    assert ttl_of(ttl_owner(MAX_TTL_MS)) == MAX_TTL_MS
    assert ttl_of(CONTAINER_OWNER) == ttl_of(S1) == ttl_of(0) == 0
    assert is_reapable(CONTAINER_OWNER)
    assert is_reapable(ttl_owner(1))
    assert not is_reapable(S1)
    assert not is_reapable(0)
    for bad in (0, -1, MAX_TTL_MS + 1):
        with pytest.raises(ValueError, match="a ttl must be from 1 to"):
            ttl_owner(bad)


def test_created_container_and_ttl_nodes_carry_their_kind_in_the_stat() -> None:
    core = Core()
    core.write(CreateRequest("/c", b"", OPEN, container=True))
    core.write(CreateRequest("/t-", b"", OPEN, sequential=True, ttl_ms=5_000))
    assert core.stat("/c").ephemeral_owner == CONTAINER_OWNER
    ttl_path = "/t-0000000001"  # the root's cversion was 1 after /c
    assert core.stat(ttl_path).ephemeral_owner == ttl_owner(5_000)
    assert core.stat("/c").owner_session_id is None
    assert core.stat(ttl_path).owner_session_id is None
    # neither is an ephemeral: no session owns them, and they may have children
    assert core.tree.ephemerals_of(S1) == set()
    core.write(CreateRequest("/c/child", b"", OPEN, ephemeral=True))
    core.write(CreateRequest(f"{ttl_path}/child", b"", OPEN))
    assert core.tree.ephemerals_of(S1) == {"/c/child"}


@pytest.mark.parametrize(
    "request_",
    [
        CreateRequest("/x", b"", OPEN, ephemeral=True, container=True),
        CreateRequest("/x", b"", OPEN, sequential=True, container=True),
        CreateRequest("/x", b"", OPEN, container=True, ttl_ms=1_000),
        CreateRequest("/x", b"", OPEN, ephemeral=True, ttl_ms=1_000),
        CreateRequest("/x", b"", OPEN, ephemeral=True, sequential=True, ttl_ms=1_000),
        CreateRequest("/x", b"", OPEN, ttl_ms=-1),
        CreateRequest("/x", b"", OPEN, ttl_ms=MAX_TTL_MS + 1),
    ],
)
def test_prep_refuses_the_combinations_zookeeper_has_no_mode_for(
    request_: CreateRequest,
) -> None:
    core = Core()
    assert refused(core, request_) == Code.BAD_ARGUMENTS
    assert "/x" not in core.tree


def test_closing_the_session_leaves_container_and_ttl_nodes() -> None:
    core = Core()
    core.write(CreateRequest("/c", b"", OPEN, container=True))
    core.write(CreateRequest("/t", b"", OPEN, ttl_ms=1_000))
    core.write(CreateRequest("/c/e", b"", OPEN, ephemeral=True))
    core.write(CloseSessionRequest())
    assert "/c/e" not in core.tree
    assert "/c" in core.tree
    assert "/t" in core.tree


# ---- which nodes are due ------------------------------------------------------------------------


def test_a_container_is_due_once_it_has_had_a_child_and_has_none() -> None:
    core = Core()
    core.write(CreateRequest("/c", b"", OPEN, container=True))
    assert core.tree.reap_candidates(core.now + 10**9, 100) == [], "never used: kept"
    core.write(CreateRequest("/c/a", b"", OPEN))
    assert core.tree.reap_candidates(core.now, 100) == [], "has a child"
    core.write(DeleteRequest("/c/a"))
    assert core.tree.reap_candidates(core.now, 100) == [("/c", 0)]


def test_a_ttl_node_is_due_once_unchanged_and_childless_for_longer_than_its_ttl() -> None:
    core = Core()
    core.write(CreateRequest("/t", b"", OPEN, ttl_ms=5_000))
    created = core.stat("/t").mtime
    assert core.tree.reap_candidates(created + 5_000, 100) == []
    assert core.tree.reap_candidates(created + 5_001, 100) == [("/t", 0)]
    core.now = created + 4_000
    core.write(SetDataRequest("/t", b"touched"))  # a change restarts the count
    assert core.tree.reap_candidates(created + 5_001, 100) == []
    assert core.tree.reap_candidates(core.now + 5_001, 100) == [("/t", 1)]
    core.write(CreateRequest("/t/child", b"", OPEN))
    assert core.tree.reap_candidates(core.now + 10**9, 100) == [], "a child keeps it"


def test_reap_candidates_are_in_path_order_and_bounded() -> None:
    core = Core()
    for name in ("b", "a", "c"):
        core.write(CreateRequest(f"/{name}", b"", OPEN, ttl_ms=1))
    assert core.tree.reap_candidates(core.now + 10, 2) == [("/a", 0), ("/b", 0)]


# ---- prep re-checks a reap against the writes in flight ----------------------------------------


def test_a_reap_is_an_ordinary_delete_that_fires_the_usual_changes() -> None:
    core = Core()
    core.write(CreateRequest("/t", b"", OPEN, ttl_ms=1))
    record = core.prepare(ReapRequest("/t", 0), session=0)
    assert record.op == Delete("/t")
    result = core.tree.apply(record)
    assert "/t" not in core.tree
    assert "/t" not in core.tree.reapable
    assert result.changes  # a deleted node's watches fire on every member alike


def test_a_reap_loses_to_a_child_or_a_change_still_in_flight() -> None:
    core = Core()
    core.write(CreateRequest("/c", b"", OPEN, container=True))
    core.write(CreateRequest("/t", b"", OPEN, ttl_ms=1))
    core.write(CreateRequest("/c/a", b"", OPEN))
    core.write(DeleteRequest("/c/a"))
    core.prepare(CreateRequest("/c/b", b"", OPEN))  # prepped, not applied yet
    core.prepare(SetDataRequest("/t", b"new"))
    child_first = core.prepare(ReapRequest("/c", 0), session=0)
    changed_first = core.prepare(ReapRequest("/t", 0), session=0)
    assert child_first.op == ErrorTxn(Code.NOT_EMPTY)
    assert changed_first.op == ErrorTxn(Code.BAD_VERSION)


def test_only_the_leader_reaps_and_only_containers_and_ttl_nodes() -> None:
    core = Core()
    core.write(CreateRequest("/p", b"", OPEN))
    core.write(CreateRequest("/t", b"", OPEN, ttl_ms=1))
    assert refused(core, ReapRequest("/t", 0), session=S1) == Code.BAD_ARGUMENTS
    assert refused(core, ReapRequest("/p", 0), session=0) == Code.BAD_ARGUMENTS
    assert refused(core, ReapRequest("/gone", 0), session=0) == Code.NO_NODE
    assert "/p" in core.tree
    assert "/t" in core.tree


# ---- checkpoints keep the kinds --------------------------------------------------------------


def test_a_checkpoint_keeps_the_kinds_and_the_reaper_index() -> None:
    core = Core()
    core.write(CreateRequest("/c", b"", OPEN, container=True))
    core.write(CreateRequest("/t", b"", OPEN, ttl_ms=7_000))
    core.write(CreateRequest("/e", b"", OPEN, ephemeral=True))
    delta = core.tree.take_checkpoint()
    rebuilt = DataTree.from_checkpoint(delta.zxid, delta.node_puts, core.tree.iter_sessions())
    assert rebuilt.reapable == {"/c", "/t"}
    assert rebuilt.ephemerals == {S1: {"/e"}}
    assert rebuilt.digest() == core.tree.digest()
    restored = rebuilt.get("/t")
    assert restored is not None
    assert ttl_of(restored.ephemeral_owner) == 7_000


# ---- the leader reaps on its tick, through the log -----------------------------------------------


def _drain(replica: Replica) -> list[TxnRecord]:
    committed: list[TxnRecord] = []
    for _ in range(4):
        ready = replica.take_ready()
        for record in ready.committed:
            replica.apply(record)
            committed.append(record)
    return committed


def test_the_leader_proposes_due_reaps_every_check_interval() -> None:
    config = ReplicaConfig(1, frozenset({1}), tick_ms=100, reap_interval_ms=1_000)
    now = 1_000_000
    replica = Replica(config, DataTree(), now_ms=now)
    replica.submit(S1, 1, CreateSessionRequest(S1, 30_000, b"pw"))
    replica.submit(S1, 2, CreateRequest("/t", b"", OPEN, ttl_ms=500))
    replica.submit(S1, 3, CreateRequest("/keep", b"", OPEN, ttl_ms=60_000))
    _drain(replica)
    replica.tick(now + 600)  # due, but the first check is one interval after serving
    assert not [r for r in _drain(replica) if isinstance(r.op, Delete)]
    assert "/t" in replica.tree
    replica.tick(now + 1_000)
    reaped = [r for r in _drain(replica) if isinstance(r.op, Delete)]
    assert [(r.op, r.session_id) for r in reaped] == [(Delete("/t"), 0)]
    assert "/t" not in replica.tree
    assert "/keep" in replica.tree
    replica.tick(now + 1_500)  # the next check is an interval later
    assert not _drain(replica)


def test_the_simulator_reaps_every_ttl_node_alike_on_every_member_amid_faults() -> None:
    sim = Simulation(3)
    sim.run_until(20_000)
    sim.settle()
    sim.check_final()
    made = [
        op
        for op in sim.ops.values()
        if op.outcome == "ok" and isinstance(op.request, CreateRequest) and op.request.ttl_ms
    ]
    trees = [m.replica.tree for m in sim.members.values() if m.replica is not None]
    assert made, "the workload creates TTL nodes"
    assert [tree.reapable for tree in trees] == [set()] * len(trees)
    assert len({(tree.last_zxid, tree.digest()) for tree in trees}) == 1


def test_container_and_ttl_creates_cross_the_client_and_peer_codecs() -> None:
    creates = (
        CreateRequest("/c", b"", OPEN, container=True),
        CreateRequest("/t-", b"v", OPEN, sequential=True, ttl_ms=MAX_TTL_MS),
    )
    for request in creates:
        frame = client_wire.encode_request(5, request)
        assert client_wire.decode_request(frame[4:]) == (5, client_wire.OP_CREATE, request)
    forward = Forward(tuple((S1, n, request, frozenset(), 0) for n, request in enumerate(creates)))
    assert peer_wire.decode_message(peer_wire.encode_message(forward)) == forward
