"""recipes.fencing: the resource-side guard, alone and with real lock holders."""

from __future__ import annotations

import shelve
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

import zkpy
from recipes import Lock
from recipes.fencing import FencingGuard, StaleTokenError
from tests.conftest import wait_until
from tests.test_recipes_helpers import proxy_to
from zkpy.testing import RunningServer


def test_guard_accepts_newer_and_equal_tokens_and_rejects_older_ones() -> None:
    guard = FencingGuard()
    assert guard.highest("db") is None
    guard.accept("db", 10)
    guard.accept("db", 10)  # the same holder writes again
    guard.accept("db", 12)
    with pytest.raises(StaleTokenError) as caught:
        guard.accept("db", 11)
    assert (caught.value.resource, caught.value.token, caught.value.highest) == ("db", 11, 12)
    with pytest.raises(StaleTokenError):
        guard.check("db", 3)  # check is accept: check and record
    assert guard.is_stale("db", 11)
    assert not guard.is_stale("db", 12)
    guard.check("db", 12)
    guard.accept("other", 1)  # per resource
    assert guard.highest("db") == 12
    assert guard.highest("other") == 1
    assert guard.rejected == 2
    for bad in (-1, True, "7"):
        with pytest.raises(ValueError, match="a fencing token is a non-negative int"):
            guard.accept("db", bad)  # type: ignore[arg-type]


def test_guard_state_can_outlive_the_guard(tmp_path: Path) -> None:
    with shelve.open(str(tmp_path / "tokens")) as state:
        FencingGuard(state).accept("db", 40)
    with shelve.open(str(tmp_path / "tokens")) as state:
        restarted = FencingGuard(state)
        with pytest.raises(StaleTokenError):
            restarted.accept("db", 39)


async def test_fence_makes_check_and_write_atomic() -> None:
    """An old holder that checked first but writes slowly cannot land after a newer write."""
    guard = FencingGuard()
    log: list[int] = []
    old_inside = trio.Event()
    let_old_finish = trio.Event()

    async def old_holder() -> None:
        async with guard.fence("db", 5):
            old_inside.set()
            await let_old_finish.wait()
            log.append(5)

    async def new_holder() -> None:
        async with guard.fence("db", 6):
            log.append(6)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(old_holder)
        await old_inside.wait()
        nursery.start_soon(new_holder)
        await trio.testing.wait_all_tasks_blocked()
        assert log == []  # the new write waits for the write in progress
        let_old_finish.set()
    assert log == [5, 6]
    with pytest.raises(StaleTokenError):
        async with guard.fence("db", 5):
            log.append(-1)
    assert log == [5, 6]


def test_fence_sync_is_safe_across_threads() -> None:
    guard = FencingGuard()
    accepted: list[int] = []
    rejected: list[int] = []
    lock = threading.Lock()

    def writer(token: int) -> None:
        try:
            with guard.fence("db", token):  # the same fence, as a plain context manager
                with lock:
                    accepted.append(token)
        except StaleTokenError:
            with lock:
                rejected.append(token)

    threads = [threading.Thread(target=writer, args=(token,)) for token in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(accepted + rejected) == list(range(200))
    assert accepted == sorted(accepted)  # what got through, got through in token order
    assert guard.highest("db") == max(accepted)
    assert all(token < max(accepted) for token in rejected)


async def test_a_partitioned_holder_is_fenced_off_by_the_resource(server: RunningServer) -> None:
    """A loses its session while cut off; B takes the lock and writes; A's late write fails."""
    guard = FencingGuard()
    storage: dict[str, bytes] = {}

    async def write(token: int, data: bytes) -> None:
        async with guard.fence("value", token):
            storage["value"] = data

    async with (
        proxy_to(server) as proxy,
        zkpy.connect(proxy.address, session_timeout=1) as a,
        zkpy.connect(server.address) as b,
    ):
        held_a = await Lock(a, "/locks/fenced").acquire()  # no cancel scope: A stays oblivious
        await write(held_a.token, b"a1")
        proxy.refusing = True
        proxy.cut()
        async with Lock(b, "/locks/fenced") as held_b:  # waits for A's session to expire
            assert held_b.token > held_a.token
            await write(held_b.token, b"b1")
        with pytest.raises(StaleTokenError):
            await write(held_a.token, b"a2, too late")
        assert storage == {"value": b"b1"}
        await wait_until(lambda: held_a.lost)  # and A's own client knew it, meanwhile
        proxy.refusing = False
        await held_a.release()
