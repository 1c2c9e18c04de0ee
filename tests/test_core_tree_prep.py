"""Prep + DataTree, driven the way the server drives them.

Every write is prepped at the next zxid (checked against the tree plus the overlay of prepped but
unapplied transactions), then applied to the tree, then `prep.applied(zxid)` lets the overlay go.
"""

from __future__ import annotations

from typing import Any

import pytest

from zkpy.core.errors import Code, RuntimeInconsistencyError
from zkpy.core.prep import Prep
from zkpy.core.requests import (
    CheckRequest,
    CloseSessionRequest,
    CreateRequest,
    CreateSessionRequest,
    DeleteRequest,
    MultiRequest,
    SetACLRequest,
    SetDataRequest,
    WriteRequest,
)
from zkpy.core.tree import NO_CHILDREN, RESERVED_NODES, ApplyResult, DataTree, changes_of
from zkpy.core.txn import (
    AttachSession,
    Check,
    CloseSession,
    Create,
    CreateSession,
    Delete,
    ErrorTxn,
    Multi,
    SetACL,
    SetData,
    TxnRecord,
    decode_record,
    encode_record,
)
from zkpy.core.types import (
    ACL,
    OPEN_ACL_UNSAFE,
    READ_ACL_UNSAFE,
    EventType,
    Id,
    Perm,
    Stat,
    make_zxid,
)

S1 = 0x0100_0000_0000_0001
S2 = 0x0100_0000_0000_0002
OPEN = OPEN_ACL_UNSAFE
ALICE = Id("digest", "alice:hash")


class Harness:
    """A tree and its prep, with a zxid counter and a clock that moves 10 ms per write."""

    def __init__(self, *, max_data_bytes: int = 1 << 20, epoch: int = 1) -> None:
        self.tree = DataTree()
        self.prep = Prep(self.tree, max_data_bytes=max_data_bytes)
        self.epoch = epoch
        self.counter = 0
        self.now = 1_000_000
        self.cxid = 0

    def prepare(
        self, request: WriteRequest, session: int = S1, ids: frozenset[Id] = frozenset()
    ) -> TxnRecord:
        self.counter += 1
        self.now += 10
        self.cxid += 1
        return self.prep.prepare(
            request,
            zxid=make_zxid(self.epoch, self.counter),
            session_id=session,
            cxid=self.cxid,
            now_ms=self.now,
            ids=ids,
        )

    def apply(self, record: TxnRecord) -> ApplyResult:
        result = self.tree.apply(record)
        self.prep.applied(record.zxid)
        return result

    def run(
        self, request: WriteRequest, session: int = S1, ids: frozenset[Id] = frozenset()
    ) -> ApplyResult:
        return self.apply(self.prepare(request, session, ids))

    def open(self, session: int, timeout_ms: int = 10_000) -> ApplyResult:
        result = self.run(CreateSessionRequest(session, timeout_ms, b"pw"), session=session)
        assert result.result.error == Code.OK
        return result

    def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        ephemeral: bool = False,
        sequential: bool = False,
        session: int = S1,
        acl: tuple[ACL, ...] = OPEN,
        ids: frozenset[Id] = frozenset(),
    ) -> ApplyResult:
        return self.run(CreateRequest(path, data, acl, ephemeral, sequential), session, ids)

    def stat(self, path: str) -> Stat:
        node = self.tree.get(path)
        assert node is not None, f"{path} does not exist"
        return node.stat()

    def overlay_is_empty(self) -> bool:
        return not self.prep._pending and not self.prep._order and not self.prep._pending_sessions


def ok(result: ApplyResult) -> Any:
    assert result.result.error == Code.OK, Code(result.result.error).name
    return result.result.value


def code(result: ApplyResult) -> int:
    return result.result.error


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.open(S1)
    harness.open(S2)
    return harness


# ---- create / get / set / delete and every Stat field ---------------------------------------


def test_create_sets_every_stat_field(h: Harness) -> None:
    record = h.prepare(CreateRequest("/a", b"hello", OPEN))
    assert isinstance(record.op, Create)
    result = h.apply(record)
    assert ok(result) == "/a"
    assert result.changes == [(EventType.CREATED, "/a"), (EventType.CHILD, "/")]
    z, now = record.zxid, record.time_ms
    assert h.stat("/a") == Stat(
        czxid=z,
        mzxid=z,
        ctime=now,
        mtime=now,
        version=0,
        cversion=0,
        aversion=0,
        ephemeral_owner=0,
        data_length=5,
        num_children=0,
        pzxid=z,
    )
    assert h.tree.get("/a").data == b"hello"  # type: ignore[union-attr]
    assert h.tree.get("/a").acl == OPEN  # type: ignore[union-attr]
    root = h.stat("/")
    assert (root.cversion, root.pzxid, root.num_children) == (1, z, 2)  # /a and /zookeeper
    assert (root.mzxid, root.version) == (0, 0)  # a child does not modify the parent's data
    assert h.tree.last_zxid == z


def test_create_child_updates_parent_children_fields_only(h: Harness) -> None:
    ok(h.create("/p", b"x"))
    before = h.stat("/p")
    result = h.create("/p/c")
    z = result.record.zxid
    after = h.stat("/p")
    assert after.num_children == 1
    assert after.cversion == before.cversion + 1
    assert after.pzxid == z
    assert (after.mzxid, after.mtime, after.version) == (before.mzxid, before.mtime, 0)
    assert h.tree.children_of("/p") == ["c"]


def test_set_data_updates_version_mzxid_mtime_and_length(h: Harness) -> None:
    created = h.create("/a", b"one")
    result = h.run(SetDataRequest("/a", b"three", 0))
    stat = ok(result)
    assert isinstance(stat, Stat)
    assert stat == h.stat("/a")
    assert stat.version == 1
    assert stat.mzxid == result.record.zxid
    assert stat.mtime == result.record.time_ms
    assert stat.czxid == created.record.zxid
    assert stat.ctime == created.record.time_ms
    assert stat.pzxid == created.record.zxid  # children unchanged
    assert stat.data_length == 5
    assert result.changes == [(EventType.CHANGED, "/a")]
    # version -1 means "any version"
    assert ok(h.run(SetDataRequest("/a", b"", -1))).version == 2
    assert h.stat("/a").data_length == 0


def test_apply_without_stats_changes_the_same_but_returns_no_stat(h: Harness) -> None:
    """A member applies others' writes without making the Stat only a waiting client reads."""
    h.create("/a", b"one")
    twin = DataTree.from_checkpoint(
        h.tree.last_zxid, h.tree.iter_snapshot(), h.tree.iter_sessions()
    )
    records = [
        h.prepare(SetDataRequest("/a", b"two", 0)),
        h.prepare(SetACLRequest("/a", OPEN, 0)),
        h.prepare(MultiRequest((SetDataRequest("/a", b"three", 1), CheckRequest("/a", 2)))),
    ]
    with_stats = [h.apply(record) for record in records]
    without = [twin.apply(record, stats=False) for record in records]

    assert [ok(r) for r in without[:2]] == [None, None]
    assert ok(with_stats[0]).version == 1
    assert ok(with_stats[1]).aversion == 1
    # a multi's results keep their Stats: its reply is made of them, one per operation
    assert without[2].multi_results == with_stats[2].multi_results
    assert [r.changes for r in without] == [r.changes for r in with_stats]
    assert twin.get("/a").stat() == h.stat("/a")  # type: ignore[union-attr]
    assert twin.get("/a").data == b"three"  # type: ignore[union-attr]


def test_set_acl_bumps_aversion_only(h: Harness) -> None:
    h.create("/a", b"d")
    before = h.stat("/a")
    read_admin = (ACL(Perm.READ | Perm.ADMIN, Id("world", "anyone")),)
    result = h.run(SetACLRequest("/a", read_admin, 0))
    stat = ok(result)
    assert stat.aversion == 1
    assert (stat.version, stat.mzxid, stat.cversion) == (
        before.version,
        before.mzxid,
        before.cversion,
    )
    assert h.tree.get("/a").acl == read_admin  # type: ignore[union-attr]
    assert code(h.run(SetDataRequest("/a", b"x"))) == Code.NO_AUTH  # WRITE is gone
    assert code(h.run(SetACLRequest("/a", OPEN, 0))) == Code.BAD_VERSION
    assert ok(h.run(SetACLRequest("/a", OPEN, 1))).aversion == 2


def test_delete_removes_node_and_updates_parent(h: Harness) -> None:
    h.create("/p")
    h.create("/p/c")
    before = h.stat("/p")
    result = h.run(DeleteRequest("/p/c", 0))
    assert ok(result) is None
    assert "/p/c" not in h.tree
    after = h.stat("/p")
    assert after.num_children == 0
    assert after.cversion == before.cversion + 1  # deletes count as child changes too
    assert after.pzxid == result.record.zxid
    assert after.mzxid == before.mzxid
    assert result.changes == [(EventType.DELETED, "/p/c"), (EventType.CHILD, "/p")]


def test_leaves_share_one_empty_child_set_and_get_their_own_when_a_child_comes(
    h: Harness,
) -> None:
    h.create("/p")
    h.create("/q")
    leaf_p, leaf_q = h.tree.nodes["/p"], h.tree.nodes["/q"]
    assert leaf_p.children is NO_CHILDREN
    assert leaf_q.children is NO_CHILDREN
    h.create("/p/a")
    h.create("/p/b")
    assert leaf_q.children is NO_CHILDREN, "the shared empty set was not changed"
    assert h.tree.children_of("/p") == ["a", "b"]
    h.run(DeleteRequest("/p/a", -1))
    assert h.tree.children_of("/p") == ["b"]
    h.run(DeleteRequest("/p/b", -1))
    assert h.tree.nodes["/p"].children is NO_CHILDREN, "a node back to a leaf frees its set"
    assert h.stat("/p").num_children == 0
    h.create("/p/c")
    assert h.tree.children_of("/p") == ["c"]


def test_ephemeral_create_records_the_owner(h: Harness) -> None:
    ok(h.create("/e", ephemeral=True, session=S2))
    assert h.stat("/e").ephemeral_owner == S2
    assert h.tree.ephemerals_of(S2) == {"/e"}
    assert h.tree.ephemerals_of(S1) == set()
    ok(h.run(DeleteRequest("/e"), session=S1))  # anyone may delete it
    assert h.tree.ephemerals_of(S2) == set()


def test_check_alone_changes_nothing(h: Harness) -> None:
    h.create("/a")
    digest = h.tree.digest()
    result = h.run(CheckRequest("/a", 0))
    assert ok(result) is None
    assert result.changes == []
    assert h.tree.digest() == digest
    assert code(h.run(CheckRequest("/a", 3))) == Code.BAD_VERSION
    assert code(h.run(CheckRequest("/nope", 0))) == Code.NO_NODE


# ---- refusals ---------------------------------------------------------------------------


def test_refusals_become_error_txns_that_change_nothing(h: Harness) -> None:
    h.create("/a", b"data")
    h.create("/a/b")
    h.create("/eph", ephemeral=True)
    cases: list[tuple[WriteRequest, Code]] = [
        (CreateRequest("/a", b"", OPEN), Code.NODE_EXISTS),
        (CreateRequest("/", b"", OPEN), Code.NODE_EXISTS),
        (CreateRequest("/missing/child", b"", OPEN), Code.NO_NODE),
        (CreateRequest("/eph/child", b"", OPEN), Code.NO_CHILDREN_FOR_EPHEMERALS),
        (CreateRequest("/eph/seq-", b"", OPEN, sequential=True), Code.NO_CHILDREN_FOR_EPHEMERALS),
        (CreateRequest("relative", b"", OPEN), Code.BAD_ARGUMENTS),
        (CreateRequest("/a/", b"", OPEN), Code.BAD_ARGUMENTS),
        (CreateRequest("/x", b"", ()), Code.INVALID_ACL),
        (CreateRequest("/x", b"", (ACL(Perm.ALL, Id("nosuch", "x")),)), Code.INVALID_ACL),
        (SetDataRequest("/missing", b"", -1), Code.NO_NODE),
        (SetDataRequest("/a", b"", 5), Code.BAD_VERSION),
        (SetDataRequest("/a", b"", -2), Code.BAD_ARGUMENTS),
        (SetACLRequest("/missing", OPEN, -1), Code.NO_NODE),
        (DeleteRequest("/missing"), Code.NO_NODE),
        (DeleteRequest("/missing/deeper"), Code.NO_NODE),
        (DeleteRequest("/a/b", 7), Code.BAD_VERSION),
        (DeleteRequest("/a/b", -2), Code.BAD_ARGUMENTS),
        (DeleteRequest("/a"), Code.NOT_EMPTY),
        (DeleteRequest("/"), Code.BAD_ARGUMENTS),
        (DeleteRequest("/a/b/"), Code.BAD_ARGUMENTS),
        (CreateSessionRequest(S2, 1000, b""), Code.BAD_ARGUMENTS),  # already exists
    ]
    for request, expected in cases:
        digest = h.tree.digest()
        record = h.prepare(request)
        assert isinstance(record.op, ErrorTxn), request
        assert record.op.code == expected, (request, Code(record.op.code).name)
        result = h.apply(record)
        assert code(result) == expected
        assert result.changes == []
        assert h.tree.digest() == digest, request
        assert h.tree.last_zxid == record.zxid  # a refusal still takes its zxid
    assert h.overlay_is_empty()


def test_bad_version_on_delete_leaves_node(h: Harness) -> None:
    h.create("/a")
    h.run(SetDataRequest("/a", b"x", 0))
    assert code(h.run(DeleteRequest("/a", 0))) == Code.BAD_VERSION
    assert "/a" in h.tree
    ok(h.run(DeleteRequest("/a", 1)))
    assert "/a" not in h.tree


def test_closed_or_unknown_session_is_refused_with_session_expired(h: Harness) -> None:
    h.create("/a")
    ok(h.run(CloseSessionRequest(), session=S2))
    assert not h.prep.session_alive(S2)
    stranger = 0x999
    for session in (S2, stranger):
        for request in (
            CreateRequest("/b", b"", OPEN),
            SetDataRequest("/a", b"x"),
            DeleteRequest("/a"),
            CheckRequest("/a", 0),
            SetACLRequest("/a", OPEN),
            MultiRequest((CheckRequest("/a", 0),)),
            CloseSessionRequest(),
        ):
            assert code(h.run(request, session=session)) == Code.SESSION_EXPIRED, request
    assert "/a" in h.tree
    assert "/b" not in h.tree


def test_oversize_data_is_bad_arguments() -> None:
    h = Harness(max_data_bytes=8)
    h.open(S1)
    ok(h.create("/fits", b"12345678"))
    assert code(h.create("/big", b"123456789")) == Code.BAD_ARGUMENTS
    assert "/big" not in h.tree
    assert code(h.run(SetDataRequest("/fits", b"123456789"))) == Code.BAD_ARGUMENTS
    assert h.tree.get("/fits").data == b"12345678"  # type: ignore[union-attr]
    assert ok(h.run(SetDataRequest("/fits", b"87654321"))).version == 1


def test_acl_checks_use_the_callers_ids(h: Harness) -> None:
    alice = frozenset({ALICE})
    # "auth" expands to the caller's ids
    ok(h.create("/private", b"s", acl=((ACL(Perm.ALL, Id("auth", "")),)), ids=alice))
    assert h.tree.get("/private").acl == (ACL(Perm.ALL, ALICE),)  # type: ignore[union-attr]
    assert code(h.create("/x", acl=((ACL(Perm.ALL, Id("auth", "")),)))) == Code.INVALID_ACL
    # without alice's id: no create below, no write, no delete below
    assert code(h.create("/private/c")) == Code.NO_AUTH
    assert code(h.run(SetDataRequest("/private", b"x"))) == Code.NO_AUTH
    ok(h.create("/private/c", ids=alice))
    assert code(h.run(DeleteRequest("/private/c"))) == Code.NO_AUTH
    assert code(h.run(SetACLRequest("/private", OPEN))) == Code.NO_AUTH
    ok(h.run(DeleteRequest("/private/c"), ids=alice))
    # super passes every check
    ok(h.run(SetDataRequest("/private", b"y"), ids=frozenset({Id("super", "")})))
    # read-only ACL: no write for anyone
    ok(h.create("/ro", acl=READ_ACL_UNSAFE))
    assert code(h.run(SetDataRequest("/ro", b"x"))) == Code.NO_AUTH


# ---- sequential nodes ---------------------------------------------------------------------


def test_sequential_suffix_comes_from_parent_cversion(h: Harness) -> None:
    h.create("/q")
    assert ok(h.create("/q/n-", sequential=True)) == "/q/n-0000000000"
    assert ok(h.create("/q/n-", sequential=True)) == "/q/n-0000000001"
    ok(h.create("/q/plain"))  # a plain create moves the counter too
    assert ok(h.create("/q/n-", sequential=True)) == "/q/n-0000000003"
    ok(h.run(DeleteRequest("/q/plain")))  # and so does a delete
    assert h.stat("/q").cversion == 5
    assert ok(h.create("/q/", sequential=True)) == "/q/0000000005"
    assert ok(h.create("/q/e-", sequential=True, ephemeral=True)) == "/q/e-0000000006"
    assert h.stat("/q/e-0000000006").ephemeral_owner == S1
    # each parent has its own counter
    h.create("/other")
    assert ok(h.create("/other/n-", sequential=True)) == "/other/n-0000000000"
    # a failed create does not move the counter
    assert code(h.create("/q/missing/n-", sequential=True)) == Code.NO_NODE
    assert ok(h.create("/q/n-", sequential=True)) == "/q/n-0000000007"


def test_sequential_create_collides_with_an_existing_name(h: Harness) -> None:
    h.create("/q")
    ok(h.create("/q/n-0000000001"))  # cversion now 1: the next sequential name is taken
    assert code(h.create("/q/n-", sequential=True)) == Code.NODE_EXISTS


def test_sequential_at_root(h: Harness) -> None:
    cversion = h.stat("/").cversion
    assert ok(h.create("/s-", sequential=True)) == f"/s-{cversion:010d}"
    # "/" with the sequential flag is the root's "/queue/" form: a child named by the counter
    assert ok(h.create("/", sequential=True)) == f"/{cversion + 1:010d}"
    assert h.stat(f"/{cversion + 1:010d}").czxid == h.tree.last_zxid
    assert code(h.create("/")) == Code.NODE_EXISTS


# ---- sessions ---------------------------------------------------------------------------


def test_create_session_and_close_session_update_the_session_table() -> None:
    h = Harness()
    result = h.open(S1, timeout_ms=4000)
    assert ok(result) == S1
    assert h.tree.sessions[S1].timeout_ms == 4000
    assert h.tree.sessions[S1].password == b"pw"
    assert h.prep.session_alive(S1)
    assert code(h.run(CreateSessionRequest(S1, 4000, b"pw"), session=S1)) == Code.BAD_ARGUMENTS
    ok(h.run(CloseSessionRequest(), session=S1))
    assert S1 not in h.tree.sessions
    assert not h.prep.session_alive(S1)
    assert code(h.run(CloseSessionRequest(), session=S1)) == Code.SESSION_EXPIRED


def test_close_session_deletes_its_ephemerals_in_one_txn(h: Harness) -> None:
    h.create("/p")
    h.create("/e1", b"x", ephemeral=True)
    h.create("/p/e2", ephemeral=True)
    h.create("/p/q-", ephemeral=True, sequential=True)
    h.create("/keep", ephemeral=True, session=S2)
    h.create("/persistent")
    root_before, p_before = h.stat("/"), h.stat("/p")

    record = h.prepare(CloseSessionRequest(), session=S1)
    assert record.op == CloseSession(S1)
    result = h.apply(record)
    ok(result)
    z = record.zxid

    for gone in ("/e1", "/p/e2", "/p/q-0000000001"):
        assert gone not in h.tree
    assert {"/keep", "/persistent", "/p"} <= set(h.tree.nodes)
    assert h.tree.ephemerals_of(S1) == set()
    assert h.tree.ephemerals_of(S2) == {"/keep"}
    assert S1 not in h.tree.sessions
    assert S2 in h.tree.sessions

    # the change list: DELETED for each node and CHILD for its parent, all in this txn
    assert set(result.changes) == {
        (EventType.DELETED, "/e1"),
        (EventType.CHILD, "/"),
        (EventType.DELETED, "/p/e2"),
        (EventType.DELETED, "/p/q-0000000001"),
        (EventType.CHILD, "/p"),
    }
    deleted = [path for kind, path in result.changes if kind == EventType.DELETED]
    assert sorted(deleted) == deleted == ["/e1", "/p/e2", "/p/q-0000000001"]
    for index, (kind, path) in enumerate(result.changes):
        if kind == EventType.DELETED:
            parent = path.rsplit("/", 1)[0] or "/"
            assert result.changes[index + 1] == (EventType.CHILD, parent)

    root, p = h.stat("/"), h.stat("/p")
    assert root.cversion == root_before.cversion + 1
    assert p.cversion == p_before.cversion + 2
    assert root.pzxid == p.pzxid == z
    assert (root.num_children, p.num_children) == (
        root_before.num_children - 1,
        p_before.num_children - 2,
    )
    # and the next sequential name under /p follows the bumped cversion
    assert ok(h.create("/p/q-", sequential=True, session=S2)) == f"/p/q-{p.cversion:010d}"


# ---- multi ----------------------------------------------------------------------------


def test_multi_applies_every_op_in_one_txn(h: Harness) -> None:
    h.create("/m", b"v0")
    record = h.prepare(
        MultiRequest(
            (
                CreateRequest("/m/a", b"a", OPEN),
                CreateRequest("/m/a/s-", b"", OPEN, sequential=True),
                SetDataRequest("/m", b"v1", 0),
                CheckRequest("/m", 1),
                SetDataRequest("/m/a", b"a1", 0),
                DeleteRequest("/m/a/s-0000000000", 0),
                CreateRequest("/m/b", b"", OPEN, ephemeral=True),
            )
        )
    )
    assert isinstance(record.op, Multi)
    assert not record.op.failed
    result = h.apply(record)
    assert code(result) == Code.OK
    assert result.multi_results is not None
    assert [r.error for r in result.multi_results] == [Code.OK] * 7
    values = [r.value for r in result.multi_results]
    assert values[0] == "/m/a"
    assert values[1] == "/m/a/s-0000000000"
    assert values[2].version == 1
    assert values[2].mzxid == record.zxid
    assert values[3] is None
    assert values[4].version == 1
    assert values[5] is None
    assert values[6] == "/m/b"
    assert h.tree.get("/m").data == b"v1"  # type: ignore[union-attr]
    assert h.tree.children_of("/m") == ["a", "b"]
    assert h.tree.children_of("/m/a") == []
    assert h.stat("/m/a").cversion == 2
    assert h.stat("/m").pzxid == record.zxid
    assert h.stat("/m/b").ephemeral_owner == S1
    assert (EventType.CREATED, "/m/a") in result.changes
    assert (EventType.DELETED, "/m/a/s-0000000000") in result.changes
    assert h.tree.last_zxid == record.zxid


@pytest.mark.parametrize(
    ("ops", "failing", "expected"),
    [
        (
            (
                CreateRequest("/ok", b"", OPEN),
                SetDataRequest("/missing", b"", -1),
                CreateRequest("/later", b"", OPEN),
            ),
            1,
            Code.NO_NODE,
        ),
        (
            (
                CreateRequest("/ok", b"", OPEN),
                SetDataRequest("/base", b"x", 0),
                CheckRequest("/base", 0),  # fails: the set in this multi made it version 1
                DeleteRequest("/base"),
            ),
            2,
            Code.BAD_VERSION,
        ),
        (
            (CreateRequest("/base", b"", OPEN),),
            0,
            Code.NODE_EXISTS,
        ),
        (
            (
                CreateRequest("/ok", b"", OPEN),
                CreateRequest("/ok", b"", OPEN),  # exists because of the op before it
            ),
            1,
            Code.NODE_EXISTS,
        ),
        (
            (
                CreateRequest("/ok", b"", OPEN),
                DeleteRequest("/base"),  # /base has a child
                CreateRequest("/later", b"", OPEN),
                CreateRequest("/later2", b"", OPEN),
            ),
            1,
            Code.NOT_EMPTY,
        ),
        (
            (
                CreateRequest("/ok", b"", OPEN),
                SetACLRequest("/base", OPEN),  # not a multi op
            ),
            1,
            Code.BAD_ARGUMENTS,
        ),
    ],
)
def test_failed_multi_changes_nothing(
    h: Harness, ops: tuple[WriteRequest, ...], failing: int, expected: Code
) -> None:
    h.create("/base")
    h.create("/base/child")
    digest = h.tree.digest()
    record = h.prepare(MultiRequest(ops))  # type: ignore[arg-type]
    assert isinstance(record.op, Multi)
    assert record.op.failed
    result = h.apply(record)
    assert h.tree.digest() == digest
    assert result.changes == []
    assert code(result) == expected
    assert result.multi_results is not None
    codes = [r.error for r in result.multi_results]
    assert codes == (
        [Code.OK] * failing + [expected] + [Code.RUNTIME_INCONSISTENCY] * (len(ops) - failing - 1)
    )
    assert h.tree.last_zxid == record.zxid
    assert h.overlay_is_empty()


def test_failed_multi_leaves_no_trace_in_the_overlay(h: Harness) -> None:
    # prepped, not applied: its staged create of /ok must not make /ok "exist" for the next prep
    failed = h.prepare(MultiRequest((CreateRequest("/ok", b"", OPEN), DeleteRequest("/missing"))))
    nxt = h.prepare(CreateRequest("/ok", b"", OPEN))
    assert isinstance(nxt.op, Create)
    assert code(h.apply(failed)) == Code.NO_NODE
    assert ok(h.apply(nxt)) == "/ok"


def test_empty_multi_is_a_no_op(h: Harness) -> None:
    digest = h.tree.digest()
    result = h.run(MultiRequest(()))
    assert code(result) == Code.OK
    assert result.multi_results == []
    assert h.tree.digest() == digest


# ---- pipelining: prep several requests before applying any -----------------------------


def test_pipelined_create_and_delete_chain(h: Harness) -> None:
    records = [
        h.prepare(CreateRequest("/a", b"1", OPEN)),
        h.prepare(CreateRequest("/a/b", b"2", OPEN)),
        h.prepare(DeleteRequest("/a/b", 0)),
        h.prepare(DeleteRequest("/a", 0)),
    ]
    assert [type(r.op) for r in records] == [Create, Create, Delete, Delete]
    assert "/a" not in h.tree  # nothing applied yet
    results = [h.apply(r) for r in records]
    assert [code(r) for r in results] == [Code.OK] * 4
    assert "/a" not in h.tree
    assert h.stat("/").cversion == 2
    assert h.overlay_is_empty()


def test_pipelined_double_create_second_is_node_exists(h: Harness) -> None:
    first = h.prepare(CreateRequest("/x", b"1", OPEN))
    second = h.prepare(CreateRequest("/x", b"2", OPEN))
    assert isinstance(first.op, Create)
    assert second.op == ErrorTxn(Code.NODE_EXISTS)
    assert ok(h.apply(first)) == "/x"
    assert code(h.apply(second)) == Code.NODE_EXISTS
    assert h.tree.get("/x").data == b"1"  # type: ignore[union-attr]


def test_pipelined_versions_and_sequence_numbers(h: Harness) -> None:
    h.create("/a")
    records = [
        h.prepare(SetDataRequest("/a", b"1", 0)),
        h.prepare(SetDataRequest("/a", b"2", 1)),  # sees the version the first will leave
        h.prepare(SetDataRequest("/a", b"3", 1)),  # stale
        h.prepare(CreateRequest("/a/s-", b"", OPEN, sequential=True)),
        h.prepare(CreateRequest("/a/s-", b"", OPEN, sequential=True)),
        h.prepare(DeleteRequest("/a/s-0000000000")),
        h.prepare(CreateRequest("/a/s-", b"", OPEN, sequential=True)),
        h.prepare(DeleteRequest("/a")),  # not empty yet: two children pending
    ]
    results = [h.apply(r) for r in records]
    assert [code(r) for r in results] == [
        Code.OK,
        Code.OK,
        Code.BAD_VERSION,
        Code.OK,
        Code.OK,
        Code.OK,
        Code.OK,
        Code.NOT_EMPTY,
    ]
    assert [results[i].result.value for i in (3, 4, 6)] == [
        "/a/s-0000000000",
        "/a/s-0000000001",
        "/a/s-0000000003",
    ]
    assert h.tree.get("/a").data == b"2"  # type: ignore[union-attr]
    assert h.stat("/a").version == 2
    assert h.tree.children_of("/a") == ["s-0000000001", "s-0000000003"]
    assert h.overlay_is_empty()


def test_pipelined_delete_then_recreate(h: Harness) -> None:
    h.create("/a", b"old")
    records = [
        h.prepare(DeleteRequest("/a")),
        h.prepare(SetDataRequest("/a", b"x")),  # gone by then
        h.prepare(CreateRequest("/a", b"new", OPEN)),
        h.prepare(SetDataRequest("/a", b"newer", 0)),
    ]
    assert [code(h.apply(r)) for r in records] == [Code.OK, Code.NO_NODE, Code.OK, Code.OK]
    assert h.tree.get("/a").data == b"newer"  # type: ignore[union-attr]
    assert h.stat("/a").version == 1


def test_pipelined_close_session_removes_pending_ephemerals(h: Harness) -> None:
    h.create("/old", ephemeral=True)
    records = [
        h.prepare(CreateRequest("/new", b"", OPEN, ephemeral=True)),
        h.prepare(CreateRequest("/seq-", b"", OPEN, ephemeral=True, sequential=True)),
        h.prepare(CloseSessionRequest()),
        h.prepare(CreateRequest("/late", b"", OPEN)),  # the session is closing
        h.prepare(CreateRequest("/new", b"", OPEN), session=S2),  # /new is pending deletion
    ]
    codes = [code(h.apply(r)) for r in records]
    assert codes == [Code.OK, Code.OK, Code.OK, Code.SESSION_EXPIRED, Code.OK]
    assert h.tree.ephemerals_of(S1) == set()
    assert set(h.tree.nodes) == {"/", "/new", *RESERVED_NODES}
    assert h.stat("/new").ephemeral_owner == 0
    assert h.overlay_is_empty()


def test_pipelined_session_creation(h: Harness) -> None:
    s3 = 0x33
    records = [
        h.prepare(CreateSessionRequest(s3, 5000, b"p"), session=s3),
        h.prepare(CreateRequest("/e", b"", OPEN, ephemeral=True), session=s3),
        h.prepare(CreateSessionRequest(s3, 5000, b"p"), session=s3),  # exists (pending)
        h.prepare(CloseSessionRequest(), session=s3),
        h.prepare(CreateRequest("/f", b"", OPEN), session=s3),
    ]
    codes = [code(h.apply(r)) for r in records]
    assert codes == [Code.OK, Code.OK, Code.BAD_ARGUMENTS, Code.OK, Code.SESSION_EXPIRED]
    assert "/e" not in h.tree
    assert s3 not in h.tree.sessions
    assert h.overlay_is_empty()


def test_pipelined_multi_sees_earlier_pending_writes(h: Harness) -> None:
    records = [
        h.prepare(CreateRequest("/a", b"", OPEN)),
        h.prepare(MultiRequest((CheckRequest("/a", 0), CreateRequest("/a/b", b"", OPEN)))),
        h.prepare(MultiRequest((DeleteRequest("/a"),))),  # /a/b pending: not empty
        h.prepare(MultiRequest((DeleteRequest("/a/b"), DeleteRequest("/a")))),
    ]
    codes = [code(h.apply(r)) for r in records]
    assert codes == [Code.OK, Code.OK, Code.NOT_EMPTY, Code.OK]
    assert set(h.tree.nodes) == {"/", *RESERVED_NODES}


def test_applied_is_cumulative_and_keeps_later_overlay(h: Harness) -> None:
    r1 = h.prepare(CreateRequest("/a", b"", OPEN))
    r2 = h.prepare(SetDataRequest("/a", b"x", 0))
    h.tree.apply(r1)
    h.prep.applied(r1.zxid)
    # /a's pending version 1 (from r2) must survive the forgetting of r1's entry
    r3 = h.prepare(SetDataRequest("/a", b"y", 1))
    assert isinstance(r3.op, SetData)
    h.tree.apply(r2)
    h.tree.apply(r3)
    h.prep.applied(r3.zxid)  # one call covers both
    assert h.stat("/a").version == 2
    assert h.overlay_is_empty()


def test_reset_drops_prepped_but_unapplied_writes(h: Harness) -> None:
    lost = h.prepare(CreateRequest("/lost", b"", OPEN))
    assert isinstance(lost.op, Create)
    h.prep.reset()  # e.g. a new leader: the proposal never committed
    again = h.prepare(CreateRequest("/lost", b"", OPEN))
    assert isinstance(again.op, Create)
    ok(h.apply(again))


def test_apply_refuses_zxids_out_of_order(h: Harness) -> None:
    record = h.prepare(CreateRequest("/a", b"", OPEN))
    h.apply(record)
    with pytest.raises(RuntimeInconsistencyError):
        h.tree.apply(record)
    stale = TxnRecord(record.zxid - 1, S1, 0, 0, Check("/a", 0))
    with pytest.raises(RuntimeInconsistencyError):
        h.tree.apply(stale)
    assert h.tree.last_zxid == record.zxid


def test_apply_refuses_committed_txns_that_do_not_fit_the_tree(h: Harness) -> None:
    """Apply obeys, but a txn that cannot be obeyed is a loud inconsistency, not a guess."""
    h.create("/a")
    h.create("/a/b")
    for op in (
        Create("/a", b"", OPEN, 0, 9),  # exists
        Create("/missing/x", b"", OPEN, 0, 1),  # no parent
        Delete("/a"),  # has a child
        Delete("/missing"),
        SetData("/missing", b"", 1),
        SetACL("/missing", OPEN, 1),
        Multi((Multi(()),)),  # nested multi
    ):
        h.counter += 1
        with pytest.raises(RuntimeInconsistencyError):
            h.tree.apply(TxnRecord(make_zxid(h.epoch, h.counter), S1, 0, 0, op))


# ---- records: encode / decode, and replay on a second tree ------------------------------

ACLS = (ACL(Perm.READ | Perm.WRITE, Id("digest", "bob:x")), ACL(Perm.ALL, Id("ip", "10.0.0.1")))

ALL_OPS = [
    CreateSession(S1, 30_000, b"\x00\xffpassword"),
    CloseSession(S1),
    AttachSession(S1, 0x0200_0000_0000_0007),
    Create("/a/b", b"\x00data\xff", OPEN, 0, 3),
    Create("/e-0000000007", b"", ACLS, S2, 8),
    Delete("/a/b"),
    SetData("/a", b"new", 4),
    SetACL("/a", ACLS, 2),
    Check("/a", -1),
    ErrorTxn(Code.NO_NODE),
    Multi(
        (
            Create("/m", b"", OPEN, 0, 1),
            SetData("/m", b"x", 1),
            Check("/m", 1),
            Delete("/m"),
            SetACL("/n", OPEN, 1),
        )
    ),
    Multi((ErrorTxn(Code.OK), ErrorTxn(Code.BAD_VERSION), ErrorTxn(Code.RUNTIME_INCONSISTENCY))),
    Multi(()),
]


@pytest.mark.parametrize("op", ALL_OPS, ids=lambda op: type(op).__name__)
def test_record_round_trip(op: Any) -> None:
    record = TxnRecord(make_zxid(3, 17), S2, 42, 1_700_000_000_123, op)
    raw = encode_record(record)
    assert isinstance(raw, bytes)
    back = decode_record(raw)
    assert back == record
    assert encode_record(back) == raw  # byte-identical on re-encoding


def test_record_round_trip_for_large_values() -> None:
    record = TxnRecord(2**64 - 1, 2**63 - 1, -(2**31), 2**62, SetData("/a", b"x" * 70_000, 2**31))
    assert decode_record(encode_record(record)) == record


def test_decode_record_refuses_unknown_opcode() -> None:
    import msgpack

    raw = msgpack.packb([1, 0, 0, 0, [99, "/x"]], use_bin_type=True)
    with pytest.raises(ValueError, match="unknown transaction opcode 99"):
        decode_record(raw)


def _busy_history(h: Harness) -> list[TxnRecord]:
    """A history with every kind of txn; returns the records in zxid order."""
    records: list[TxnRecord] = []

    def run(request: WriteRequest, session: int = S1) -> None:
        record = h.prepare(request, session)
        records.append(record)
        h.apply(record)

    run(CreateSessionRequest(S1, 5000, b"one"), S1)
    run(CreateSessionRequest(S2, 6000, b"two"), S2)
    run(CreateRequest("/app", b"config", OPEN))
    run(CreateRequest("/app/locks", b"", ACLS[1:]))
    run(CreateRequest("/app/locks/l-", b"", OPEN, ephemeral=True, sequential=True))
    run(CreateRequest("/app/locks/l-", b"", OPEN, ephemeral=True, sequential=True), S2)
    run(SetDataRequest("/app", b"config-2", 0))
    run(SetACLRequest("/app", ACLS, 0))
    run(CreateRequest("/app", b"", OPEN))  # refused
    run(MultiRequest((CreateRequest("/app/x", b"", OPEN), SetDataRequest("/app/x", b"1", 0))))
    run(MultiRequest((CreateRequest("/app/y", b"", OPEN), DeleteRequest("/nope"))))  # fails
    run(DeleteRequest("/app/x"))
    run(CreateRequest("/tmp", b"t", OPEN, ephemeral=True), S2)
    run(CloseSessionRequest(), S1)
    return records


def test_replaying_encoded_records_gives_an_identical_tree() -> None:
    leader = Harness()
    records = _busy_history(leader)
    follower = DataTree()
    for raw in [encode_record(r) for r in records]:
        follower.apply(decode_record(raw))
    assert follower.digest() == leader.tree.digest()
    assert follower.last_zxid == leader.tree.last_zxid
    assert follower.ephemerals == leader.tree.ephemerals
    for path in leader.tree.nodes:
        assert follower.nodes[path].stat() == leader.tree.nodes[path].stat()


# ---- checkpoints -------------------------------------------------------------------------


def test_checkpoint_round_trip() -> None:
    h = Harness()
    _busy_history(h)
    delta = h.tree.take_checkpoint()
    assert delta.zxid == h.tree.last_zxid
    restored = DataTree.from_checkpoint(delta.zxid, delta.node_puts, delta.session_puts)
    assert restored.digest() == h.tree.digest()
    assert restored.last_zxid == h.tree.last_zxid
    assert restored.ephemerals == h.tree.ephemerals
    assert restored.sessions == h.tree.sessions
    for path, node in h.tree.nodes.items():
        assert restored.nodes[path].stat() == node.stat()
        assert restored.nodes[path].acl == node.acl
        assert restored.nodes[path].data == node.data
    # the restored tree carries on exactly like the original
    follow = Harness()
    follow.tree = restored
    follow.prep = Prep(restored)
    follow.counter = h.counter
    h_result = h.run(CloseSessionRequest(), S2)
    f_result = follow.run(CloseSessionRequest(), S2)
    assert f_result.changes == h_result.changes
    assert restored.digest() == h.tree.digest()


def test_incremental_checkpoints_compose() -> None:
    h = Harness()
    h.open(S1)
    h.create("/a", b"1")
    h.create("/a/b")
    h.create("/gone")
    store_nodes: dict[str, bytes] = {}
    store_sessions: dict[int, bytes] = {}

    def save() -> int:
        delta = h.tree.take_checkpoint()
        store_nodes.update(delta.node_puts)
        for path in delta.node_deletes:
            store_nodes.pop(path, None)
        store_sessions.update(delta.session_puts)
        for session in delta.session_deletes:
            store_sessions.pop(session, None)
        return delta.zxid

    save()
    h.open(S2)
    h.run(SetDataRequest("/a", b"2"))
    h.run(DeleteRequest("/gone"))
    h.create("/a/e", ephemeral=True, session=S2)
    h.run(CloseSessionRequest(), S1)
    second = h.tree.take_checkpoint()
    assert "/gone" in second.node_deletes
    assert S1 in second.session_deletes
    assert {path for path, _ in second.node_puts} == {"/", "/a", "/a/e"}
    store_nodes.update(second.node_puts)
    for path in second.node_deletes:
        store_nodes.pop(path, None)
    store_sessions.update(second.session_puts)
    for session in second.session_deletes:
        store_sessions.pop(session, None)
    restored = DataTree.from_checkpoint(
        second.zxid, list(store_nodes.items()), list(store_sessions.items())
    )
    assert restored.digest() == h.tree.digest()
    # nothing changed since: the next checkpoint is empty
    empty = h.tree.take_checkpoint()
    assert (empty.node_puts, empty.node_deletes, empty.session_puts, empty.session_deletes) == (
        [],
        [],
        [],
        [],
    )


def test_from_checkpoint_refuses_an_orphan() -> None:
    h = Harness()
    h.open(S1)
    h.create("/a")
    h.create("/a/b")
    nodes = dict(h.tree.iter_snapshot())
    del nodes["/a"]
    with pytest.raises(ValueError, match="/a/b"):
        DataTree.from_checkpoint(h.tree.last_zxid, list(nodes.items()), [])


def test_from_checkpoint_without_root_gets_a_fresh_root() -> None:
    restored = DataTree.from_checkpoint(0, [], [])
    assert restored.digest() == DataTree().digest()


def test_digest_differs_when_trees_differ() -> None:
    a, b = Harness(), Harness()
    a.open(S1)
    b.open(S1)
    assert a.tree.digest() == b.tree.digest()
    a.create("/x", b"1")
    b.create("/x", b"2")
    assert a.tree.digest() != b.tree.digest()


def test_changes_told_from_the_op_alone_match_what_apply_reports() -> None:
    """A restarted member rebuilds its change log from log records its tree already holds,
    with `changes_of`: it must say what `apply` said, for every kind of committed op."""
    h = Harness()
    h.open(S1)
    h.open(S2)
    requests: list[tuple[WriteRequest, int]] = [
        (CreateRequest("/a", b"", OPEN), S1),
        (CreateRequest("/a/b", b"1", OPEN), S1),
        (CreateRequest("/a/q-", b"", OPEN, False, True), S1),  # sequential
        (CreateRequest("/a/e", b"", OPEN, True), S2),  # ephemeral of S2
        (SetDataRequest("/a/b", b"2"), S1),
        (SetDataRequest("/a/b", b"3", 99), S1),  # a bad version: an ErrorTxn
        (SetACLRequest("/a/b", READ_ACL_UNSAFE), S1),
        (DeleteRequest("/a/b"), S1),
        (
            MultiRequest(
                (
                    CreateRequest("/m", b"", OPEN),
                    SetDataRequest("/a", b"x"),
                    CheckRequest("/a", 1),
                    DeleteRequest("/m"),
                )
            ),
            S1,
        ),
        (MultiRequest((SetDataRequest("/a", b"y"), CheckRequest("/a", 7))), S1),  # fails
        (CreateRequest("/a", b"", OPEN), S1),  # exists: an ErrorTxn
    ]
    kinds = set()
    for request, session in requests:
        record = h.prepare(request, session)
        assert changes_of(record.op) == h.apply(record).changes, request
        failed_multi = isinstance(record.op, Multi) and record.op.failed
        kinds.add("failed multi" if failed_multi else type(record.op).__name__)
    assert kinds == {"Create", "Delete", "SetData", "SetACL", "Multi", "failed multi", "ErrorTxn"}
    close = h.prepare(CloseSessionRequest(), S2)
    assert h.apply(close).changes == [(EventType.DELETED, "/a/e"), (EventType.CHILD, "/a")]
    assert changes_of(close.op) is None  # only the tree of that moment knew its ephemerals
