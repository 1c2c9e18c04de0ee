"""The floor of a one-at-a-time write on this machine: the same messages and syncs, no zkpy.

Four processes play a client, the follower it is connected to, the leader and the other
follower, over TCP on loopback, and pass the messages of one write at a time in the sizes zkpy
sends; the members write a 300-byte record to a log file and `fdatasync` it where zkpy would.
They do nothing else: no decoding, no tree, no sessions. So what a write takes here is what
any implementation on this machine pays for the messages and the syncs alone, and the gap to
`benchmarks.cpu_per_op`'s set p50 is what zkpy's own work costs::

    python -m benchmarks.floor --count 2000

Two shapes of the write path (`--shape`):

    logged  zkpy's, where two members are a quorum: client -> follower -> leader, the leader
            syncs, then sends the proposal to both followers; the client's follower syncs,
            replies to the client and acks (the leader's sync and its own are a quorum)
    zab     Zab's: the leader sends the proposal first and syncs beside the followers; each
            follower syncs and acks; the leader commits on its own sync and the first ack,
            and the client's follower replies on the commit

and two runtimes (`--runtime`): `blocking` (a selector loop, the least any Python can do) and
`trio` (a trio loop waiting on readable sockets, as the members do), each with syncs (`--sync`)
or without (`--no-sync`, the messages alone). Members sync on the event loop, as zkpy does for
small batches; the log files are written with zeros first, as zkpy's log is, so that a sync
covers data only. With `--watch`, a second connection of the client holds a watch on the
written node, and each write is timed until its event arrives there (the follower sends the
event just before the reply), as in the watch workload of `benchmarks.run`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import selectors
import signal
import socket
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

# message kinds, one byte after the length
REQUEST, FORWARD, PROPOSE, ACK, COMMIT, REPLY, EVENT = range(1, 8)
# the sizes zkpy's frames have for a set of a 100-byte value (benchmarks.timeline) and for the
# data watch event it fires
SIZES = {REQUEST: 122, FORWARD: 136, PROPOSE: 157, ACK: 15, COMMIT: 15, REPLY: 72, EVENT: 32}
RECORD_BYTES = 300
LOG_BYTES = 16 << 20
WARMUP = 200
HEADER = struct.Struct(">IB")

Send = Callable[[str, int], None]


def frame(kind: int) -> bytes:
    size = SIZES[kind]
    return HEADER.pack(size - 4, kind) + bytes(size - HEADER.size)


FRAMES = {kind: frame(kind) for kind in SIZES}


class Log:
    """A zero-filled file that takes one record per write, synced or not."""

    def __init__(self, path: str, sync: bool) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        chunk = bytes(1 << 20)
        for offset in range(0, LOG_BYTES, len(chunk)):
            os.pwrite(self.fd, chunk, offset)
        os.fsync(self.fd)
        self.offset = 0
        self.sync = sync
        self.record = b"r" * RECORD_BYTES

    def append(self) -> None:
        os.pwrite(self.fd, self.record, self.offset)
        self.offset = (self.offset + RECORD_BYTES) % (LOG_BYTES - RECORD_BYTES)
        if self.sync:
            os.fdatasync(self.fd)


@dataclass
class Member:
    """What a member does on each message (the same for both runtimes): `send(peer, kind)`."""

    role: str  # "follower1" (the client's), "leader", "follower2"
    shape: str
    log: Log
    send: Send
    watched: bool = False  # a second connection of the client watches the written node
    # the leader's count of writes proposed, logged and committed, and of acks from each
    # follower (a follower acks every write, in order, so its n-th ack is for write n)
    proposed: int = 0
    logged: int = 0
    committed: int = 0
    acks: dict[str, int] = field(default_factory=dict)

    def on_message(self, peer: str, kind: int) -> None:
        if kind == REQUEST:
            self.send("leader", FORWARD)
        elif kind == FORWARD:
            self._lead()
        elif kind == PROPOSE:
            self.log.append()
            if self.shape == "logged" and self.role == "follower1":
                self._answer()  # the leader's sync and its own: a quorum
            self.send("leader", ACK)
        elif kind == ACK:
            self.acks[peer] = self.acks.get(peer, 0) + 1
            self._maybe_commit()
        elif kind == COMMIT and self.role == "follower1":
            self._answer()

    def _answer(self) -> None:
        """The watch event first, then the reply (as zkpy sends them)."""
        if self.watched:
            self.send("watcher", EVENT)
        self.send("client", REPLY)

    def _lead(self) -> None:
        self.proposed += 1
        if self.shape == "logged":
            self.log.append()
            self.logged = self.proposed
            self.send("follower1", PROPOSE)
            self.send("follower2", PROPOSE)
        else:
            self.send("follower1", PROPOSE)
            self.send("follower2", PROPOSE)
            self.log.append()
            self.logged = self.proposed
            self._maybe_commit()

    def _maybe_commit(self) -> None:
        """Zab: the latest write commits once the leader and one follower have logged it."""
        if self.shape != "zab" or self.committed == self.proposed:
            return
        if self.logged == self.proposed and max(self.acks.values(), default=0) >= self.proposed:
            self.committed = self.proposed
            self.send("follower1", COMMIT)
            self.send("follower2", COMMIT)


class Frames:
    """Cuts a byte stream into message kinds."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[int]:
        self.buffer += data
        kinds = []
        while len(self.buffer) >= HEADER.size:
            length, kind = HEADER.unpack_from(self.buffer)
            if len(self.buffer) < 4 + length:
                break
            del self.buffer[: 4 + length]
            kinds.append(kind)
        return kinds


def _sender(sockets: dict[str, socket.socket]) -> Send:
    fds = {peer: sock.fileno() for peer, sock in sockets.items()}

    def send(peer: str, kind: int) -> None:
        os.write(fds[peer], FRAMES[kind])  # a few bytes into an empty buffer: never short

    return send


def run_member_blocking(member: Member, sockets: dict[str, socket.socket]) -> None:
    selector = selectors.DefaultSelector()
    frames = {}
    for peer, sock in sockets.items():
        selector.register(sock, selectors.EVENT_READ, peer)
        frames[peer] = Frames()
    while True:
        for key, _ in selector.select():
            peer = key.data
            data = os.read(key.fd, 65536)
            if not data:
                return
            for kind in frames[peer].feed(data):
                member.on_message(peer, kind)


def run_member_trio(member: Member, sockets: dict[str, socket.socket]) -> None:
    import trio

    async def read_peer(peer: str, sock: socket.socket, done: trio.CancelScope) -> None:
        frames = Frames()
        while True:
            await trio.lowlevel.wait_readable(sock)
            data = os.read(sock.fileno(), 65536)
            if not data:
                done.cancel()
                return
            for kind in frames.feed(data):
                member.on_message(peer, kind)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for peer, sock in sockets.items():
                nursery.start_soon(read_peer, peer, sock, nursery.cancel_scope)

    trio.run(main)


def run_client(
    runtime: str, sock: socket.socket, count: int, watcher: socket.socket | None = None
) -> list[float]:
    """Send a request and wait for its reply, `count` times; the latencies in seconds, until
    the reply, or with a `watcher` connection until the watch event arrives on it."""
    if runtime == "blocking":
        return _client_blocking(sock, count, watcher)
    import trio

    async def next_frame(connection: socket.socket, frames: Frames) -> None:
        while True:
            await trio.lowlevel.wait_readable(connection)
            if frames.feed(os.read(connection.fileno(), 65536)):
                return

    async def main() -> list[float]:
        replies, events, latencies = Frames(), Frames(), []
        for _ in range(count):
            start = time.perf_counter()
            os.write(sock.fileno(), FRAMES[REQUEST])
            if watcher is not None:
                await next_frame(watcher, events)
                latencies.append(time.perf_counter() - start)
            await next_frame(sock, replies)
            if watcher is None:
                latencies.append(time.perf_counter() - start)
        return latencies

    return trio.run(main)


def _client_blocking(sock: socket.socket, count: int, watcher: socket.socket | None) -> list[float]:
    def next_frame(connection: socket.socket, frames: Frames) -> None:
        while not frames.feed(os.read(connection.fileno(), 65536)):
            pass

    replies, events, latencies = Frames(), Frames(), []
    for _ in range(count):
        start = time.perf_counter()
        os.write(sock.fileno(), FRAMES[REQUEST])
        if watcher is not None:
            next_frame(watcher, events)
            latencies.append(time.perf_counter() - start)
        next_frame(sock, replies)
        if watcher is None:
            latencies.append(time.perf_counter() - start)
    return latencies


def _pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of a loopback TCP connection, without Nagle, as zkpy's links."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    for sock in (a, b):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return a, b


def _member_process(
    role: str, shape: str, runtime: str, sync: bool, log_path: str, sockets: dict[str, Any]
) -> None:
    # a forked child inherits its parent's handlers: the one benchmarks.run sets for SIGTERM
    # would raise inside trio's loop when the member is stopped
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for sock in sockets.values():
        sock.setblocking(False)
    member = Member(role, shape, Log(log_path, sync), _sender(sockets), "watcher" in sockets)
    run = run_member_blocking if runtime == "blocking" else run_member_trio
    run(member, sockets)


def _client_process(
    runtime: str,
    sock: socket.socket,
    watcher: socket.socket | None,
    count: int,
    out: Connection,
) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as in _member_process
    for connection in (sock, watcher):
        if connection is not None:
            connection.setblocking(runtime == "blocking")
    run_client(runtime, sock, WARMUP, watcher)
    out.send(time.process_time())
    start = time.process_time()
    latencies = run_client(runtime, sock, count, watcher)
    out.send((latencies, time.process_time() - start))


def _receive(connection: Connection, timeout_s: float) -> Any:
    if not connection.poll(timeout_s):
        raise RuntimeError(f"the client sent nothing for {timeout_s:.0f} s: a process is stuck")
    return connection.recv()


def _cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """User and system CPU time of these processes (from /proc, so they need not exit)."""
    user = system = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        user += int(fields[11])
        system += int(fields[12])
    ticks = os.sysconf("SC_CLK_TCK")
    return user / ticks, system / ticks


@dataclass
class Run:
    latencies: list[float]  # seconds, sorted
    member_user: float  # user CPU seconds per write, the three members together
    member_system: float  # system CPU seconds per write, the three members together
    client_cpu: float  # seconds per write


def measure(
    shape: str, runtime: str, sync: bool, count: int, directory: str, *, watch: bool = False
) -> Run:
    """One run: start the four processes, return the client's latencies (to the reply, or to
    the watch event with `watch`) and the CPU used."""
    context = multiprocessing.get_context("fork")  # the processes inherit the sockets
    client_end, follower_client = _pair()
    watcher_end, follower_watcher = _pair() if watch else (None, None)
    follower_leader, leader_follower1 = _pair()
    follower2_leader, leader_follower2 = _pair()
    roles = {
        "follower1": {"client": follower_client, "leader": follower_leader},
        "leader": {"follower1": leader_follower1, "follower2": leader_follower2},
        "follower2": {"leader": follower2_leader},
    }
    members = [
        context.Process(
            target=_member_process,
            args=(role, shape, runtime, sync, os.path.join(directory, role), sockets),
            daemon=True,
        )
        for role, sockets in roles.items()
    ]
    receive, send = context.Pipe(duplex=False)
    if follower_watcher is not None:
        roles["follower1"]["watcher"] = follower_watcher
    client = context.Process(
        target=_client_process, args=(runtime, client_end, watcher_end, count, send)
    )
    for process in [*members, client]:
        process.start()
    deadline_s = 60 + count * 0.01  # a write takes about a millisecond: this means a lost process
    try:
        _receive(receive, deadline_s)  # warmed up
        pids = [process.pid or 0 for process in members]
        user_before, system_before = _cpu_seconds(pids)
        latencies, client_cpu = _receive(receive, deadline_s)
        user_after, system_after = _cpu_seconds(pids)
    finally:
        for process in [client, *members]:
            process.terminate()
            process.join()
        for pair in roles.values():
            for sock in pair.values():
                sock.close()
        client_end.close()
        if watcher_end is not None:
            watcher_end.close()
    return Run(
        sorted(latencies),
        (user_after - user_before) / count,
        (system_after - system_before) / count,
        client_cpu / count,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="writes per run (2000)")
    parser.add_argument("--shape", choices=["logged", "zab", "both"], default="both")
    parser.add_argument("--runtime", choices=["blocking", "trio", "both"], default="both")
    parser.add_argument(
        "--sync",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sync the members' logs (default: with and without)",
    )
    parser.add_argument(
        "--watch",
        action="store_true",
        help="time each write until its watch event arrives on the client's second connection "
        "(the watch workload of benchmarks.run) instead of until its reply",
    )
    parser.add_argument("--dir", help="where the members' log files go (a temporary directory)")
    args = parser.parse_args()
    shapes = ["logged", "zab"] if args.shape == "both" else [args.shape]
    runtimes = ["blocking", "trio"] if args.runtime == "both" else [args.runtime]
    syncs = [True, False] if args.sync is None else [args.sync]
    print(f"one write at a time, until its {'watch event' if args.watch else 'reply'}")
    print(
        f"{'shape':7s} {'runtime':9s} {'syncs':6s} {'p50 ms':>7s} {'p90 ms':>7s} {'p99 ms':>7s}"
        f" {'members us CPU (user+sys)':>26s} {'client us CPU':>14s}"
    )
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="zkpy-floor-") as directory:
        for shape in shapes:
            for runtime in runtimes:
                for sync in syncs:
                    run = measure(shape, runtime, sync, args.count, directory, watch=args.watch)
                    latencies = run.latencies
                    p50 = statistics.median(latencies)
                    p90 = latencies[int(len(latencies) * 0.9)]
                    p99 = latencies[int(len(latencies) * 0.99)]
                    print(
                        f"{shape:7s} {runtime:9s} {'yes' if sync else 'no':6s} "
                        f"{p50 * 1e3:7.3f} {p90 * 1e3:7.3f} {p99 * 1e3:7.3f}"
                        f" {(run.member_user + run.member_system) * 1e6:10.0f}"
                        f" ({run.member_user * 1e6:.0f}+{run.member_system * 1e6:.0f})"
                        f" {run.client_cpu * 1e6:14.0f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
