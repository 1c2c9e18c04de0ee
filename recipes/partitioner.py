"""`SetPartitioner`: the members of a group split a set of items among themselves, and split it
again whenever a member comes or goes (kazoo's SetPartitioner).

    async with SetPartitioner(zk, "/partitions/feeds", feeds) as partitioner:
        async for partition in partitioner:
            with partition.cancel_scope:           # cancelled when the membership changes
                await work_on(partition.items)

Members are a `Party` under ``{path}/members``; sorted by node name, member k of n gets the
items at positions k, k + n, k + 2n ... of the sorted items. An item is owned through the
ephemeral node ``{path}/owners/{item as hex}`` (``owners`` is a container, as ``members`` is): a
partition is handed out only once every item in it is owned by us, and items that are no longer
ours are given up before the next one is, so no two members ever hold the same item at once, and
an owner that dies frees its items with its session. The body must leave the partition's cancel
scope before the next partition is taken (the ``async for`` makes sure of it).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

import anyio

import zkpy
from recipes._nodes import async_client, create_in_containers, delete_quietly, join, retry
from recipes.locking_queue import watched_children
from recipes.party import Party
from zkpy.errors import NodeExistsError, SessionExpiredError, ZkError


class _Change:
    """A one-shot watch (on the members, or on an item owned by another) that says the split
    may have changed: it sets `happened` and cancels the partition handed out meanwhile."""

    def __init__(self) -> None:
        self.happened = anyio.Event()
        self.cancel_scope = anyio.CancelScope()

    def __call__(self, event: zkpy.WatchedEvent) -> None:
        self._fire()

    def fail(self, error: ZkError) -> None:
        self._fire()  # the session ended: so did our ownership

    def _fire(self) -> None:
        self.happened.set()
        self.cancel_scope.cancel()


class Partition:
    """The items this member holds now (`items`, sorted), until `cancel_scope` is cancelled
    because the membership changed (or the session was lost)."""

    def __init__(self, items: list[str], change: _Change) -> None:
        self.items = items
        self.cancel_scope = change.cancel_scope
        self._change = change

    def __repr__(self) -> str:
        return f"<Partition {self.items}>"

    @property
    def changed(self) -> bool:
        """Whether this split is over (the next one is coming)."""
        return self._change.happened.is_set()

    async def wait_changed(self) -> None:
        """Return once this split is over."""
        await self._change.happened.wait()


class SetPartitioner:
    """Split `items` among the members of `path` (see the module); ``async with`` joins."""

    def __init__(
        self, zk: zkpy.Client, path: str, items: Iterable[str], identifier: bytes | str = b""
    ) -> None:
        self.zk = async_client(zk, "SetPartitioner")
        self.path = path.rstrip("/") or "/"
        self.items = sorted(set(items))
        self.members_path = join(self.path, "members")
        self.owners_path = join(self.path, "owners")
        self.party = Party(zk, self.members_path, identifier)
        self._owned: set[str] = set()
        self._owned_session = 0
        self._current: _Change | None = None

    def __repr__(self) -> str:
        return f"<SetPartitioner {self.path}>"

    def _mine(self, members: list[str]) -> set[str]:
        if self.party.node_name not in members:
            return set()
        index, count = members.index(self.party.node_name), len(members)
        return {item for position, item in enumerate(self.items) if position % count == index}

    def _owner_path(self, item: str) -> str:
        return join(self.owners_path, item.encode().hex())

    async def _own(self, item: str, change: _Change) -> bool:
        """Own `item` now (True), or watch its owner's node with `change` (False)."""
        zk, path = self.zk, self._owner_path(item)
        while True:
            try:
                name = self.party.node_name.encode()
                await retry(zk, create_in_containers, zk, path, name, ephemeral=True)
                return True
            except NodeExistsError:
                stat = await retry(zk, zk.exists, path, watch=change)
                if stat is not None:
                    return stat.ephemeral_owner == zk.session_id

    async def _split(self) -> Partition:
        """Give up what is no longer ours, own what is, and hand it out; if another member
        still holds some of it, wait for a change and split again."""
        zk = self.zk
        while True:
            if self._owned_session != zk.session_id:
                self._owned, self._owned_session = set(), zk.session_id  # gone with the session
            change = _Change()
            members = sorted(await watched_children(zk, self.members_path, change))
            mine = self._mine(members)
            for item in sorted(self._owned - mine):
                await delete_quietly(zk, self._owner_path(item))
                self._owned.discard(item)
            complete = True
            for item in sorted(mine - self._owned):
                if await self._own(item, change):
                    self._owned.add(item)
                else:
                    complete = False
            if complete and self.party.node_name in members:
                return Partition(sorted(mine), change)
            await change.happened.wait()

    def __aiter__(self) -> SetPartitioner:
        return self

    async def __anext__(self) -> Partition:
        """The next partition: at once the first time, then once the membership changed."""
        if self._current is not None:
            await self._current.happened.wait()
        while True:
            try:
                partition = await self._split()
                break
            except SessionExpiredError:
                if not self.zk.new_session_on_expiry:
                    raise
                await self.zk.wait_connected()  # the party joins again; split then
        self._current = partition._change
        return partition

    async def __aenter__(self) -> SetPartitioner:
        await self.party.__aenter__()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            with anyio.CancelScope(shield=True):
                for item in sorted(self._owned):
                    await delete_quietly(self.zk, self._owner_path(item))
        except SessionExpiredError:
            pass
        finally:
            self._owned = set()
            await self.party.__aexit__(kind, value, traceback)  # (its nursery: not shielded)
