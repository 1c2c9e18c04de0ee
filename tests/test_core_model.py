"""Prep + DataTree against a small, obviously-correct reference model.

Hypothesis generates batches of operations (create persistent / ephemeral / sequential, set and
delete with right, wrong and "any" versions, check, multi, close and open sessions) from three
session slots. Every op in a batch is prepped before any of the batch is applied (the pipeline);
the model runs the same ops one at a time. After each apply we compare the op's outcome and the
whole tree with the model's state right after that op.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zkpy.core.errors import Code
from zkpy.core.prep import Prep
from zkpy.core.requests import (
    CheckRequest,
    CloseSessionRequest,
    CreateRequest,
    CreateSessionRequest,
    DeleteRequest,
    MultiRequest,
    SetDataRequest,
    WriteRequest,
)
from zkpy.core.tree import RESERVED_NODES, ApplyResult, DataTree, OpResult
from zkpy.core.txn import decode_record, encode_record
from zkpy.core.types import OPEN_ACL_UNSAFE, Stat, make_zxid

# ---- the reference model ----------------------------------------------------------------


@dataclass
class MNode:
    data: bytes | None
    owner: int
    czxid: int
    version: int = 0
    cversion: int = 0
    children: set[str] = field(default_factory=set)
    mzxid: int = 0
    pzxid: int = 0


class Refused(Exception):
    def __init__(self, code: Code) -> None:
        self.code = code


def _writable(path: str) -> None:
    """/zookeeper and everything under it is reserved: no client writes there, but for the
    nodes below /zookeeper/quota (where ZooKeeper's clients keep quotas)."""
    if path.startswith("/zookeeper/quota/"):
        return
    if path == "/zookeeper" or path.startswith("/zookeeper/"):
        raise Refused(Code.BAD_ARGUMENTS)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _name(path: str) -> str:
    return path.rsplit("/", 1)[1]


class Model:
    """A dict of path -> node, and a set of live sessions. Nothing clever."""

    def __init__(self) -> None:
        # the root, and the reserved /zookeeper and /zookeeper/quota that every tree holds
        self.nodes: dict[str, MNode] = {
            "/": MNode(b"", 0, 0, children={"zookeeper"}),
            "/zookeeper": MNode(b"", 0, 0, children={"quota"}),
            "/zookeeper/quota": MNode(b"", 0, 0),
        }
        self.sessions: set[int] = set()
        self.created: list[str] = []  # every path created, in order

    # each method either raises Refused(code) having changed nothing, or does the whole thing

    def _check_version(self, node: MNode, version: int) -> None:
        if version < -1:
            raise Refused(Code.BAD_ARGUMENTS)
        if version not in (-1, node.version):
            raise Refused(Code.BAD_VERSION)

    def create(
        self, path: str, data: bytes | None, ephemeral: bool, sequential: bool, sid: int, zxid: int
    ) -> str:
        if path == "/" and not sequential:
            raise Refused(Code.NODE_EXISTS)
        parent_path = _parent(path)
        if parent_path == "/zookeeper" or parent_path.startswith("/zookeeper/"):
            if not sequential and path in self.nodes:
                raise Refused(Code.NODE_EXISTS)
            _writable(path)
        parent = self.nodes.get(parent_path)
        if parent is None:
            raise Refused(Code.NO_NODE)
        if parent.owner:
            raise Refused(Code.NO_CHILDREN_FOR_EPHEMERALS)
        if sequential:
            path = f"{path}{parent.cversion:010d}"
        if path in self.nodes:
            raise Refused(Code.NODE_EXISTS)
        self.nodes[path] = MNode(data, sid if ephemeral else 0, zxid, mzxid=zxid, pzxid=zxid)
        parent.children.add(_name(path))
        parent.cversion += 1
        parent.pzxid = zxid
        self.created.append(path)
        return path

    def set(self, path: str, data: bytes | None, version: int, zxid: int) -> int:
        _writable(path)
        node = self.nodes.get(path)
        if node is None:
            raise Refused(Code.NO_NODE)
        self._check_version(node, version)
        node.data = data
        node.version += 1
        node.mzxid = zxid
        return node.version

    def _remove(self, path: str, zxid: int) -> None:
        del self.nodes[path]
        parent = self.nodes[_parent(path)]
        parent.children.remove(_name(path))
        parent.cversion += 1
        parent.pzxid = zxid

    def delete(self, path: str, version: int, zxid: int) -> None:
        if path == "/":
            raise Refused(Code.BAD_ARGUMENTS)
        _writable(path)
        node = self.nodes.get(path)
        if node is None:
            raise Refused(Code.NO_NODE)
        self._check_version(node, version)
        if node.children:
            raise Refused(Code.NOT_EMPTY)
        self._remove(path, zxid)

    def check(self, path: str, version: int) -> None:
        node = self.nodes.get(path)
        if node is None:
            raise Refused(Code.NO_NODE)
        self._check_version(node, version)

    def close(self, sid: int, zxid: int) -> None:
        if sid not in self.sessions:
            raise Refused(Code.SESSION_EXPIRED)
        for path in sorted(p for p, n in self.nodes.items() if n.owner == sid):
            self._remove(path, zxid)
        self.sessions.discard(sid)

    def state(self) -> dict[str, tuple[Any, ...]]:
        return {
            path: (
                n.data,
                n.version,
                n.cversion,
                len(n.children),
                n.owner,
                n.czxid,
                n.mzxid,
                n.pzxid,
            )
            for path, n in self.nodes.items()
        }


# ---- operations as hypothesis generates them ------------------------------------------------

POOL = ["/a", "/b", "/a/b", "/a/c", "/a/b/c", "/a/s-", "/zz/top", "/zookeeper", "/zookeeper/q"]
# a string is a path; an int picks an existing node; ("recent", k) the k-th latest created path,
# which is often still in flight in the same batch: that is what exercises the overlay
path_spec = st.one_of(
    st.sampled_from(POOL),
    st.integers(0, 30),
    st.tuples(st.just("recent"), st.integers(0, 2)),
)
datas = st.sampled_from([b"", b"x", b"yy", b"\x00\xff", None])
version_spec = st.sampled_from(["any", "right", "right", "wrong", "negative"])
slots = st.integers(0, 2)

create_op = st.tuples(st.just("create"), path_spec, datas, st.booleans(), st.booleans(), slots)
set_op = st.tuples(st.just("set"), path_spec, datas, version_spec, slots)
delete_op = st.tuples(st.just("delete"), path_spec, version_spec, slots)
check_op = st.tuples(st.just("check"), path_spec, version_spec, slots)
multi_inner = {"create": create_op, "set": set_op, "delete": delete_op, "check": check_op}
inner_op = st.sampled_from(["create", "create", "set", "delete", "check"]).flatmap(
    multi_inner.__getitem__
)
multi_op = st.tuples(st.just("multi"), st.lists(inner_op, min_size=0, max_size=4), slots)
close_op = st.tuples(st.just("close"), slots)
open_op = st.tuples(st.just("open"), slots)
OP_STRATEGIES = {**multi_inner, "multi": multi_op, "close": close_op, "open": open_op}
# weighted: creates are what grow the tree, and the rest need a tree to work on
OP_KINDS = (
    ["create"] * 6 + ["set"] * 2 + ["delete"] * 3 + ["check", "multi", "multi", "close", "open"]
)
op_strategy = st.sampled_from(OP_KINDS).flatmap(OP_STRATEGIES.__getitem__)
batches = st.lists(st.lists(op_strategy, min_size=1, max_size=6), min_size=3, max_size=12)


# ---- the runner -----------------------------------------------------------------------------

Expected = tuple[int, Any]  # (error code, summary of the value)


class Runner:
    def __init__(self) -> None:
        self.tree = DataTree()
        self.prep = Prep(self.tree)
        self.model = Model()
        self.counter = 0
        self.next_session = 0x100
        self.slots: list[int] = []
        self.records: list[Any] = []
        for _ in range(3):
            self.slots.append(self._new_session_id())
        for sid in self.slots:
            pending = self.submit(("open_id", sid), sid)
            self.apply_and_compare(*pending)

    def _new_session_id(self) -> int:
        self.next_session += 1
        return self.next_session

    def resolve(self, spec: str | int | tuple[str, int]) -> str:
        if isinstance(spec, str):
            return spec
        if isinstance(spec, tuple):
            created = self.model.created
            return created[-1 - spec[1]] if len(created) > spec[1] else "/a"
        ordered = sorted(self.model.nodes)
        return ordered[spec % len(ordered)]

    def version_for(self, path: str, spec: str) -> int:
        node = self.model.nodes.get(path)
        current = node.version if node is not None else 0
        return {"any": -1, "right": current, "wrong": current + 1, "negative": -2}[spec]

    def to_request(self, op: tuple[Any, ...]) -> WriteRequest:
        kind = op[0]
        if kind == "create":
            _, spec, data, ephemeral, sequential, _slot = op
            path = self.resolve(spec)
            if sequential and not path.endswith(("-", "/")):
                path += "/"  # a child named by the counter
            return CreateRequest(path, data, OPEN_ACL_UNSAFE, ephemeral, sequential)
        if kind == "set":
            _, spec, data, vspec, _slot = op
            path = self.resolve(spec)
            return SetDataRequest(path, data, self.version_for(path, vspec))
        if kind == "delete":
            _, spec, vspec, _slot = op
            path = self.resolve(spec)
            return DeleteRequest(path, self.version_for(path, vspec))
        if kind == "check":
            _, spec, vspec, _slot = op
            path = self.resolve(spec)
            return CheckRequest(path, self.version_for(path, vspec))
        raise AssertionError(kind)

    def model_single(self, request: WriteRequest, sid: int, zxid: int) -> Any:
        match request:
            case CreateRequest(path, data, _acl, ephemeral, sequential):
                return self.model.create(path, data, ephemeral, sequential, sid, zxid)
            case SetDataRequest(path, data, version):
                return self.model.set(path, data, version, zxid)
            case DeleteRequest(path, version):
                return self.model.delete(path, version, zxid)
            case CheckRequest(path, version):
                return self.model.check(path, version)
        raise AssertionError(request)

    def model_run(self, request: WriteRequest, sid: int, zxid: int) -> Expected:
        model = self.model
        match request:
            case CreateSessionRequest(new_id):
                model.sessions.add(new_id)
                return (Code.OK, new_id)
            case CloseSessionRequest():
                try:
                    model.close(sid, zxid)
                except Refused as refused:
                    return (refused.code, None)
                return (Code.OK, None)
        if sid not in model.sessions:
            return (Code.SESSION_EXPIRED, None)
        if isinstance(request, MultiRequest):
            saved = copy.deepcopy(model.nodes)
            results: list[tuple[int, Any]] = []
            for index, inner in enumerate(request.ops):
                try:
                    results.append((Code.OK, self.model_single(inner, sid, zxid)))
                except Refused as refused:
                    model.nodes = saved
                    failed = (
                        [(Code.OK, None)] * index
                        + [(refused.code, None)]
                        + [(Code.RUNTIME_INCONSISTENCY, None)] * (len(request.ops) - index - 1)
                    )
                    return (refused.code, failed)
            return (Code.OK, results)
        try:
            return (Code.OK, self.model_single(request, sid, zxid))
        except Refused as refused:
            return (refused.code, None)

    def submit(
        self, op: tuple[Any, ...], sid: int
    ) -> tuple[Any, Expected, dict[str, Any], set[int]]:
        """Prep one op (the tree is not touched) and run it in the model."""
        kind = op[0]
        if kind == "open_id":
            request: WriteRequest = CreateSessionRequest(op[1], 5000, b"pw")
        elif kind == "close":
            request = CloseSessionRequest()
        elif kind == "multi":
            request = MultiRequest(tuple(self.to_request(inner) for inner in op[1]))  # type: ignore[misc]
        else:
            request = self.to_request(op)
        self.counter += 1
        zxid = make_zxid(1, self.counter)
        expected = self.model_run(request, sid, zxid)
        record = self.prep.prepare(request, zxid=zxid, session_id=sid, cxid=self.counter, now_ms=0)
        return record, expected, self.model.state(), set(self.model.sessions)

    def run_batch(self, batch: list[tuple[Any, ...]]) -> None:
        pending = []
        for op in batch:
            if op[0] == "open":
                self.slots[op[1]] = self._new_session_id()
                sid = self.slots[op[1]]
                pending.append(self.submit(("open_id", sid), sid))
            else:
                pending.append(self.submit(op, self.slots[op[-1]]))
        for item in pending:
            self.apply_and_compare(*item)
        assert not self.prep._pending, "overlay outlived its txns"
        assert not self.prep._order, "overlay outlived its txns"

    def apply_and_compare(
        self, record: Any, expected: Expected, state: dict[str, Any], sessions: set[int]
    ) -> None:
        result = self.tree.apply(record)
        self.prep.applied(record.zxid)
        self.records.append(record)
        assert summarize(result) == expected, (record, expected)
        assert tree_state(self.tree) == state, record
        assert set(self.tree.sessions) == sessions
        owners = {
            sid: {p for p, n in self.tree.nodes.items() if n.ephemeral_owner == sid}
            for sid in {n.ephemeral_owner for n in self.tree.nodes.values()} - {0}
        }
        assert self.tree.ephemerals == owners


def _value_summary(value: Any) -> Any:
    if isinstance(value, Stat):
        return value.version  # the model reports the new version of a set
    return value


def summarize(result: ApplyResult) -> Expected:
    if result.multi_results is not None:
        inner: list[OpResult] = result.multi_results
        return (result.result.error, [(r.error, _value_summary(r.value)) for r in inner])
    return (result.result.error, _value_summary(result.result.value))


def tree_state(tree: DataTree) -> dict[str, tuple[Any, ...]]:
    out = {}
    for path, node in tree.nodes.items():
        stat = node.stat()
        assert stat.data_length == len(node.data or b"")
        assert sorted(node.children) == tree.children_of(path)
        out[path] = (
            node.data,
            stat.version,
            stat.cversion,
            stat.num_children,
            stat.ephemeral_owner,
            stat.czxid,
            stat.mzxid,
            stat.pzxid,
        )
    return out


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batches)
def test_prep_and_tree_match_the_model(plan: list[list[tuple[Any, ...]]]) -> None:
    runner = Runner()
    for batch in plan:
        runner.run_batch(batch)
    # a follower that replays the encoded history ends in the same state
    follower = DataTree()
    for record in runner.records:
        follower.apply(decode_record(encode_record(record)))
    assert follower.digest() == runner.tree.digest()
    # and so does a tree rebuilt from a checkpoint
    delta = runner.tree.take_checkpoint()
    restored = DataTree.from_checkpoint(delta.zxid, delta.node_puts, delta.session_puts)
    assert restored.digest() == runner.tree.digest()
    assert restored.ephemerals == runner.tree.ephemerals


def test_the_model_runner_is_not_vacuous() -> None:
    """A hand-written plan exercising every op kind, with outcomes we know."""
    runner = Runner()
    plan: list[list[tuple[Any, ...]]] = [
        [("create", "/a", b"x", False, False, 0), ("create", "/a/b", b"", True, False, 1)],
        [("create", "/a/s-", b"", False, True, 0), ("set", "/a", b"y", "right", 2)],
        [("multi", [("create", "/b", b"", False, False, 0), ("delete", "/a", "any", 0)], 0)],
        [("close", 1), ("delete", "/a/b", "any", 0), ("open", 1), ("check", "/a", "right", 0)],
    ]
    for batch in plan:
        runner.run_batch(batch)
    assert set(runner.tree.nodes) == {"/", "/a", "/a/s-0000000001", *RESERVED_NODES}
    assert runner.tree.get("/a").version == 1  # type: ignore[union-attr]
    assert len(runner.tree.sessions) == 3
