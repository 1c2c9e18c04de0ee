"""Group commit throughput of zkpy.server.storage: synced appends of 100-byte entries.

    python benchmarks/bench_storage.py [--batches N] [--dir DIR]

Each batch is one write and one fdatasync of the segment log, so entries/s should grow with the
batch size while batches/s stays roughly flat (bounded by the disk's sync latency). Use --dir to
measure a particular disk (a tmpfs /tmp would report memory speed, not the disk's).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

try:
    from zkpy.server.storage import Storage
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from zkpy.server.storage import Storage

ENTRY = os.urandom(100)


def bench(directory: str, batch_size: int, batches: int) -> tuple[float, float]:
    with (
        tempfile.TemporaryDirectory(dir=directory) as tmp,
        Storage.open(Path(tmp) / "data", sync=True) as storage,
    ):
        zxid = 0
        start = time.perf_counter()
        for _ in range(batches):
            storage.append([(zxid + i, ENTRY) for i in range(1, batch_size + 1)])
            zxid += batch_size
        elapsed = time.perf_counter() - start
        assert storage.last_logged_zxid() == zxid
    return batches * batch_size / elapsed, batches / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=1000, help="batches per batch size")
    parser.add_argument("--dir", default=None, help="where to make the temporary data dir")
    args = parser.parse_args()
    print(f"{args.batches} synced batches per row, 100-byte entries, dir={args.dir or '(tmp)'}")
    print(f"{'batch':>6} {'entries/s':>12} {'batches/s':>10}")
    for batch_size in (1, 16, 256):
        entries_per_s, batches_per_s = bench(args.dir, batch_size, args.batches)
        print(f"{batch_size:>6} {entries_per_s:>12,.0f} {batches_per_s:>10,.0f}")


if __name__ == "__main__":
    main()
