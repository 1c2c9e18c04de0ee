"""Watches end to end: the event comes before any reply that shows the change, in zxid order;
persistent recursive watches see a whole subtree; leaving a watch block unregisters it."""

from __future__ import annotations

from typing import Any

import anyio
import trio

import zkpy
from tests.conftest import FrameSpy, wait_until
from zkpy import EventType, WatchedEvent
from zkpy.client.admin import fetch_status
from zkpy.core.errors import NoWatcherError
from zkpy.core.requests import RemoveWatchesRequest
from zkpy.core.types import WatchMode
from zkpy.testing import RunningServer


def drain(stream: zkpy.WatchStream) -> list[WatchedEvent]:
    """Every event already delivered to a persistent watch, without waiting."""
    out: list[WatchedEvent] = []
    while True:
        try:
            item = stream._receive.receive_nowait()
        except anyio.WouldBlock:
            return out
        assert isinstance(item, WatchedEvent), item
        out.append(item)


async def test_event_is_delivered_before_the_read_that_shows_the_change(
    server: RunningServer,
) -> None:
    log: list[tuple[str, Any]] = []
    async with zkpy.connect(server.address) as a, zkpy.connect(server.address) as b:
        await a.create("/w", b"v0")
        fut = zkpy.WatchFuture()
        async with a.watch("/w") as persistent:

            def on_event(event: WatchedEvent) -> None:
                log.append(("one-shot", event))
                fut(event)

            data, _stat = await a.get("/w", watch=on_event)
            assert data == b"v0"

            written = await b.set("/w", b"v1")

            async def a_sees_v1() -> bool:
                data, stat = await a.get("/w")
                log.append(("reply", data))
                if data != b"v1":
                    return False
                # Checked at the moment the reply is handed back, before anything else runs.
                assert fut.fired, "the read showed v1 before the watch event arrived"
                events = drain(persistent)
                assert [(e.type, e.path, e.zxid) for e in events] == [
                    (EventType.CHANGED, "/w", written.mzxid)
                ]
                assert stat.mzxid == written.mzxid
                return True

            await wait_until(a_sees_v1, timeout=5, what="A to read v1")

        first_new = next(i for i, (kind, value) in enumerate(log) if value == b"v1")
        one_shot = [i for i, (kind, _v) in enumerate(log) if kind == "one-shot"]
        assert len(one_shot) == 1
        assert one_shot[0] < first_new
        event = await fut.wait()
        assert (event.type, event.path, event.zxid) == (EventType.CHANGED, "/w", written.mzxid)

        # One-shot: a second change fires nothing more.
        fired_again: list[WatchedEvent] = []
        await a.get("/w", watch=fired_again.append)
        await b.set("/w", b"v2")
        await b.set("/w", b"v3")
        await a.sync("/w")
        assert (await a.get("/w"))[0] == b"v3"
        assert [e.type for e in fired_again] == [EventType.CHANGED]


async def test_events_arrive_in_zxid_order(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as a, zkpy.connect(server.address) as b:
        await b.create("/z", b"")
        async with a.watch("/z") as events:
            zxids = []
            for i in range(20):
                zxids.append((await b.set("/z", str(i).encode())).mzxid)
            stat = await b.create("/z/kid", include_data=True)
            zxids.append(stat[1].czxid)
            await b.delete("/z/kid")
            await b.delete("/z")
            seen: list[WatchedEvent] = []
            with trio.fail_after(5):
                async for event in events:
                    seen.append(event)
                    if event.type is EventType.DELETED:
                        break
        kinds = [e.type for e in seen]
        assert kinds == [EventType.CHANGED] * 20 + [EventType.CHILD] * 2 + [EventType.DELETED]
        got = [e.zxid for e in seen]
        assert got == sorted(got)
        assert len(set(got)) == len(got)
        assert got[:20] == zxids[:20]
        assert got[20] == zxids[20]


async def test_one_shot_watch_is_not_lost_when_its_event_follows_the_reply_at_once(
    server: RunningServer,
) -> None:
    """A get(watch=...) pipelined with writes on the same session: the event can arrive in the
    same TCP read as the get's reply. It must still reach the callback."""
    async with zkpy.connect(server.address) as zk:
        await zk.create("/race", b"old")
        await zk.create("/other", b"")
        for round_ in range(30):
            await zk.set("/race", b"old")
            fut = zkpy.WatchFuture()
            got: dict[str, bytes] = {}

            async def read() -> None:
                got["data"] = (await zk.get("/race", watch=fut))[0]  # noqa: B023

            async with trio.open_nursery() as nursery:
                # The three requests go out in one write; the get waits behind the first set.
                nursery.start_soon(zk.set, "/other", b"")
                nursery.start_soon(read)
                nursery.start_soon(zk.set, "/race", b"new")
            if got["data"] == b"old":
                # The get saw the old value, so its watch must fire for the set that followed.
                with trio.fail_after(2):
                    event = await fut.wait()
                assert event.type is EventType.CHANGED, round_
            else:
                # The get already showed the change, so the watch it set must not fire for it:
                # that would mean the event came after a reply showing the new state.
                assert got["data"] == b"new"
                await zk.sync("/race")
                await zk.get("/race")
                assert not fut.fired, f"round {round_}: event after a reply showing its change"


async def test_persistent_recursive_watch_sees_the_whole_subtree(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as a, zkpy.connect(server.address) as b:
        await b.create("/app")
        spy = FrameSpy(a)
        expected: list[tuple[EventType, str, int]] = []
        async with a.watch("/app", recursive=True) as events:
            _p, st = await b.create("/app/x", b"1", include_data=True)
            expected.append((EventType.CREATED, "/app/x", st.czxid))
            _p, st = await b.create("/app/x/y", b"2", include_data=True)
            expected.append((EventType.CREATED, "/app/x/y", st.czxid))
            st = await b.set("/app/x/y", b"3")
            expected.append((EventType.CHANGED, "/app/x/y", st.mzxid))
            st = await b.set("/app", b"root")
            expected.append((EventType.CHANGED, "/app", st.mzxid))
            await b.create("/elsewhere", b"")  # outside the subtree: not seen
            await b.create("/apple", b"")  # a sibling sharing the prefix: not seen
            await b.delete("/app/x/y")
            await b.delete("/app/x")
            _p, st = await b.create("/app/z", include_data=True)
            # Deletes carry no stat; take their zxids from the events and check the order.
            seen: list[WatchedEvent] = []
            with trio.fail_after(5):
                async for event in events:
                    seen.append(event)
                    if event.path == "/app/z":
                        break
        got = [(e.type, e.path, e.zxid) for e in seen]
        assert got[:4] == expected
        assert [(t, p) for t, p, _z in got[4:]] == [
            (EventType.DELETED, "/app/x/y"),
            (EventType.DELETED, "/app/x"),
            (EventType.CREATED, "/app/z"),
        ]
        assert got[-1][2] == st.czxid
        zxids = [z for _t, _p, z in got]
        assert zxids == sorted(zxids)
        assert len(set(zxids)) == len(zxids)
        assert all(e.type is not EventType.CHILD for e in seen)
        # Nor did the server send CHILD events for this watch.
        assert all(kind != int(EventType.CHILD) for kind, _p, _z in spy.events())

        # Leaving the block removed the registration on the server: changes below /app send
        # nothing to A any more ...
        before = len(spy.frames)
        await b.create("/app/late", b"")
        await b.set("/app", b"again")
        await a.get("/app")  # answered after any event the writes above could have caused
        late = [f for f in spy.frames[before:] if f[0] == -1]
        assert late == [], late
        # ... and the server has no such watch to remove.
        try:
            await a._call(RemoveWatchesRequest("/app", WatchMode.PERSISTENT_RECURSIVE))
        except NoWatcherError:
            pass
        else:
            raise AssertionError("the recursive watch was still registered on the server")


async def test_two_streams_on_one_path_share_one_registration(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as a, zkpy.connect(server.address) as b:
        await b.create("/s")
        async with a.watch("/s", recursive=True) as first:
            async with a.watch("/s", recursive=True) as second:
                st = await b.set("/s", b"1")
                for stream in (first, second):
                    with trio.fail_after(5):
                        event = await stream.next_event()
                    assert (event.type, event.zxid) == (EventType.CHANGED, st.mzxid)
            # The first stream still works after the second left.
            st = await b.set("/s", b"2")
            with trio.fail_after(5):
                event = await first.next_event()
            assert event.zxid == st.mzxid


async def test_a_one_shot_watch_can_be_removed(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk, zkpy.connect(server.address) as writer:
        await zk.create("/rm", b"")
        removed = zkpy.WatchFuture()
        kept = zkpy.WatchFuture()
        await zk.get("/rm", watch=removed)
        await zk.exists("/rm", watch=kept)
        assert await zk.remove_watch("/rm", removed)
        assert not await zk.remove_watch("/rm", removed)  # already gone
        await writer.set("/rm", b"x")
        with trio.fail_after(5):
            event = await kept.wait()
        assert event.type is zkpy.EventType.CHANGED
        assert not removed.fired
        # the last local watch of a kind removed: the server forgets it too
        await zk.get("/rm", watch=removed)
        status = await fetch_status("127.0.0.1", server.port)
        assert status["watches"] == 1
        assert await zk.remove_watch("/rm", removed)
        status = await fetch_status("127.0.0.1", server.port)
        assert status["watches"] == 0
