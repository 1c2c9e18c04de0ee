"""`Election`: leader election with a fencing token, a stream of leadership changes, resign.

Candidates queue like `Lock` contenders (ephemeral sequential znodes, each watching only its
predecessor); the first in line is the leader. Its token is the czxid of its candidate node, so a
later leader always has a larger token than every earlier one, and a deposed leader that is still
running (paused, partitioned) can be fenced off by the resources it writes to.

    election = Election(zk, "/election/service", identifier=b"host-1")
    async with election.campaign() as leadership:   # waits until we lead
        await serve_as_leader(leadership.token)      # cancelled if the session is lost
    # leaving the block resigns

    async for leader in election.leader_changes():   # Leader(identifier, token, ...) or None
        ...
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.lowlevel

import zkpy
from recipes._nodes import async_client, join, parse_nodes, retry
from recipes.lock import Held, Lock
from zkpy.errors import NoNodeError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Leader:
    """Who leads: the leader's `identifier`, its fencing `token`, its candidate node `path` and
    the `session_id` that owns it."""

    identifier: bytes
    token: int
    path: str
    session_id: int


class _Candidacy(Lock):
    kind = "candidate"


class Campaign:
    """What `Election.campaign()` returns: ``await`` it for a `Held` (resign with
    ``await held.resign()``), or ``async with`` it to lead for the duration of the block."""

    def __init__(self, candidacy: _Candidacy) -> None:
        self._candidacy = candidacy
        self._context: AbstractAsyncContextManager[Held, bool | None] | None = None

    def __await__(self) -> Generator[Any, None, Held]:
        return self._candidacy.acquire().__await__()

    async def __aenter__(self) -> Held:
        self._context = self._candidacy.hold()
        return await self._context.__aenter__()

    async def __aexit__(self, *exc_info: object) -> bool | None:
        assert self._context is not None
        context, self._context = self._context, None
        return await context.__aexit__(*exc_info)  # type: ignore[arg-type]


class Election:
    """An election at `path`. See the module docstring.

    With `cancel_on_suspend`, leadership is given up (the body cancelled) as soon as the
    connection is suspended; by default only once the session is lost, or the connection has
    been suspended for a whole session timeout. Not reentrant per task (`AlreadyHeldError`).
    """

    def __init__(
        self,
        zk: zkpy.Client,
        path: str,
        identifier: bytes | str = b"",
        *,
        cancel_on_suspend: bool = False,
    ) -> None:
        self.zk = async_client(zk, "Election")
        self.path = path.rstrip("/") or "/"
        self._candidacy = _Candidacy(zk, self.path, identifier, cancel_on_suspend=cancel_on_suspend)
        self.identifier = self._candidacy.identifier

    def __repr__(self) -> str:
        return f"<Election {self.path}>"

    def campaign(self) -> Campaign:
        """Stand for election; waiting (cancellably) until we lead. See `Campaign`."""
        return Campaign(self._candidacy)

    async def run(self, func: Callable[..., Awaitable[T]], *args: Any) -> T | None:
        """kazoo's `run`: campaign, then run ``await func(*args)`` as leader and resign when it
        returns. Returns its result, or None if leadership was lost and it was cancelled."""
        async with self.campaign():
            return await func(*args)
        return None

    @property
    def leadership(self) -> Held | None:
        """The current task's leadership, if it leads through this object."""
        return self._candidacy.held

    async def resign(self) -> None:
        """Give up the current task's leadership (or candidacy-in-progress is cancelled)."""
        await self._candidacy.release()

    async def leader(self) -> Leader | None:
        """The current leader, or None if there are no candidates."""
        return await _current_leader(self.zk, self.path, None)

    async def contenders(self) -> list[bytes]:
        """The identifiers of all candidates, leader first."""
        return await self._candidacy.contenders()

    def leader_changes(self) -> LeaderChanges:
        """``async for leader in election.leader_changes():`` the current leader (or None) at
        once, then each time it changes. Changes that follow each other quickly may be
        coalesced (you see the latest), but every leader you see led at that moment."""
        return LeaderChanges(self.zk, self.path)

    changes = leader_changes


async def _current_leader(
    zk: zkpy.Client, path: str, watch: zkpy.WatchFuture | None
) -> Leader | None:
    """Read the leader; with `watch`, also arm it to fire when the answer may have changed
    (the leader's node goes away, or a candidate appears where there was none)."""
    while True:
        try:
            names: list[str] = await retry(zk, zk.get_children, path)
        except NoNodeError:
            names = []
        nodes = parse_nodes(names)
        if nodes:
            first = join(path, nodes[0].name)
            try:
                data, stat = await retry(zk, zk.get, first, watch=watch)
            except NoNodeError:
                continue
            return Leader(data, stat.czxid, first, stat.ephemeral_owner)
        if watch is None:
            return None
        try:
            names = await retry(zk, zk.get_children, path, watch=watch)
        except NoNodeError:
            if await retry(zk, zk.exists, path, watch=watch) is None:
                return None
            continue
        if not parse_nodes(names):
            return None


class LeaderChanges:
    """An async iterator of `Leader | None`, one item per change of leader (see
    `Election.leader_changes`). Only the current leader's node is watched, not every
    candidate, so observers are not woken by candidates coming and going."""

    def __init__(self, zk: zkpy.Client, path: str) -> None:
        self.zk = zk
        self.path = path
        self._pending: zkpy.WatchFuture | None = None
        self._started = False
        self._last: Leader | None = None

    def __aiter__(self) -> LeaderChanges:
        return self

    async def __anext__(self) -> Leader | None:
        while True:
            if self._pending is not None:
                await self._pending.wait()
                self._pending = None
            watch = zkpy.WatchFuture()
            leader = await _current_leader(self.zk, self.path, watch)
            self._pending = watch
            if not self._started or leader != self._last:
                self._started = True
                self._last = leader
                return leader
            await anyio.lowlevel.checkpoint()
