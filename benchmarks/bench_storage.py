"""Group commit of zkpy.server.storage: synced appends of 100-byte entries, alone or side by side.

    python -m benchmarks storage [--batches N] [--dir DIR] [--writers 1,2,3]

Each batch is one write and one fdatasync of the segment log, so entries/s should grow with the
batch size while batches/s stays roughly flat (bounded by the disk's sync latency). Use --dir to
measure a particular disk (a tmpfs would report memory speed, not the disk's).

`--writers N` runs N processes at once, each appending to a log of its own on the same disk, as
the members of an ensemble started on one machine do: where the disk serves one sync at a
time, each writer's sync takes longer the more writers there are. The table shows, per writer,
the median time of one append (write and fdatasync) and the CPU the writer spent per append
beside the rates.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path

try:
    from zkpy.server.storage import Storage
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from zkpy.server.storage import Storage

ENTRY = os.urandom(100)
BATCH_SIZES = (1, 16, 256)
START_TIMEOUT_S = 60  # writers that do not all start by then: one of them failed


@dataclass(frozen=True)
class Appends:
    """One writer's run: rates over the whole run and the median append."""

    entries_per_s: float
    batches_per_s: float
    append_p50_us: float
    cpu_us_per_batch: float  # the writer process's user and system time


def bench(directory: str | None, batch_size: int, batches: int) -> Appends:
    """Append `batches` synced batches of `batch_size` entries to a fresh log in `directory`."""
    return _appends(directory, batch_size, batches, None)


def _appends(
    directory: str | None, batch_size: int, batches: int, start_together: Barrier | None
) -> Appends:
    with (
        tempfile.TemporaryDirectory(dir=directory) as tmp,
        Storage.open(Path(tmp) / "data", sync=True) as storage,
    ):
        zxid = 0
        clock = time.perf_counter
        durations = []
        if start_together is not None:
            start_together.wait(START_TIMEOUT_S)
        start = clock()
        cpu_start = time.process_time()
        for _ in range(batches):
            entries = [(zxid + i, ENTRY) for i in range(1, batch_size + 1)]
            before = clock()
            storage.append(entries)
            durations.append(clock() - before)
            zxid += batch_size
        elapsed = clock() - start
        cpu = time.process_time() - cpu_start
        assert storage.last_logged_zxid() == zxid
    return Appends(
        batches * batch_size / elapsed,
        batches / elapsed,
        statistics.median(durations) * 1e6,
        cpu / batches * 1e6,
    )


def _writer(
    directory: str | None, batch_size: int, batches: int, barrier: Barrier, out: Connection
) -> None:
    out.send(_appends(directory, batch_size, batches, barrier))


def bench_side_by_side(
    directory: str | None, batch_size: int, batches: int, writers: int
) -> list[Appends]:
    """`writers` processes append at once, each to its own log in `directory`."""
    if writers == 1:
        return [bench(directory, batch_size, batches)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(writers)
    pipes = [context.Pipe(duplex=False) for _ in range(writers)]
    processes = [
        context.Process(target=_writer, args=(directory, batch_size, batches, barrier, send))
        for _, send in pipes
    ]
    for process in processes:
        process.start()
    for _, send in pipes:
        send.close()  # the writer's copy is the one left: a writer that fails ends its pipe
    try:
        return [receive.recv() for receive, _ in pipes]
    finally:
        for process in processes:
            process.join()


def parse_writers(text: str) -> list[int]:
    """`1,2,3` -> [1, 2, 3]; each a positive count."""
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"writers must be positive counts, got {text!r}")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=1000, help="batches per batch size")
    parser.add_argument("--dir", default=None, help="where to make the temporary data dir")
    parser.add_argument(
        "--writers",
        type=parse_writers,
        default=[1],
        help="processes appending at once, each to its own log: a list such as 1,2,3 (1)",
    )
    args = parser.parse_args(argv)
    print(f"{args.batches} synced batches per row, 100-byte entries, dir={args.dir or '(tmp)'}")
    print(
        f"{'writers':>7} {'batch':>6} {'entries/s':>12} {'batches/s':>10} {'append p50':>11}"
        f" {'CPU/append':>11}"
    )
    print(f"{'':>7} {'':>6} {'(each)':>12} {'(each)':>10} {'(us)':>11} {'(us)':>11}")
    for writers in args.writers:
        for batch_size in BATCH_SIZES:
            runs = bench_side_by_side(args.dir, batch_size, args.batches, writers)
            print(
                f"{writers:>7} {batch_size:>6}"
                f" {statistics.median(r.entries_per_s for r in runs):>12,.0f}"
                f" {statistics.median(r.batches_per_s for r in runs):>10,.0f}"
                f" {statistics.median(r.append_p50_us for r in runs):>11,.0f}"
                f" {statistics.median(r.cpu_us_per_batch for r in runs):>11,.0f}"
            )


if __name__ == "__main__":
    main()
