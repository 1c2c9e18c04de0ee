"""Where the time of one write goes: the steps of a one-at-a-time set, across the processes.

Runs `--count` one-at-a-time sets (100-byte values) from a client on a follower of a
`zkpy ensemble`, and notes in every process, the client's and each member's, when a socket read
returns, when an outbox is flushed to its socket (what a writer task sends later, for a full
socket or TLS, is not seen) and when a log sync starts and ends. The hooks are installed from the
outside (a ``sitecustomize`` module on the members' PYTHONPATH wraps `Receiver.receive`,
`Outbox.flush` and `MemberDisk.persist`; it hides any other ``sitecustomize`` for the members), so
zkpy itself carries no tracing code;
the clock is CLOCK_MONOTONIC, which the processes of one machine share. It prints each step (an
event named by its process, its kind and its size) at its median time since the set began::

    python -m benchmarks timeline --count 2000

The gaps tell the kinds of time apart: a write in one process to the read in the next is a
wake-up (the kernel and trio's scheduler), a read to the next write in the same process is its
Python work, and a sync's start to its end is the disk. The hooks cost about a microsecond per
event, so the total comes out a little above `benchmarks.cpu_per_op`'s p50.
"""

from __future__ import annotations

import argparse
import atexit
import bisect
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DIR_VARIABLE = "ZKPY_TIMELINE_DIR"
WARMUP_SETS = 300

Event = tuple[int, str, int]  # (ns on CLOCK_MONOTONIC, what happened, bytes or records)
Step = tuple[str, float, float]  # (step, median us since the set began, share of the sets)

_SITECUSTOMIZE = f"""\
import os
if os.environ.get({DIR_VARIABLE!r}):
    from benchmarks.timeline import install_hooks
    install_hooks(os.environ[{DIR_VARIABLE!r}])
"""


def install_hooks(directory: str | None = None) -> list[Event]:
    """Wrap the socket reads and writes (members and client) and the log syncs (members) of
    this process so that each notes its time in the list returned; with `directory`, the list
    is also written to DIRECTORY/PID.json when the process exits."""
    from zkpy._net.outbox import Outbox
    from zkpy._net.receiver import Receiver
    from zkpy.server.node import MemberDisk

    events: list[Event] = []
    clock = time.perf_counter_ns  # CLOCK_MONOTONIC on Linux: one clock for all processes
    receive, flush, persist = Receiver.receive, Outbox.flush, MemberDisk.persist

    async def timed_receive(self: Receiver, max_bytes: int) -> bytes | bytearray:
        data = await receive(self, max_bytes)
        events.append((clock(), "read", len(data)))
        return data

    def timed_flush(self: Outbox) -> None:
        queued = len(self.buffer)
        flush(self)
        if queued > len(self.buffer):
            events.append((clock(), "write", queued - len(self.buffer)))

    def timed_persist(self: MemberDisk, ready: Any) -> None:
        events.append((clock(), "sync start", len(ready.persist)))
        persist(self, ready)
        events.append((clock(), "sync end", len(ready.persist)))

    Receiver.receive = timed_receive  # type: ignore[method-assign]
    Outbox.flush = timed_flush  # type: ignore[method-assign]
    MemberDisk.persist = timed_persist  # type: ignore[method-assign]

    if directory is not None:
        atexit.register(
            lambda: Path(directory, f"{os.getpid()}.json").write_text(json.dumps(events))
        )
    return events


def steps(sets: Sequence[tuple[int, int]], events: dict[str, list[Event]]) -> list[Step]:
    """The steps of a set, in the order of their median time since the set began (us).

    An event is named by its process, its kind and its size (the messages of a set differ in
    size: a forwarded write, a proposal, an acknowledgement, the reply) and, from the second one
    on, how many such the process had before it within the set (``leader3: read 15 B #2``): the
    processes' events interleave differently from one set to the next, and late ones of the set
    before (the leader reading acknowledgements) fall into the next. Steps seen in fewer than half
    of the sets are left out; each comes with the share of sets it was seen in.
    """
    merged = sorted((t, name, kind, size) for name, own in events.items() for t, kind, size in own)
    times = [event[0] for event in merged]
    at: dict[str, list[float]] = collections.defaultdict(list)
    for start, end in sets:
        seen: collections.Counter[tuple[str, str, int]] = collections.Counter()
        for t, name, kind, size in merged[
            bisect.bisect_left(times, start) : bisect.bisect_right(times, end)
        ]:
            seen[name, kind, size] += 1
            nth = seen[name, kind, size]
            unit = "records" if kind.startswith("sync") else "B"
            step = f"{name}: {kind} {size} {unit}" + (f" #{nth}" if nth > 1 else "")
            at[step].append((t - start) / 1000)
    rows = [
        (step, statistics.median(at[step]), len(at[step]) / len(sets))
        for step in at
        if len(at[step]) * 2 >= len(sets)
    ]
    return sorted(rows, key=lambda row: row[1])


def format_steps(p50_us: float, rows: list[Step]) -> str:
    lines = [f"one-at-a-time set, p50 {p50_us:.0f} us", f"{'at us':>8} {'step us':>8}  step"]
    previous = 0.0
    for step, at, share in rows:
        seen = "" if share >= 0.95 else f" (in {share:.0%} of the sets)"
        lines.append(f"{at:8.0f} {at - previous:8.0f}  {step}{seen}")
        previous = at
    lines.append(f"{p50_us:8.0f} {p50_us - previous:8.0f}  client: the set returns")
    return "\n".join(lines)


async def _run_sets(address: str, count: int) -> list[tuple[int, int]]:
    import zkpy

    value = b"v" * 100
    windows: list[tuple[int, int]] = []
    async with zkpy.connect(address) as zk:
        if await zk.exists("/timeline") is None:
            await zk.create("/timeline", value)
        for _ in range(WARMUP_SETS):
            await zk.set("/timeline", value)
        for _ in range(count):
            started = time.perf_counter_ns()
            await zk.set("/timeline", value)
            windows.append((started, time.perf_counter_ns()))
    return windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=3, help="members (3)")
    parser.add_argument("--count", type=int, default=2000, help="sets measured (2000)")
    parser.add_argument(
        "--dir",
        default=None,
        help="parent of the members' temporary data dirs (/dev/shm: tmpfs, no disk)",
    )
    args = parser.parse_args()

    import trio

    from benchmarks.cpu_per_op import role_name
    from benchmarks.ensembles import ZkpyEnsemble

    with tempfile.TemporaryDirectory(prefix="zkpy-timeline-") as directory:
        Path(directory, "sitecustomize.py").write_text(_SITECUSTOMIZE)
        os.environ[DIR_VARIABLE] = directory
        path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [directory, str(REPO), path]))
        own_events = install_hooks()
        with ZkpyEnsemble(args.size, args.dir) as ensemble:
            target = ensemble.client_targets()[0]
            roles = ensemble.roles() or {}
            names = {
                member.pid: role_name(member.id, roles, target.id) for member in ensemble.members
            }
            windows = trio.run(_run_sets, target.address, args.count)
        events = {name: _load(directory, pid) for pid, name in names.items()}
        events["client"] = own_events
    p50 = statistics.median((end - start) / 1000 for start, end in windows)
    print(format_steps(p50, steps(windows, events)))


def _load(directory: str, pid: int) -> list[Event]:
    path = Path(directory, f"{pid}.json")
    if not path.exists():  # killed before it could save, or started without site (-S, -I)
        print(f"warning: no events from member process {pid}", file=sys.stderr)
        return []
    return [(int(t), str(kind), int(size)) for t, kind, size in json.loads(path.read_text())]


if __name__ == "__main__":
    main()
