"""`ThreadSlice`: the calling thread's scheduler slice, long while a member does background
work (docs/decisions/0042). Linux 6.12+ on x86_64 or aarch64 sets it; elsewhere it does
nothing, and says so."""

from __future__ import annotations

import threading

from zkpy.server.sched import ThreadSlice


def _slice_in_a_new_thread() -> int | None:
    seen: list[int | None] = []
    thread = threading.Thread(target=lambda: seen.append(ThreadSlice(20_000).read_ns()))
    thread.start()
    thread.join()
    return seen[0]


def test_the_thread_takes_the_long_slice_and_gives_it_back() -> None:
    thread_slice = ThreadSlice(20_000)
    default = thread_slice.read_ns()
    if not thread_slice.supported:  # no sched_getattr here: nothing to set, nothing breaks
        thread_slice.lengthen()
        thread_slice.restore()
        assert thread_slice.read_ns() is None
        return
    assert default is not None
    try:
        thread_slice.lengthen()
        assert thread_slice.read_ns() == 20_000_000
        assert _slice_in_a_new_thread() == default, "threads started meanwhile get the default"
        thread_slice.lengthen()  # again before a restore: nothing more to ask
        assert thread_slice.read_ns() == 20_000_000
    finally:
        thread_slice.restore()
    assert thread_slice.read_ns() == default
    thread_slice.restore()  # nothing taken: nothing to give back
    assert thread_slice.read_ns() == default


def test_off_where_it_cannot_or_should_not() -> None:
    for thread_slice in (ThreadSlice(0), ThreadSlice(20_000, machine="sparc64")):
        assert not thread_slice.supported
        thread_slice.lengthen()
        thread_slice.restore()
        assert thread_slice.read_ns() is None
