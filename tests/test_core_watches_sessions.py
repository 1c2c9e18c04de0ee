"""zkpy.core.watches (registry, change log, resuming after a reconnect) and zkpy.core.sessions."""

from __future__ import annotations

import gc
from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkpy.core.sessions import (
    MAX_TIMEOUT_TICKS,
    MIN_TIMEOUT_TICKS,
    SessionTracker,
    TimeoutBounds,
)
from zkpy.core.tree import DataTree
from zkpy.core.txn import Create, SetData, TxnRecord
from zkpy.core.types import OPEN_ACL_UNSAFE, EventType, WatchedEvent, WatchMode
from zkpy.core.watches import ChangeLog, WatchRegistry, resume_watches

CREATED, DELETED, CHANGED, CHILD = (
    EventType.CREATED,
    EventType.DELETED,
    EventType.CHANGED,
    EventType.CHILD,
)
DATA, EXIST, CHILD_W, PERSISTENT, RECURSIVE = (
    WatchMode.DATA,
    WatchMode.EXIST,
    WatchMode.CHILD,
    WatchMode.PERSISTENT,
    WatchMode.PERSISTENT_RECURSIVE,
)
W1, W2 = "conn-1", "conn-2"


def fire(
    registry: WatchRegistry, event: EventType, path: str, zxid: int = 7
) -> list[tuple[Hashable, WatchedEvent]]:
    return registry.trigger([(event, path)], zxid)


# ---- one-shot watches ---------------------------------------------------------------------


@pytest.mark.parametrize("event", [CREATED, CHANGED, DELETED])
def test_data_watch_fires_once_then_is_gone(event: EventType) -> None:
    reg = WatchRegistry()
    reg.add(W1, "/a", DATA)
    assert fire(reg, event, "/a", zxid=9) == [(W1, WatchedEvent(event, "/a", 9))]
    assert not reg.has(W1, "/a", DATA)
    assert reg.count(W1) == 0
    assert len(reg) == 0
    assert fire(reg, event, "/a") == []


def test_data_watch_ignores_child_events_and_other_paths() -> None:
    reg = WatchRegistry()
    reg.add(W1, "/a", DATA)
    assert fire(reg, CHILD, "/a") == []
    assert fire(reg, CHANGED, "/a/b") == []
    assert fire(reg, CHANGED, "/ab") == []
    assert fire(reg, DELETED, "/") == []
    assert reg.has(W1, "/a", DATA)


def test_exist_watch_fires_on_created_once() -> None:
    reg = WatchRegistry()
    reg.add(W1, "/a", EXIST)
    assert fire(reg, CHILD, "/a") == []
    assert fire(reg, CREATED, "/a", zxid=3) == [(W1, WatchedEvent(CREATED, "/a", 3))]
    assert fire(reg, CHANGED, "/a") == []
    assert not reg.has(W1, "/a", EXIST)


def test_child_watch_fires_on_child_and_on_deletion_of_the_node() -> None:
    reg = WatchRegistry()
    reg.add(W1, "/a", CHILD_W)
    assert fire(reg, CHANGED, "/a") == []
    assert fire(reg, CREATED, "/a") == []
    assert fire(reg, CREATED, "/a/b") == []  # the child's own event is not the parent's
    assert fire(reg, CHILD, "/a", zxid=4) == [(W1, WatchedEvent(CHILD, "/a", 4))]
    assert fire(reg, CHILD, "/a") == []  # one-shot
    reg.add(W1, "/a", CHILD_W)
    assert fire(reg, DELETED, "/a", zxid=5) == [(W1, WatchedEvent(DELETED, "/a", 5))]
    assert reg.count(W1) == 0


# ---- persistent watches -----------------------------------------------------------------


def test_persistent_watch_fires_for_everything_on_its_path_and_stays() -> None:
    reg = WatchRegistry()
    reg.add(W1, "/a", PERSISTENT)
    for zxid, event in enumerate([CREATED, CHANGED, CHILD, CHANGED, DELETED, CREATED], 1):
        assert fire(reg, event, "/a", zxid) == [(W1, WatchedEvent(event, "/a", zxid))]
    assert fire(reg, CREATED, "/a/b") == []  # not recursive
    assert fire(reg, CHILD, "/") == []
    assert reg.has(W1, "/a", PERSISTENT)


def test_recursive_watch_covers_the_path_and_descendants_but_not_child_events() -> None:
    reg = WatchRegistry()
    reg.add(W1, "/a", RECURSIVE)
    assert fire(reg, CREATED, "/a") == [(W1, WatchedEvent(CREATED, "/a", 7))]
    assert fire(reg, CHANGED, "/a") == [(W1, WatchedEvent(CHANGED, "/a", 7))]
    assert fire(reg, CREATED, "/a/b") == [(W1, WatchedEvent(CREATED, "/a/b", 7))]
    assert fire(reg, DELETED, "/a/b/c/d") == [(W1, WatchedEvent(DELETED, "/a/b/c/d", 7))]
    assert fire(reg, CHILD, "/a") == []
    assert fire(reg, CHILD, "/a/b") == []
    assert fire(reg, CHANGED, "/ab") == []  # a sibling sharing the prefix is not below /a
    assert fire(reg, CHANGED, "/") == []
    assert fire(reg, CHANGED, "/b/a") == []
    assert reg.has(W1, "/a", RECURSIVE)


def test_recursive_watch_on_root_sees_every_node() -> None:
    reg = WatchRegistry()
    reg.add(W1, "/", RECURSIVE)
    for path in ("/", "/a", "/a/b/c"):
        assert fire(reg, CHANGED, path) == [(W1, WatchedEvent(CHANGED, path, 7))]
    assert fire(reg, CHILD, "/") == []


def test_one_event_per_watcher_per_change_even_with_several_registrations() -> None:
    reg = WatchRegistry()
    for mode in WatchMode:
        reg.add(W1, "/a", mode)
    reg.add(W1, "/", RECURSIVE)
    reg.add(W2, "/a", DATA)
    reg.add(W2, "/a", CHILD_W)
    out = fire(reg, DELETED, "/a", zxid=11)
    assert sorted(out) == sorted(
        [(W1, WatchedEvent(DELETED, "/a", 11)), (W2, WatchedEvent(DELETED, "/a", 11))]
    )
    # every one-shot registration that matched is gone, the persistent ones remain
    assert reg.registrations(W1) == {(PERSISTENT, "/a"), (RECURSIVE, "/a"), (RECURSIVE, "/")}
    assert reg.registrations(W2) == set()


def test_trigger_keeps_change_order_within_a_transaction() -> None:
    reg = WatchRegistry()
    reg.add(W1, "/p/c", EXIST)
    reg.add(W1, "/p", CHILD_W)
    reg.add(W2, "/p", PERSISTENT)
    changes = [(CREATED, "/p/c"), (CHILD, "/p"), (CHANGED, "/p")]
    out = reg.trigger(changes, 20)
    # events follow the order of the changes; each watcher sees its own in that order
    assert [event.type for _w, event in out] == [CREATED, CHILD, CHILD, CHANGED]
    assert [e for w, e in out if w == W1] == [
        WatchedEvent(CREATED, "/p/c", 20),
        WatchedEvent(CHILD, "/p", 20),
    ]
    assert [e for w, e in out if w == W2] == [
        WatchedEvent(CHILD, "/p", 20),
        WatchedEvent(CHANGED, "/p", 20),
    ]


def test_remove_and_remove_watcher() -> None:
    reg = WatchRegistry()
    reg.add(W1, "/a", DATA)
    reg.add(W1, "/a", CHILD_W)
    reg.add(W1, "/b", PERSISTENT)
    reg.add(W2, "/a", DATA)
    assert len(reg) == 4
    assert reg.remove(W1, "/a", DATA)
    assert not reg.remove(W1, "/a", DATA)
    assert reg.has(W1, "/a", CHILD_W)
    assert reg.remove(W1, "/a")  # every kind
    assert not reg.has(W1, "/a", CHILD_W)
    assert not reg.remove(W1, "/zzz")
    reg.remove_watcher(W1)
    assert reg.count(W1) == 0
    assert fire(reg, CHANGED, "/b") == []
    assert fire(reg, CHANGED, "/a") == [(W2, WatchedEvent(CHANGED, "/a", 7))]
    assert len(reg) == 0


def test_adding_the_same_watch_twice_is_one_registration() -> None:
    reg = WatchRegistry()
    reg.add(W1, "/a", DATA)
    reg.add(W1, "/a", DATA)
    assert reg.count(W1) == 1
    assert len(fire(reg, CHANGED, "/a")) == 1


# ---- change log and resuming watches ------------------------------------------------------


class FakeTree:
    """stat_zxids from a dict: path -> (mzxid, pzxid)."""

    def __init__(self, stats: dict[str, tuple[int, int]]) -> None:
        self.stats = stats

    def stat_zxids(self, path: str) -> tuple[int, int] | None:
        return self.stats.get(path)

    def descendants(self, path: str) -> list[str]:
        return [p for p in self.stats if p.startswith(path.rstrip("/") + "/")]


HISTORY = [
    (10, [(CHANGED, "/a")]),
    (11, [(CHANGED, "/a")]),
    (12, [(CREATED, "/b"), (CHILD, "/")]),
    (13, [(CREATED, "/c/x"), (CHILD, "/c")]),
    (14, [(CHANGED, "/d")]),
    (15, [(CHANGED, "/d")]),
    (16, [(CREATED, "/e/x"), (CHILD, "/e")]),
    (17, [(CHANGED, "/untouched-by-watches")]),
]

REGISTRATIONS = [
    (DATA, "/a"),
    (EXIST, "/b"),
    (CHILD_W, "/c"),
    (PERSISTENT, "/d"),
    (RECURSIVE, "/e"),
    (DATA, "/quiet"),
]


def _log(history: list[tuple[int, list[tuple[EventType, str]]]], capacity: int = 1000) -> ChangeLog:
    log = ChangeLog(start_zxid=0, capacity=capacity)
    for zxid, changes in history:
        log.record(zxid, changes)
    return log


def test_resume_replays_exactly_the_missed_events_in_zxid_order() -> None:
    log = _log(HISTORY)
    reg = WatchRegistry()
    missed = resume_watches(reg, W1, REGISTRATIONS, 9, log, FakeTree({}), current_zxid=17)
    assert missed == [
        WatchedEvent(CHANGED, "/a", 10),  # a one-shot data watch fires once, not again at 11
        WatchedEvent(CREATED, "/b", 12),
        WatchedEvent(CHILD, "/c", 13),
        WatchedEvent(CHANGED, "/d", 14),  # persistent: every time
        WatchedEvent(CHANGED, "/d", 15),
        WatchedEvent(CREATED, "/e/x", 16),  # recursive: descendants, no CHILD
    ]
    # one-shot watches that fired are gone; the rest stay registered in the real registry
    assert reg.registrations(W1) == {(PERSISTENT, "/d"), (RECURSIVE, "/e"), (DATA, "/quiet")}
    assert fire(reg, CHANGED, "/quiet", 18) == [(W1, WatchedEvent(CHANGED, "/quiet", 18))]


def test_resume_only_replays_changes_after_last_zxid() -> None:
    log = _log(HISTORY)
    reg = WatchRegistry()
    missed = resume_watches(reg, W1, REGISTRATIONS, 14, log, FakeTree({}), current_zxid=17)
    assert missed == [WatchedEvent(CHANGED, "/d", 15), WatchedEvent(CREATED, "/e/x", 16)]
    assert reg.registrations(W1) == set(REGISTRATIONS)


def test_resume_when_nothing_was_missed_just_registers() -> None:
    log = _log(HISTORY)
    reg = WatchRegistry()
    assert resume_watches(reg, W1, REGISTRATIONS, 17, log, FakeTree({}), current_zxid=17) == []
    assert reg.registrations(W1) == set(REGISTRATIONS)


watch_paths = st.sampled_from(["/", "/a", "/a/b", "/b", "/ab"])
registrations_st = st.lists(st.tuples(st.sampled_from(list(WatchMode)), watch_paths), max_size=6)
history_st = st.lists(
    st.lists(st.tuples(st.sampled_from(list(EventType)), watch_paths), min_size=1, max_size=3),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(registrations_st, history_st, st.integers(0, 8))
def test_replay_equals_what_a_live_registry_would_have_delivered(
    registrations: list[tuple[WatchMode, str]],
    history: list[list[tuple[EventType, str]]],
    last_zxid: int,
) -> None:
    log = _log([(zxid, changes) for zxid, changes in enumerate(history, 1)])
    live = WatchRegistry()
    for mode, path in registrations:
        live.add(W1, path, mode)
    delivered = []
    for zxid, changes in enumerate(history, 1):
        if zxid > last_zxid:
            delivered += [event for _w, event in live.trigger(changes, zxid)]
    resumed = WatchRegistry()
    missed = resume_watches(
        resumed, W1, registrations, last_zxid, log, FakeTree({}), current_zxid=len(history)
    )
    assert missed == delivered
    assert resumed.registrations(W1) == live.registrations(W1)


def test_change_log_capacity_and_coverage() -> None:
    log = ChangeLog(start_zxid=0, capacity=4)
    log.record(1, [(CHANGED, "/a")])
    log.record(2, [])  # nothing to remember
    log.record(3, [(CREATED, "/b"), (CHILD, "/")])
    log.record(4, [(CHANGED, "/a")])
    assert log.covers(0)
    assert [z for z, _ in log.since(0)] == [1, 3, 4]
    log.record(5, [(CHANGED, "/a")])  # five changes held: the oldest entry goes
    assert log.oldest_zxid_known == 1
    assert not log.covers(0)
    assert log.covers(1)
    assert [z for z, _ in log.since(1)] == [3, 4, 5]
    log.record(6, [(CREATED, "/c"), (CHILD, "/")])  # six: drop 3 (two changes) -> four
    assert log.oldest_zxid_known == 3
    assert not log.covers(2)
    assert [z for z, _ in log.since(3)] == [4, 5, 6]


def test_the_change_log_holds_nothing_the_garbage_collector_walks() -> None:
    """A member keeps 100,000 changes: as plain tuples of ints and strings, which the collector
    stops tracking, no full collection has to walk them."""
    tree = DataTree()
    created = tree.apply(TxnRecord(1, 0, 1, 0, Create("/a", b"", OPEN_ACL_UNSAFE, 0, 1)))
    changed = tree.apply(TxnRecord(2, 0, 2, 0, SetData("/a", b"x", 1)))
    log = ChangeLog(start_zxid=0)
    log.record(1, created.changes)
    log.record(2, changed.changes)
    gc.collect()  # a tuple is let go once what it holds is: the changes first,
    gc.collect()  # then the tuple of them
    entries = list(log.since(0))
    assert [zxid for zxid, _changes in entries] == [1, 2]
    for _zxid, changes in entries:
        assert not gc.is_tracked(changes)
        assert not any(gc.is_tracked(change) for change in changes)
    registry = WatchRegistry()
    registry.add(W1, "/a", WatchMode.PERSISTENT)
    (event,) = [event for _watcher, event in registry.trigger(entries[1][1], 2)]
    assert event.type is EventType.CHANGED  # watchers get the enum


def test_resume_falls_back_to_stat_comparison_when_the_log_is_too_short() -> None:
    log = _log(HISTORY, capacity=2)  # keeps only the last changes
    assert not log.covers(9)
    tree = FakeTree(
        {
            "/b": (12, 12),  # exists now: the EXIST watch learns it was created
            "/changed": (15, 3),  # mzxid after last_zxid
            "/same": (5, 5),  # nothing since last_zxid
            "/kids": (4, 16),  # pzxid after last_zxid
            "/kids-same": (14, 4),  # data changed, children not
            "/p": (4, 16),
            "/p-same": (4, 4),
        }
    )
    registrations = [
        (EXIST, "/b"),
        (EXIST, "/still-missing"),
        (DATA, "/gone"),
        (DATA, "/changed"),
        (DATA, "/same"),
        (CHILD_W, "/kids"),
        (CHILD_W, "/kids-same"),
        (CHILD_W, "/gone-too"),
        (PERSISTENT, "/p"),
        (PERSISTENT, "/p-same"),
    ]
    reg = WatchRegistry()
    missed = resume_watches(reg, W1, registrations, 9, log, tree, current_zxid=17)
    assert sorted(missed, key=lambda e: e.path) == [
        WatchedEvent(CREATED, "/b", 17),
        WatchedEvent(CHANGED, "/changed", 17),
        WatchedEvent(DELETED, "/gone", 17),
        WatchedEvent(DELETED, "/gone-too", 17),
        WatchedEvent(CHILD, "/kids", 17),
        WatchedEvent(CHILD, "/p", 17),  # its children changed: re-read them
    ]
    assert reg.registrations(W1) == {
        (EXIST, "/still-missing"),
        (DATA, "/same"),
        (CHILD_W, "/kids-same"),
        (PERSISTENT, "/p"),
        (PERSISTENT, "/p-same"),
    }


# ---- sessions -----------------------------------------------------------------------------

TICK = 100


def test_timeout_bounds_clamp_to_two_and_twenty_ticks() -> None:
    bounds = TimeoutBounds.from_tick(TICK)
    assert (bounds.min_ms, bounds.max_ms) == (MIN_TIMEOUT_TICKS * TICK, MAX_TIMEOUT_TICKS * TICK)
    assert (MIN_TIMEOUT_TICKS, MAX_TIMEOUT_TICKS) == (2, 20)
    assert bounds.negotiate(-5) == 200
    assert bounds.negotiate(0) == 200
    assert bounds.negotiate(199) == 200
    assert bounds.negotiate(200) == 200
    assert bounds.negotiate(1234) == 1234
    assert bounds.negotiate(2000) == 2000
    assert bounds.negotiate(2001) == 2000
    assert bounds.negotiate(10**12) == 2000


def test_session_expires_after_its_timeout_and_is_reported_once() -> None:
    tracker = SessionTracker(TICK)
    tracker.add(1, 1000, now_ms=0)
    assert 1 in tracker
    for now in range(0, 1001, 50):
        assert tracker.expired(now) == [], now
    assert tracker.expired(1000 + TICK) == [1]
    assert 1 not in tracker
    assert len(tracker) == 0
    assert tracker.expired(10_000) == []
    assert not tracker.touch(1, 10_000)  # an expired session cannot be revived


def test_touch_extends_the_deadline() -> None:
    tracker = SessionTracker(TICK)
    tracker.add(1, 1000, now_ms=0)
    tracker.add(2, 1000, now_ms=0)
    assert tracker.touch(1, 900)
    assert tracker.expired(1100) == [2]
    for now in range(1100, 1901, 100):
        assert tracker.expired(now) == [], now
    assert tracker.expired(1900 + TICK) == [1]


def test_remove_and_unknown_sessions() -> None:
    tracker = SessionTracker(TICK)
    tracker.add(1, 500, now_ms=0)
    tracker.add(2, 500, now_ms=0)
    tracker.remove(1)
    tracker.remove(99)  # unknown: no error
    assert not tracker.touch(1, 10)
    assert not tracker.touch(99, 10)
    assert tracker.expired(5000) == [2]


def test_sessions_expire_in_deadline_order_and_ids_sorted_within_a_tick() -> None:
    tracker = SessionTracker(TICK)
    tracker.add(30, 400, now_ms=0)
    tracker.add(10, 400, now_ms=0)
    tracker.add(20, 200, now_ms=0)
    assert tracker.next_deadline() == 300
    assert tracker.expired(10_000) == [20, 10, 30]
    assert tracker.next_deadline() is None


def test_bad_tick_is_refused() -> None:
    with pytest.raises(ValueError, match="tick must be positive"):
        SessionTracker(0)


session_ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "touch", "touch", "remove", "advance", "advance"]),
        st.integers(1, 4),  # session id
        st.integers(0, 700),  # timeout for add, or time to advance
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(session_ops)
def test_tracker_matches_a_simple_deadline_model(ops: list[tuple[str, int, int]]) -> None:
    """Reported at most once, never before last touch + timeout, always by one tick after."""
    tracker = SessionTracker(TICK)
    now = 0
    last_heard: dict[int, tuple[int, int]] = {}  # id -> (time last heard, timeout)
    for kind, sid, amount in ops:
        if kind == "add":
            tracker.add(sid, amount, now)
            last_heard[sid] = (now, amount)
        elif kind == "touch":
            assert tracker.touch(sid, now) == (sid in last_heard)
            if sid in last_heard:
                last_heard[sid] = (now, last_heard[sid][1])
        elif kind == "remove":
            tracker.remove(sid)
            last_heard.pop(sid, None)
        else:
            now += amount
        expired = tracker.expired(now)
        assert len(expired) == len(set(expired))
        for sid in expired:
            assert sid in last_heard, "reported a removed or already expired session"
            heard, timeout = last_heard.pop(sid)
            assert now > heard + timeout
        for sid, (heard, timeout) in last_heard.items():
            assert now < heard + timeout + TICK, f"session {sid} should have expired"
        assert set(last_heard) == {sid for sid in range(1, 5) if sid in tracker}


def test_recursive_fallback_names_every_changed_node_below() -> None:
    tree = FakeTree(
        {
            "/app": (2, 2),
            "/app/a": (3, 3),  # untouched since 9
            "/app/b": (12, 12),  # created after 9
            "/app/b/c": (14, 14),
            "/other": (15, 15),  # outside the watch
        }
    )
    log = _log(HISTORY, capacity=2)
    reg = WatchRegistry()
    missed = resume_watches(reg, W1, [(RECURSIVE, "/app"), (RECURSIVE, "/gone")], 9, log, tree, 17)
    # /gone: its parent "/" is not in this fake tree, so it may have been deleted: say so
    assert sorted((e.path, e.type) for e in missed) == [
        ("/app/b", CHANGED),
        ("/app/b/c", CHANGED),
        ("/gone", DELETED),
    ]
    assert reg.has(W1, "/app", RECURSIVE)
