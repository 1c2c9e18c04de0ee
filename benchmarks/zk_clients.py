"""kazoo against zkpy's ZooKeeper port, side by side with kazoo against Apache ZooKeeper 3.8 and
zkpy's own client against zkpy, in alternating rounds; medians per row.

    python -m benchmarks zk-clients                       # 3 rounds, 3 s per workload
    python -m benchmarks zk-clients --rounds 5 --json benchmarks/results/zk-clients.json
    python -m benchmarks zk-clients --rows set1,watch1,jset1,jwatch1   # some rows only
    python -m benchmarks zk-clients --pin      # members pinned to CPUs by role (0046)

Two 3-member ensembles run for the whole command: one zkpy ensemble with ZooKeeper ports (zkpy's
client uses its msgpack ports, kazoo its ZooKeeper ports) and one Apache ZooKeeper ensemble
(`benchmarks.ensembles`). Every round runs each workload once per system, the systems in a
rotating order, so that the drift of a shared machine spreads over all three; the table shows
each system's median over the rounds, and the ratio of kazoo on zkpy to kazoo on ZooKeeper.
The workloads are `benchmarks.run`'s (`benchmarks.workers`): create, set and get with 256 in
flight ("pipelined": kazoo's async calls, zkpy's tasks), one-at-a-time set and get, and
write-to-watch latency; zkpy's client also runs its `pipeline()` batches. The set and watch
rows run once more with a bare jute client (`benchmarks.bare_jute`) in place of kazoo on both
servers: kazoo's rows include how soon its threads get a CPU beside the members, these do not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

from benchmarks import bare_jute
from benchmarks.ensembles import Ensemble, Member, ZkpyEnsemble, ZooKeeperEnsemble
from benchmarks.run import (
    LABELS,
    PAUSE_BETWEEN_S,
    PIPELINE_OPS,
    Result,
    Workload,
    kazoo_ready,
    machine_info,
    run_workload,
    warm_up_ensemble,
)
from zkpy.testing import ensemble as launch

ZKPY, ZKPY_ZK, ZOOKEEPER = "zkpy", "zkpy-zk", "zookeeper"
SYSTEMS = (ZKPY, ZKPY_ZK, ZOOKEEPER)
TITLES = {ZKPY: "zkpy client", ZKPY_ZK: "kazoo->zkpy", ZOOKEEPER: "kazoo->ZK"}
IN_FLIGHT = 256
ROWS = [
    ("create", IN_FLIGHT, "ops_per_s"),
    ("set", IN_FLIGHT, "ops_per_s"),
    ("get", IN_FLIGHT, "ops_per_s"),
    ("pset", IN_FLIGHT, "ops_per_s"),
    ("pget", IN_FLIGHT, "ops_per_s"),
    ("set", 1, "p50_ms"),
    ("get", 1, "p50_ms"),
    ("watch", 1, "p50_ms"),
    ("jset", 1, "p50_ms"),
    ("jwatch", 1, "p50_ms"),
]


class ZkpyBothPorts(ZkpyEnsemble):
    """zkpy's members with ZooKeeper's client protocol as well: as system "zkpy-zk" its clients
    are kazoo processes on the ZooKeeper ports, as "zkpy" zkpy's own on the msgpack ports
    (`system` is switched between workloads). Status and roles come from the msgpack port."""

    system = ZKPY_ZK

    def start(self) -> None:
        assert self.tmp is not None
        self.launched = launch.Ensemble(
            Path(self.tmp), self.size, fast=False, log_level="WARNING", zk_ports=True
        )
        self._launch()

    def client_targets(self) -> list[Member]:
        targets = super().client_targets()
        if self.system != ZKPY_ZK or self.launched is None:
            return targets
        zk_ports = {member.id: member.zk_port for member in self.launched.members.values()}
        return [replace(member, port=zk_ports[member.id] or member.port) for member in targets]


def row_name(op: str, in_flight: int) -> str:
    """A row's name for `--rows`: the workload and how many are in flight, as ``set1``."""
    return f"{op}{in_flight}"


ROW_NAMES = tuple(row_name(op, in_flight) for op, in_flight, _metric in ROWS)


def plan(system: str, rows: Collection[str] = ROW_NAMES) -> list[Workload]:
    """The workloads of `rows` that `system` can run: the pipeline API is zkpy's client's,
    the bare jute client (`benchmarks.bare_jute`) speaks only ZooKeeper's protocol."""
    return [
        Workload(op, in_flight, 1)
        for op, in_flight, _metric in ROWS
        if runs(system, op) and row_name(op, in_flight) in rows
    ]


def runs(system: str, op: str) -> bool:
    """Whether `system`'s client runs workload `op`."""
    if op in PIPELINE_OPS:
        return system == ZKPY
    if op in bare_jute.WORKLOADS:
        return system != ZKPY
    return True


def run_round(
    ensembles: dict[str, Ensemble],
    order: list[str],
    args: argparse.Namespace,
    results: dict[tuple[str, str, int], list[Result]],
    run_no: int,
) -> int:
    for system in order:
        ensemble = ensembles[system]
        ensemble.system = system
        for workload in plan(system, args.rows):
            run_no += 1
            result = run_workload(ensemble, workload, args, run_no)
            results.setdefault((system, workload.op, workload.in_flight), []).append(result)
            shown = (
                f"FAILED: {result.failed}"
                if result.failed
                else f"{result.ops_per_s:>9,.0f} ops/s  p50 {result.p50_ms or 0:.3f} ms"
            )
            print(f"  {TITLES[system]:<12} {workload.op:<6} x{workload.in_flight:<3} {shown}")
            time.sleep(PAUSE_BETWEEN_S)
    return run_no


def medians(
    results: dict[tuple[str, str, int], list[Result]],
) -> dict[tuple[str, str, int], dict[str, float]]:
    """Per (system, op, in flight): the median of each measure over the rounds that ran."""
    out = {}
    for key, runs in results.items():
        good = [r for r in runs if not r.failed]
        if not good:
            continue
        out[key] = {
            measure: statistics.median(getattr(r, measure) for r in good)
            for measure in (
                "ops_per_s",
                "p50_ms",
                "p99_ms",
                "server_us_per_op",
                "cpu_us_per_op",
                "cpus_busy",
            )
            if all(getattr(r, measure) is not None for r in good)
        }
        out[key]["rounds"] = len(good)
    return out


def print_table(
    summary: dict[tuple[str, str, int], dict[str, float]], rows: Collection[str] = ROW_NAMES
) -> None:
    print(
        f"\n{'row (median)':<28}"
        + "".join(f"{TITLES[s]:>14}" for s in SYSTEMS)
        + f"{'kazoo zkpy/ZK':>15}{'zkpy faster':>13}"
    )
    for op, in_flight, metric in ROWS:
        if row_name(op, in_flight) not in rows:
            continue
        unit = "ops/s" if metric == "ops_per_s" else "p50 ms"
        label = f"{LABELS.get(op, op)} x{in_flight} {unit}"
        values = [summary.get((s, op, in_flight), {}).get(metric) for s in SYSTEMS]
        cells = "".join(
            f"{'-':>14}" if v is None else f"{v:>14,.0f}" if v >= 100 else f"{v:>14.3f}"
            for v in values
        )
        ours, theirs = values[1], values[2]
        if ours is None or theirs is None or theirs == 0:
            ratio, faster = "-", "-"
        else:
            ratio = f"{ours / theirs:.2f}"
            faster = "yes" if (ours > theirs) == (metric == "ops_per_s") else "NO"
        print(f"{label:<28}{cells}{ratio:>15}{faster:>13}")
    print(
        "(ops/s: higher is better; p50 ms: lower is better; the bare jute rows' client is one "
        "blocking socket in place of kazoo)"
    )
    print_cpu_table(summary, rows)


CPU_TABLES = (
    ("members CPU us/op", "server_us_per_op", ",.0f"),
    ("members + client CPU us/op", "cpu_us_per_op", ",.0f"),
    ("CPUs busy", "cpus_busy", ".2f"),
)


def print_cpu_table(
    summary: dict[tuple[str, str, int], dict[str, float]], rows: Collection[str] = ROW_NAMES
) -> None:
    """The CPU each one-at-a-time row used: the members' per operation, the members' and the
    client's together, and how many of the machine's CPUs every process kept busy. On a machine
    whose CPUs the client shares with the members, what one server uses beyond the other
    delays the client (docs/decisions/0043), and a row whose CPUs busy nears the machine's
    count is bound by CPU: its latency follows the CPU per operation (0049)."""
    width = max(len(title) for title, _measure, _spec in CPU_TABLES) + len(" (median)") + 1
    for title, measure, spec in CPU_TABLES:
        header = f"{title} (median)"
        print(f"\n{header:<{width}}" + "".join(f"{TITLES[s]:>14}" for s in SYSTEMS))
        for op, in_flight, _metric in ROWS:
            if in_flight != 1 or row_name(op, in_flight) not in rows:
                continue
            values = [summary.get((s, op, in_flight), {}).get(measure) for s in SYSTEMS]
            cells = "".join(f"{'-':>14}" if v is None else f"{v:>14{spec}}" for v in values)
            print(f"{f'{LABELS.get(op, op)} x1':<{width}}{cells}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks zk-clients", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured (3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring (1)")
    parser.add_argument("--value-size", type=int, default=100, help="bytes per value (100)")
    parser.add_argument("--ensemble-warmup", type=float, default=3.0, help="unreported sets (3 s)")
    parser.add_argument("--dir", default=None, help="parent of the temporary data dirs")
    parser.add_argument("--json", dest="json_out", default=None, help="write the results here")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin each ensemble's members to CPUs by role (benchmarks.ensembles.placement)",
    )
    parser.add_argument(
        "--rows",
        default=",".join(ROW_NAMES),
        help=f"rows to run, a comma-separated list of {', '.join(ROW_NAMES)} (all)",
    )
    args = parser.parse_args(argv)
    args.rows = [name.strip() for name in args.rows.split(",") if name.strip()]
    unknown = sorted(set(args.rows) - set(ROW_NAMES))
    if unknown or not args.rows:
        parser.error(f"unknown --rows {unknown}; choose from {','.join(ROW_NAMES)}")
    # what benchmarks.run's workers read besides these
    args.count, args.profile, args.in_flight = None, None, IN_FLIGHT
    args.multi_size, args.pipeline_slots = 4, 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    why_not = kazoo_ready()
    if why_not is not None:
        print(f"zk-clients needs Apache ZooKeeper and kazoo: {why_not}", file=sys.stderr)
        return 2
    info = machine_info(args)
    print(
        f"zk-clients: {info['nproc']} CPUs, load {info['loadavg'][0]:.1f}, zkpy "
        f"{info['zkpy_build']}, commit {info['git_commit'][:10]}; {args.rounds} rounds of "
        f"{args.duration:g} s after {args.warmup:g} s per workload"
    )
    results: dict[tuple[str, str, int], list[Result]] = {}
    run_no = 0
    with ZkpyBothPorts(3, args.dir) as ours, ZooKeeperEnsemble(3, args.dir) as theirs:
        ensembles: dict[str, Ensemble] = {ZKPY: ours, ZKPY_ZK: ours, ZOOKEEPER: theirs}
        if args.pin:
            for ensemble in (ours, theirs):
                ensemble.pin()
                print(f"{ensemble.system}: {ensemble.describe()}")
        for system in (ZKPY, ZKPY_ZK, ZOOKEEPER):
            ours.system = system
            run_no += 1
            warm_up_ensemble(ensembles[system], args, run_no)
        for round_ in range(args.rounds):
            order = [SYSTEMS[(round_ + i) % len(SYSTEMS)] for i in range(len(SYSTEMS))]
            print(f"round {round_ + 1}: {', '.join(TITLES[s] for s in order)}", flush=True)
            run_no = run_round(ensembles, order, args, results, run_no)
    summary = medians(results)
    print_table(summary, args.rows)
    if args.json_out:
        document = {
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "machine": info,
            "medians": [
                {"system": s, "op": op, "in_flight": n, **values}
                for (s, op, n), values in summary.items()
            ],
            "runs": [
                {k: v for k, v in vars(r).items() if k != "profile"}
                for runs in results.values()
                for r in runs
            ],
        }
        Path(args.json_out).write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nwrote {args.json_out}")
    return 1 if any(r.failed for runs in results.values() for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
