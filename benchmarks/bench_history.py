"""How one-at-a-time write latency and idle CPU change as a 3-member ensemble's history grows.

    python -m benchmarks history [--size 3] [--steps 0,5000,20000,50000,60000]

Starts a `zkpy ensemble` in a temporary folder, then at each step writes (in batches of 256
sets) until that many writes are in, measures the members' CPU at rest for 2 s and the p50 of
200 one-at-a-time sets from a follower. With a constant cost per write the p50 would stay flat;
it does not while the in-memory history (`sync_history`, 50,000 records by default) fills up,
because each step of a member's Ready loop walks that history (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_history.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio

import zkpy
from benchmarks.ensembles import ZkpyEnsemble

BATCH = 256


async def probe(ensemble: ZkpyEnsemble, steps: list[int], samples: int) -> None:
    target = ensemble.client_targets()[0].address
    value = b"v" * 100
    async with zkpy.connect(target) as zk:
        await zk.create("/h", value)
        for i in range(BATCH):
            await zk.create(f"/h/k{i}", value)
        written = 0
        for goal in steps:
            while written < goal:
                if hasattr(zk, "pipeline"):
                    async with zk.pipeline() as pipe:
                        for i in range(BATCH):
                            pipe.set(f"/h/k{i}", value)
                else:
                    async with trio.open_nursery() as nursery:
                        for i in range(BATCH):
                            nursery.start_soon(zk.set, f"/h/k{i}", value)
                written += BATCH
            before = ensemble.cpu()
            await trio.sleep(2.0)
            after = ensemble.cpu()
            idle = {m: round((after[m] - before[m]) / 2.0, 3) for m in before}
            latencies = []
            for _ in range(samples):
                start = time.perf_counter()
                await zk.set("/h", value)
                latencies.append((time.perf_counter() - start) * 1000)
            latencies.sort()
            print(
                f"after {written:>7,} writes: one-at-a-time set p50 {latencies[samples // 2]:7.2f}"
                f" ms; members' CPU at rest (s per s) {idle}",
                flush=True,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=3)
    parser.add_argument("--steps", default="0,5000,20000,50000,60000")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--dir", default=None, help="parent of the temporary data dir")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    with ZkpyEnsemble(args.size, args.dir) as ensemble:
        print(f"zkpy, {args.size} members: {ensemble.describe()}")
        trio.run(probe, ensemble, steps, args.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
