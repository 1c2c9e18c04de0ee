"""Fencing tokens at work: a paused lock holder comes back and its stale write is rejected.

Start a local ensemble in one terminal, then run the example in another:

    zkpy ensemble
    python examples/fencing.py

(`--server` defaults to $ZKPY_SERVER, else the three members `zkpy ensemble` starts.)

The story of Kleppmann's "How to do distributed locking", played for real:

1. A tiny storage service (a thread in this process, speaking one line per request) keeps one
   value and guards it with `recipes.fencing.FencingGuard`: a write carries a fencing token and
   is refused if a larger token has already written.
2. Process A takes the lock /examples/fencing/lock, gets token tA and is about to write ... when
   it is frozen with SIGSTOP (think of a long GC pause, or a VM migration).
3. A's session expires (it cannot heartbeat while stopped), its lock node goes, and process B
   gets the lock with token tB > tA and writes.
4. A is resumed with SIGCONT and carries on where it stopped: it writes with tA. It has no
   chance to notice it lost the lock first (the write was already under way when it froze), so
   only the storage can stop it: it rejects the stale token.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import trio

try:
    import zkpy
    from recipes import Lock
    from recipes.fencing import FencingGuard, StaleTokenError
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import zkpy
    from recipes import Lock
    from recipes.fencing import FencingGuard, StaleTokenError

DEFAULT_SERVER = os.environ.get("ZKPY_SERVER", "127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183")


# ---- the storage service -------------------------------------------------------------------


class Storage(socketserver.ThreadingTCPServer):
    """One value; ``WRITE <token> <text>`` answers ``OK`` or ``STALE <highest token>``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), StorageHandler)
        self.guard = FencingGuard()
        self.value = ""
        self.history: list[str] = []


class StorageHandler(socketserver.StreamRequestHandler):
    server: Storage

    def handle(self) -> None:
        for raw in self.rfile:
            command, token, text = raw.decode().rstrip("\n").split(" ", 2)
            assert command == "WRITE"
            try:
                with self.server.guard.fence("value", int(token)):
                    self.server.value = text
                    self.server.history.append(f"accepted {text!r} with token {int(token):#x}")
                    reply = "OK"
            except StaleTokenError as err:
                self.server.history.append(f"rejected {text!r}: {err}")
                reply = f"STALE {err.highest}"
            self.wfile.write(f"{reply}\n".encode())


def write_to_storage(port: int, token: int, text: str) -> str:
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(f"WRITE {token} {text}\n".encode())
        return conn.makefile().readline().strip()


# ---- a lock holder (run as its own process) ------------------------------------------------


async def holder(args: argparse.Namespace) -> None:
    async with zkpy.connect(args.server, session_timeout=args.session_timeout) as zk:
        async with Lock(zk, args.lock_path, identifier=args.holder) as held:
            print(f"HOLD {held.token}", flush=True)
            # The write is under way: from here to the storage nothing yields to the event loop,
            # so neither a lost session nor the lock's cancel scope can stop it. The orchestrator
            # freezes us right here, then lets us go on by sending a line.
            sys.stdin.readline()
            reply = write_to_storage(args.storage_port, held.token, f"from {args.holder}")
            print(f"REPLY {reply}", flush=True)
            if args.holder == "A":
                # More work under the lock: cancelled as soon as the client hears its session
                # is gone (the lock's cancel scope), which it does right after waking up.
                await trio.sleep_forever()
        print(f"EXIT lost={held.lost} ({held.lost_reason})", flush=True)


# ---- the orchestrator ----------------------------------------------------------------------


def read_line(stream: IO[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
            raise TimeoutError(f"no line within {timeout} s (got {line!r})")
        chunk = stream.read(1)
        if not chunk:
            raise EOFError(f"the process exited (got {line!r})")
        line += chunk
    return line.decode().strip()


def spawn(args: argparse.Namespace, name: str, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, __file__, "--server", args.server, "--lock-path", args.lock_path]
    command += ["--session-timeout", str(args.session_timeout), "--storage-port", str(port)]
    return subprocess.Popen(
        [*command, "--holder", name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
    )


def say(process: subprocess.Popen[Any], text: str) -> None:
    assert process.stdin is not None
    process.stdin.write(text.encode())
    process.stdin.flush()


def orchestrate(args: argparse.Namespace) -> int:
    storage = Storage()
    threading.Thread(target=storage.serve_forever, daemon=True).start()
    port = storage.server_address[1]
    wait = 10 * args.session_timeout + 10
    a = spawn(args, "A", port)
    b: subprocess.Popen[bytes] | None = None
    try:
        assert a.stdout is not None
        token_a = int(read_line(a.stdout, wait).split()[1])
        print(f"A holds the lock with token {token_a:#x} and starts its write ...")
        os.kill(a.pid, signal.SIGSTOP)
        print(
            f"... and is frozen (SIGSTOP) before the write reaches the storage. B waits for the "
            f"lock until A's session expires (session timeout {args.session_timeout} s)."
        )
        stopped_at = time.monotonic()
        b = spawn(args, "B", port)
        assert b.stdout is not None
        token_b = int(read_line(b.stdout, wait).split()[1])
        print(
            f"B holds the lock with token {token_b:#x} after {time.monotonic() - stopped_at:.1f} s"
        )
        say(b, "go\n")
        print(f"B writes: {read_line(b.stdout, wait)}")
        os.kill(a.pid, signal.SIGCONT)
        say(a, "go\n")
        reply_a = read_line(a.stdout, wait)
        print(f"A is resumed (SIGCONT) and finishes its write with token {token_a:#x}: {reply_a}")
        print(
            f"A's own client then finds its session gone, and the lock's cancel scope ends "
            f"A's work: {read_line(a.stdout, wait)}"
        )
        print("storage history:")
        for entry in storage.history:
            print("   ", entry)
        print(f"stored value: {storage.value!r}")
        ok = token_b > token_a and reply_a == f"REPLY STALE {token_b}" and storage.value == "from B"
        print("the stale write was rejected" if ok else "PROBLEM: the stale write got through")
        return 0 if ok else 1
    finally:
        for process in (a, b):
            if process is not None and process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
                process.wait()
        storage.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--lock-path", default="/examples/fencing/lock")
    parser.add_argument("--session-timeout", type=float, default=4.0)
    parser.add_argument("--holder", help=argparse.SUPPRESS)
    parser.add_argument("--storage-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.holder is not None:
        trio.run(holder, args)
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
