"""zkpy and Apache ZooKeeper + kazoo side by side, in alternating rounds, with medians.

    python -m benchmarks sidebyside                       # 3 members, 5 rounds
    python -m benchmarks sidebyside --rounds 7 --ops set,watch,lock4,lock32
    python -m benchmarks sidebyside --pin              # members pinned to CPUs by role (0046)

`python -m benchmarks run --kazoo` runs every zkpy workload and then every ZooKeeper one, minutes
apart: on a shared VM the machine's drift between the two halves is as large as the differences
it is meant to show. This starts both ensembles once (both idle while the other is measured),
then runs each workload on one and then the other, swapping which goes first every round, and
reports per system the median over the rounds of each round's p50 and ops/s, the ratio of those
medians, and the lowest and highest per-round ratio: the spread is the noise of the run. Two more
measures show what bounds a rate: `cpu_us_per_op`, the CPU the members and the client processes
spent per operation, and `cpus_busy`, how many of the machine's CPUs every process kept busy on
average over the window (near the machine's count, the rate is bound by CPU).

Workloads: `set`, `get`, `watch` (write to watch event), one request at a time; `lockN`: N
contenders looping on one lock (recipes.Lock, or kazoo's Lock), p50 of the hand-off and
acquisitions per second; and the throughput rows `create`, `set256`, `get256`, `multi256`,
`watch256` (256 in flight). The client is on a follower.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ensembles import Ensemble, ZkpyEnsemble, ZooKeeperEnsemble
from benchmarks.run import Result, Workload, kazoo_ready, parse_args, run_workload

SYSTEMS = ("zkpy", "zookeeper")
_SHAPE = re.compile(r"^(?P<op>[a-z]+)(?P<n>[0-9]*)$")


# per workload: latency, rate, the CPU each operation costs (members and clients) and how busy
# the machine's CPUs were: a rate that stops where the CPUs are busy is bound by CPU
MEASURES = ("p50_ms", "ops_per_s", "cpu_us_per_op", "cpus_busy")


def workload_of(name: str) -> Workload:
    """`set` (one at a time), `set256` (256 in flight), `lock4` (4 contenders)."""
    match = _SHAPE.match(name)
    if match is None:
        raise ValueError(f"not a workload: {name!r}")
    return Workload(match["op"], int(match["n"] or 1), 1)


def median_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def report(names: list[str], rows: dict[tuple[str, str], list[Result]]) -> None:
    print(
        f"\n{'workload':<10} {'measure':<13} {'zkpy':>10} {'zookeeper':>10} {'ratio':>7} "
        f"{'per-round ratios (min..max)':>28}"
    )
    for name in names:
        ours, theirs = rows[(name, "zkpy")], rows[(name, "zookeeper")]
        for measure in MEASURES:
            a = median_or_none([getattr(r, measure) for r in ours if not r.failed])
            b = median_or_none([getattr(r, measure) for r in theirs if not r.failed])
            rounds = [_round_ratio(x, y, measure) for x, y in zip(ours, theirs, strict=False)]
            per_round = [r for r in rounds if r is not None]
            ratio = f"{a / b:7.2f}" if a is not None and b else "      -"
            spread = f"{min(per_round):.2f}..{max(per_round):.2f}" if per_round else "-"
            print(
                f"{name:<10} {measure:<13} {_cell(a)} {_cell(b)} {ratio} {spread:>28}",
                flush=True,
            )


def _round_ratio(ours: Result, theirs: Result, measure: str) -> float | None:
    """One round's zkpy / ZooKeeper ratio of `measure`; None if either failed or lacks it."""
    if ours.failed or theirs.failed:
        return None
    mine, other = getattr(ours, measure), getattr(theirs, measure)
    return mine / other if mine is not None and other else None


def _cell(value: float | None) -> str:
    if value is None:
        return f"{'-':>10}"
    return f"{value:10.3f}" if value < 100 else f"{value:10,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks sidebyside", description=__doc__)
    parser.add_argument("--ops", default="set,watch,lock4,lock32", help="workloads, see above")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (5)")
    parser.add_argument("--size", type=int, default=3, help="members (3)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured (3)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring")
    parser.add_argument("--dir", default=None, help="parent of the temporary data dirs")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin each system's members to CPUs by role (benchmarks.ensembles.placement)",
    )
    options = parser.parse_args()
    why_not = kazoo_ready()
    if why_not is not None:
        print(f"sidebyside needs ZooKeeper and kazoo: {why_not}", file=sys.stderr)
        return 2
    names = [name.strip() for name in options.ops.split(",") if name.strip()]
    plan = {name: workload_of(name) for name in names}
    args = parse_args(["--duration", str(options.duration), "--warmup", str(options.warmup)])
    if options.dir:
        args.dir = options.dir
    rows: dict[tuple[str, str], list[Result]] = {(n, s): [] for n in names for s in SYSTEMS}
    with (
        ZkpyEnsemble(options.size, args.dir) as zkpy_ensemble,
        ZooKeeperEnsemble(options.size, args.dir) as zookeeper_ensemble,
    ):
        ensembles: dict[str, Ensemble] = {"zkpy": zkpy_ensemble, "zookeeper": zookeeper_ensemble}
        run_no = 0
        for system, ensemble in ensembles.items():  # JIT, caches, disk: not reported
            if options.pin:
                ensemble.pin()
            run_no += 1
            warm = argparse.Namespace(**vars(args))
            warm.duration, warm.warmup = 2.0, 0.0
            run_workload(ensemble, Workload("set", 256, 1), warm, run_no)
            print(f"{system}: {ensemble.describe()}", flush=True)
        for round_ in range(options.rounds):
            order = SYSTEMS if round_ % 2 == 0 else SYSTEMS[::-1]
            for name in names:
                for system in order:
                    run_no += 1
                    result = run_workload(ensembles[system], plan[name], args, run_no)
                    rows[(name, system)].append(result)
                    shown = result.failed or (
                        f"p50 {result.p50_ms or 0:.3f} ms  {result.ops_per_s:,.0f} ops/s"
                    )
                    print(f"round {round_ + 1} {name:<8} {system:<9} {shown}", flush=True)
                    time.sleep(0.2)
    report(names, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
