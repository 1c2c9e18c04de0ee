"""A member yields the CPU before, and after the sync of, peer work no client waits on
(`Member.peer_messages`, `yield_background_work`, docs/decisions/0041), with a long scheduler
slice until that work is carried out (`background_slice_us`, docs/decisions/0042).

Which work is background is the replica's rule (`Replica.background`, tested with the zab
tests); here, only that the shell acts on it: one yield before the batch and one after its sync,
none for other work, none when the setting is off.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from zkpy.core.txn import CreateSession, TxnRecord
from zkpy.server.config import ServerConfig
from zkpy.server.node import Member
from zkpy.server.storage import Storage
from zkpy.zab.messages import Commit, PeerMessage
from zkpy.zab.ready import Ready


@pytest.fixture
def yields(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The `os.sched_yield` calls the member makes (counted, not made)."""
    made: list[int] = []
    monkeypatch.setattr(os, "sched_yield", lambda: made.append(1))
    return made


@contextmanager
def _member(tmp_path: Path, **settings: object) -> Iterator[Member]:
    config = ServerConfig(data_dir=tmp_path / "data", **settings)  # type: ignore[arg-type]
    with Storage.open(config.data_dir) as storage:
        yield Member(config, storage)


@pytest.fixture
def member(tmp_path: Path) -> Iterator[Member]:
    with _member(tmp_path) as member:
        yield member


def _background(member: Member, answer: bool) -> list[tuple[int, Sequence[PeerMessage]]]:
    asked: list[tuple[int, Sequence[PeerMessage]]] = []

    def background(sender: int, messages: Sequence[PeerMessage]) -> bool:
        asked.append((sender, messages))
        return answer

    member.background_work = background
    return asked


def _persist_one(member: Member) -> None:
    """Persist a Ready of one record past what the member has logged (as a step would)."""
    zxid = member.disk.durable_zxid + 1
    op = CreateSession(session_id=99, timeout_ms=10_000, password=b"p" * 16)
    member.disk.persist(Ready(persist=[TxnRecord(zxid, 0, 0, 0, op)]))


def test_background_peer_work_yields_before_the_batch_and_after_its_sync(
    member: Member, yields: list[int]
) -> None:
    asked = _background(member, True)
    batch = [Commit(1)]
    member.before_peer_messages(2, batch)
    assert asked == [(2, batch)], "the replica decides, from the sender and the whole batch"
    assert yields == [1]
    _persist_one(member)
    assert yields == [1, 1], "and again once its sync is done"
    member.after_peer_messages()
    _persist_one(member)
    assert yields == [1, 1], "a sync after the batch's step is not the batch's"


def test_a_batch_read_from_a_link_is_fed_stepped_and_its_yield_ends_with_it(
    member: Member, yields: list[int]
) -> None:
    _background(member, False)
    member.peer_messages(2, [Commit(1)])  # its step takes what the member had to do at start
    assert yields == []
    asked = _background(member, True)
    member.peer_messages(2, [Commit(1)])
    assert asked == [(2, [Commit(1)])]
    assert yields == [1], "once before the batch; its step had nothing to sync"
    _persist_one(member)
    assert yields == [1], "the batch's step is over"


def test_work_a_client_waits_on_never_yields(member: Member, yields: list[int]) -> None:
    _background(member, False)
    member.before_peer_messages(2, [Commit(1)])
    _persist_one(member)
    member.after_peer_messages()
    assert yields == []


def test_the_setting_turns_yielding_off(tmp_path: Path, yields: list[int]) -> None:
    with _member(tmp_path, yield_background_work=False) as member:
        asked = _background(member, True)
        member.before_peer_messages(2, [Commit(1)])
        _persist_one(member)
        assert yields == []
        assert asked == [], "not even asked"


def test_by_default_the_replica_decides(member: Member) -> None:
    assert member.background_work(2, [Commit(1)]) is False, "a lone member leads: never"


def test_the_setting_is_on_by_default_and_checked(tmp_path: Path) -> None:
    assert ServerConfig(data_dir=tmp_path).yield_background_work is True
    with pytest.raises(ValueError, match="yield_background_work"):
        ServerConfig(data_dir=tmp_path, yield_background_work="yes")  # type: ignore[arg-type]


def test_background_work_runs_with_a_long_slice_until_its_step_is_done(
    member: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slice is lengthened before the yield (which then puts the thread behind the others
    by the long slice) and the default taken again once the batch is carried out."""
    calls: list[str] = []
    member.lengthen_slice = lambda: calls.append("lengthen")
    member.restore_slice = lambda: calls.append("restore")
    monkeypatch.setattr(os, "sched_yield", lambda: calls.append("yield"))
    _background(member, True)
    member.before_peer_messages(2, [Commit(1)])
    _persist_one(member)
    assert calls == ["lengthen", "yield", "yield"]
    member.after_peer_messages()
    assert calls == ["lengthen", "yield", "yield", "restore"]
    _background(member, False)
    member.peer_messages(2, [Commit(1)])
    assert calls == ["lengthen", "yield", "yield", "restore"], "other work: as it is"


def test_the_slice_setting_defaults_to_20_ms_and_is_checked(tmp_path: Path) -> None:
    assert ServerConfig(data_dir=tmp_path).background_slice_us == 20_000
    for bad in (-1, 100_001):
        with pytest.raises(ValueError, match="background_slice_us"):
            ServerConfig(data_dir=tmp_path, background_slice_us=bad)
