"""Leader election: three candidate processes; kill the leader, another takes over with a larger
fencing token.

Start a local ensemble in one terminal, then run the example in another:

    zkpy ensemble
    python examples/election.py            # --candidates 3 --rounds 2

(`--server` defaults to $ZKPY_SERVER, else the three members `zkpy ensemble` starts.)

The parent starts the candidates (each a process running `Election.campaign()`), follows the
leadership with `Election.leader_changes()`, and each round kills the leader's process with
SIGKILL. The leader's session then expires (after its session timeout, the time the ensemble
needs to be sure it is gone), its candidate node disappears, and the next candidate in line
becomes leader, always with a larger token than every leader before it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import trio

try:
    import zkpy
    from recipes import Election
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import zkpy
    from recipes import Election

DEFAULT_SERVER = os.environ.get("ZKPY_SERVER", "127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183")


def say(line: str) -> None:
    """Print a line with one write: the candidates and the observer share one output, and
    unbuffered output (PYTHONUNBUFFERED) would otherwise let their lines run into each other."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def candidate(args: argparse.Namespace) -> None:
    name = f"candidate-{args.candidate}"
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with (
            zkpy.connect(args.server, session_timeout=args.session_timeout) as zk,
            trio.open_nursery() as nursery,
        ):

            async def stop_on_sigterm() -> None:
                async for _signal in signals:  # a clean stop closes the session at once
                    nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_sigterm)
            election = Election(zk, args.path, identifier=f"{name} pid={os.getpid()}")
            say(f"{name}: campaigning")
            async with election.campaign() as leadership:
                say(f"{name}: I lead, token {leadership.token:#x}")
                await trio.sleep_forever()  # lead until killed (or the session is lost)
            say(f"{name}: leadership lost: {leadership.lost_reason}")
            nursery.cancel_scope.cancel()


async def observe(args: argparse.Namespace) -> int:
    procs = {
        n: subprocess.Popen(
            [
                *(sys.executable, __file__, "--server", args.server, "--path", args.path),
                *("--session-timeout", str(args.session_timeout), "--candidate", str(n)),
            ]
        )
        for n in range(args.candidates)
    }
    try:
        async with zkpy.connect(args.server, session_timeout=args.session_timeout) as zk:
            election = Election(zk, args.path)
            tokens: list[int] = []
            killed_at = 0.0
            async for leader in election.leader_changes():
                if leader is None:
                    continue
                who = leader.identifier.decode()
                pid = int(who.rsplit("pid=", 1)[1])
                if pid not in {proc.pid for proc in procs.values()}:
                    say(f"waiting for a stale leader from an earlier run to expire: {who}")
                    continue
                took = f" ({time.monotonic() - killed_at:.1f} s after the kill)" if tokens else ""
                say(f"leader: {who}, token {leader.token:#x}{took}")
                if tokens and leader.token <= tokens[-1]:
                    say("PROBLEM: the new leader's token is not larger")
                    return 1
                tokens.append(leader.token)
                if len(tokens) > args.rounds:
                    break
                say(f"killing the leader (pid {pid}) with SIGKILL")
                os.kill(pid, signal.SIGKILL)
                killed_at = time.monotonic()
            say("tokens of successive leaders: " + ", ".join(f"{t:#x}" for t in tokens))
            return 0
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--path", default="/examples/election")
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="how many leaders to kill")
    parser.add_argument("--session-timeout", type=float, default=4.0)
    parser.add_argument("--candidate", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.candidate is not None:
        trio.run(candidate, args)
        return 0
    if args.rounds >= args.candidates:
        parser.error("--rounds must be smaller than --candidates")
    return trio.run(observe, args)


if __name__ == "__main__":
    sys.exit(main())
