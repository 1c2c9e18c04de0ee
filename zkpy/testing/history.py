"""Checks of a chaos run's recorded history (see `zkpy.testing.workload` for the format)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Protocol

from zkpy.testing.workload import REGISTERS

OPERATION_KINDS = ("read", "write", "cas", "create")


class ReportLike(Protocol):
    """What the checks fill in: `zkpy.testing.chaos.Report` has these fields."""

    outcomes: dict[str, int]
    violations: list[str]
    lost_writes: list[str]
    checked_keys: int


def load(files: list[str]) -> list[dict[str, Any]]:
    """Every record of the JSON-lines history files, in file order."""
    records: list[dict[str, Any]] = []
    for name in files:
        path = Path(name)
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            if line.strip():
                records.append(json.loads(line))
    return records


def analyze(report: ReportLike, files: list[str], final: dict[int, dict[str, Any]]) -> None:
    """Run every check of a chaos run's history and final state into `report`."""
    records = load(files)
    operations = [r for r in records if r.get("kind") in OPERATION_KINDS]
    for op in operations:
        report.outcomes[op["outcome"]] = report.outcomes.get(op["outcome"], 0) + 1
    check_convergence(report, final)
    if not final:
        return
    view = next(iter(final.values()))
    check_ephemerals(report, final)
    check_sequences(report, [op for op in operations if op["kind"] == "create"], view)
    registers = [op for op in operations if op["kind"] in ("read", "write", "cas")]
    check_register_durability(report, registers, view)
    check_watches(report, records, registers)
    check_linearizable(report, files)
    if files:
        check_fenced_resource(report, records, Path(files[0]).parent / "resource.log")


def check_convergence(report: ReportLike, final: dict[int, dict[str, Any]]) -> None:
    """Every member must hold the same final state."""
    views = {member: json.dumps(view, sort_keys=True) for member, view in final.items()}
    if len(set(views.values())) > 1:
        report.violations.append(f"members disagree at the end: {sorted(final)}")


def check_ephemerals(report: ReportLike, final: dict[int, dict[str, Any]]) -> None:
    """No ephemeral may outlive its session (every session has ended by then)."""
    for member, view in final.items():
        if view.get("ephemerals"):
            report.violations.append(
                f"member {member} still holds ephemerals of ended sessions: {view['ephemerals']}"
            )


def _counter(name: str) -> int:
    return int(name[-10:])


def check_sequences(
    report: ReportLike, creates: list[dict[str, Any]], view: dict[str, Any]
) -> None:
    """Acknowledged sequential names are unique, none is lost, and their counters follow
    real-time order (a create called after another returned gets a larger one)."""
    acked = [op for op in creates if op["outcome"] == "ok"]
    names = [op["output"] for op in acked]
    if len(names) != len(set(names)):
        report.violations.append("a sequential name was handed out twice")
    present = set(view.get("sequences", []))
    for op in acked:
        if op["output"] not in present:
            report.lost_writes.append(f"sequential create {op['output']} (process {op['process']})")
    # real-time order: a create called after another returned must get a larger counter; sweep
    # the creates by call time, keeping the largest counter of those already returned
    by_return = sorted(acked, key=lambda op: op["return"])
    finished = 0
    largest: dict[str, Any] | None = None
    for later in sorted(acked, key=lambda op: op["call"]):
        while finished < len(by_return) and by_return[finished]["return"] < later["call"]:
            candidate = by_return[finished]
            if largest is None or _counter(candidate["output"]) > _counter(largest["output"]):
                largest = candidate
            finished += 1
        if largest is not None and _counter(later["output"]) <= _counter(largest["output"]):
            report.violations.append(
                f"sequential {later['output']} was created after {largest['output']} "
                "had returned, but has a smaller counter"
            )
            return


def check_register_durability(
    report: ReportLike, registers: list[dict[str, Any]], view: dict[str, Any]
) -> None:
    """An acknowledged write of version v means the final version is at least v, and if it is
    exactly v the final value is that write's value."""
    final = view.get("registers", {})
    for op in registers:
        if op["kind"] == "read" or op["outcome"] != "ok":
            continue
        version = op["output"][0]
        value = op["input"] if op["kind"] == "write" else op["input"][1]
        final_value, final_version, _mzxid = final.get(op["key"], ["", -1, 0])
        if final_version < version or (final_version == version and final_value != value):
            report.lost_writes.append(
                f"{op['key']}: acknowledged {op['kind']} of {value!r} (version {version}) "
                f"is gone; the final state is {final_value!r} version {final_version}"
            )


def check_watches(
    report: ReportLike, records: list[dict[str, Any]], registers: list[dict[str, Any]]
) -> None:
    """The watcher saw events in increasing zxid order and missed no acknowledged write made
    while it watched, across its reconnects (missed events are replayed). The window closes at
    a zxid the watcher synced to. If its session expired, what changed after its last event may
    be gone with the session, as in ZooKeeper; nothing before that event may be."""
    events = [r for r in records if r.get("kind") == "event"]
    starts = [r for r in records if r.get("kind") == "watch-start"]
    ends = [r for r in records if r.get("kind") == "watch-end"]
    if not starts:
        return
    zxids = [event["zxid"] for event in events]
    if any(b < a for a, b in itertools.pairwise(zxids)):
        report.violations.append("watch events went back in zxid order")
    begin = starts[0]["time"]
    session_lost = bool(ends and ends[-1].get("error"))
    # a window closed normally ends at a zxid the watcher synced to: everything up to it counts
    end_zxid = ends[-1].get("zxid") if ends and not session_lost else None
    finish = ends[-1]["time"] if ends else float("inf")
    last_seen = max(zxids, default=0)
    seen = {(event["path"], event["zxid"]) for event in events if event["type"] == "CHANGED"}
    for op in registers:
        if op["kind"] == "read" or op["outcome"] != "ok" or op["call"] < begin:
            continue
        mzxid = op["output"][1]
        if session_lost and mzxid > last_seen:
            continue
        if end_zxid is not None and mzxid > end_zxid:
            continue
        if end_zxid is None and not session_lost and op["return"] > finish:
            continue  # an older history, without the window's zxid
        if (f"{REGISTERS}/{op['key']}", mzxid) not in seen:
            report.violations.append(
                f"the watcher missed the change of {op['key']} at zxid {mzxid:#x}"
            )


def check_linearizable(report: ReportLike, files: list[str], timeout_s: float = 120.0) -> None:
    """Wing & Gong / Lowe search per key: registers (sync + read, write, cas) and sequences."""
    from zkpy.testing.linearizability import (
        Model,
        RegisterModel,
        check,
        load_history,
    )

    # sequential names are checked by check_sequences in O(n log n); the search covers registers
    history = [
        op for name in files if Path(name).exists() for op in load_history(name) if op.key != "seq"
    ]

    def model_for(key: str) -> Model:
        return RegisterModel(initial="")

    result = check(history, model_for, timeout_s=timeout_s)
    report.checked_keys = len(result.per_key)
    for key in result.timed_out:
        report.violations.append(f"the linearizability check of {key} gave up (timeout)")
    for key in result.violations:
        explanation = result.per_key[key].explanation
        report.violations.append(f"{key} is not linearizable: {explanation}")


def check_fenced_resource(
    report: ReportLike, records: list[dict[str, Any]], resource_log: Path
) -> None:
    """The lock workload: the resource accepted writes in non-decreasing token order (so no
    older holder wrote after a newer one: fencing works), each lock holder had a distinct
    token, and every write a holder saw accepted is in the resource's log."""
    if not resource_log.exists():
        return
    accepted = [line.split(" ", 1) for line in resource_log.read_text().splitlines() if line]
    tokens = [int(token) for token, _payload in accepted]
    if any(b < a for a, b in itertools.pairwise(tokens)):
        report.violations.append("the fenced resource accepted an older token after a newer one")
    locks = [r for r in records if r.get("kind") == "lock" and "token" in r]
    held_tokens = [r["token"] for r in locks]
    if len(held_tokens) != len(set(held_tokens)):
        report.violations.append("two lock holders got the same fencing token")
    written = {payload for _token, payload in accepted}
    for lock in locks:
        for payload, ok in lock.get("writes", []):
            if ok and payload not in written:
                report.violations.append(f"an accepted write {payload} is not in the resource")
    rejected = sum(1 for lock in locks for _p, ok in lock.get("writes", []) if not ok)
    report.outcomes["lock acquisitions"] = len(locks)
    report.outcomes["stale writes refused"] = rejected
