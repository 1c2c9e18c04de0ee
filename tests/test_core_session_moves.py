"""Moved sessions are fenced (SESSION_MOVED), and /zookeeper is reserved.

A session's owner is the connection that created it or that it was last attached to, in prep
order; prep refuses the session's writes from any other connection. The replica tests hold a
follower's (or an observer's) forwarded write on its way to the leader while the session moves
to another member and writes there: the late write must not be applied after those.
"""

from __future__ import annotations

import pytest

from tests.test_zab_replica import Cluster
from zkpy.core.errors import Code
from zkpy.core.prep import Prep
from zkpy.core.requests import (
    AttachSessionRequest,
    CloseSessionRequest,
    CreateRequest,
    CreateSessionRequest,
    DeleteRequest,
    MultiRequest,
    SetACLRequest,
    SetDataRequest,
    WriteRequest,
)
from zkpy.core.tree import RESERVED_NODES, ApplyResult, DataTree, is_read_only, is_reserved
from zkpy.core.txn import AttachSession, ErrorTxn, TxnRecord, decode_record, encode_record
from zkpy.core.types import OPEN_ACL_UNSAFE, make_zxid
from zkpy.zab.messages import Forward

S1 = 0x0100_0000_0000_0001
OWNER_A = 0x0100_0000_0000_00A1  # a connection made by member 1
OWNER_B = 0x0200_0000_0000_00B1  # one made by member 2
OWNER_A2 = 0x0100_0000_0000_00A2  # a later connection at member 1
OPEN = OPEN_ACL_UNSAFE


class Leader:
    """A tree and the leader's prep; `prepare` leaves the record unapplied (in flight)."""

    def __init__(self) -> None:
        self.tree = DataTree()
        self.prep = Prep(self.tree)
        self.counter = 0

    def prepare(self, request: WriteRequest, owner: int, session: int = S1) -> TxnRecord:
        self.counter += 1
        return self.prep.prepare(
            request,
            zxid=make_zxid(1, self.counter),
            session_id=session,
            cxid=self.counter,
            now_ms=1000 + self.counter,
            owner=owner,
        )

    def apply(self, record: TxnRecord) -> ApplyResult:
        result = self.tree.apply(record)
        self.prep.applied(record.zxid)
        return result

    def run(self, request: WriteRequest, owner: int, session: int = S1) -> int:
        """Prep and apply; the result's error code."""
        return self.apply(self.prepare(request, owner, session)).result.error


def set_data(data: bytes) -> SetDataRequest:
    return SetDataRequest("/k", data)


@pytest.fixture
def leader() -> Leader:
    found = Leader()
    assert found.run(CreateSessionRequest(S1, 10_000, b"pw"), OWNER_A) == Code.OK
    assert found.run(CreateRequest("/k", b"v0", OPEN), OWNER_A) == Code.OK
    return found


# ---- prep ----------------------------------------------------------------------------------


def test_a_write_from_the_connection_a_session_left_is_refused(leader: Leader) -> None:
    assert leader.run(set_data(b"v1"), OWNER_A) == Code.OK
    attach = leader.prepare(AttachSessionRequest(), OWNER_B)
    assert attach.op == AttachSession(S1, OWNER_B)
    stale = leader.prepare(set_data(b"stale"), OWNER_A)  # prepped after the attach
    assert stale.op == ErrorTxn(Code.SESSION_MOVED)
    current = leader.prepare(set_data(b"v2"), OWNER_B)
    for record in (attach, stale, current):
        leader.apply(record)
    node = leader.tree.get("/k")
    assert node is not None
    assert (node.data, node.version) == (b"v2", 2)
    assert leader.prep.owner_of(S1) == OWNER_B


def test_the_session_can_move_back_to_its_first_member(leader: Leader) -> None:
    """A -> B -> A again: only the newest connection writes, even at the same member."""
    assert leader.run(AttachSessionRequest(), OWNER_B) == Code.OK
    assert leader.run(AttachSessionRequest(), OWNER_A2) == Code.OK
    assert leader.run(set_data(b"from B"), OWNER_B) == Code.SESSION_MOVED
    assert leader.run(set_data(b"from the first A"), OWNER_A) == Code.SESSION_MOVED
    assert leader.run(set_data(b"from A again"), OWNER_A2) == Code.OK


def test_multi_and_close_from_the_old_connection_are_refused(leader: Leader) -> None:
    assert leader.run(CreateRequest("/e", b"", OPEN, ephemeral=True), OWNER_A) == Code.OK
    assert leader.run(AttachSessionRequest(), OWNER_B) == Code.OK
    multi = MultiRequest((SetDataRequest("/k", b"x"), DeleteRequest("/e")))
    assert leader.run(multi, OWNER_A) == Code.SESSION_MOVED
    assert leader.run(SetACLRequest("/k", OPEN), OWNER_A) == Code.SESSION_MOVED
    assert leader.run(CloseSessionRequest(), OWNER_A) == Code.SESSION_MOVED
    assert S1 in leader.tree.sessions
    assert "/e" in leader.tree
    # the session's own connection closes it; expiry (owner 0) is never fenced
    assert leader.run(CloseSessionRequest(), OWNER_B) == Code.OK
    assert S1 not in leader.tree.sessions
    assert "/e" not in leader.tree
    assert leader.prep.owner_of(S1) == 0  # forgotten with the session


def test_expiry_closes_a_session_whatever_its_owner(leader: Leader) -> None:
    assert leader.run(CloseSessionRequest(), 0) == Code.OK
    assert S1 not in leader.tree.sessions


def test_attaching_a_closed_session_is_session_expired(leader: Leader) -> None:
    assert leader.run(CloseSessionRequest(), OWNER_A) == Code.OK
    assert leader.run(AttachSessionRequest(), OWNER_B) == Code.SESSION_EXPIRED
    assert leader.run(AttachSessionRequest(), OWNER_B, session=0x77) == Code.SESSION_EXPIRED


def test_attaching_a_session_whose_close_is_in_flight_is_session_expired(leader: Leader) -> None:
    close = leader.prepare(CloseSessionRequest(), 0)
    attach = leader.prepare(AttachSessionRequest(), OWNER_B)
    assert attach.op == ErrorTxn(Code.SESSION_EXPIRED)
    leader.apply(close)
    leader.apply(attach)


def test_a_new_leaders_prep_knows_no_owners_and_checks_none(leader: Leader) -> None:
    """A new epoch starts with no owners: every member dropped its client connections when it
    stopped serving, so each connection that writes in this epoch attaches in it first."""
    assert leader.run(AttachSessionRequest(), OWNER_B) == Code.OK
    fresh = Prep(leader.tree)
    assert fresh.owner_of(S1) == 0
    record = fresh.prepare(set_data(b"x"), zxid=make_zxid(2, 1), session_id=S1, cxid=9, now_ms=0)
    assert record.op != ErrorTxn(Code.SESSION_MOVED)
    leader.prep.reset()
    assert leader.prep.owner_of(S1) == 0


def test_an_attach_record_survives_the_log_and_changes_no_node(leader: Leader) -> None:
    record = leader.prepare(AttachSessionRequest(), OWNER_B)
    assert decode_record(encode_record(record)) == record
    before = leader.tree.digest()
    result = leader.apply(record)
    assert (result.result.error, result.changes) == (Code.OK, [])
    assert leader.tree.digest() == before


# ---- the replica: a forwarded write held up on its way --------------------------------------


@pytest.mark.parametrize("late", ["follower", "observer"])
def test_a_write_held_up_on_its_way_to_the_leader_is_refused_once_the_session_moved(
    late: str,
) -> None:
    cluster = Cluster(3, 1)
    cluster.settle()
    leader = cluster.serving_leader()
    stale_member, other = (
        (4, cluster.followers()[0]) if late == "observer" else tuple(cluster.followers())
    )

    def submit(member: int, cxid: int, request: WriteRequest, owner: int) -> None:
        cluster.r(member).submit(S1, cxid, request, owner=owner)
        cluster.pump(member)
        cluster.run()

    submit(stale_member, 0, CreateSessionRequest(S1, 60_000, b"pw"), OWNER_A)
    submit(stale_member, 1, CreateRequest("/k", b"v0", OPEN), OWNER_A)
    # The late member's next forwarded write is held up (a paused process, a slow link) ...
    cluster.held[(stale_member, leader)] = lambda message: isinstance(message, Forward)
    submit(stale_member, 2, set_data(b"stale"), OWNER_A)
    # ... while the client gives up on it, attaches its session elsewhere and writes twice.
    submit(other, -1, AttachSessionRequest(), OWNER_B)
    submit(other, 3, set_data(b"w1"), OWNER_B)
    submit(other, 4, set_data(b"w2"), OWNER_B)
    assert cluster.result_of(other, S1, 4).result.error == Code.OK
    del cluster.held[(stale_member, leader)]
    cluster.run()
    assert cluster.result_of(stale_member, S1, 2).result.error == Code.SESSION_MOVED
    for member in cluster.alive:
        node = cluster.r(member).tree.get("/k")
        assert node is not None, member
        assert node.data == b"w2", member
    cluster.assert_identical()


# ---- the reserved /zookeeper ---------------------------------------------------------------


def test_every_tree_holds_the_reserved_nodes() -> None:
    tree = DataTree()
    assert all(path in tree for path in RESERVED_NODES)
    assert tree.children_of("/") == ["zookeeper"]
    assert tree.children_of("/zookeeper") == ["quota"]
    root = tree.get("/")
    assert root is not None
    assert root.cversion == 0  # a sequential child of / still gets 0
    # a checkpoint written before they were reserved gets them back
    restored = DataTree.from_checkpoint(5, [("/", _root_record())], [])
    assert all(path in restored for path in RESERVED_NODES)
    assert restored.children_of("/") == ["zookeeper"]
    assert restored.digest() == DataTree.from_checkpoint(5, tree.iter_snapshot(), []).digest()


def _root_record() -> bytes:
    raw: bytes = next(raw for path, raw in DataTree().iter_snapshot() if path == "/")
    return raw


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (CreateRequest("/zookeeper/x", b"", OPEN), Code.BAD_ARGUMENTS),
        (CreateRequest("/zookeeper/s-", b"", OPEN, sequential=True), Code.BAD_ARGUMENTS),
        (CreateRequest("/zookeeper", b"", OPEN), Code.NODE_EXISTS),
        (CreateRequest("/zookeeper/quota", b"", OPEN), Code.NODE_EXISTS),
        (SetDataRequest("/zookeeper", b"x"), Code.BAD_ARGUMENTS),
        (SetDataRequest("/zookeeper/quota", b"x"), Code.BAD_ARGUMENTS),
        (SetACLRequest("/zookeeper", OPEN), Code.BAD_ARGUMENTS),
        (DeleteRequest("/zookeeper/quota"), Code.BAD_ARGUMENTS),
        (DeleteRequest("/zookeeper"), Code.BAD_ARGUMENTS),
        (MultiRequest((CreateRequest("/fine", b"", OPEN), DeleteRequest("/zookeeper/quota"))), 0),
    ],
)
def test_clients_may_not_change_the_reserved_nodes(
    leader: Leader, request_: WriteRequest, expected: int
) -> None:
    before = leader.tree.digest()
    record = leader.prepare(request_, OWNER_A)
    result = leader.apply(record)
    if isinstance(request_, MultiRequest):
        assert result.multi_results is not None
        assert [r.error for r in result.multi_results] == [0, Code.BAD_ARGUMENTS]
        assert "/fine" not in leader.tree
    else:
        assert result.result.error == expected
    assert leader.tree.digest() == before


def test_names_that_only_begin_like_the_reserved_one_are_ordinary(leader: Leader) -> None:
    assert not is_reserved("/zookeeperx")
    assert not is_reserved("/zoo")
    assert is_reserved("/zookeeper")
    assert is_reserved("/zookeeper/quota/a")
    assert not is_read_only("/zookeeper/quota/a")
    assert is_read_only("/zookeeper/quota")
    assert is_read_only("/zookeeper/config")
    assert leader.run(CreateRequest("/zookeeperx", b"", OPEN), OWNER_A) == Code.OK
    sequential = leader.prepare(CreateRequest("/zookeeper", b"", OPEN, sequential=True), OWNER_A)
    assert leader.apply(sequential).result.value == "/zookeeper0000000002"
