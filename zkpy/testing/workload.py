"""A chaos workload client: one process, several worker tasks, every operation recorded.

Each line of the output file is one JSON object: an operation with its process, worker, key,
kind, input, output, call and return times (CLOCK_MONOTONIC, shared by the processes of one
machine) and outcome: "ok", "fail" (it certainly did not take effect) or "unknown" (it may have).
A watcher task records every event of a persistent recursive watch, to check that none is lost.

A lock worker takes `recipes.Lock` and writes to a resource guarded by `recipes.fencing` (a
log file shared by the client processes), recording its token and which writes were accepted.

Run by `zkpy chaos`: ``python -m zkpy.testing.workload --hosts H --out F --seconds S --seed N``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import trio

import zkpy
from recipes import Lock
from recipes.errors import RecipeError
from recipes.fencing import FencingGuard, StaleTokenError
from zkpy.errors import (
    BadVersionError,
    NodeExistsError,
    NoNodeError,
    SessionExpiredError,
    ZkError,
)

ROOT = "/chaos"
REGISTERS = f"{ROOT}/registers"
SEQUENCES = f"{ROOT}/sequences"
EPHEMERALS = f"{ROOT}/ephemerals"
DEFINITE_FAILURES = (BadVersionError, NoNodeError, NodeExistsError)
OP_TIMEOUT_S = 5.0


@dataclass(slots=True)
class Recorder:
    """Appends a worker's operations to the history file, one JSON line each."""

    out: IO[str]
    process: int

    def write(self, record: dict[str, Any]) -> None:
        """Append `record`, tagged with this client process, and flush it."""
        record["process"] = self.process
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()


async def ensure_layout(zk: zkpy.Client, keys: int) -> None:
    """Create the workload's folders and registers, if no other client has."""
    for path in (ROOT, REGISTERS, SEQUENCES, EPHEMERALS):
        try:
            await zk.create(path, b"")
        except NodeExistsError:
            pass
    for index in range(keys):
        try:
            await zk.create(f"{REGISTERS}/k{index}", b"")
        except NodeExistsError:
            pass


def _choose(rng: random.Random, keys: int, value: str, versions: dict[str, int]) -> dict[str, Any]:
    """What the next operation is, decided (and recorded) before it is sent."""
    if rng.random() < 0.15:
        return {"key": "seq", "kind": "create", "input": value}
    key = f"k{rng.randrange(keys)}"
    roll = rng.random()
    if roll < 0.4:
        return {"key": key, "kind": "read", "input": None}
    if roll < 0.7:
        return {"key": key, "kind": "write", "input": value}
    return {"key": key, "kind": "cas", "input": [versions.get(key, 0), value]}


async def _perform(zk: zkpy.Client, op: dict[str, Any], versions: dict[str, int]) -> Any:
    """Run one chosen operation; return its output."""
    if op["kind"] == "create":
        created = await zk.create(f"{SEQUENCES}/s-", op["input"].encode(), sequential=True)
        return created.rsplit("/", 1)[1]
    path = f"{REGISTERS}/{op['key']}"
    if op["kind"] == "read":
        await zk.sync(path)  # sync, then read: a read that is current when the sync is answered
        data, stat = await zk.get(path)
        versions[op["key"]] = stat.version
        return [data.decode(), stat.version]
    if op["kind"] == "write":
        stat = await zk.set(path, op["input"].encode())
    else:
        expected, value = op["input"]
        stat = await zk.set(path, value.encode(), version=expected)
    return [stat.version, stat.mzxid]


async def worker(
    zk: zkpy.Client,
    recorder: Recorder,
    worker_id: int,
    rng: random.Random,
    keys: int,
    deadline: float,
) -> None:
    """One task of the workload: random operations, each recorded with its outcome."""
    versions: dict[str, int] = {}
    count = 0
    while time.monotonic() < deadline:
        count += 1
        record = _choose(rng, keys, f"{recorder.process}.{worker_id}.{count}", versions)
        record.update(worker=worker_id, call=time.monotonic())
        try:
            with trio.fail_after(OP_TIMEOUT_S):
                record["output"] = await _perform(zk, record, versions)
            record["outcome"] = "ok"
        except DEFINITE_FAILURES as err:
            record.update(output=type(err).__name__, outcome="fail")
        except (ZkError, trio.TooSlowError) as err:
            record.update(output=type(err).__name__, outcome="unknown")
            if isinstance(err, SessionExpiredError):
                record["return"] = None
                recorder.write(record)
                return  # the session is gone: the process starts a new one
        record["return"] = None if record["outcome"] == "unknown" else time.monotonic()
        recorder.write(record)


LOCK_PATH = f"{ROOT}/lock"
RESOURCE = "resource"


def write_resource(directory: Path, token: int, payload: str) -> bool:
    """The fenced resource: a log file shared by every client process. Under an exclusive file
    lock, `recipes.fencing.FencingGuard` (its memory kept in a file) accepts or refuses the
    token, and an accepted write appends a line. False: refused as stale."""
    with open(directory / "resource.lock", "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        state_file = directory / "resource.state"
        state: dict[str, int] = json.loads(state_file.read_text()) if state_file.exists() else {}
        guard = FencingGuard(state=state)
        try:
            guard.accept(RESOURCE, token)
        except StaleTokenError:
            return False
        state_file.write_text(json.dumps(state))
        with open(directory / "resource.log", "a") as log_file:
            log_file.write(f"{token} {payload}\n")
        return True


async def lock_worker(
    zk: zkpy.Client, recorder: Recorder, resource_dir: Path, rng: random.Random, deadline: float
) -> None:
    """Take `recipes.Lock`, write a few times to the fenced resource, release; record it all."""
    lock = Lock(zk, LOCK_PATH)
    count = 0
    while time.monotonic() < deadline:
        count += 1
        record: dict[str, Any] = {"kind": "lock", "time": time.monotonic()}
        try:
            with trio.fail_after(OP_TIMEOUT_S * 2):
                async with lock as held:
                    record.update(token=held.token, acquired=time.monotonic(), writes=[])
                    for index in range(3):
                        payload = f"{recorder.process}.{count}.{index}"
                        accepted = await trio.to_thread.run_sync(
                            write_resource, resource_dir, held.token, payload
                        )
                        record["writes"].append([payload, accepted])
                        await trio.sleep(rng.uniform(0, 0.01))  # hold it a little while
            record.update(released=time.monotonic(), outcome="ok", lost=held.lost)
        except (ZkError, RecipeError, trio.TooSlowError) as err:
            record.update(outcome="unknown", error=type(err).__name__)
            if isinstance(err, SessionExpiredError):
                recorder.write(record)
                return
        recorder.write(record)


async def watcher(zk: zkpy.Client, recorder: Recorder, deadline: float) -> None:
    """Record every event under the registers; reconnects are the client's business."""
    try:
        await _watch(zk, recorder, deadline)
    except ZkError as err:
        recorder.write({"kind": "watch-end", "time": time.monotonic(), "error": str(err)})


async def _watch(zk: zkpy.Client, recorder: Recorder, deadline: float) -> None:
    async with zk.watch(REGISTERS, recursive=True) as events:
        recorder.write({"kind": "watch-start", "time": time.monotonic(), "zxid": zk.last_zxid})
        with trio.move_on_at(_trio_deadline(deadline)):
            async for event in events:
                _record_event(recorder, event)
        # Close the window at a known zxid: after a sync's reply, every event up to the state it
        # shows has arrived (events come before the replies that show their change).
        with trio.fail_after(OP_TIMEOUT_S):
            await zk.sync(REGISTERS)
        end_zxid = zk.last_zxid
        with trio.move_on_after(1.0):
            async for event in events:
                _record_event(recorder, event)
                if event.zxid >= end_zxid:
                    break
        recorder.write({"kind": "watch-end", "time": time.monotonic(), "zxid": end_zxid})


def _record_event(recorder: Recorder, event: zkpy.WatchedEvent) -> None:
    recorder.write(
        {
            "kind": "event",
            "type": event.type.name,
            "path": event.path,
            "zxid": event.zxid,
            "time": time.monotonic(),
        }
    )


def _trio_deadline(monotonic_deadline: float) -> float:
    return trio.current_time() + max(0.0, monotonic_deadline - time.monotonic())


async def run(
    hosts: str,
    out_path: str,
    seconds: float,
    seed: int,
    process: int,
    keys: int,
    workers: int,
    resource_dir: Path | None = None,
) -> None:
    """Run this client process's workload until `seconds` have passed."""
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    with open(out_path, "a") as out:
        recorder = Recorder(out, process)
        first = True
        while time.monotonic() < deadline:
            try:
                async with zkpy.connect(hosts, session_timeout=4.0, connect_timeout=3.0) as zk:
                    await ensure_layout(zk, keys)
                    await zk.create(
                        f"{EPHEMERALS}/p{process}-", b"", ephemeral=True, sequential=True
                    )
                    async with trio.open_nursery() as nursery:
                        if first and process == 0:
                            nursery.start_soon(watcher, zk, recorder, deadline)
                        if resource_dir is not None:
                            lock_rng = random.Random(rng.randrange(1 << 30))
                            nursery.start_soon(
                                lock_worker, zk, recorder, resource_dir, lock_rng, deadline
                            )
                        for worker_id in range(workers):
                            seed_for = rng.randrange(1 << 30)
                            nursery.start_soon(
                                worker,
                                zk,
                                recorder,
                                worker_id,
                                random.Random(seed_for),
                                keys,
                                deadline,
                            )
                    first = False
            except (ZkError, OSError) as err:
                recorder.write(
                    {"kind": "session-lost", "time": time.monotonic(), "error": str(err)}
                )
                await trio.sleep(0.1)


def main(argv: list[str] | None = None) -> None:
    """`python -m zkpy.testing.workload`: one client process of a chaos run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--process", type=int, default=0)
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--resource-dir", type=Path, default=None, help="the fenced resource")
    args = parser.parse_args(argv)
    trio.run(
        run,
        args.hosts,
        args.out,
        args.seconds,
        args.seed,
        args.process,
        args.keys,
        args.workers,
        args.resource_dir,
    )


if __name__ == "__main__":
    main()
