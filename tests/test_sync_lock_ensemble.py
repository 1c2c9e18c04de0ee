"""Four threads contend one `recipes.sync.Lock` on a real 3-member ensemble: never two inside,
tokens that only grow, and a clean hand-off when the holder's session dies with its member."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import zkpy.sync
from recipes.errors import LockLostError
from recipes.sync import Lock
from zkpy.testing.ensemble import Ensemble

LOCK = "/locks/shared"
ROUNDS = 5


class Record:
    """What the contenders saw, under one mutex: who is inside, and each holder's token."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.inside = 0
        self.most_inside = 0
        self.tokens: list[int] = []

    def enter(self, token: int) -> None:
        with self.mutex:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.tokens.append(token)

    def leave(self) -> None:
        with self.mutex:
            self.inside -= 1


def critical_section(zk: zkpy.sync.Client, record: Record, token: int) -> None:
    """Read-modify-write /work at the version read: a second holder inside would fail it."""
    record.enter(token)
    try:
        data, stat = zk.get("/work")
        zk.set("/work", str(int(data) + 1).encode(), version=stat.version)
    finally:
        record.leave()


def run_threads(*targets: Callable[[], object]) -> None:
    errors: list[BaseException] = []

    def guarded(target: Callable[[], object]) -> None:
        try:
            target()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def contend(zk: zkpy.sync.Client, record: Record, rounds: int) -> None:
    for _ in range(rounds):
        with Lock(zk, LOCK) as held:
            critical_section(zk, record, held.token)


def scenario(victim: zkpy.sync.Client, others: list[zkpy.sync.Client], kill: Any) -> None:
    record = Record()
    victim.create("/work", b"0")
    run_threads(*(functools.partial(contend, zk, record, ROUNDS) for zk in [victim, *others]))
    assert record.most_inside == 1
    assert record.tokens == sorted(set(record.tokens))  # granted in token order
    assert victim.get("/work")[0] == str(4 * ROUNDS).encode()

    holding = threading.Event()
    lost: list[int] = []

    def hold() -> None:
        with Lock(victim, LOCK) as held:
            lost.append(held.token)
            holding.set()
            assert held.wait_lost(timeout=30)  # its member died: the session is gone

    def hold_until_lost() -> None:
        with pytest.raises(LockLostError, match="suspended"):
            hold()  # leaving the block reports the loss

    def wait_then_take(zk: zkpy.sync.Client) -> None:
        assert holding.wait(timeout=30)
        contend(zk, record, 1)

    def kill_once_everyone_queues() -> None:
        assert holding.wait(timeout=30)
        watcher = others[0]
        while len(watcher.get_children(LOCK)) < 4:
            future = zkpy.sync.WatchFuture()
            if len(watcher.get_children(LOCK, watch=future)) < 4:
                future.wait(timeout=30)
        kill()

    handed_from = len(record.tokens)
    run_threads(
        hold_until_lost,
        kill_once_everyone_queues,
        *(functools.partial(wait_then_take, zk) for zk in others),
    )
    later = record.tokens[handed_from:]
    assert len(later) == 3
    assert all(token > lost[0] for token in later)
    assert later == sorted(later)
    assert record.most_inside == 1
    assert others[0].get("/work")[0] == str(4 * ROUNDS + 3).encode()


async def test_four_threads_contend_a_lock_and_hand_off_when_a_holder_dies(
    tmp_path: Path,
) -> None:
    with Ensemble(tmp_path) as ensemble:
        await ensemble.start_serving()
        doomed = (await ensemble.followers())[0]
        survivors = [m for m in ensemble.members.values() if m is not doomed]

        token = trio.lowlevel.current_trio_token()

        def kill() -> None:
            trio.from_thread.run(doomed.kill9, trio_token=token)

        def run() -> None:
            victim = zkpy.sync.connect(doomed.address, session_timeout=1.0)
            others = [zkpy.sync.connect(ensemble.addresses(survivors)) for _ in range(3)]
            try:
                scenario(victim, others, kill)
            finally:
                for zk in [victim, *others]:
                    zk.close()

        await trio.to_thread.run_sync(run)
