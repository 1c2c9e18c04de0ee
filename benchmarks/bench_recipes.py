"""Lock hand-off latency and acquisitions per second under contention.

    python benchmarks/bench_recipes.py                          # a `zkpy server` subprocess
    python benchmarks/bench_recipes.py --in-process             # the server in this process
    python benchmarks/bench_recipes.py --server 127.0.0.1:2181  # e.g. against `zkpy ensemble`
    python benchmarks/bench_recipes.py --contenders 1,2,8,32 --acquisitions 500

Each contender is a trio task with its own client (its own session) looping on
``async with Lock(zk, path)`` around an empty critical section. Every acquisition is recorded with
its token, the moment it was granted and the moment its release began. Sorted by token (the
order in which the lock was held), consecutive records give the hand-off latency: from the
holder starting its release to the next holder being granted the lock, which is one delete, the
watch event to the waiter and its decision (no re-listing: it knows its predecessor was first).
With one contender there is no hand-off; its line shows a whole uncontended acquire + release.

All contenders share this process (and, with --in-process, the server's event loop too), so the
numbers include Python's own work on the client side. The server fsyncs every write, and an
uncontended acquire + release is two writes and two reads, so on a slow disk fsync dominates;
``--data-dir /dev/shm`` (memory) shows what the protocol and Python cost without it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio

try:
    import zkpy
    from recipes import Lock
    from zkpy.testing import ensemble as launch
    from zkpy.testing import running_server
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import zkpy
    from recipes import Lock
    from zkpy.testing import ensemble as launch
    from zkpy.testing import running_server


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def run_round(address: str, contenders: int, acquisitions: int, path: str) -> str:
    records: list[tuple[int, float, float]] = []  # token, granted at, release started at
    per_task = max(1, acquisitions // contenders)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(zkpy.connect(address, session_timeout=10))
            for _ in range(contenders)
        ]

        async def contender(zk: zkpy.Client) -> None:
            lock = Lock(zk, path)
            for _ in range(per_task):
                held = await lock.acquire()
                granted = time.perf_counter()
                with held.cancel_scope:  # what `async with lock` does, with the moments timed
                    pass
                release_started = time.perf_counter()
                await held.release()
                records.append((held.token, granted, release_started))

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for zk in clients:
                nursery.start_soon(contender, zk)
        elapsed = time.perf_counter() - started

    records.sort()
    total = len(records)
    tokens = [token for token, _g, _r in records]
    assert len(set(tokens)) == total and tokens == sorted(tokens)
    rate = total / elapsed
    if contenders == 1:
        cycle = [elapsed / total * 1000]
        return (
            f"contenders={contenders:3d}  acquisitions={total:5d}  {rate:8.0f} acq/s  "
            f"uncontended acquire+release {statistics.mean(cycle):.2f} ms"
        )
    handoffs = [
        (records[i + 1][1] - records[i][2]) * 1000
        for i in range(total - 1)
        if records[i + 1][1] >= records[i][2]
    ]
    return (
        f"contenders={contenders:3d}  acquisitions={total:5d}  {rate:8.0f} acq/s  "
        f"hand-off p50 {percentile(handoffs, 0.50):6.2f} ms  "
        f"p99 {percentile(handoffs, 0.99):6.2f} ms  max {max(handoffs):6.2f} ms"
    )


async def bench(address: str, counts: list[int], acquisitions: int) -> None:
    for contenders in counts:
        path = f"/bench/lock-{os.getpid()}-{contenders}"
        print(await run_round(address, contenders, acquisitions, path), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--server", help="an address list; default: start a zkpy server")
    where.add_argument("--in-process", action="store_true", help="run the server in-process")
    parser.add_argument("--contenders", default="1,2,4,8,16")
    parser.add_argument("--acquisitions", type=int, default=400, help="per round")
    parser.add_argument(
        "--data-dir",
        help="parent of the server's data (default: the temp dir; /dev/shm takes fsync out)",
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.contenders.split(",")]

    if args.server:
        print(f"server: {args.server}")
        trio.run(bench, args.server, counts, args.acquisitions)
        return 0
    with tempfile.TemporaryDirectory(dir=args.data_dir) as scratch:
        if args.in_process:

            async def in_process() -> None:
                async with running_server(Path(scratch) / "data") as server:
                    print(f"server: in-process member on {server.address}")
                    await bench(server.address, counts, args.acquisitions)

            trio.run(in_process)
            return 0
        with launch.Ensemble(Path(scratch), 1, fast=False, log_level="WARNING") as ensemble:
            member = ensemble[1]
            member.start()
            try:
                trio.run(member.wait_serving, 30.0)
            except AssertionError as err:
                print(err, file=sys.stderr)
                return 1
            print(f"server: `zkpy server` subprocess on {member.address}")
            trio.run(bench, member.address, counts, args.acquisitions)
            trio.run(ensemble.stop_all)
    return 0


if __name__ == "__main__":
    sys.exit(main())
