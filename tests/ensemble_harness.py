"""Helpers for the end-to-end tests in tests/test_ensemble_*.py, around the one ensemble
launcher in `zkpy.testing.ensemble` (real `zkpy server --config F --id N` processes on
loopback, one TOML file, free ports from `zkpy.testing.ports`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import zkpy
from zkpy.testing.ensemble import (
    FAST_SETTINGS,
    SESSION_TIMEOUT,
    Ensemble,
    Member,
    poll,
    try_status,
)
from zkpy.testing.ports import free_ports, port_is_free

__all__ = [
    "FAST_SETTINGS",
    "SESSION_TIMEOUT",
    "Ensemble",
    "Member",
    "connect_to",
    "free_ports",
    "poll",
    "port_is_free",
    "process_gone",
    "read_tree",
    "try_status",
]


@asynccontextmanager
async def connect_to(
    members: Member | Sequence[Member], *, session_timeout: float = SESSION_TIMEOUT, **kw: Any
) -> AsyncIterator[zkpy.Client]:
    """A session with the given member(s) only."""
    chosen = [members] if isinstance(members, Member) else list(members)
    async with zkpy.connect(
        ",".join(m.address for m in chosen), session_timeout=session_timeout, **kw
    ) as zk:
        yield zk


async def read_tree(member: Member, path: str) -> dict[str, bytes]:
    """After a sync on `member`, the data of every node under `path` (recursively), read from
    that member alone; keys are full paths."""
    async with connect_to(member) as zk:
        await zk.sync(path)
        found: dict[str, bytes] = {}

        async def walk(node: str) -> None:
            data, _stat = await zk.get(node)
            found[node] = data
            for child in await zk.get_children(node):
                await walk(f"{node.rstrip('/')}/{child}")

        if await zk.exists(path) is not None:
            await walk(path)
        return found


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
