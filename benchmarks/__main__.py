"""The one entry point of zkpy's benchmarks: `python -m benchmarks COMMAND [OPTIONS]`.

    python -m benchmarks run --sizes 3 --pipeline     # ensembles end to end (the README's table)
    python -m benchmarks run --kazoo                  # also Apache ZooKeeper with kazoo
    python -m benchmarks micro                        # the pure core, one thread, no I/O
    python -m benchmarks COMMAND --help               # each command's options

Results a command writes (`--json FILE`) belong in `benchmarks/results/`, which git ignores:
numbers describe one machine on one day, so the repository keeps the lessons
(docs/decisions/) and the README's one current table instead.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "run": ("benchmarks.run", "ensembles end to end: throughput, latency, CPU per op; --kazoo"),
    "micro": ("benchmarks.micro", "the pure core: framing, prep, apply, peer codec, zab"),
    "storage": ("benchmarks.bench_storage", "group commit of the segment log alone"),
    "scale": ("benchmarks.bench_scale", "1,000,000 znodes: memory per member, restart time"),
    "history": ("benchmarks.bench_history", "latency as the history grows"),
    "recipes": ("benchmarks.bench_recipes", "lock hand-off and recipe throughput"),
    "cpu-per-op": (
        "benchmarks.cpu_per_op",
        "CPU per one-at-a-time set and get (and lock), per process",
    ),
    "ab": ("benchmarks.ab", "this checkout against another commit, alternating rounds"),
    "timeline": ("benchmarks.timeline", "where one write's time goes, hop by hop"),
    "floor": ("benchmarks.floor", "a write's messages and syncs between bare processes"),
    "zk-clients": ("benchmarks.zk_clients", "kazoo on zkpy's ZooKeeper port vs on ZooKeeper"),
    "sidebyside": ("benchmarks.sidebyside", "zkpy vs ZooKeeper + kazoo, alternating rounds"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()]
    return "usage: python -m benchmarks COMMAND [OPTIONS]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    sys.argv = [f"python -m benchmarks {name}", *rest]  # each command parses sys.argv itself
    result = module.main()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
