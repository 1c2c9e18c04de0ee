"""DataTree: the znodes, their stats, the ephemeral index and the session table.

The tree knows no networking and makes no decisions: `apply` carries out a transaction that prep
has already checked, and reports the changes it made so that watches can fire. Applying the same
records in the same order gives byte-identical trees on every member.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

from zkpy.core import paths
from zkpy.core.errors import Code, RuntimeInconsistencyError
from zkpy.core.membership import CONFIG_PATH
from zkpy.core.nodekind import is_container, is_reapable, is_session_owner, ttl_of
from zkpy.core.txn import (
    AttachSession,
    Check,
    CloseSession,
    Create,
    CreateSession,
    Delete,
    ErrorTxn,
    Multi,
    Op,
    Reconfig,
    SetACL,
    SetData,
    TxnRecord,
)
from zkpy.core.types import ACL, OPEN_ACL_UNSAFE, Stat, acl_from_wire
from zkpy.core.watches import CHANGED, CHILD, CREATED, DELETED, Change

NO_CHILDREN: frozenset[str] = frozenset()
RESERVED_PATH = "/zookeeper"
QUOTA_PATH = "/zookeeper/quota"
RESERVED_NODES = (RESERVED_PATH, QUOTA_PATH)  # in every tree, as in ZooKeeper's
QUOTA_LIMITS = "zookeeper_limits"  # QUOTA_PATH + P + "/" + this: the quota on P, as set
QUOTA_STATS = "zookeeper_stats"  # ... + this: P's subtree counted (`DataTree` keeps it)


def is_reserved(path: str) -> bool:
    """Whether `path` is /zookeeper or under it: clients may read there, but not write, except
    below /zookeeper/quota (`is_read_only`)."""
    return path.startswith(RESERVED_PATH) and (
        len(path) == len(RESERVED_PATH) or path[len(RESERVED_PATH)] == "/"
    )


def is_read_only(path: str) -> bool:
    """Whether no client may write `path`: /zookeeper and what is under it, but for the nodes
    below /zookeeper/quota, where ZooKeeper's clients (zkCli's setquota, delquota) keep quotas."""
    return is_reserved(path) and not path.startswith(QUOTA_PATH + "/")


def quota_root(path: str) -> str | None:
    """The path whose quota `path` (a node below /zookeeper/quota) describes when it is the
    quota's limits or stats node, else None: /zookeeper/quota/a/b/zookeeper_limits -> /a/b.
    The root has none (/zookeeper/quota/zookeeper_limits -> None), as in ZooKeeper."""
    if not path.startswith(QUOTA_PATH + "/"):
        return None
    parent, _, name = path.rpartition("/")
    if name not in (QUOTA_LIMITS, QUOTA_STATS) or len(parent) <= len(QUOTA_PATH):
        return None
    return parent[len(QUOTA_PATH) :]


class ZNode:
    """One znode. Mutable, and private to the tree: readers get a `Stat` copy.

    A leaf shares the empty `NO_CHILDREN` instead of owning an empty set: most znodes are
    leaves, and a set each would cost 216 bytes and one more object for the garbage collector
    to walk per znode (a million of them in a big tree).

    `data` None is ZooKeeper's null data (a jute client's create or set_data may carry it):
    its length is 0, and it is kept as msgpack nil in the log, checkpoints and snapshots, so
    that it reads back null over the jute protocol."""

    __slots__ = (
        "acl",
        "aversion",
        "children",
        "ctime",
        "cversion",
        "czxid",
        "data",
        "ephemeral_owner",
        "mtime",
        "mzxid",
        "pzxid",
        "version",
    )

    def __init__(
        self,
        data: bytes | None,
        acl: tuple[ACL, ...],
        *,
        zxid: int,
        time_ms: int,
        ephemeral_owner: int = 0,
    ) -> None:
        self.data = data
        self.acl = acl
        self.czxid = zxid
        self.mzxid = zxid
        self.pzxid = zxid
        self.ctime = time_ms
        self.mtime = time_ms
        self.version = 0
        self.cversion = 0
        self.aversion = 0
        self.ephemeral_owner = ephemeral_owner
        self.children: set[str] | frozenset[str] = NO_CHILDREN

    def add_child(self, name: str) -> None:
        """Link child `name` (the first one replaces the shared empty set with a set of its own)."""
        children = self.children
        if isinstance(children, set):
            children.add(name)
        else:
            self.children = {name}

    def remove_child(self, name: str) -> None:
        """Unlink child `name` (the last one gives the node back the shared empty set)."""
        children = self.children
        if isinstance(children, set):
            children.discard(name)
            if not children:
                self.children = NO_CHILDREN

    def stat_wire(self) -> list[int]:
        """`stat().to_wire()` without the Stat in between (it is on the path of every read)."""
        data = self.data
        return [
            self.czxid,
            self.mzxid,
            self.ctime,
            self.mtime,
            self.version,
            self.cversion,
            self.aversion,
            self.ephemeral_owner,
            0 if data is None else len(data),
            len(self.children),
            self.pzxid,
        ]

    def stat(self) -> Stat:
        """A copy of the node's metadata for a reader."""
        return Stat(*self.stat_wire())


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What the tree keeps of an open session: its negotiated timeout and its password."""

    timeout_ms: int
    password: bytes


@dataclass(slots=True)
class OpResult:
    """The outcome of one operation: an error code, or a value (created path, Stat, None)."""

    error: int = Code.OK
    value: Any = None


@dataclass(slots=True)
class ApplyResult:
    """What applying one transaction did: the result its client hears, the changes watches
    fire on, and one result per operation of a multi."""

    record: TxnRecord
    result: OpResult
    changes: list[Change] = field(default_factory=list)
    multi_results: list[OpResult] | None = None


@dataclass(slots=True)
class CheckpointDelta:
    """What changed since the last checkpoint, encoded for storage."""

    zxid: int
    node_puts: list[tuple[str, bytes]]
    node_deletes: list[str]
    session_puts: list[tuple[int, bytes]]
    session_deletes: list[int]


class DataTree:
    """The znode tree and the session table of one member: the state every member builds
    identically by applying committed transactions in zxid order.

    It makes no decisions (prep has fixed everything in the transaction) and knows nothing of
    the network; it also tracks what changed since the last checkpoint."""

    def __init__(self) -> None:
        root = ZNode(b"", OPEN_ACL_UNSAFE, zxid=0, time_ms=0)
        self.nodes: dict[str, ZNode] = {"/": root}
        self.ephemerals: dict[int, set[str]] = {}
        self.reapable: set[str] = set()  # the container and TTL nodes, for the leader's reaper
        self.sessions: dict[int, SessionInfo] = {}
        self.quotas: set[str] = set()  # the paths with a quota (a limits node), not "/"
        self.last_zxid = 0
        self._add_reserved()
        self._dirty_nodes: set[str] = {"/", *RESERVED_NODES}
        self._dirty_sessions: set[int] = set()

    def _add_reserved(self) -> None:
        """The reserved nodes, made at zxid 0 and linked to their parents (the root's cversion
        is left as it is: they are no client's creations), if the tree lacks them."""
        for path in RESERVED_NODES:
            if path not in self.nodes:
                self.nodes[path] = ZNode(b"", OPEN_ACL_UNSAFE, zxid=0, time_ms=0)
                self.nodes[paths.parent(path)].add_child(paths.basename(path))

    def seed_config(self, data: bytes) -> None:
        """Show the membership a member starts with at /zookeeper/config (made at zxid 0, as
        the reserved nodes are) until a reconfig commits one: ZooKeeper clients read the
        ensemble there. A node a reconfig wrote (mzxid > 0) is left alone."""
        node = self.nodes.get(CONFIG_PATH)
        if node is None:
            self.nodes[CONFIG_PATH] = ZNode(data, OPEN_ACL_UNSAFE, zxid=0, time_ms=0)
            self._node(RESERVED_PATH).add_child(paths.basename(CONFIG_PATH))
            self._dirty_nodes.add(RESERVED_PATH)
        elif node.mzxid == 0 and node.data != data:
            node.data = data
        else:
            return
        self._dirty_nodes.add(CONFIG_PATH)

    # ---- reads -------------------------------------------------------------------------------

    def get(self, path: str) -> ZNode | None:
        """The node at `path`, or None. The node is the tree's own: do not change it."""
        return self.nodes.get(path)

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, path: object) -> bool:
        return path in self.nodes

    def children_of(self, path: str) -> list[str]:
        """The names of a node's children, sorted; the node must exist."""
        return sorted(self.nodes[path].children)

    def ephemerals_of(self, session_id: int) -> set[str]:
        """The paths of the ephemeral nodes a session owns (the tree's set: do not change it)."""
        return self.ephemerals.get(session_id, set())

    # ---- apply ---------------------------------------------------------------------------------

    def apply(self, record: TxnRecord, *, stats: bool = True) -> ApplyResult:
        """Carry out one committed transaction. Records must arrive in increasing zxid order.

        `stats=False` leaves out the Stat a set_data or set_acl returns (its result's value is
        None then): a member answers only its own clients' writes, and reads such a reply's
        Stat from the node right after the apply (`ZNode.stat_wire`), where making a `Stat`
        for every write was a tenth of applying a set. A multi's results always have them.
        """
        if record.zxid <= self.last_zxid:
            raise RuntimeInconsistencyError(
                f"zxid {record.zxid:#x} applied after {self.last_zxid:#x}"
            )
        changes: list[Change] = []
        op = record.op
        if isinstance(op, Multi):
            results = self._apply_multi(op, record, changes)
            failed = op.failed
            outcome = ApplyResult(record, OpResult(), changes, results)
            if failed:
                outcome.result = OpResult(next(r.error for r in results if r.error != Code.OK))
        else:
            outcome = ApplyResult(record, self._apply_op(op, record, changes, stats), changes)
        self.last_zxid = record.zxid
        return outcome

    def _apply_multi(self, op: Multi, record: TxnRecord, changes: list[Change]) -> list[OpResult]:
        if op.failed:
            return [OpResult(inner.code if isinstance(inner, ErrorTxn) else 0) for inner in op.ops]
        return [self._apply_op(inner, record, changes, True) for inner in op.ops]

    def _apply_op(self, op: Op, record: TxnRecord, changes: list[Change], stats: bool) -> OpResult:
        # exact type tests, the most frequent first (see `op_to_fields` for why not `match`)
        if type(op) is SetData:
            node = self._set_data(op, record, changes)
            return OpResult(value=node.stat() if stats else None)
        if type(op) is Create:
            return OpResult(value=self._create(op, record, changes))
        if type(op) is Delete:
            self._delete(op.path, record.zxid, changes)
            return OpResult()
        if type(op) is Check:
            return OpResult()
        if type(op) is ErrorTxn:
            return OpResult(op.code)
        if type(op) is SetACL:
            node = self._set_acl(op)
            return OpResult(value=node.stat() if stats else None)
        return self._apply_rare(op, record, changes)

    def _apply_rare(self, op: Op, record: TxnRecord, changes: list[Change]) -> OpResult:
        """Session operations and reconfigs: far fewer than node writes."""
        if type(op) is CreateSession:
            self.sessions[op.session_id] = SessionInfo(op.timeout_ms, op.password)
            self._dirty_sessions.add(op.session_id)
            return OpResult(value=op.session_id)
        if type(op) is CloseSession:
            for path in sorted(self.ephemerals.pop(op.session_id, set())):
                self._delete(path, record.zxid, changes)
            self.sessions.pop(op.session_id, None)
            self._dirty_sessions.add(op.session_id)
            return OpResult()
        if type(op) is AttachSession:
            return OpResult()  # the leader's prep enforces it; members close older connections
        if type(op) is Reconfig:
            return OpResult(value=self._reconfig(op, record, changes).stat())
        if type(op) is Multi:
            raise RuntimeInconsistencyError("nested multi")
        raise RuntimeInconsistencyError(f"unknown op {op!r}")

    def _node(self, path: str) -> ZNode:
        node = self.nodes.get(path)
        if node is None:
            raise RuntimeInconsistencyError(f"committed txn names a missing node: {path}")
        return node

    def _create(self, op: Create, record: TxnRecord, changes: list[Change]) -> str:
        path = op.path
        if path in self.nodes:
            raise RuntimeInconsistencyError(f"committed create of an existing node: {path}")
        parent_path = paths.parent(path)
        parent = self._node(parent_path)
        node = ZNode(
            op.data,
            op.acl,
            zxid=record.zxid,
            time_ms=record.time_ms,
            ephemeral_owner=op.ephemeral_owner,
        )
        self.nodes[path] = node
        parent.add_child(paths.basename(path))
        parent.cversion = op.parent_cversion
        parent.pzxid = record.zxid
        if op.ephemeral_owner:
            self._index(path, op.ephemeral_owner)
        self._dirty_nodes.add(path)
        self._dirty_nodes.add(parent_path)
        changes += _added(path, parent_path)
        if parent_path.startswith(QUOTA_PATH):
            self._quota_node_created(path)
        if self.quotas:
            self._count_in_quota(path, 1, _size(op.data))
        return path

    def _delete(self, path: str, zxid: int, changes: list[Change]) -> None:
        node = self._node(path)
        if node.children:
            raise RuntimeInconsistencyError(f"committed delete of a node with children: {path}")
        del self.nodes[path]
        parent_path = paths.parent(path)
        parent = self._node(parent_path)
        parent.remove_child(paths.basename(path))
        parent.cversion += 1
        parent.pzxid = zxid
        if node.ephemeral_owner:
            self._unindex(path, node.ephemeral_owner)
        self._dirty_nodes.add(path)
        self._dirty_nodes.add(parent_path)
        changes += _removed(path, parent_path)
        if self.quotas:
            if path.endswith(QUOTA_LIMITS):
                self.quotas.discard(quota_root(path) or "")
            self._count_in_quota(path, -1, -_size(node.data))

    def _index(self, path: str, owner: int) -> None:
        """File a new node under its session (ephemeral) or in `reapable` (container, TTL)."""
        if is_session_owner(owner):
            self.ephemerals.setdefault(owner, set()).add(path)
        elif is_reapable(owner):
            self.reapable.add(path)

    def _unindex(self, path: str, owner: int) -> None:
        if not is_session_owner(owner):
            self.reapable.discard(path)
            return
        owned = self.ephemerals.get(owner)
        if owned is not None:
            owned.discard(path)
            if not owned:
                del self.ephemerals[owner]

    def reap_candidates(self, now_ms: int, limit: int) -> list[tuple[str, int]]:
        """Up to `limit` (path, version) of nodes due to be reaped at `now_ms`, in path order:
        containers that have had a child (cversion > 0) and have none left, and TTL nodes
        with no children whose last change (mtime) is more than their ttl before `now_ms`.
        This is ZooKeeper's container manager's rule; the leader proposes their deletion."""
        due: list[tuple[str, int]] = []
        for path in sorted(self.reapable):
            node = self.nodes[path]
            if node.children:
                continue
            owner = node.ephemeral_owner
            if is_container(owner):
                if node.cversion <= 0:
                    continue
            elif now_ms - node.mtime <= ttl_of(owner):
                continue
            due.append((path, node.version))
            if len(due) >= limit:
                break
        return due

    def _set_data(self, op: SetData, record: TxnRecord, changes: list[Change]) -> ZNode:
        node = self._node(op.path)
        if self.quotas:
            self._count_in_quota(op.path, 0, _size(op.data) - _size(node.data))
        node.data = op.data
        node.version = op.version
        node.mzxid = record.zxid
        node.mtime = record.time_ms
        self._dirty_nodes.add(op.path)
        changes.append((CHANGED, op.path))
        return node

    def _reconfig(self, op: Reconfig, record: TxnRecord, changes: list[Change]) -> ZNode:
        """Write the new membership to /zookeeper/config, made by the first change."""
        node = self.nodes.get(CONFIG_PATH)
        if node is None:
            node = ZNode(op.config, OPEN_ACL_UNSAFE, zxid=record.zxid, time_ms=record.time_ms)
            self.nodes[CONFIG_PATH] = node
            parent = self._node(RESERVED_PATH)
            parent.add_child(paths.basename(CONFIG_PATH))
            parent.cversion += 1
            parent.pzxid = record.zxid
            self._dirty_nodes.add(RESERVED_PATH)
            changes += _added(CONFIG_PATH, RESERVED_PATH)
        else:
            node.data = op.config
            node.version += 1
            node.mzxid = record.zxid
            node.mtime = record.time_ms
            changes.append((CHANGED, CONFIG_PATH))
        self._dirty_nodes.add(CONFIG_PATH)
        return node

    def _set_acl(self, op: SetACL) -> ZNode:
        node = self._node(op.path)
        node.acl = op.acl
        node.aversion = op.aversion
        self._dirty_nodes.add(op.path)
        return node

    # ---- quotas ------------------------------------------------------------------------------
    #
    # ZooKeeper's quotas, as its 3.8 servers keep them by default (counted, not enforced): a
    # client (zkCli's setquota) writes the limits of path P to QUOTA_PATH + P/zookeeper_limits
    # and creates QUOTA_PATH + P/zookeeper_stats; from then on every member keeps the stats
    # node's data at "count=N,bytes=B", the nodes and data bytes of P's subtree, P included.
    # The stats node changes in place (no version, no mzxid, no watch), as in ZooKeeper, and
    # the same on every member: it follows from the records applied.

    def _quota_node_created(self, path: str) -> None:
        root = quota_root(path)
        if root is None:
            return
        if path.endswith(QUOTA_LIMITS):
            self.quotas.add(root)
        else:
            self._recount_quota(root)

    def _count_in_quota(self, path: str, nodes: int, size: int) -> None:
        """Add to the stats of the nearest quota over `path` (`path` itself included)."""
        quotas = self.quotas
        current = path
        while current not in quotas:
            if current == "/":
                return
            current = paths.parent(current)
        stats_path = f"{QUOTA_PATH}{current}/{QUOTA_STATS}"
        stats = self.nodes.get(stats_path)
        if stats is None:
            return  # not made yet: its creation counts the subtree
        try:
            counted = parse_quota(stats.data)
            count, counted_size = counted["count"], counted["bytes"]
        except (ValueError, KeyError):
            self._recount_quota(current)  # a client wrote something else there
            return
        stats.data = _quota_stats(count + nodes, counted_size + size)
        self._dirty_nodes.add(stats_path)

    def _recount_quota(self, root: str) -> None:
        """Count `root`'s subtree into its stats node."""
        stats_path = f"{QUOTA_PATH}{root}/{QUOTA_STATS}"
        stats = self.nodes.get(stats_path)
        if stats is None:
            return
        count = size = 0
        node = self.nodes.get(root)
        if node is not None:
            count, size = 1, _size(node.data)
            for path in self.descendants(root):
                count += 1
                size += _size(self.nodes[path].data)
        stats.data = _quota_stats(count, size)
        self._dirty_nodes.add(stats_path)

    # ---- checkpoints and snapshots ----------------------------------------------------------

    def take_checkpoint(self) -> CheckpointDelta:
        """Encode every node and session changed since the last call, and forget the changes."""
        node_puts: list[tuple[str, bytes]] = []
        node_deletes: list[str] = []
        packer = msgpack.Packer(use_bin_type=True)  # one for the whole walk
        nodes = self.nodes
        for path in self._dirty_nodes:
            node = nodes.get(path)
            if node is None:
                node_deletes.append(path)
            else:
                node_puts.append((path, encode_node(node, packer)))
        session_puts: list[tuple[int, bytes]] = []
        session_deletes: list[int] = []
        for session_id in self._dirty_sessions:
            info = self.sessions.get(session_id)
            if info is None:
                session_deletes.append(session_id)
            else:
                session_puts.append((session_id, encode_session(info)))
        self._dirty_nodes = set()
        self._dirty_sessions = set()
        return CheckpointDelta(
            self.last_zxid, node_puts, node_deletes, session_puts, session_deletes
        )

    def iter_snapshot(self) -> Iterator[tuple[str, bytes]]:
        """Every node as (path, encoding), for a snapshot sent to a follower that is far behind."""
        packer = msgpack.Packer(use_bin_type=True)
        for path, node in self.nodes.items():
            yield path, encode_node(node, packer)

    def iter_sessions(self) -> Iterator[tuple[int, bytes]]:
        """Every open session as (id, encoding), for the same snapshot."""
        for session_id, info in self.sessions.items():
            yield session_id, encode_session(info)

    @classmethod
    def from_checkpoint(
        cls,
        zxid: int,
        nodes: Iterable[tuple[str, bytes]],
        sessions: Iterable[tuple[int, bytes]],
    ) -> DataTree:
        """Rebuild a tree from encoded nodes and sessions; raise ValueError if they don't fit."""
        tree = cls()
        tree.nodes = {path: decode_node(raw) for path, raw in nodes}
        if "/" not in tree.nodes:
            tree.nodes["/"] = ZNode(b"", OPEN_ACL_UNSAFE, zxid=0, time_ms=0)
        for path in RESERVED_NODES:  # a checkpoint written before they were reserved
            if path not in tree.nodes:
                tree.nodes[path] = ZNode(b"", OPEN_ACL_UNSAFE, zxid=0, time_ms=0)
        for path in tree.nodes:
            if path == "/":
                continue
            parent = tree.nodes.get(paths.parent(path))
            if parent is None:
                raise ValueError(f"checkpoint holds {path} but not its parent")
            parent.add_child(paths.basename(path))
        for path, node in tree.nodes.items():
            if node.ephemeral_owner:
                tree._index(path, node.ephemeral_owner)
        for path in tree.descendants(QUOTA_PATH):
            root = quota_root(path)
            if root is not None and path.endswith(QUOTA_LIMITS):
                tree.quotas.add(root)
        tree.sessions = {session_id: decode_session(raw) for session_id, raw in sessions}
        tree.last_zxid = zxid
        tree._dirty_nodes = set()
        return tree

    def descendants(self, path: str) -> Iterator[str]:
        """Every node below `path`, depth first (not `path` itself)."""
        stack = [path]
        while stack:
            current = stack.pop()
            node = self.nodes.get(current)
            if node is None:
                continue
            for name in node.children:
                child = paths.join(current, name)
                yield child
                stack.append(child)

    def stat_zxids(self, path: str) -> tuple[int, int] | None:
        """(mzxid, pzxid) of the node, or None if it does not exist (the `TreeView` watch
        replay asks)."""
        node = self.nodes.get(path)
        return None if node is None else (node.mzxid, node.pzxid)

    def digest(self) -> str:
        """A stable hash of the whole tree and session table, to compare members."""
        hasher = hashlib.blake2b(digest_size=16)
        for path in sorted(self.nodes):
            hasher.update(path.encode())
            hasher.update(encode_node(self.nodes[path]))
        for session_id in sorted(self.sessions):
            hasher.update(session_id.to_bytes(8, "big"))
            hasher.update(encode_session(self.sessions[session_id]))
        return hasher.hexdigest()


def _size(data: bytes | None) -> int:
    return 0 if data is None else len(data)


def _quota_stats(count: int, size: int) -> bytes:
    return format_quota({"count": count, "bytes": size}).encode()


def format_quota(values: dict[str, int]) -> str:
    """Quota limits or stats in the text ZooKeeper's StatsTrack writes (zkCli.sh reads it):
    ``count=N,bytes=B``, then ``=;key=value`` for any other key, in key order."""
    text = f"count={values.get('count', -1)},bytes={values.get('bytes', -1)}"
    others = sorted(key for key in values if key not in ("count", "bytes"))
    if others:
        text += "=" + "".join(f";{key}={values[key]}" for key in others)
    return text


def parse_quota(data: bytes | None) -> dict[str, int]:
    """Quota limits or stats as ZooKeeper's StatsTrack reads them (``key=value`` pairs split at
    "," or ";"); ValueError if they are not that."""
    values = {}
    for pair in re.split(r"[,;]+", (data or b"").decode()):
        if pair:
            key, _, value = pair.partition("=")
            values[key] = int(value.rstrip("=") or -1)
    return values


def _added(path: str, parent_path: str) -> list[Change]:
    return [(CREATED, path), (CHILD, parent_path)]


def _removed(path: str, parent_path: str) -> list[Change]:
    return [(DELETED, path), (CHILD, parent_path)]


def changes_of(op: Op) -> list[Change] | None:
    """The changes that applying `op` made (what `DataTree.apply` reports), told from the op
    alone, for a committed record the tree already holds; None for a CloseSession, whose
    ephemeral deletions only the tree of that moment knew, and for a Reconfig."""
    match op:
        case SetData(path):
            return [(CHANGED, path)]
        case Create(path):
            return _added(path, paths.parent(path))
        case Delete(path):
            return _removed(path, paths.parent(path))
        case Multi(ops):
            if op.failed:
                return []
            changes: list[Change] = []
            for inner in ops:
                inner_changes = changes_of(inner)
                if inner_changes is None:
                    return None
                changes.extend(inner_changes)
            return changes
        case CloseSession() | Reconfig():
            return None  # a Reconfig makes /zookeeper/config or changes it
    return []  # SetACL, Check, CreateSession, AttachSession, ErrorTxn: no watch fires


def encode_node(node: ZNode, packer: msgpack.Packer | None = None) -> bytes:
    """The node's checkpoint record. A caller that encodes many nodes passes its own `packer`
    (one per caller: a Packer keeps state between calls), which saves making one per node."""
    fields = [
        node.data,
        node.czxid,
        node.mzxid,
        node.pzxid,
        node.ctime,
        node.mtime,
        node.version,
        node.cversion,
        node.aversion,
        node.ephemeral_owner,
        _acl_wire(node.acl),
    ]
    encoded: bytes = (
        msgpack.packb(fields, use_bin_type=True) if packer is None else packer.pack(fields)
    )
    return encoded


_ACL_WIRE: dict[tuple[ACL, ...], list[list[object]]] = {}
_ACL_WIRE_LIMIT = 1024


def _acl_wire(acl: tuple[ACL, ...]) -> list[list[object]]:
    """The wire form of an ACL, remembered: nearly every node of a tree shares a few ACLs.
    The lists are only ever read (packed), never changed."""
    wire = _ACL_WIRE.get(acl)
    if wire is None:
        wire = [entry.to_wire() for entry in acl]
        if len(_ACL_WIRE) < _ACL_WIRE_LIMIT:
            _ACL_WIRE[acl] = wire
    return wire


def decode_node(raw: bytes) -> ZNode:
    """A node from its checkpoint or snapshot encoding."""
    fields = msgpack.unpackb(raw, raw=False, use_list=False)
    (data, czxid, mzxid, pzxid, ctime, mtime, version, cversion, aversion, owner, acl) = fields
    node = ZNode(
        data,
        acl_from_wire(acl),
        zxid=czxid,
        time_ms=ctime,
        ephemeral_owner=owner,
    )
    # equal values share one int object, as they do in a tree built by apply (saves ~100 bytes
    # a node over a million nodes)
    node.mzxid = czxid if mzxid == czxid else mzxid
    node.pzxid = czxid if pzxid == czxid else pzxid
    node.mtime = ctime if mtime == ctime else mtime
    node.version = version
    node.cversion = cversion
    node.aversion = aversion
    return node


def encode_session(info: SessionInfo) -> bytes:
    """The checkpoint and snapshot encoding of a session."""
    encoded: bytes = msgpack.packb([info.timeout_ms, info.password], use_bin_type=True)
    return encoded


def decode_session(raw: bytes) -> SessionInfo:
    """A session from `encode_session`'s encoding."""
    timeout_ms, password = msgpack.unpackb(raw, raw=False)
    return SessionInfo(timeout_ms, password)
