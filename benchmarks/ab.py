"""Compare this checkout with another commit, one request at a time, in alternating runs.

On a shared 2-core VM the same code measures 10-25 % apart from one minute to the next, so a
before/after pair of runs says little. This checks `BASE` out into a temporary git worktree
(with this checkout's `benchmarks/` copied in, so both sides are measured the same way) and runs
`python -m benchmarks cpu-per-op` from each checkout in turn, `--rounds` times, then prints the
median of each measure per side::

    python -m benchmarks ab 43b199d --rounds 5
    python -m benchmarks ab 43b199d --ops set,lock      # a contended lock too (cpu-per-op's)

Besides p50 latency and the CPU per operation of the members and of the client, it prints the
latency per microsecond of the client's CPU: the client's code is the same on both sides (unless
the change is in the client), so that ratio takes out much of the VM's drift.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent  # this checkout
MEASURES = ("p50_ms", "members_cpu_us", "client_cpu_us")
OPS = ("set", "get", "lock")


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Medians per operation over the runs of one side, plus p50 per us of the client's CPU."""
    out: dict[str, dict[str, float]] = {}
    for op in OPS:
        rows = [run["results"][op] for run in runs if op in run.get("results", {})]
        if not rows:
            continue
        summary = {key: statistics.median(row[key] for row in rows) for key in MEASURES}
        summary["p50_per_client_us"] = statistics.median(
            row["p50_ms"] * 1000 / row["client_cpu_us"] for row in rows if row["client_cpu_us"]
        )
        out[op] = summary
    return out


def measure(checkout: Path, count: int, size: int, ops: str, out: Path) -> dict[str, Any]:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.cpu_per_op",
            "--size",
            str(size),
            "--count",
            str(count),
            "--ops",
            ops,
            "--json",
            str(out),
        ],
        cwd=checkout,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the commit to compare with (e.g. main~3, a hash)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (5)")
    parser.add_argument("--count", type=int, default=3000, help="operations of each kind (3000)")
    parser.add_argument("--size", type=int, default=3, help="members (3)")
    parser.add_argument("--ops", default="set,get", help="cpu-per-op's: set, get, lock (set,get)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zkpy-ab-"))
    base = work / "base"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(base), args.base],
        cwd=HERE,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        shutil.rmtree(base / "benchmarks")
        shutil.copytree(HERE / "benchmarks", base / "benchmarks")
        sides = {"base": base, "this": HERE}
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        for round_ in range(args.rounds):
            for side, checkout in sides.items():
                out = work / f"{side}-{round_}.json"
                result = measure(checkout, args.count, args.size, args.ops, out)
                runs[side].append(result)
                rows = ", ".join(
                    f"{op} p50 {row['p50_ms']:.3f} ms, members {row['members_cpu_us']:.0f} us"
                    for op, row in result["results"].items()
                )
                print(f"round {round_ + 1} {side}: {rows}", flush=True)
        print_summary({side: summarize(side_runs) for side, side_runs in runs.items()})
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=HERE, check=False)
        shutil.rmtree(work, ignore_errors=True)


def print_summary(summaries: dict[str, dict[str, dict[str, float]]]) -> None:
    print("medians        " + "".join(f"{side:>12}" for side in summaries))
    for op in [op for op in OPS if any(op in summary for summary in summaries.values())]:
        for key, unit in (
            ("p50_ms", "ms"),
            ("members_cpu_us", "us"),
            ("client_cpu_us", "us"),
            ("p50_per_client_us", ""),
        ):
            cells = "".join(
                f"{summaries[side].get(op, {}).get(key, float('nan')):12.3f}" for side in summaries
            )
            print(f"{op} {key:<22}{cells} {unit}")


if __name__ == "__main__":
    main()
