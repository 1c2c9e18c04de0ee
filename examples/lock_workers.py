"""Several processes increment one shared counter file under a zkpy `Lock`; the count is exact.

Start a local ensemble in one terminal, then run the example in another:

    zkpy ensemble
    python examples/lock_workers.py --workers 4 --increments 50

(`--server` defaults to $ZKPY_SERVER, else the three members `zkpy ensemble` starts.)

Each worker process loops: take the lock, read the number in the counter file, write it back
plus one, release. The file is a plain file with no locking of its own, so without the lock
increments would be lost. Inside the lock each worker also creates a marker file with O_EXCL
(it fails if another worker is inside too) and appends its fencing token to a log. The parent
checks that the final count is exactly workers x increments, that no two critical sections
overlapped, and that the tokens increase strictly in the order the critical sections ran.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

try:
    import zkpy
    from recipes import Lock
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import zkpy
    from recipes import Lock

DEFAULT_SERVER = os.environ.get("ZKPY_SERVER", "127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183")


async def worker(args: argparse.Namespace) -> None:
    directory = Path(args.dir)
    counter, marker, log = directory / "counter", directory / "inside", directory / "tokens.log"
    async with zkpy.connect(args.server, session_timeout=args.session_timeout) as zk:
        lock = Lock(zk, args.lock_path, identifier=f"worker-{args.worker} pid {os.getpid()}")
        for i in range(args.increments):
            async with lock as held:
                # The critical section is synchronous: nothing in it can be interrupted halfway.
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                try:
                    value = int(counter.read_text())
                    counter.write_text(f"{value + 1}\n")
                    with open(log, "a") as out:
                        out.write(f"{held.token} {args.worker} {i}\n")
                finally:
                    os.close(fd)
                    os.unlink(marker)
            if held.lost:
                raise SystemExit(f"worker {args.worker}: lost the lock ({held.lost_reason})")


def check(directory: Path, expected: int) -> list[str]:
    """What went wrong, if anything."""
    problems = []
    final = int((directory / "counter").read_text())
    if final != expected:
        problems.append(f"final count {final}, expected {expected}")
    tokens = [int(line.split()[0]) for line in (directory / "tokens.log").read_text().splitlines()]
    if len(tokens) != expected:
        problems.append(f"{len(tokens)} critical sections logged, expected {expected}")
    if any(b <= a for a, b in itertools.pairwise(tokens)):
        problems.append("fencing tokens did not increase strictly")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--increments", type=int, default=50)
    parser.add_argument("--lock-path", default="/examples/lock-workers")
    parser.add_argument("--session-timeout", type=float, default=10.0)
    parser.add_argument("--dir", help="where the counter and log live (default: a temp dir)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set in worker processes
    args = parser.parse_args()
    if args.worker is not None:
        trio.run(worker, args)
        return 0

    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(args.dir or scratch)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "counter").write_text("0\n")
        (directory / "tokens.log").write_text("")
        common = [
            "--server",
            args.server,
            "--increments",
            str(args.increments),
            "--lock-path",
            args.lock_path,
            "--session-timeout",
            str(args.session_timeout),
            "--dir",
            str(directory),
        ]
        started = time.monotonic()
        processes = [
            subprocess.Popen([sys.executable, __file__, *common, "--worker", str(n)])
            for n in range(args.workers)
        ]
        codes = [process.wait() for process in processes]
        elapsed = time.monotonic() - started
        expected = args.workers * args.increments
        problems = [f"a worker exited with {code}" for code in codes if code] + check(
            directory, expected
        )
        final = (directory / "counter").read_text().strip()
        print(
            f"{args.workers} workers x {args.increments} increments: counter = {final} "
            f"(expected {expected}) in {elapsed:.2f} s"
        )
        for problem in problems:
            print("PROBLEM:", problem)
        if not problems:
            print("exact count, no overlapping critical sections, tokens strictly increasing")
        return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
