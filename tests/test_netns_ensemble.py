"""An ensemble on three network hosts (namespaces) with real link faults: the leader's cable
cut and plugged back in, and WAN-like delay on every link. Needs root (see
zkpy.testing.netns); the figures it prints are for docs/operations.md, never asserted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import zkpy
from zkpy.core.errors import ConnectionLossError
from zkpy.testing.ensemble import Member, poll
from zkpy.testing.netns import HostNetwork, NetnsEnsemble, unavailable

FAILOVER_LIMIT_S = 10.0  # generous: the figure itself is printed, not asserted
DELAY_MS = 20
IN_FLIGHT = 64


@pytest.fixture
def network() -> Iterator[HostNetwork]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    with HostNetwork(3) as made:
        yield made


async def set_p50(zk: zkpy.Client, count: int) -> float:
    """The median latency (ms) of `count` sets, one at a time."""
    latencies = []
    for number in range(count):
        started = time.perf_counter()
        await zk.set("/bench", str(number).encode())
        latencies.append((time.perf_counter() - started) * 1000)
    return sorted(latencies)[len(latencies) // 2]


async def throughput(zk: zkpy.Client, seconds: float) -> float:
    """Sets per second with IN_FLIGHT sets outstanding, over about `seconds`."""
    done = 0
    deadline = trio.current_time() + seconds

    async def worker() -> None:
        nonlocal done
        while trio.current_time() < deadline:
            await zk.set("/bench", b"x")
            done += 1

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(IN_FLIGHT):
            nursery.start_soon(worker)
    return done / (time.perf_counter() - started)


async def measure(member: Member, label: str) -> None:
    """Print the set p50 and the pipelined throughput through `member`."""
    async with zkpy.connect(member.address, session_timeout=4.0) as zk:
        if await zk.exists("/bench") is None:
            await zk.create("/bench", b"")
        p50 = await set_p50(zk, 40)
        rate = await throughput(zk, 2.0)
    print(f"\nNETNS {label}: set p50 {p50:.2f} ms, {rate:.0f} sets/s ({IN_FLIGHT} in flight)")


async def read_all(member: Member, path: str) -> dict[str, bytes]:
    """After a sync on `member` alone, the data of every child of `path`."""
    async with zkpy.connect(member.address, session_timeout=4.0) as zk:
        await zk.sync(path)
        return {name: (await zk.get(f"{path}/{name}"))[0] for name in await zk.get_children(path)}


async def test_leader_cable_cut_and_wan_delay(tmp_path: Path, network: HostNetwork) -> None:
    with NetnsEnsemble(tmp_path, network) as ensemble:
        leader = await ensemble.start_serving()
        follower = next(m for m in ensemble.voters if m is not leader)
        print(f"\nNETNS cables: {network.cable_kind}")
        await measure(follower, "no delay, via a follower")
        network.delay(DELAY_MS)
        await measure(follower, f"{DELAY_MS} ms into every host, via a follower")
        network.delay(0)

        survivors = [m for m in ensemble.voters if m is not leader]
        async with zkpy.connect(ensemble.addresses(survivors), session_timeout=4.0) as zk:
            await zk.create("/stream", b"")
            acked: dict[str, tuple[float, bytes, int]] = {}  # path: (when, data, epoch)
            stop = trio.Event()

            async def write_stream() -> None:
                number = 0
                while not stop.is_set():
                    number += 1
                    try:
                        path, stat = await zk.create(
                            "/stream/n-", str(number).encode(), sequential=True, include_data=True
                        )
                    except ConnectionLossError:
                        continue  # in doubt: may or may not have been applied
                    acked[path] = (time.monotonic(), str(number).encode(), stat.czxid >> 32)

            def after(epoch: int) -> list[float]:
                return [when for when, _d, e in acked.values() if e > epoch]

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write_stream)
                await poll(lambda: len(acked) >= 30, timeout=10, what="writes before the cut")
                old_epoch = max(epoch for _w, _d, epoch in acked.values())
                cut_at = time.monotonic()
                network.link_down(leader.id)
                await poll(
                    lambda: len(after(old_epoch)) >= 30,
                    timeout=FAILOVER_LIMIT_S,
                    what="writes through the other members after the cut",
                )
                failover_s = min(after(old_epoch)) - cut_at
                network.link_up(leader.id)
                back = len(acked)
                await poll(
                    lambda: len(acked) >= back + 30,
                    timeout=10,
                    what="writes after the cable is back",
                )
                stop.set()
            print(f"\nNETNS failover: leader {leader.id} cut -> first write {failover_s:.3f} s")
            assert failover_s < FAILOVER_LIMIT_S

        # The old leader rejoins and catches up; nothing acknowledged is missing anywhere.
        await ensemble.wait_converged(timeout=20)
        expected = {path.rsplit("/", 1)[1]: data for path, (_w, data, _e) in acked.items()}
        for member in ensemble.voters:
            tree = await read_all(member, "/stream")
            lost = {name for name in expected if tree.get(name) != expected[name]}
            assert not lost, f"member {member.id} lost acknowledged writes {sorted(lost)}"
