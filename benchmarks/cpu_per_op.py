"""CPU per operation, one request at a time: the steadiest signal for comparing two versions.

On a shared 2-core VM, ops/s and latency percentiles move 10-25 % between runs of the same code;
the CPU the members and the client spend per request moves far less, and at one request in flight
it is what the latency is made of. This starts a `zkpy ensemble`, runs `--count` sets and gets one
at a time from a client on a follower, and prints p50 latency and the CPU per operation of the
members (together and each: leader, followers, the client's member marked with *) and of the
client::

    python -m benchmarks cpu-per-op --size 3 --count 3000 [--backend asyncio]

`--ops set,get,lock` adds a contended lock: `--contenders` sessions (4) of the client's process
loop on one `recipes.Lock` for `--count` acquisitions; its p50 is the hand-off's (a release to
the next holder's grant) and its CPU is per acquisition.

To compare two versions, run it from each checkout's directory in turn (the members run the
``zkpy`` found from the current directory), a few times alternately.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import AsyncExitStack
from typing import Any

import anyio

import zkpy
from benchmarks.ensembles import ZkpyEnsemble, cpu_seconds

WARMUP_OPS = 500
OPS = ("set", "get", "lock")


async def measure(
    address: str, member_pids: dict[str, int], op: str, count: int
) -> dict[str, float]:
    def members_cpu() -> dict[str, float]:
        return {role: cpu_seconds(pid) for role, pid in member_pids.items()}

    value = b"v" * 100
    async with zkpy.connect(address) as zk:
        if await zk.exists("/cpu-per-op") is None:
            await zk.create("/cpu-per-op", value)

        async def one() -> None:
            if op == "set":
                await zk.set("/cpu-per-op", value)
            else:
                await zk.get("/cpu-per-op")

        for _ in range(WARMUP_OPS):
            await one()
        latencies = []
        members_before, client_before = members_cpu(), time.process_time()
        for _ in range(count):
            started = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - started)
        members_after = members_cpu()
        client_used = time.process_time() - client_before
    per_member = {
        f"{role}_cpu_us": (members_after[role] - members_before[role]) / count * 1e6
        for role in member_pids
    }
    return {
        "p50_ms": statistics.median(latencies) * 1e3,
        "members_cpu_us": sum(per_member.values()),
        "client_cpu_us": client_used / count * 1e6,
        **per_member,
    }


async def measure_lock(
    address: str, member_pids: dict[str, int], count: int, contenders: int
) -> dict[str, float]:
    """`contenders` sessions loop on one lock for `count` acquisitions after a warm-up: the
    hand-off p50 and the CPU per acquisition."""
    from benchmarks.workers import lock_handoffs
    from recipes import Lock

    left = WARMUP_OPS + count
    records: list[tuple[int, float, float]] = []
    members_before: dict[str, float] = {}
    client_before = 0.0

    async def contend(zk: zkpy.Client) -> None:
        nonlocal left, client_before
        lock = Lock(zk, "/cpu-per-op-lock")
        while left > 0:
            left -= 1
            if left == count - 1:  # the warm-up is over: measure from here
                members_before.update((role, cpu_seconds(pid)) for role, pid in member_pids.items())
                client_before = time.process_time()
            held = await lock.acquire()
            granted = time.perf_counter()
            await held.release()
            records.append((held.token, granted, granted))

    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(zkpy.connect(address)) for _ in range(contenders)
        ]
        async with anyio.create_task_group() as group:
            for zk in clients:
                group.start_soon(contend, zk)
        client_used = time.process_time() - client_before
        members_after = {role: cpu_seconds(pid) for role, pid in member_pids.items()}
    handoffs = lock_handoffs(records[-count:])
    per_member = {
        f"{role}_cpu_us": (members_after[role] - members_before[role]) / count * 1e6
        for role in member_pids
    }
    return {
        "p50_ms": statistics.median(granted - released for released, granted in handoffs) * 1e3,
        "members_cpu_us": sum(per_member.values()),
        "client_cpu_us": client_used / count * 1e6,
        **per_member,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=3, help="members (3)")
    parser.add_argument("--count", type=int, default=3000, help="operations of each kind (3000)")
    parser.add_argument("--ops", default="set,get", help="of set, get and lock (set,get)")
    parser.add_argument("--contenders", type=int, default=4, help="sessions on the lock (4)")
    parser.add_argument("--json", dest="json_out", help="also write the results here")
    parser.add_argument(
        "--backend", choices=("trio", "asyncio"), default="trio", help="the client's loop (trio)"
    )
    parser.add_argument(
        "--dir",
        default=None,
        help="parent of the members' temporary data dirs (/dev/shm: tmpfs, no disk)",
    )
    args = parser.parse_args()
    ops = args.ops.split(",")
    if unknown := sorted(set(ops) - set(OPS)):
        parser.error(f"unknown --ops {', '.join(unknown)}: choose from {', '.join(OPS)}")
    results: dict[str, Any] = {}
    with ZkpyEnsemble(args.size, args.dir) as ensemble:
        target = ensemble.client_targets()[0]
        roles = ensemble.roles() or {}
        pids = {role_name(member.id, roles, target.id): member.pid for member in ensemble.members}
        address, backend = target.address, args.backend
        for op in ops:
            if op == "lock":
                results[op] = anyio.run(
                    measure_lock, address, pids, args.count, args.contenders, backend=backend
                )
            else:
                results[op] = anyio.run(measure, address, pids, op, args.count, backend=backend)
    for op, row in results.items():
        each = ", ".join(
            f"{key.removesuffix('_cpu_us')} {value:.0f}"
            for key, value in row.items()
            if key.endswith("_cpu_us") and key not in ("members_cpu_us", "client_cpu_us")
        )
        print(
            f"{op}: p50 {row['p50_ms']:.3f} ms, members {row['members_cpu_us']:.0f} us/op "
            f"({each}), client {row['client_cpu_us']:.0f} us/op"
        )
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump({"size": args.size, "count": args.count, "results": results}, out, indent=2)


def role_name(member_id: int, roles: dict[int, str], client_member: int) -> str:
    """leader / follower / observer, with the member the client is on marked, e.g. follower*."""
    role = roles.get(member_id, "member")
    name = f"{role}*" if member_id == client_member else role
    return f"{name}{member_id}"


if __name__ == "__main__":
    main()
