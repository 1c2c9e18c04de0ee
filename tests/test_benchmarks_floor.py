"""The floor benchmark plays the messages of zkpy's write path and of Zab's, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.floor import (
    ACK,
    COMMIT,
    EVENT,
    FORWARD,
    LOGGED,
    PROPOSE,
    REPLY,
    REQUEST,
    Frames,
    Log,
    Member,
    frame,
    measure,
)


class Trace:
    """Sends and log appends of one member, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int] | str] = []

    def send(self, peer: str, kind: int) -> None:
        self.events.append((peer, kind))


def member(role: str, shape: str, tmp_path: Path, *, watched: bool = False) -> tuple[Member, Trace]:
    trace = Trace()
    log = Log(str(tmp_path / role), sync=False)
    original_append = log.append

    def traced_append() -> None:
        original_append()
        trace.events.append("log")

    log.append = traced_append  # type: ignore[method-assign]
    return Member(role, shape, log, trace.send, watched), trace


def test_zkpy_path_leader_logs_before_proposing(tmp_path: Path) -> None:
    leader, trace = member("leader", "logged", tmp_path)
    leader.on_message("follower1", FORWARD)
    assert trace.events == ["log", ("follower1", PROPOSE), ("follower2", PROPOSE)]
    leader.on_message("follower1", ACK)
    assert trace.events[-1] == ("follower2", PROPOSE)  # no commit messages on this path


def test_zkpy_path_clients_follower_replies_once_logged(tmp_path: Path) -> None:
    follower, trace = member("follower1", "logged", tmp_path)
    follower.on_message("client", REQUEST)
    assert trace.events == [("leader", FORWARD)]
    follower.on_message("leader", PROPOSE)
    assert trace.events[1:] == ["log", ("client", REPLY), ("leader", ACK)]


def test_zab_path_commits_on_its_own_log_and_one_ack(tmp_path: Path) -> None:
    leader, trace = member("leader", "zab", tmp_path)
    leader.on_message("follower1", FORWARD)
    assert trace.events == [("follower1", PROPOSE), ("follower2", PROPOSE), "log"]
    leader.on_message("follower2", ACK)
    assert trace.events[3:] == [("follower1", COMMIT), ("follower2", COMMIT)]
    leader.on_message("follower1", ACK)  # a second ack commits nothing more
    assert len(trace.events) == 5


def test_zab_path_a_late_ack_of_the_last_write_does_not_commit_the_next(tmp_path: Path) -> None:
    leader, trace = member("leader", "zab", tmp_path)
    leader.on_message("follower1", FORWARD)
    leader.on_message("follower1", ACK)  # write 1 commits
    leader.on_message("follower1", FORWARD)  # write 2, logged by the leader
    leader.on_message("follower2", ACK)  # follower 2's ack of write 1, late
    assert trace.events.count(("follower1", COMMIT)) == 1
    leader.on_message("follower2", ACK)  # its ack of write 2
    assert trace.events.count(("follower1", COMMIT)) == 2


def test_zab_path_follower_replies_on_the_commit(tmp_path: Path) -> None:
    follower, trace = member("follower1", "zab", tmp_path)
    follower.on_message("leader", PROPOSE)
    assert trace.events == ["log", ("leader", ACK)]
    follower.on_message("leader", COMMIT)
    assert trace.events[-1] == ("client", REPLY)


@pytest.mark.parametrize("shape", ["logged", "zab"])
def test_a_watched_write_fires_its_event_before_the_reply(tmp_path: Path, shape: str) -> None:
    follower, trace = member("follower1", shape, tmp_path, watched=True)
    follower.on_message("leader", PROPOSE)
    if shape == "zab":
        follower.on_message("leader", COMMIT)
    answers = [event for event in trace.events if event in (("watcher", EVENT), ("client", REPLY))]
    assert answers == [("watcher", EVENT), ("client", REPLY)]


def test_early_path_leader_proposes_then_logs_then_says_so(tmp_path: Path) -> None:
    leader, trace = member("leader", "early", tmp_path)
    leader.on_message("follower1", FORWARD)
    assert trace.events == [
        ("follower1", PROPOSE),
        ("follower2", PROPOSE),
        "log",
        ("follower1", LOGGED),
        ("follower2", LOGGED),
    ]


@pytest.mark.parametrize("logged_note_first", [False, True])
def test_early_path_follower_replies_once_it_and_the_leader_logged(
    tmp_path: Path, logged_note_first: bool
) -> None:
    follower, trace = member("follower1", "early", tmp_path)
    first, second = (LOGGED, PROPOSE) if logged_note_first else (PROPOSE, LOGGED)
    follower.on_message("leader", first)
    assert ("client", REPLY) not in trace.events
    follower.on_message("leader", second)
    assert trace.events.count(("client", REPLY)) == 1
    assert trace.events.index("log") < trace.events.index(("client", REPLY))


def test_a_synced_log_syncs_every_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr("benchmarks.floor.os.fdatasync", synced.append)
    log = Log(str(tmp_path / "log"), sync=True)
    log.append()
    log.append()
    assert len(synced) == 2
    Log(str(tmp_path / "unsynced"), sync=False).append()
    assert len(synced) == 2


def test_frames_are_cut_across_reads() -> None:
    stream = frame(REQUEST) + frame(ACK)
    frames = Frames()
    assert frames.feed(stream[:10]) == []
    assert frames.feed(stream[10:-1]) == [REQUEST]
    assert frames.feed(stream[-1:]) == [ACK]
    assert len(frame(REPLY)) == 72


@pytest.mark.parametrize("shape", ["logged", "early", "zab"])
@pytest.mark.parametrize("runtime", ["blocking", "trio"])
@pytest.mark.parametrize(("watch", "client_spin"), [(False, False), (True, False), (False, True)])
def test_a_short_run_measures_every_write(
    tmp_path: Path, shape: str, runtime: str, watch: bool, client_spin: bool
) -> None:
    run = measure(
        shape,
        runtime,
        sync=False,
        count=20,
        directory=str(tmp_path),
        watch=watch,
        client_spin=client_spin,
    )
    assert len(run.latencies) == 20
    assert run.latencies == sorted(run.latencies)
    assert all(latency > 0 for latency in run.latencies)
    assert run.member_user >= 0
    assert run.member_system >= 0


def test_the_floor_is_shown_by_the_one_at_a_time_write_targets_only() -> None:
    from benchmarks.run import Result, check_targets

    def result(op: str, in_flight: int, p50_ms: float) -> Result:
        return Result("zkpy", op, op, 3, 1, in_flight, 100, ops_per_s=50_000.0, p50_ms=p50_ms)

    results = [result("set", 1, 1.1), result("watch", 1, 0.5), result("set", 256, 9.0)]
    floor = {
        "set": {"as zkpy runs": 0.7, "at best": 0.4},
        "watch": {"as zkpy runs": 0.8, "at best": 0.5},
    }
    rows = {row["target"]: row for row in check_targets(results, floor)}
    assert rows["set p50 ms, one at a time"]["floor"] == floor["set"]
    assert not rows["set p50 ms, one at a time"]["met"]
    assert rows["write-to-watch-event p50 ms, one at a time"]["floor"] == floor["watch"]
    assert rows["write-to-watch-event p50 ms, one at a time"]["met"]
    assert "floor" not in rows["sets/s, 256 in flight, 1 client"]
    assert all("floor" not in row for row in check_targets(results))
