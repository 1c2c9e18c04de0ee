"""zkpy's benchmark suite, end to end: start ensembles, run workloads, stop everything, report.

    python -m benchmarks run                          # 1- and 3-member zkpy, every workload
    python -m benchmarks run --sizes 3 --ops set,get --duration 3 --json out.json
    python -m benchmarks run --kazoo                  # also Apache ZooKeeper with kazoo, ratios

For each ensemble size it starts `zkpy ensemble --size N` in a temporary folder on loopback, finds
the members' roles (`fetch_status`), connects the client processes to a follower (round robin over
the followers; the only member of a 1-member ensemble), runs each workload for --duration seconds
after --warmup seconds (or --count operations), and stops the ensemble. CPU seconds are read from
/proc/PID/stat of every member over the measured window, and from each client process itself.

See docs/benchmarks.md for what each number means and the latest results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/run.py`: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ensembles import (
    LEADS,
    Ensemble,
    EnsembleError,
    ZkpyEnsemble,
    ZooKeeperEnsemble,
    find_zookeeper,
    machine_busy_seconds,
    zookeeper_version,
)
from benchmarks.workers import Go, worker_entry
from zkpy import compiled as zkpy_compiled

REPO = Path(__file__).resolve().parents[1]
THROUGHPUT_OPS = ("create", "set", "get", "multi", "watch")
LATENCY_OPS = ("set", "get", "watch")
PIPELINE_OPS = ("pset", "pget")
LOCK_CONTENDERS = (4, 32)  # the lock hand-off rows: contenders (in the "in flight" column)
LABELS = {
    "pset": "set (pipeline)",
    "pget": "get (pipeline)",
    "lock": "lock hand-off",
    "jset": "set (bare jute)",
    "jwatch": "watch (bare jute)",
}
BACKENDS = ("trio", "asyncio", "sync")  # --backend: how zkpy's client rows are made
# the system column of the rows that are not the async client on trio (the reference rows)
SYSTEM_OF_BACKEND = {"asyncio": "zkpy/aio", "sync": "zkpy/sync"}
READY_TIMEOUT_S = 120.0
RESULT_GRACE_S = 60.0
PAUSE_BETWEEN_S = 0.5

INSTALL_HINT = (
    "side-by-side mode needs Apache ZooKeeper and kazoo: "
    "`apt-get install zookeeper` (Debian's package, with a JRE) and `pip install kazoo`"
)


@dataclass(frozen=True)
class Workload:
    op: str
    in_flight: int
    clients: int
    backend: str = "trio"  # zkpy's client: trio or asyncio (the async client), or sync

    @property
    def label(self) -> str:
        return LABELS.get(self.op, self.op)


@dataclass
class Result:
    system: str
    workload: str
    op: str
    members: int
    clients: int
    in_flight: int
    value_size: int
    ops: int = 0
    seconds: float = 0.0
    ops_per_s: float = 0.0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    mean_ms: float | None = None
    max_ms: float | None = None
    server_cpu_s: float = 0.0
    server_cpu_by_member: dict[str, dict[str, Any]] = field(default_factory=dict)
    client_cpu_s: float = 0.0
    fsyncs: int | None = None  # batches the leader persisted (one LMDB txn and fsync each)
    txns_per_fsync: float | None = None  # zxids committed per leader batch: group commit
    other_cpu_s: float | None = None  # everything else on the machine in the window
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    failed: str | None = None
    profile: dict[str, list[tuple[str, float]]] | None = None

    @property
    def server_us_per_op(self) -> float | None:
        return self.server_cpu_s / self.ops * 1e6 if self.ops else None

    @property
    def cpu_us_per_op(self) -> float | None:
        """The members' and the clients' CPU per operation, in microseconds."""
        return (self.server_cpu_s + self.client_cpu_s) / self.ops * 1e6 if self.ops else None

    @property
    def cpus_busy(self) -> float | None:
        """How many of the machine's CPUs were busy over the window, on average (every
        process's CPU time, the members' and clients' included, over the window's length)."""
        if self.seconds <= 0 or self.other_cpu_s is None:
            return None
        return (self.server_cpu_s + self.client_cpu_s + self.other_cpu_s) / self.seconds


def percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- running one workload ----------------------------------------------------------------------


def run_workload(
    ensemble: Ensemble, workload: Workload, args: argparse.Namespace, run_no: int
) -> Result:
    result = Result(
        SYSTEM_OF_BACKEND.get(workload.backend, ensemble.system),
        workload.label,
        workload.op,
        ensemble.size,
        workload.clients,
        workload.in_flight,
        args.value_size,
    )
    targets = ensemble.client_targets()
    context = multiprocessing.get_context("spawn")
    workers: list[tuple[Any, Any]] = []
    profilers: list[tuple[subprocess.Popen[bytes], Path, str]] = []
    try:
        for index in range(workload.clients):
            spec = {
                "system": ensemble.system,
                "workload": workload.op,
                "target": targets[index % len(targets)].address,
                "base": f"/bench/r{run_no}/p{index}",
                "value_size": args.value_size,
                "in_flight": workload.in_flight,
                "multi_size": args.multi_size,
                "pipeline_slots": args.pipeline_slots,
                "backend": workload.backend,
            }
            parent_end, child_end = context.Pipe()
            process = context.Process(target=worker_entry, args=(child_end, spec), daemon=True)
            process.start()
            child_end.close()
            workers.append((process, parent_end))
        for process, pipe in workers:
            message = _receive(pipe, process, READY_TIMEOUT_S)
            if message[0] != "ready":
                raise RuntimeError(message[1])
        now = time.monotonic()
        t_go = now + 0.1
        if args.count:
            per_worker = math.ceil(args.count / workload.clients)
            go = Go(t_go, t_go, math.inf, per_worker)
        else:
            t_measure = t_go + args.warmup
            go = Go(t_go, t_measure, t_measure + args.duration, None)
        for _process, pipe in workers:
            pipe.send(go)
        time.sleep(max(0.0, go.t_measure - time.monotonic()))
        cpu_before = ensemble.cpu()
        busy_before = machine_busy_seconds()
        counters_before = ensemble.counters()
        if args.profile and ensemble.system == "zkpy":
            profilers = start_profilers(ensemble, workload, args, go)
        if args.count:
            wait_s = 3600.0
        else:
            time.sleep(max(0.0, go.t_end - time.monotonic()))
            cpu_after = ensemble.cpu()
            busy_after = machine_busy_seconds()
            counters_after = ensemble.counters()
            wait_s = RESULT_GRACE_S + 30.0
        outcomes = []
        for process, pipe in workers:
            message = _receive(pipe, process, wait_s)
            if message[0] != "result":
                raise RuntimeError(message[1])
            outcomes.append(message[1])
        if args.count:
            cpu_after = ensemble.cpu()
            busy_after = machine_busy_seconds()
            counters_after = ensemble.counters()
        if profilers:
            result.profile = finish_profilers(profilers)
    except Exception as err:
        result.failed = f"{type(err).__name__}: {err}".strip()
        return result
    finally:
        for process, pipe in workers:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
            pipe.close()
        for profiler, _path, _name in profilers:
            if profiler.poll() is None:
                profiler.kill()
                profiler.wait()

    tally_outcomes(result, outcomes, counted=bool(args.count))
    result.client_cpu_s = sum(o["client_cpu"] or 0.0 for o in outcomes)
    for member in ensemble.members:
        used = cpu_after[member.id] - cpu_before[member.id]
        result.server_cpu_by_member[str(member.id)] = {"role": member.role, "cpu_s": used}
        result.server_cpu_s += used
    if counters_before and counters_after:
        leader = next((m for m in ensemble.members if m.role in LEADS), None)
        if leader is not None:
            before, after = counters_before[leader.id], counters_after[leader.id]
            result.fsyncs = after["batches"] - before["batches"]
            txns = after["zxid_counter"] - before["zxid_counter"]
            result.txns_per_fsync = txns / result.fsyncs if result.fsyncs > 0 else None
    result.other_cpu_s = max(
        0.0, busy_after - busy_before - result.server_cpu_s - result.client_cpu_s
    )
    return result


def tally_outcomes(result: Result, outcomes: list[dict[str, Any]], *, counted: bool) -> None:
    """Fill in `result`'s operations, rate, latencies and errors from its client processes'
    outcomes (`counted`: each ran a number of operations rather than for a time). A round in
    which no operation completed measured nothing: it is marked failed, so that it is left out
    of medians over rounds instead of taking the row's percentiles with it."""
    latencies: list[float] = sorted(x for outcome in outcomes for x in outcome["latencies"])
    result.ops = sum(o["ops"] for o in outcomes)
    result.seconds = max(o["elapsed"] for o in outcomes)
    if counted:
        result.ops_per_s = result.ops / result.seconds if result.seconds > 0 else 0.0
    else:
        result.ops_per_s = sum(o["ops"] / o["elapsed"] for o in outcomes)
    for name, q in (("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99), ("p999_ms", 0.999)):
        value = percentile(latencies, q)
        setattr(result, name, None if value is None else value * 1000)
    if latencies:
        result.mean_ms = sum(latencies) / len(latencies) * 1000
        result.max_ms = latencies[-1] * 1000
    result.errors = sum(o["errors"] for o in outcomes)
    result.error_samples = [s for o in outcomes for s in o["error_samples"]][:5]
    if not latencies:
        samples = "; ".join(result.error_samples) or "none reported"
        result.failed = f"no operation completed ({result.errors} errors; samples: {samples})"


def _receive(pipe: Any, process: Any, timeout: float) -> tuple[str, Any]:
    deadline = time.monotonic() + timeout
    while not pipe.poll(0.2):
        if not process.is_alive() and not pipe.poll(0):
            return ("error", f"client process exited with {process.exitcode}")
        if time.monotonic() > deadline:
            return ("error", f"no answer from a client process in {timeout:.0f}s")
    try:
        message: tuple[str, Any] = pipe.recv()
    except EOFError:
        return ("error", f"client process exited with {process.exitcode}")
    return message


# ---- profiling members with py-spy -------------------------------------------------------------


def start_profilers(
    ensemble: Ensemble, workload: Workload, args: argparse.Namespace, go: Go
) -> list[tuple[subprocess.Popen[bytes], Path, str]]:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("  (--profile: py-spy is not on PATH: `pip install py-spy`)", file=sys.stderr)
        return []
    out_dir = Path(args.profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds = max(1, int(args.duration if not args.count else 5))
    profilers = []
    for member in ensemble.members:
        name = f"m{member.id}-{member.role}"
        path = out_dir / (
            f"{ensemble.system}-{ensemble.size}-{workload.op}-if{workload.in_flight}"
            f"-c{workload.clients}-{name}.txt"
        )
        command = [
            py_spy,
            "record",
            "--pid",
            str(member.pid),
            "--duration",
            str(seconds),
            "--rate",
            str(args.profile_rate),
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(path),
        ]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        profilers.append((process, path, name))
    return profilers


def finish_profilers(
    profilers: list[tuple[subprocess.Popen[bytes], Path, str]],
) -> dict[str, list[tuple[str, float]]]:
    summary = {}
    for process, path, name in profilers:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        summary[name] = top_self_frames(path)
    return summary


def top_self_frames(path: Path, limit: int = 12) -> list[tuple[str, float]]:
    """The functions where a py-spy raw (collapsed) profile spent most samples, as fractions."""
    counts: dict[str, int] = {}
    total = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        leaf = stack.rsplit(";", 1)[-1]
        function, _, where = leaf.partition(" (")
        file_name = where.rsplit(":", 1)[0].rstrip(")")
        key = f"{function} ({_short(file_name)})"
        counts[key] = counts.get(key, 0) + count
    ranked = sorted(counts.items(), key=lambda item: -item[1])[:limit]
    return [(key, count / total) for key, count in ranked] if total else []


def _short(file_name: str) -> str:
    for marker in ("/site-packages/", "/lib/python3.11/", str(REPO) + "/"):
        if marker in file_name:
            return file_name.split(marker, 1)[1]
    return file_name


# ---- reporting ------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[Result]) -> None:
    header = (
        f"{'system':<10} {'workload':<15} {'members':>7} {'clients':>7} {'in flight':>9} "
        f"{'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'srv CPU s':>9} {'srv us/op':>9} "
        f"{'cli CPU s':>9} {'other CPU':>9} {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if r.failed:
            print(
                f"{r.system:<10} {r.workload:<15} {r.members:>7} {r.clients:>7} "
                f"{r.in_flight:>9} FAILED: {r.failed.splitlines()[-1][:80]}"
            )
            continue
        print(
            f"{r.system:<10} {r.workload:<15} {r.members:>7} {r.clients:>7} {r.in_flight:>9} "
            f"{r.ops_per_s:>9,.0f} {_fmt(r.p50_ms, '8.3f')} {_fmt(r.p99_ms, '8.3f')} "
            f"{r.server_cpu_s:>9.2f} {_fmt(r.server_us_per_op, '9.0f')} "
            f"{r.client_cpu_s:>9.2f} {_fmt(r.other_cpu_s, '9.2f')} {r.errors:>6}"
        )


def ratios(results: list[Result]) -> list[dict[str, Any]]:
    def key(r: Result) -> tuple[str, int, int, int]:
        return (r.op, r.members, r.clients, r.in_flight)

    theirs = {key(r): r for r in results if r.system == "zookeeper" and not r.failed}
    rows = []
    for ours in results:
        if ours.system != "zkpy" or ours.failed or key(ours) not in theirs:
            continue
        zk = theirs[key(ours)]
        rows.append(
            {
                "workload": ours.workload,
                "members": ours.members,
                "clients": ours.clients,
                "in_flight": ours.in_flight,
                "ops_per_s": _ratio(ours.ops_per_s, zk.ops_per_s),
                "p50": _ratio(ours.p50_ms, zk.p50_ms),
                "p99": _ratio(ours.p99_ms, zk.p99_ms),
                "server_cpu_per_op": _ratio(ours.server_us_per_op, zk.server_us_per_op),
            }
        )
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def print_ratios(rows: list[dict[str, Any]]) -> None:
    print("\nzkpy / ZooKeeper (ops/s > 1: zkpy faster; p50, p99, CPU/op < 1: zkpy better)")
    header = (
        f"{'workload':<15} {'members':>7} {'clients':>7} {'in flight':>9} "
        f"{'ops/s':>7} {'p50':>7} {'p99':>7} {'srv CPU/op':>10}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['workload']:<15} {row['members']:>7} {row['clients']:>7} "
            f"{row['in_flight']:>9} {_fmt(row['ops_per_s'], '7.2f')} {_fmt(row['p50'], '7.2f')} "
            f"{_fmt(row['p99'], '7.2f')} {_fmt(row['server_cpu_per_op'], '10.2f')}"
        )


# The issue's targets: zkpy client against a 3-member ensemble, client on a follower.
# (The floor of the one-at-a-time write targets, with --floor, is keyed by the workload.)
FLOOR_COUNT = 1000
TARGETS = [
    ("create", 256, "ops_per_s", ">=", 12_000, "creates/s, 256 in flight, 1 client"),
    ("set", 256, "ops_per_s", ">=", 12_000, "sets/s, 256 in flight, 1 client"),
    ("get", 256, "ops_per_s", ">=", 20_000, "gets/s, 256 in flight, 1 client"),
    ("pset", 256, "ops_per_s", ">=", 30_000, "pipelined sets/s, 1 client"),
    ("pget", 256, "ops_per_s", ">=", 100_000, "pipelined gets/s, 1 client"),
    ("set", 1, "p50_ms", "<", 0.45, "set p50 ms, one at a time"),
    ("get", 1, "p50_ms", "<", 0.15, "get p50 ms, one at a time"),
    ("watch", 1, "p50_ms", "<", 0.6, "write-to-watch-event p50 ms, one at a time"),
]


def measure_floor(directory: str | None) -> dict[str, dict[str, float]]:
    """p50 in ms of a one-at-a-time write's messages and syncs alone (`benchmarks.floor`, synced
    logs), until the reply ("set") and until the watch event ("watch"): "as zkpy runs" (its path
    shape, trio, a client that sleeps) and "at best" (the lowest of every shape, loop and
    client)."""
    from benchmarks.floor import RUNTIMES, SHAPES, measure

    floor: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(dir=directory, prefix="zkpy-floor-") as scratch:
        for op, watch in (("set", False), ("watch", True)):
            p50s = {
                (shape, runtime, spin): statistics.median(
                    measure(
                        shape, runtime, True, FLOOR_COUNT, scratch, watch=watch, client_spin=spin
                    ).latencies
                )
                * 1e3
                for shape in SHAPES
                for runtime in RUNTIMES
                for spin in (False, True)
            }
            floor[op] = {
                "as zkpy runs": p50s[("logged", "trio", False)],
                "at best": min(p50s.values()),
            }
    return floor


def check_targets(
    results: list[Result], floor: dict[str, dict[str, float]] | None = None
) -> list[dict[str, Any]]:
    rows = []
    found = {
        (r.op, r.in_flight): r
        for r in results
        if r.system == "zkpy" and r.members == 3 and r.clients == 1 and not r.failed
    }
    for op, in_flight, metric, relation, goal, text in TARGETS:
        row = found.get((op, in_flight))
        if row is None:
            continue
        value = getattr(row, metric)
        met = value is not None and (value >= goal if relation == ">=" else value < goal)
        checked: dict[str, Any] = {
            "target": text,
            "goal": f"{relation} {goal:,}",
            "value": value,
            "met": met,
        }
        if floor is not None and in_flight == 1 and op in floor:
            checked["floor"] = floor[op]
        rows.append(checked)
    scaling = [r for r in results if r.system == "zkpy" and r.members == 3 and not r.failed]
    by_op: dict[tuple[str, int], dict[int, float]] = {}
    for r in scaling:
        by_op.setdefault((r.op, r.in_flight), {})[r.clients] = r.ops_per_s
    for (op, in_flight), per_clients in sorted(by_op.items()):
        if len(per_clients) > 1 and in_flight > 1:
            low, high = min(per_clients), max(per_clients)
            rows.append(
                {
                    "target": f"{op} ops/s grows from {low} to {high} client processes",
                    "goal": "> 1.0x",
                    "value": per_clients[high] / per_clients[low],
                    "met": per_clients[high] > per_clients[low],
                }
            )
    return rows


def print_targets(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    print("\nTargets (zkpy, 3 members, client on a follower)")
    for row in rows:
        value = row["value"]
        shown = "-" if value is None else f"{value:,.3f}" if value < 10 else f"{value:,.0f}"
        mark = "met" if row["met"] else "NOT met"
        floor = (
            f"  (floor here {row['floor']['as zkpy runs']:.3f} as zkpy runs,"
            f" {row['floor']['at best']:.3f} at best)"
            if "floor" in row
            else ""
        )
        print(f"  {row['target']:<48} {row['goal']:>12}  measured {shown:>10}  {mark}{floor}")


def print_profiles(results: list[Result]) -> None:
    for r in results:
        if not r.profile:
            continue
        print(
            f"\nprofile: {r.system} {r.members} members, {r.workload}, {r.in_flight} in flight "
            "(py-spy, share of samples by leaf function)"
        )
        for name, frames in r.profile.items():
            print(f"  member {name}:")
            for frame, share in frames[:8]:
                print(f"    {share * 100:5.1f}%  {frame}")


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    def git(*command: str) -> str:
        try:
            out = subprocess.run(
                ["git", *command], cwd=REPO, capture_output=True, text=True, timeout=10
            )
            return out.stdout.strip()
        except OSError:
            return ""

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    data_dir = args.dir or tempfile.gettempdir()
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "zkpy_build": "compiled (mypyc)" if zkpy_compiled() else "pure Python",
        "platform": platform.platform(),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "data_dir": data_dir,
        "data_dir_fs": _filesystem(data_dir),
        "loadavg": os.getloadavg(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _filesystem(path: str) -> str:
    best, kind = "", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mount, fs = parts[1], parts[2]
            if Path(path).resolve().as_posix().startswith(mount) and len(mount) > len(best):
                best, kind = mount, fs
    except (OSError, IndexError):
        pass
    return kind


# ---- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks run",
        description="Start zkpy ensembles (and optionally Apache ZooKeeper), run workloads, "
        "report ops/s, latency percentiles and CPU. See docs/benchmarks.md.",
    )
    parser.add_argument("--sizes", default="1,3", help="ensemble sizes to start (default 1,3)")
    parser.add_argument(
        "--ops",
        default=",".join(THROUGHPUT_OPS),
        help="throughput workloads: create,set,get,multi,watch (or 'none')",
    )
    parser.add_argument("--value-size", type=int, default=100, help="bytes per value (100)")
    parser.add_argument(
        "--clients",
        default="1",
        help="client processes; a list such as 1,2 runs every throughput workload once per entry",
    )
    parser.add_argument(
        "--in-flight", type=int, default=256, help="requests in flight per client process (256)"
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured (5)")
    parser.add_argument(
        "--count", type=int, default=None, help="operations per workload instead of --duration"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring (1)")
    parser.add_argument(
        "--ensemble-warmup",
        type=float,
        default=2.0,
        help="seconds of unreported sets after an ensemble starts (2; JIT warm-up for the JVM)",
    )
    parser.add_argument("--multi-size", type=int, default=4, help="set_data ops per multi (4)")
    parser.add_argument(
        "--latency",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one-at-a-time set, get and write->watch-event latency, and lock hand-offs among "
        f"{' and '.join(map(str, LOCK_CONTENDERS))} contenders (default on)",
    )
    parser.add_argument(
        "--pipeline",
        action="store_true",
        help="pipelined set/get workloads with the client's pipeline() batch API",
    )
    parser.add_argument(
        "--pipeline-slots", type=int, default=2, help="concurrent pipelines per client (2)"
    )
    parser.add_argument(
        "--kazoo",
        action="store_true",
        help="also run the workloads with kazoo against Apache ZooKeeper; print ratios",
    )
    parser.add_argument(
        "--zookeeper-only", action="store_true", help="with --kazoo: skip zkpy (for debugging)"
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start a new ensemble for every workload (results independent of their order)",
    )
    parser.add_argument("--dir", default=None, help="parent of the temporary data dirs")
    parser.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="record each zkpy member with py-spy during each workload (raw stacks in DIR)",
    )
    parser.add_argument(
        "--profile-rate",
        type=int,
        default=200,
        help="py-spy samples per second with --profile (more is finer and perturbs more)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure this machine's floor for one write at a time (benchmarks.floor: a "
        "write's messages and syncs between bare processes, as zkpy runs and at best) and show "
        "it by those targets",
    )
    parser.add_argument("--json", dest="json_out", default=None, help="write the results here")
    parser.add_argument(
        "--backend",
        default="trio",
        help="zkpy's client: trio, asyncio or sync (the blocking client), or a list such as "
        "trio,asyncio,sync for one row set each (default trio)",
    )
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    if not args.backends or set(args.backends) - set(BACKENDS):
        parser.error(f"--backend takes {','.join(BACKENDS)}")
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.clients = [int(c) for c in str(args.clients).split(",") if c.strip()]
    ops = [o.strip() for o in args.ops.split(",") if o.strip() and o.strip() != "none"]
    unknown = set(ops) - set(THROUGHPUT_OPS)
    if unknown:
        parser.error(f"unknown --ops {sorted(unknown)}; choose from {','.join(THROUGHPUT_OPS)}")
    args.ops = ops
    if args.count is not None and args.count < 1:
        parser.error("--count must be positive")
    return args


def workloads(args: argparse.Namespace, system: str) -> list[Workload]:
    plan = [Workload(op, args.in_flight, clients) for op in args.ops for clients in args.clients]
    if args.latency:
        plan += [Workload(op, 1, 1) for op in LATENCY_OPS]
        plan += [Workload("lock", contenders, 1) for contenders in LOCK_CONTENDERS]
    if args.pipeline and system == "zkpy" and pipeline_available():
        plan += [Workload(op, args.in_flight, c) for op in PIPELINE_OPS for c in args.clients]
    if system != "zkpy":
        return plan
    return [dataclasses.replace(w, backend=backend) for backend in args.backends for w in plan]


def pipeline_available() -> bool:
    import zkpy

    return hasattr(zkpy.Client, "pipeline")


def kazoo_ready() -> str | None:
    """None if the side-by-side mode can run, else why not."""
    if find_zookeeper() is None:
        return "Apache ZooKeeper is not installed (no /usr/share/zookeeper, or no java)"
    try:
        import kazoo  # noqa: F401
    except ImportError:
        return "the kazoo package is not installed"
    return None


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    systems = [] if args.zookeeper_only else ["zkpy"]
    if args.kazoo:
        why_not = kazoo_ready()
        if why_not is None:
            systems.append("zookeeper")
        else:
            print(f"--kazoo: skipped: {why_not}; {INSTALL_HINT}\n", file=sys.stderr)
    if args.pipeline and not pipeline_available():
        print("--pipeline: pipeline API not available in this client; skipped\n", file=sys.stderr)

    info = machine_info(args)
    mode = f"{args.count} ops" if args.count else f"{args.duration:g} s after {args.warmup:g} s"
    print(
        f"zkpy benchmarks: {info['nproc']} CPUs, Python {info['python']}, zkpy "
        f"{info['zkpy_build']}, commit "
        f"{info['git_commit'][:10]}{' (dirty)' if info['git_dirty'] else ''}, data in "
        f"{info['data_dir']} ({info['data_dir_fs']}); value {args.value_size} B, {mode} per "
        "workload"
    )
    results: list[Result] = []
    run_no = 0
    for system in systems:
        kind = ZkpyEnsemble if system == "zkpy" else ZooKeeperEnsemble
        for size in args.sizes:
            plan = workloads(args, system)
            groups = [[w] for w in plan] if args.fresh else [plan]
            for number, group in enumerate(groups):
                try:
                    with kind(size, args.dir) as ensemble:
                        if number == 0:
                            fresh = " (a new ensemble per workload)" if args.fresh else ""
                            print(f"\n{system}, {size} member(s){fresh}: {ensemble.describe()}")
                        if args.ensemble_warmup > 0:
                            run_no += 1
                            warm_up_ensemble(ensemble, args, run_no)
                        for workload in group:
                            run_no += 1
                            result = run_workload(ensemble, workload, args, run_no)
                            results.append(result)
                            _progress(result)
                            time.sleep(PAUSE_BETWEEN_S)
                except EnsembleError as err:
                    print(f"{system} {size} members: could not start: {err}", file=sys.stderr)
                    break

    print()
    print_table(results)
    ratio_rows = ratios(results)
    if ratio_rows:
        print_ratios(ratio_rows)
    floor = measure_floor(args.dir) if args.floor else None
    target_rows = check_targets(results, floor)
    print_targets(target_rows)
    print_profiles(results)
    if args.json_out:
        document = {
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "machine": info,
            "zookeeper_version": zookeeper_version() if "zookeeper" in systems else None,
            "parameters": {
                key: value
                for key, value in vars(args).items()
                if key not in ("json_out",) and not callable(value)
            },
            "results": [_result_json(r) for r in results],
            "ratios": ratio_rows,
            "targets": target_rows,
            "floor_p50_ms": floor,
        }
        Path(args.json_out).write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nwrote {args.json_out}")
    return 1 if any(r.failed for r in results) else 0


def warm_up_ensemble(ensemble: Ensemble, args: argparse.Namespace, run_no: int) -> None:
    """Sets at full speed for --ensemble-warmup seconds, not reported: a JVM compiles its hot
    code, the kernel and the disk settle."""
    quiet = argparse.Namespace(**vars(args))
    quiet.count, quiet.duration, quiet.warmup, quiet.profile = None, args.ensemble_warmup, 0, None
    result = run_workload(ensemble, Workload("set", args.in_flight, 1), quiet, run_no)
    if result.failed:
        print(f"  (ensemble warm-up failed: {result.failed})", file=sys.stderr)


def _progress(r: Result) -> None:
    if r.failed:
        print(f"  {r.workload:<15} in flight {r.in_flight:>3} x{r.clients}: FAILED: {r.failed}")
        return
    print(
        f"  {r.workload:<15} in flight {r.in_flight:>3} x{r.clients}: {r.ops_per_s:>9,.0f} ops/s"
        f"  p50 {_fmt(r.p50_ms, '.3f')} ms  p99 {_fmt(r.p99_ms, '.3f')} ms"
        f"  server CPU {r.server_cpu_s:.2f} s  client CPU {r.client_cpu_s:.2f} s"
        f"  other CPU {_fmt(r.other_cpu_s, '.2f')} s"
        + (f"  {r.txns_per_fsync:.1f} txns/fsync" if r.txns_per_fsync else "")
        + (f"  errors {r.errors}: {r.error_samples[:1]}" if r.errors else ""),
        flush=True,
    )


def _result_json(r: Result) -> dict[str, Any]:
    data = {k: v for k, v in vars(r).items()}
    data["server_us_per_op"] = r.server_us_per_op
    return data


if __name__ == "__main__":
    sys.exit(main())
