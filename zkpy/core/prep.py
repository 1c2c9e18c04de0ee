"""Prep: turn a write request into a transaction, checked against the tree plus what is in flight.

Writes are prepped on the leader, one after another, before they are committed. So a request must
be checked against the tree *and* against the effects of every earlier transaction that is not yet
applied: that is the overlay of pending node states. A refused write still becomes a transaction
(`ErrorTxn`) so that it keeps its place in the order and its reply comes back in FIFO order.

Prep also fences moved sessions, as ZooKeeper does with SESSION_MOVED. Every write is submitted
with the owner of the connection it came on (a member-made id, see `AttachSession`), and the
owner of each session is the connection that created it or that it was last attached to, in
prep order. A write from any other connection of the session is refused: a member that stalled
with a write in hand (a pause, a slow link) cannot have it applied after the writes the client
made since through another member, which would break FIFO client order.

The owners are kept here, in the leader's memory, for the epoch it leads, and in no checkpoint:
that is enough. A member drops all its client connections when it stops serving, and a new
leader starts a new epoch, so every write a leader preps came from a connection that was
created or attached (in this order on the same FIFO link) while this leader led: its owner, and
any attach that superseded it, were prepped here. An owner of 0 (the leader's own expiry of a
session, the simulator's writes) is not checked.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from zkpy.core import acl as acls
from zkpy.core import paths
from zkpy.core.errors import (
    BadArgumentsError,
    BadVersionError,
    NewConfigNoQuorumError,
    NoAuthError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    ReconfigInProgressError,
    SessionExpiredError,
    SessionMovedError,
    ZkError,
)
from zkpy.core.membership import Membership
from zkpy.core.nodekind import CONTAINER_OWNER, is_reapable, is_session_owner, ttl_owner
from zkpy.core.requests import (
    AttachSessionRequest,
    CheckRequest,
    CloseSessionRequest,
    CreateRequest,
    CreateSessionRequest,
    DeleteRequest,
    MultiRequest,
    PreppedRequest,
    ReapRequest,
    ReconfigRequest,
    SetACLRequest,
    SetDataRequest,
    WriteRequest,
)
from zkpy.core.tree import DataTree, ZNode, is_read_only, is_reserved
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
    rolled_back_multi,
)
from zkpy.core.types import ACL, Id, Perm

DEFAULT_MAX_DATA_BYTES = 1 << 20
NO_IDS: frozenset[Id] = frozenset()


@dataclass(slots=True)
class PendingNode:
    """The state a node will have once the transactions in flight are applied."""

    version: int
    cversion: int
    aversion: int
    ephemeral_owner: int
    num_children: int
    acl: tuple[ACL, ...]


class _Gone:
    """Marks a node that a transaction in flight deletes."""


GONE = _Gone()
NodeState = PendingNode | _Gone


def _snapshot(node: ZNode) -> PendingNode:
    return PendingNode(
        node.version,
        node.cversion,
        node.aversion,
        node.ephemeral_owner,
        len(node.children),
        node.acl,
    )


_SESSION_OPS = (CreateSession, CloseSession, AttachSession)  # a tuple: quicker than a union


class Prep:
    """The leader's prep stage: turns write requests into transactions, in commit order.

    It keeps the overlay of pending node and session states (what committed-but-unapplied
    transactions will do) and the owner of each session's writes; `applied` trims the overlay
    as the tree catches up, `reset` drops it for a new epoch."""

    def __init__(self, tree: DataTree, *, max_data_bytes: int = DEFAULT_MAX_DATA_BYTES) -> None:
        self.tree = tree
        self.max_data_bytes = max_data_bytes
        self._pending: dict[str, tuple[int, NodeState]] = {}
        self._pending_sessions: dict[int, tuple[int, bool]] = {}
        self._order: deque[tuple[int, list[str], int | None]] = deque()
        self._staged: dict[str, NodeState] = {}
        self._owners: dict[int, int] = {}  # session -> the connection that may write for it

    # ---- the public steps ------------------------------------------------------------------

    def prepare(
        self,
        request: PreppedRequest,
        *,
        zxid: int,
        session_id: int,
        cxid: int,
        now_ms: int,
        ids: frozenset[Id] = NO_IDS,
        owner: int = 0,
    ) -> TxnRecord:
        """Decide the transaction for `request`, to be committed at `zxid`; `owner` is the
        connection it came on (0: not checked, see the module docstring).

        Never raises for a bad request: the refusal is an `ErrorTxn` (or a rolled-back multi).
        """
        self._staged = {}
        session_change: int | None = None
        try:
            op = self._prepare_op(request, session_id, ids, owner)
            if isinstance(op, _SESSION_OPS):
                session_change = self._session_op(op, zxid, owner)
        except ZkError as err:
            self._staged = {}
            op = ErrorTxn(err.code)
        for path, state in self._staged.items():
            self._pending[path] = (zxid, state)
        if self._staged or session_change is not None:
            self._order.append((zxid, list(self._staged), session_change))
        self._staged = {}
        return TxnRecord(zxid, session_id, cxid, now_ms, op)

    def prepare_reconfig(
        self,
        request: ReconfigRequest,
        *,
        zxid: int,
        session_id: int,
        cxid: int,
        now_ms: int,
        ids: frozenset[Id],
        owner: int,
        current: Membership,
        reachable: frozenset[int],
        in_flight: bool,
    ) -> TxnRecord:
        """Decide a change of membership from `current` (the latest committed one), given the
        members the leader has in sync now (`reachable`, itself included) and whether another
        change is still being committed. Never raises: a refusal is an `ErrorTxn`. The checks
        come in ZooKeeper's order, the caller's permission last (clients read the membership
        in /zookeeper/config anyway)."""
        try:
            self._require_session(session_id, owner)
            if in_flight:
                raise ReconfigInProgressError("another change of membership is in flight")
            if request.from_version not in (-1, current.version):
                raise BadVersionError(
                    f"the membership is at version {current.version:#x}, "
                    f"not {request.from_version:#x}"
                )
            if request.new_members is None:
                new = current.changed(request.add, request.remove, zxid)
            else:
                new = current.replaced(request.new_members, zxid)
            live = len(new.voters & reachable)
            if live < len(new.voters) // 2 + 1:
                raise NewConfigNoQuorumError(
                    f"only {live} of the new membership's {len(new.voters)} voters are in sync "
                    "with the leader: not a quorum"
                )
            if acls.SUPER_ID not in ids:
                raise NoAuthError("only the super user may change the membership")
            op: Op = Reconfig(new.encode())
        except ZkError as err:
            op = ErrorTxn(err.code)
        return TxnRecord(zxid, session_id, cxid, now_ms, op)

    def applied(self, zxid: int) -> None:
        """Forget overlay entries that the tree now holds (everything up to `zxid`)."""
        order = self._order
        while order and order[0][0] <= zxid:
            entry_zxid, touched, session_id = order.popleft()
            for path in touched:
                held = self._pending.get(path)
                if held is not None and held[0] == entry_zxid:
                    del self._pending[path]
            if session_id is not None:
                held_session = self._pending_sessions.get(session_id)
                if held_session is not None and held_session[0] == entry_zxid:
                    del self._pending_sessions[session_id]

    def reset(self) -> None:
        """Drop the overlay, for a new leader that starts from its applied tree."""
        self._pending.clear()
        self._pending_sessions.clear()
        self._order.clear()
        self._owners.clear()

    def owner_of(self, session_id: int) -> int:
        """The connection that may write for `session_id` (0: none known in this epoch)."""
        return self._owners.get(session_id, 0)

    def _session_op(
        self, op: CreateSession | CloseSession | AttachSession, zxid: int, owner: int
    ) -> int | None:
        """Note what a prepped session operation changes; the session it creates or closes."""
        if type(op) is AttachSession:
            self._owners[op.session_id] = op.owner
            return None
        created = type(op) is CreateSession
        self._pending_sessions[op.session_id] = (zxid, created)
        if created and owner:
            self._owners[op.session_id] = owner
        elif not created:
            self._owners.pop(op.session_id, None)
        return op.session_id

    def session_alive(self, session_id: int) -> bool:
        """Whether the session is open once every transaction prepped so far is applied."""
        held = self._pending_sessions.get(session_id)
        if held is not None:
            return held[1]
        return session_id in self.tree.sessions

    # ---- lookups through the overlay -------------------------------------------------------

    def _state(self, path: str) -> PendingNode | None:
        staged = self._staged.get(path)
        if staged is None:
            held = self._pending.get(path)
            if held is None:
                node = self.tree.get(path)
                return None if node is None else _snapshot(node)
            staged = held[1]
        return None if isinstance(staged, _Gone) else staged

    def _existing(self, path: str) -> PendingNode:
        state = self._state(path)
        if state is None:
            raise NoNodeError(path=path)
        return state

    def _stage(self, path: str, state: NodeState) -> None:
        self._staged[path] = state

    # ---- per request -----------------------------------------------------------------------

    def _prepare_op(
        self, request: PreppedRequest, session_id: int, ids: frozenset[Id], owner: int
    ) -> Op:
        # exact type tests, the most frequent first (see `op_to_fields` for why not `match`)
        if type(request) is SetDataRequest:
            self._require_session(session_id, owner)
            return self._set_data(request, ids)
        if type(request) is CreateRequest:
            self._require_session(session_id, owner)
            return self._create(request, session_id, ids)
        if type(request) is CreateSessionRequest:
            if self.session_alive(request.session_id):
                raise BadArgumentsError(f"session {request.session_id:#x} exists")
            return CreateSession(request.session_id, request.timeout_ms, request.password)
        if type(request) is AttachSessionRequest:
            self._require_session(session_id, 0)  # any connection may take the session over
            return AttachSession(session_id, owner)
        if type(request) is ReapRequest:
            if session_id or owner:
                raise BadArgumentsError("only the leader reaps nodes")
            return self._reap(request)
        self._require_session(session_id, owner)
        if type(request) is CloseSessionRequest:
            return self._close_session(session_id)
        if type(request) is MultiRequest:
            return self._multi(request.ops, session_id, ids)
        if type(request) is SetACLRequest:
            return self._set_acl(request, ids)
        return self._single(request, session_id, ids)

    def _single(self, request: PreppedRequest, session_id: int, ids: frozenset[Id]) -> Op:
        if type(request) is SetDataRequest:
            return self._set_data(request, ids)
        if type(request) is CreateRequest:
            return self._create(request, session_id, ids)
        if type(request) is DeleteRequest:
            return self._delete(request, ids)
        if type(request) is CheckRequest:
            return self._check(request, ids)
        raise BadArgumentsError(f"{type(request).__name__} cannot be prepped here")

    def _require_session(self, session_id: int, owner: int) -> None:
        if not self.session_alive(session_id):
            raise SessionExpiredError(f"session {session_id:#x} is closed or expired")
        if owner and self._owners.get(session_id, owner) != owner:
            raise SessionMovedError(
                f"session {session_id:#x} has moved to another connection; "
                "this one may no longer write"
            )

    def _check_writable(self, path: str) -> None:
        if is_read_only(path):
            raise BadArgumentsError(
                "/zookeeper is reserved: no client may change it but below /zookeeper/quota",
                path=path,
            )

    def _check_version(self, path: str, expected: int, actual: int) -> None:
        if expected < -1:
            raise BadArgumentsError(f"bad version {expected}", path=path)
        if expected != -1 and expected != actual:
            raise BadVersionError(f"expected version {expected}, node has {actual}", path=path)

    def _check_data(self, data: bytes | None) -> None:
        if data is not None and len(data) > self.max_data_bytes:
            raise BadArgumentsError(
                f"value of {len(data)} bytes is over the limit of {self.max_data_bytes}"
            )

    def _check_perm(self, state: PendingNode, perm: Perm, ids: frozenset[Id], path: str) -> None:
        if not acls.allows(state.acl, perm, ids):
            raise NoAuthError(f"{perm.name} not allowed", path=path)

    def _create(self, request: CreateRequest, session_id: int, ids: frozenset[Id]) -> Create:
        requested = paths.validate(request.path, sequential=request.sequential)
        if requested == "/" and not request.sequential:  # sequential "/" names a root child
            raise NodeExistsError(path="/")
        parent_path = paths.parent(requested)
        if is_reserved(parent_path):
            # a reserved node that is there (/zookeeper/quota, /zookeeper/config) exists, as
            # "/zookeeper" itself does: NodeExists, as in ZooKeeper
            if not request.sequential and self._state(requested) is not None:
                raise NodeExistsError(path=requested)
            self._check_writable(requested)
        self._check_data(request.data)
        acl = acls.resolve(request.acl, ids)
        parent = self._state(parent_path)
        if parent is None:
            raise NoNodeError("parent does not exist", path=requested)
        self._check_perm(parent, Perm.CREATE, ids, parent_path)
        if is_session_owner(parent.ephemeral_owner):
            raise NoChildrenForEphemeralsError(path=parent_path)
        owner = session_id if request.ephemeral else 0
        if request.container or request.ttl_ms:
            owner = _kind_owner(request)
        path = paths.with_sequence(requested, parent.cversion) if request.sequential else requested
        if self._state(path) is not None:
            raise NodeExistsError(path=path)
        new_cversion = parent.cversion + 1
        self._stage(
            parent_path,
            PendingNode(
                parent.version,
                new_cversion,
                parent.aversion,
                parent.ephemeral_owner,
                parent.num_children + 1,
                parent.acl,
            ),
        )
        self._stage(path, PendingNode(0, 0, 0, owner, 0, acl))
        return Create(path, request.data, acl, owner, new_cversion)

    def _remove(self, path: str) -> None:
        parent_path = paths.parent(path)
        parent = self._existing(parent_path)
        self._stage(
            parent_path,
            PendingNode(
                parent.version,
                parent.cversion + 1,
                parent.aversion,
                parent.ephemeral_owner,
                parent.num_children - 1,
                parent.acl,
            ),
        )
        self._stage(path, GONE)

    def _delete(self, request: DeleteRequest, ids: frozenset[Id]) -> Delete:
        path = paths.validate(request.path)
        if path == "/":
            raise BadArgumentsError("the root cannot be deleted", path=path)
        self._check_writable(path)
        state = self._existing(path)
        parent_path = paths.parent(path)
        self._check_perm(self._existing(parent_path), Perm.DELETE, ids, parent_path)
        self._check_version(path, request.version, state.version)
        if state.num_children:
            raise NotEmptyError(path=path)
        self._remove(path)
        return Delete(path)

    def _set_data(self, request: SetDataRequest, ids: frozenset[Id]) -> SetData:
        path = paths.validate(request.path)
        self._check_writable(path)
        self._check_data(request.data)
        state = self._existing(path)
        self._check_perm(state, Perm.WRITE, ids, path)
        self._check_version(path, request.version, state.version)
        new_version = state.version + 1
        self._stage(
            path,
            PendingNode(
                new_version,
                state.cversion,
                state.aversion,
                state.ephemeral_owner,
                state.num_children,
                state.acl,
            ),
        )
        return SetData(path, request.data, new_version)

    def _set_acl(self, request: SetACLRequest, ids: frozenset[Id]) -> SetACL:
        path = paths.validate(request.path)
        self._check_writable(path)
        state = self._existing(path)
        self._check_perm(state, Perm.ADMIN, ids, path)
        self._check_version(path, request.version, state.aversion)
        acl = acls.resolve(request.acl, ids)
        new_aversion = state.aversion + 1
        self._stage(
            path,
            PendingNode(
                state.version,
                state.cversion,
                new_aversion,
                state.ephemeral_owner,
                state.num_children,
                acl,
            ),
        )
        return SetACL(path, acl, new_aversion)

    def _check(self, request: CheckRequest, ids: frozenset[Id]) -> Check:
        path = paths.validate(request.path)
        state = self._existing(path)
        self._check_perm(state, Perm.READ, ids, path)
        self._check_version(path, request.version, state.version)
        return Check(path, request.version)

    def _multi(self, ops: tuple[WriteRequest, ...], session_id: int, ids: frozenset[Id]) -> Multi:
        done: list[Op] = []
        for index, request in enumerate(ops):
            try:
                if not isinstance(
                    request, CreateRequest | DeleteRequest | SetDataRequest | CheckRequest
                ):
                    raise BadArgumentsError(f"{type(request).__name__} is not allowed in a multi")
                done.append(self._single(request, session_id, ids))
            except ZkError as err:
                self._staged = {}
                return rolled_back_multi(len(ops), index, err.code)
        return Multi(tuple(done))

    def _reap(self, request: ReapRequest) -> Delete:
        """Delete a due container or TTL node, unless a write in flight has given it a child
        or changed it since the leader found it due (checked against the overlay)."""
        path = request.path
        state = self._existing(path)
        if not is_reapable(state.ephemeral_owner):
            raise BadArgumentsError("neither a container nor a TTL node", path=path)
        if state.num_children:
            raise NotEmptyError(path=path)
        self._check_version(path, request.version, state.version)
        self._remove(path)
        return Delete(path)

    def _close_session(self, session_id: int) -> CloseSession:
        owned = set(self.tree.ephemerals_of(session_id))
        for path, (_zxid, state) in self._pending.items():
            if isinstance(state, PendingNode) and state.ephemeral_owner == session_id:
                owned.add(path)
        for path in sorted(owned):
            if self._state(path) is not None:
                self._remove(path)
        return CloseSession(session_id)


def _kind_owner(request: CreateRequest) -> int:
    """The `ephemeral_owner` of a new container or TTL node (see `zkpy.core.nodekind`);
    BadArgumentsError for a combination ZooKeeper has no mode for."""
    ttl_ms = request.ttl_ms
    if request.container:
        if request.ephemeral or request.sequential or ttl_ms:
            raise BadArgumentsError(
                "a container node cannot be ephemeral, sequential or have a ttl",
                path=request.path,
            )
        return CONTAINER_OWNER
    if request.ephemeral:
        raise BadArgumentsError("an ephemeral node cannot have a ttl", path=request.path)
    try:
        return ttl_owner(ttl_ms)
    except ValueError as err:
        raise BadArgumentsError(str(err), path=request.path) from None
