"""The scale run: load N znodes into a zkpy ensemble, report each member's memory, restart the
ensemble and time how long until every member serves again with all N znodes.

    python -m benchmarks scale                        # 1,000,000 znodes of 100 B, 1 member
    python -m benchmarks scale --znodes 200000 --size 3 --json scale.json

The znodes are spread over folders of 1,000 children (/scale/f0000/n000...), written with the
client's pipeline() in batches, from one client process. Memory is each member's resident
memory once the load is done, and again after the restart, split into its own (RssAnon: the tree,
Python) and the pages of LMDB's memory-mapped data file it touched (RssFile: page cache, which
the kernel can take back); the data dir size is what LMDB holds on disk. The restart is timed
from launching `zkpy ensemble` again on the same data to the moment every member reports serving
with N znodes or more.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import trio

if __package__ in (None, ""):  # `python benchmarks/bench_scale.py` from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zkpy
from benchmarks.ensembles import ZkpyEnsemble

PER_FOLDER = 1000
BATCH = 500
SLOTS = 4


def memory_mib(pid: int) -> dict[str, int]:
    """Resident memory of a process: `anon` is its own (the tree, Python), `file` the pages of
    mapped files it has touched (LMDB's data file: page cache the kernel can reclaim)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            fields[name] = int(rest.split()[0]) // 1024
    return {"rss": fields["VmRSS"], "anon": fields["RssAnon"], "file": fields["RssFile"]}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def load(address: str, count: int, value: bytes) -> float:
    """Create `count` znodes; return the seconds it took."""
    started = time.monotonic()
    async with zkpy.connect(address, session_timeout=30) as zk:
        await zk.ensure_path("/scale")
        folders = (count + PER_FOLDER - 1) // PER_FOLDER
        async with zk.pipeline() as pipe:
            for folder in range(folders):
                pipe.create(f"/scale/f{folder:04d}")
        paths = (f"/scale/f{i // PER_FOLDER:04d}/n{i % PER_FOLDER:03d}" for i in range(count))
        next_batch = iter(range(0, count, BATCH))

        async def slot() -> None:
            for _start in next_batch:  # the slots share one iterator of batches
                async with zk.pipeline() as pipe:
                    for _ in range(BATCH):
                        path = next(paths, None)
                        if path is None:
                            break
                        pipe.create(path, value)

        async with trio.open_nursery() as nursery:
            for _ in range(SLOTS):
                nursery.start_soon(slot)
    return time.monotonic() - started


def wait_for_znodes(ensemble: ZkpyEnsemble, count: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = ensemble.statuses()
        if all(int(s.get("znodes", 0)) >= count for s in statuses.values()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"members hold {[s.get('znodes') for s in statuses.values()]}")
        time.sleep(0.1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    value = b"v" * args.value_size
    with ZkpyEnsemble(args.size, args.dir) as ensemble:
        target = ensemble.client_targets()[0]
        print(f"zkpy, {args.size} member(s): {ensemble.describe()}")
        print(f"loading {args.znodes:,} znodes of {args.value_size} B ...", flush=True)
        load_s = trio.run(load, target.address, args.znodes, value)
        wait_for_znodes(ensemble, args.znodes)
        loaded = {m.id: memory_mib(m.pid) for m in ensemble.members}
        assert ensemble.tmp is not None
        data_dir = Path(ensemble.tmp) / "data"
        disk = dir_bytes(data_dir)
        print(f"restarting {args.size} member(s) ...", flush=True)
        started = time.monotonic()
        ensemble.restart()
        wait_for_znodes(ensemble, args.znodes)
        serving_s = time.monotonic() - started
        restarted = {m.id: memory_mib(m.pid) for m in ensemble.members}
        znodes = {i: int(s.get("znodes", 0)) for i, s in ensemble.statuses().items()}
    result = {
        "members": args.size,
        "znodes_loaded": args.znodes,
        "znodes_per_member": znodes,
        "value_size": args.value_size,
        "load_s": round(load_s, 2),
        "creates_per_s": round(args.znodes / load_s),
        "memory_after_load_mib": loaded,
        "memory_after_restart_mib": restarted,
        "data_dir_mib": round(disk / 2**20),
        "restart_to_serving_s": round(serving_s, 2),
    }
    print(
        f"\nloaded {args.znodes:,} znodes in {load_s:.1f} s ({result['creates_per_s']:,}/s)\n"
        f"memory per member after the load (MiB; anon = its own, file = LMDB pages mapped):"
        f" {loaded}\n"
        f"data dir on disk (all members): {result['data_dir_mib']} MiB\n"
        f"restart until every member serves all of them: {serving_s:.1f} s\n"
        f"memory per member after the restart (MiB): {restarted}"
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--znodes", type=int, default=1_000_000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--size", type=int, default=1, help="members in the ensemble")
    parser.add_argument("--dir", default=None, help="parent of the temporary data dir")
    parser.add_argument("--json", dest="json_out", default=None, help="write the results here")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
