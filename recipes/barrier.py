"""`Barrier` (wait until a node is removed) and `DoubleBarrier` (enter and leave together).

Both are the recipes of ZooKeeper's recipes page, as kazoo ships them, with structured
cancellation (trio's, or asyncio's through anyio) in place of timeouts.
"""

from __future__ import annotations

from types import TracebackType

import anyio

import zkpy
from recipes._nodes import (
    async_client,
    check_alive,
    create_in_containers,
    delete_quietly,
    join,
    new_uid,
    retry,
    to_bytes,
)
from zkpy.errors import ConnectionLossError, NodeExistsError, NoNodeError

READY = "ready"


class Barrier:
    """A barrier held up while its znode exists.

    One side calls `create()`; others `await wait()` until somebody calls `remove()`.
    Use a cancel scope (``with anyio.move_on_after(5):``) to give up waiting.
    """

    def __init__(self, zk: zkpy.Client, path: str) -> None:
        self.zk = async_client(zk, "Barrier")
        self.path = path

    async def create(self) -> bool:
        """Put the barrier up; False if it was already up."""
        try:
            await create_in_containers(self.zk, self.path)
            return True
        except NodeExistsError:
            return False
        except ConnectionLossError:
            check_alive(self.zk)
            await retry(self.zk, self.zk.ensure_path, self.path)
            return True

    async def remove(self) -> bool:
        """Take the barrier down, releasing every waiter; False if it was not up."""
        try:
            await retry(self.zk, self.zk.delete, self.path)
            return True
        except NoNodeError:
            return False

    async def wait(self) -> None:
        """Wait until the barrier is down (returns at once if it is not up)."""
        while True:
            removed = zkpy.WatchFuture()
            if await retry(self.zk, self.zk.exists, self.path, watch=removed) is None:
                return
            await removed.wait()


class DoubleBarrier:
    """`num_clients` participants enter together and leave together.

        async with DoubleBarrier(zk, "/barriers/step-1", num_clients=3):
            ...   # starts when all 3 have entered; the block is left when all 3 are done

    Each participant is an ephemeral child of `path`; the one completing the group creates
    ``{path}/ready``, which everyone entering watches. Leaving follows ZooKeeper's recipe without
    a herd: the lowest participant waits for the highest, the others delete themselves and wait
    for the lowest; the last one out removes ``ready``. Use a path for one round at a time.
    If the block raises, the participant just withdraws (others see it as having left).
    """

    def __init__(
        self, zk: zkpy.Client, path: str, num_clients: int, identifier: bytes | str = b""
    ) -> None:
        if num_clients < 1:
            raise ValueError("num_clients must be at least 1")
        self.zk = async_client(zk, "DoubleBarrier")
        self.path = path.rstrip("/") or "/"
        self.num_clients = num_clients
        self.identifier = to_bytes(identifier)
        self.node_name = new_uid()
        self.node_path = join(self.path, self.node_name)
        self.participating = False

    async def _participants(self) -> list[str]:
        try:
            names: list[str] = await retry(self.zk, self.zk.get_children, self.path)
        except NoNodeError:
            return []
        return sorted(name for name in names if name != READY)

    async def enter(self) -> None:
        """Join, and wait until `num_clients` participants have joined."""
        try:
            await create_in_containers(self.zk, self.node_path, self.identifier, ephemeral=True)
        except (NodeExistsError, ConnectionLossError):
            check_alive(self.zk)
            try:  # after a lost reply the node may be ours already: create it only if missing
                await retry(
                    self.zk,
                    create_in_containers,
                    self.zk,
                    self.node_path,
                    self.identifier,
                    ephemeral=True,
                )
            except NodeExistsError:
                pass
        self.participating = True
        ready = join(self.path, READY)
        try:
            while True:
                created = zkpy.WatchFuture()
                if await retry(self.zk, self.zk.exists, ready, watch=created) is not None:
                    return
                if len(await self._participants()) >= self.num_clients:
                    try:
                        await retry(self.zk, self.zk.create, ready)
                    except NodeExistsError:
                        pass
                    return
                await created.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._withdraw()
            raise

    async def leave(self) -> None:
        """Leave, and wait until every participant has left."""
        while True:
            names = await self._participants()
            mine = self.node_name in names
            if not names or names == [self.node_name]:
                await delete_quietly(self.zk, join(self.path, READY))
                await delete_quietly(self.zk, self.node_path)
                self.participating = False
                return
            gone = zkpy.WatchFuture()
            if mine and names[0] == self.node_name:
                target = join(self.path, names[-1])  # lowest: wait for the highest
            else:
                if mine:
                    await delete_quietly(self.zk, self.node_path)
                    self.participating = False
                target = join(self.path, names[0])  # others: wait for the lowest
            if await retry(self.zk, self.zk.exists, target, watch=gone) is None:
                continue
            await gone.wait()

    async def _withdraw(self) -> None:
        with anyio.move_on_after(max(5.0, 2 * self.zk.session_timeout)):
            try:
                await delete_quietly(self.zk, self.node_path)
            except zkpy.errors.SessionExpiredError:
                pass
        self.participating = False

    async def __aenter__(self) -> DoubleBarrier:
        await self.enter()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            await self.leave()
        else:
            with anyio.CancelScope(shield=True):
                await self._withdraw()
