"""`PersistentNode`: a znode that is there for as long as its ``async with`` block runs
(Curator's PersistentNode): created on entry, created again whenever it is deleted, and (for an
ephemeral node, the default) created again under a new session after the old one expired, with
a client made with ``new_session_on_expiry=True``. A registered service is one of these::

    async with PersistentNode(zk, "/services/api/host-1", b"10.0.0.1:8080"):
        await serve()
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import anyio

import zkpy
from recipes._nodes import async_client, delete_quietly, retry
from recipes._sessions import Background
from zkpy.errors import NodeExistsError, SessionExpiredError


class PersistentNode:
    """Keeps `path` (with `data`) in existence while the ``async with`` block runs.

    An ephemeral node that another session holds is waited for: ours is created once that one
    is gone. `created` counts the creates; `set_data()` changes the data kept (and the node's).
    Leaving the block deletes the node. Without ``new_session_on_expiry``, a lost session ends
    the keeping (`active` becomes False); the block itself runs on.
    """

    def __init__(
        self, zk: zkpy.Client, path: str, data: bytes = b"", *, ephemeral: bool = True
    ) -> None:
        self.zk = async_client(zk, "PersistentNode")
        self.path = path
        self.data = data
        self.ephemeral = ephemeral
        self.created = 0
        self.active = False
        self._background = Background()

    def __repr__(self) -> str:
        return f"<PersistentNode {self.path}>"

    def _is_ours(self, stat: zkpy.Stat) -> bool:
        return not self.ephemeral or stat.ephemeral_owner == self.zk.session_id

    async def _create(self) -> None:
        try:
            zk = self.zk
            path, data, ephemeral = self.path, self.data, self.ephemeral
            await retry(zk, zk.create, path, data, ephemeral=ephemeral, makepath=True)
            self.created += 1
        except NodeExistsError:
            pass  # ours (a create whose reply was lost), or someone else's: `_keep` looks

    async def _keep(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Create the node, watch it, and create it again when it goes (by a delete or with
        the session); `started()` once it first exists as ours."""
        waiting_for_first = True
        while True:
            try:
                await self._create()
                watch = zkpy.WatchFuture()
                stat = await retry(self.zk, self.zk.exists, self.path, watch=watch)
                if stat is not None and self._is_ours(stat) and waiting_for_first:
                    waiting_for_first = False
                    task_status.started()
                if stat is not None:
                    await watch.wait()  # deleted, changed, or failed with the session
            except SessionExpiredError:
                if not self.zk.new_session_on_expiry:
                    self.active = False
                    if waiting_for_first:
                        raise
                    return
                await self.zk.wait_connected()  # the new session: create the node there

    async def set_data(self, data: bytes) -> None:
        """Keep `data` from now on, and write it to the node now."""
        self.data = data
        await retry(self.zk, self.zk.set, self.path, data)

    async def __aenter__(self) -> PersistentNode:
        self.active = True
        await self._background.start(self._keep)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        was_active, self.active = self.active, False
        try:
            await self._background.stop()
        finally:
            if was_active:
                with anyio.CancelScope(shield=True):
                    with anyio.move_on_after(2 * self.zk.session_timeout + 5):
                        await self._delete_if_ours()

    async def _delete_if_ours(self) -> None:
        try:
            stat = await retry(self.zk, self.zk.exists, self.path)
            if stat is not None and self._is_ours(stat):
                await delete_quietly(self.zk, self.path)
        except SessionExpiredError:
            pass
