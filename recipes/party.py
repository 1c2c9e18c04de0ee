"""`Party`: group membership. Members are ephemeral children, so a member whose session ends
leaves the party by itself; inside ``async with``, a client that starts a new session
(``new_session_on_expiry``) joins again under it."""

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
from recipes._sessions import Background, on_new_sessions
from recipes.watchers import ChildrenWatch
from zkpy.errors import ConnectionLossError, NodeExistsError, NoNodeError


class Party:
    """A party at `path`; this object is one member, identified by `identifier`.

    async with Party(zk, "/parties/workers", b"worker-1") as party:
        print(await party.members())              # identifiers of everyone present
        async for members in party.changes(): ... # the member list after each change

    Inside ``async with``, if the client starts a new session after its old one expired
    (``zkpy.connect(..., new_session_on_expiry=True)``), the member joins again under it.
    """

    def __init__(self, zk: zkpy.Client, path: str, identifier: bytes | str = b"") -> None:
        self.zk = async_client(zk, "Party")
        self.path = path.rstrip("/") or "/"
        self.identifier = to_bytes(identifier)
        self.node_name = new_uid()
        self.node_path = join(self.path, self.node_name)
        self.participating = False
        self._keeper = Background()

    def __repr__(self) -> str:
        return f"<Party {self.path}>"

    async def join(self) -> None:
        """Join the party (no-op if already in it)."""
        try:
            await create_in_containers(self.zk, self.node_path, self.identifier, ephemeral=True)
        except NodeExistsError:
            pass
        except ConnectionLossError:
            check_alive(self.zk)
            try:  # the lost create may have happened: the node name is ours alone
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

    async def _rejoin(self) -> None:
        """A new session: our node went with the old one; join again unless we left."""
        if self.participating:
            await self.join()

    async def leave(self) -> None:
        """Leave the party (no-op if not in it)."""
        await delete_quietly(self.zk, self.node_path)
        self.participating = False

    async def _read_members(self, names: list[str]) -> list[bytes]:
        out: list[bytes] = []
        for name in sorted(names):
            member = join(self.path, name)
            try:
                data, _stat = await retry(self.zk, self.zk.get, member)
            except NoNodeError:
                continue
            out.append(data)
        return out

    async def members(self) -> list[bytes]:
        """The identifiers of the members present (in node-name order)."""
        try:
            names: list[str] = await retry(self.zk, self.zk.get_children, self.path)
        except NoNodeError:
            return []
        return await self._read_members(names)

    async def size(self) -> int:
        """How many members are present (0 if the party's node does not exist)."""
        try:
            names: list[str] = await retry(self.zk, self.zk.get_children, self.path)
        except NoNodeError:
            return 0
        return len(names)

    length = size

    def changes(self) -> _MemberChanges:
        """An async iterator of the member list, now and after every change."""
        return _MemberChanges(self)

    async def __aenter__(self) -> Party:
        await self._keeper.start(on_new_sessions, self.zk, self._rejoin)
        try:
            await self.join()
        except BaseException:
            await self._keeper.stop()
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.participating = False  # no more rejoining
        try:
            await self._keeper.stop()
        finally:
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(2 * self.zk.session_timeout + 5):
                    try:
                        await self.leave()
                    except zkpy.errors.SessionExpiredError:
                        pass


class _MemberChanges:
    def __init__(self, party: Party) -> None:
        self._party = party
        self._children = ChildrenWatch(party.zk, party.path)

    def __aiter__(self) -> _MemberChanges:
        return self

    async def __anext__(self) -> list[bytes]:
        names = await self._children.__anext__()
        return await self._party._read_members(names or [])
