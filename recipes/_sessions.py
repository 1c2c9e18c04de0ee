"""Re-establishing what a recipe stands for when its client starts a new session.

A client made with ``new_session_on_expiry=True`` follows an expired session with a new one: its
state goes LOST, then CONNECTED with a new `session_id`. The old session's ephemerals are gone;
a recipe that represents something lasting (a party member, a registered service) runs
`on_new_sessions` beside its body to create them again. Locks and leadership do not: what was
held under the old session is lost, and taking it again is the caller's decision.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import anyio.abc

import zkpy
from zkpy.errors import SessionExpiredError, single_error


async def on_new_sessions(
    zk: zkpy.Client,
    restore: Callable[[], Awaitable[object]],
    *,
    task_status: Any = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run `restore()` each time `zk` is connected with a session other than the one it last
    ran for (or the one current at the start). Runs until cancelled; `started` once it listens.

    A `restore` cut short by the end of its session is run again on the next one; any other
    error propagates (to the recipe's body, through its nursery).
    """
    restored = zk.session_id
    async with zk.state_changes() as states:
        task_status.started()
        async for state in states:
            session = zk.session_id
            if state is not zkpy.ConnectionState.CONNECTED or session == restored:
                continue
            try:
                await restore()
            except SessionExpiredError:
                continue  # that session is over already: the next one runs it again
            restored = session


class Background:
    """One task run beside a recipe's body, between `start()` and `stop()`: for recipes that
    are async context managers, whose body runs between their ``__aenter__`` and ``__aexit__``
    (a nursery cannot be a local there). The task's errors come out of `stop()`."""

    def __init__(self) -> None:
        self._manager: AbstractAsyncContextManager[anyio.abc.TaskGroup] | None = None
        self._nursery: anyio.abc.TaskGroup | None = None

    async def start(self, task: Callable[..., Coroutine[Any, Any, Any]], *args: object) -> None:
        """Start ``task(*args, task_status=...)``; return once it calls ``started()``."""
        manager = anyio.create_task_group()
        nursery = await manager.__aenter__()
        self._manager, self._nursery = manager, nursery
        try:
            await nursery.start(task, *args)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Cancel the task and wait for it; raise what it raised (if anything)."""
        manager, nursery = self._manager, self._nursery
        if manager is None or nursery is None:
            return
        self._manager = self._nursery = None
        nursery.cancel_scope.cancel()
        try:
            await manager.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            raise single_error(group) from None
