"""Contender znodes and retry helpers shared by the recipes.

A contender (a lock waiter, a reader, a lease, an election candidate) is an ephemeral sequential
znode named ``{uid}-{kind}-{seq}``: `uid` is 32 hex digits fresh for each acquisition, `kind` says
what it is, and `seq` is the 10-digit counter the server appends. The order of contenders is the
order of `seq`, which is the order of their creation, which is the order of their czxids.

Why the uid: a create whose reply is lost with the connection may or may not have happened. The
uid lets us find the node again by listing the parent (kazoo's trick), instead of creating a
second one and leaving the first behind, orphaned, to block everyone queued after it for the rest
of the session.

The directories the contenders queue in are container nodes: once the last contender has left,
the ensemble deletes the directory (within `container_check_interval_ms`), so lock and election
directories do not pile up. A contender's create that finds its directory gone makes it again.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import anyio

import zkpy
from zkpy.errors import (
    ConnectionLossError,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
    SessionExpiredError,
)

T = TypeVar("T")
P = ParamSpec("P")

_NAME = re.compile(r"^(?P<uid>[0-9a-f]{32})-(?P<kind>[a-z]+)-(?P<seq>[0-9]{10})$")


@dataclass(frozen=True, slots=True)
class Node:
    """One contender znode, parsed from its name."""

    name: str
    uid: str
    kind: str
    seq: int


def new_uid() -> str:
    return uuid.uuid4().hex


def to_bytes(identifier: bytes | str) -> bytes:
    return identifier.encode() if isinstance(identifier, str) else bytes(identifier)


def parse_nodes(names: Iterable[str]) -> list[Node]:
    """The contender nodes among `names`, in queue order. Other names are ignored."""
    nodes: list[Node] = []
    for name in names:
        match = _NAME.match(name)
        if match is not None:
            nodes.append(Node(name, match["uid"], match["kind"], int(match["seq"])))
    nodes.sort(key=lambda node: node.seq)
    return nodes


def async_client(zk: zkpy.Client, recipe: str) -> zkpy.Client:
    """`zk`, checked not to be a blocking `zkpy.sync` client (whose calls would block the loop
    the recipe runs on): that raises a TypeError pointing to `recipes.sync`."""
    from zkpy.sync import Client as BlockingClient

    if isinstance(zk, BlockingClient):
        raise TypeError(
            f"recipes.{recipe} takes an async client (zkpy.connect), not a zkpy.sync client: "
            f"use recipes.sync.{recipe}"
        )
    return zk


def join(parent: str, name: str) -> str:
    return parent + name if parent.endswith("/") else f"{parent}/{name}"


def check_alive(zk: zkpy.Client) -> None:
    """Raise if the session is over: retrying would only spin."""
    if zk.state is zkpy.ConnectionState.LOST:
        raise SessionExpiredError("the session is lost")


async def retry(
    zk: zkpy.Client, call: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
) -> T:
    """``await call(*args, **kwargs)``, an idempotent request, until it is not failed by a lost
    connection.

    The client already waits (up to the session timeout) for a reconnection before it fails a
    request, so this does not spin; it ends when the session is lost (`SessionExpiredError`).
    """
    attempt = 0
    while True:
        try:
            return await call(*args, **kwargs)
        except ConnectionLossError:
            check_alive(zk)
            attempt += 1
            await anyio.sleep(min(0.5, 0.01 * 2**attempt))


async def find_own(zk: zkpy.Client, parent: str, uid: str) -> tuple[str, zkpy.Stat] | None:
    """Our node under `parent`, found by its uid after a create of unknown outcome.

    If more than one create went through (a retried create whose first attempt was in fact
    applied), the first is kept and the others are deleted.
    """
    try:
        await retry(zk, zk.sync, parent)
        names: list[str] = await retry(zk, zk.get_children, parent)
    except NoNodeError:
        return None
    mine = [node for node in parse_nodes(names) if node.uid == uid]
    for extra in mine[1:]:
        await delete_quietly(zk, join(parent, extra.name))
    if not mine:
        return None
    path = join(parent, mine[0].name)
    stat = await retry(zk, zk.exists, path)
    return None if stat is None else (path, stat)


async def ensure_containers(zk: zkpy.Client, path: str) -> None:
    """Create `path` and its missing ancestors as container nodes; nodes already there, of
    any kind, are left as they are."""
    names = [name for name in path.split("/") if name]
    for depth in range(1, len(names) + 1):
        try:
            await retry(zk, zk.create, "/" + "/".join(names[:depth]), container=True)
        except NodeExistsError:
            pass


async def create_in_containers(
    zk: zkpy.Client, path: str, data: bytes = b"", *, ephemeral: bool = False
) -> None:
    """Create `path`, making its missing parents containers (again, if one is reaped between
    the two creates). Other errors, a lost connection included, are the caller's."""
    parent = path.rsplit("/", 1)[0] or "/"
    while True:
        try:
            await zk.create(path, data, ephemeral=ephemeral)
            return
        except NoNodeError:
            await ensure_containers(zk, parent)


async def create_contender(
    zk: zkpy.Client, parent: str, uid: str, kind: str, data: bytes, *, unknown: bool = False
) -> tuple[str, zkpy.Stat, bool]:
    """Create our ephemeral sequential node under `parent` (and `parent`, a container, if it
    is missing or was reaped meanwhile).

    Returns (path, stat, had_connection_loss). Retry-safe: after a `ConnectionLossError` the node
    is looked for by its uid and only created again if it is not there; `unknown` says that an
    earlier attempt already ended that way.
    """
    prefix = f"{join(parent, uid)}-{kind}-"
    lost_connection = unknown
    while True:
        if unknown:
            check_alive(zk)
            found = await find_own(zk, parent, uid)
            if found is not None:
                return found[0], found[1], lost_connection
        try:
            created, stat = await zk.create(
                prefix, data, ephemeral=True, sequential=True, include_data=True
            )
            return str(created), stat, lost_connection
        except NoNodeError:
            await ensure_containers(zk, parent)
        except ConnectionLossError:
            lost_connection = unknown = True


async def create_and_list(
    zk: zkpy.Client,
    parent: str,
    uid: str,
    kind: str,
    data: bytes,
    watch: Callable[[zkpy.WatchedEvent], object] | None = None,
) -> tuple[str, zkpy.Stat, bool, list[str] | None]:
    """`create_contender`, and the names of `parent`'s children (setting `watch` on them) in
    the same round trip: the listing goes right behind the create on the one connection, so it
    is answered after the create and shows our node. The names are None where they must be
    listed again (the create needed a second attempt, or the listing was lost with the
    connection): the watch is then not set either."""
    batch = zk.pipeline()
    batch.create(
        f"{join(parent, uid)}-{kind}-", data, ephemeral=True, sequential=True, include_data=True
    )
    batch.get_children(parent, watch=watch)
    created, names = await batch.execute(raise_on_error=False)
    if isinstance(created, tuple):
        return str(created[0]), created[1], False, names if isinstance(names, list) else None
    if not isinstance(created, NoNodeError | ConnectionLossError):
        raise created
    unknown = isinstance(created, ConnectionLossError)
    path, stat, lost_connection = await create_contender(
        zk, parent, uid, kind, data, unknown=unknown
    )
    return path, stat, lost_connection, None


async def exists_both(
    zk: zkpy.Client,
    first: str,
    first_watch: Callable[[zkpy.WatchedEvent], object],
    second: str,
    second_watch: Callable[[zkpy.WatchedEvent], object],
) -> tuple[zkpy.Stat | None, zkpy.Stat | None]:
    """exists() of two nodes, each setting its watch, in one round trip; retried on a lost
    connection (a watch set twice that way fires twice: its callback must allow that)."""

    async def both() -> tuple[zkpy.Stat | None, zkpy.Stat | None]:
        batch = zk.pipeline()
        batch.exists(first, watch=first_watch)
        batch.exists(second, watch=second_watch)
        first_stat, second_stat = await batch.execute()
        return first_stat, second_stat

    return await retry(zk, both)


async def delete_quietly(zk: zkpy.Client, path: str, version: int = -1) -> None:
    """Delete `path`, retrying on connection loss; a node already gone is fine."""
    try:
        await retry(zk, zk.delete, path, version)
    except NoNodeError:
        pass


RELEASED = b"released"
"""What a holder writes into its contender node in the multi that deletes it (`hand_off`)."""


async def hand_off(zk: zkpy.Client, path: str) -> None:
    """Delete the contender node of a granted hold in one multi that first writes `RELEASED`
    into it, retrying on connection loss; a node already gone is fine.

    The successor's exists() watch on the node then fires NodeDataChanged, not NodeDeleted:
    that says the node was released by a holder, which had waited for everything ahead of it,
    rather than abandoned by a waiter; the successor takes the lock without listing the queue
    again (see `lock.queue_after`). Both happen at one zxid, so nobody sees the marked node."""

    async def commit() -> None:
        results = await zk.transaction().set_data(path, RELEASED).delete(path).commit()
        failed = [r for r in results if isinstance(r, Exception)]
        if any(not isinstance(r, NoNodeError | RolledBackError) for r in failed):
            raise next(r for r in failed if not isinstance(r, RolledBackError))

    await retry(zk, commit)


async def remove_contender(
    zk: zkpy.Client,
    parent: str,
    uid: str,
    path: str | None,
    *,
    sweep: bool,
    patience: float | None = None,
    granted: bool = False,
) -> None:
    """Delete our node; with `sweep`, also any other node carrying our uid (an interrupted create
    that was applied after all). Must run shielded: it is the cleanup of a cancelled acquire too.
    The node of a `granted` hold goes with `hand_off`.

    It gives up, leaving the node to the session, if the session is lost (the server deleted it)
    or the ensemble stays unreachable for `patience` seconds (default: twice the session
    timeout, at least 5 s).
    """
    if patience is None:
        patience = max(5.0, 2 * zk.session_timeout)
    with anyio.move_on_after(patience):
        try:
            if path is not None and granted:
                await hand_off(zk, path)
            elif path is not None:
                await delete_quietly(zk, path)
            if sweep or path is None:
                await retry(zk, zk.sync, parent)
                names: list[str] = await retry(zk, zk.get_children, parent)
                for node in parse_nodes(names):
                    if node.uid == uid:
                        await delete_quietly(zk, join(parent, node.name))
        except (SessionExpiredError, NoNodeError):
            pass


RECEIPTS_PATH = "/.recipes/receipts"


class Receipt:
    """An ephemeral znode of our own (``{receipts_path}/{uid}``) that we write a fresh value into
    in the same multi as a write whose reply may be lost with the connection: reading it back
    afterwards tells whether that multi was applied. Queue takes and counter changes use it to
    happen exactly once. It lives apart from the recipe's own nodes, so a queue's children are
    its items only and a counter's node can be deleted."""

    def __init__(self, zk: zkpy.Client, receipts_path: str = RECEIPTS_PATH) -> None:
        self.zk = zk
        self.parent = receipts_path
        self.path = join(receipts_path, new_uid())
        self._ready = False

    async def ensure(self) -> None:
        if self._ready:
            return
        await retry(self.zk, self.zk.ensure_path, self.parent)
        try:
            await retry(self.zk, self.zk.create, self.path, b"", ephemeral=True)
        except NodeExistsError:
            pass  # ours, from an attempt whose reply was lost
        self._ready = True

    def invalidate(self) -> None:
        """Our receipt is gone (with a session): create it again before the next use."""
        self._ready = False

    async def read(self) -> bytes:
        data, _stat = await retry(self.zk, self.zk.get, self.path)
        return data


async def read_identifiers(zk: zkpy.Client, directory: str) -> list[bytes]:
    """The data (identifiers) of the contender nodes in `directory`, in queue order; nodes that
    vanish meanwhile are skipped."""
    try:
        names = await retry(zk, zk.get_children, directory)
    except NoNodeError:
        return []
    out: list[bytes] = []
    for node in parse_nodes(names):
        try:
            data, _stat = await retry(zk, zk.get, join(directory, node.name))
        except NoNodeError:
            continue
        out.append(data)
    return out
