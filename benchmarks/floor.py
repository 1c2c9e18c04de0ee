"""The floor of a one-at-a-time write on this machine: the same messages and syncs, no zkpy.

Four processes play a client, the follower it is connected to, the leader and the other
follower, over TCP on loopback, and pass the messages of one write at a time in the sizes zkpy
sends; the members write a 300-byte record to a log file and `fdatasync` it where zkpy would.
They do nothing else: no decoding, no tree, no sessions. So what a write takes here is what
an implementation of that path on this machine pays for the messages and the syncs alone, and
the gap to `benchmarks.cpu_per_op`'s set p50 is what zkpy's own work costs::

    python -m benchmarks floor --count 2000

Three shapes of the write path (`--shape`):

    logged  zkpy's, where two members are a quorum: client -> follower -> leader, the leader
            syncs, then sends the proposal to both followers; the client's follower syncs,
            replies to the client and acks (the leader's sync and its own are a quorum)
    early   the leader sends the proposal first, syncs beside the followers and then tells
            them with a small `Logged` message; the client's follower replies once it has
            synced and heard it (a variant zkpy tried, see docs/decisions/0004)
    zab     Zab's: the leader sends the proposal first and syncs beside the followers; each
            follower syncs and acks; the leader commits on its own sync and the first ack,
            and the client's follower replies on the commit

two runtimes for the members (`--runtime`): `blocking` (a selector loop, the least Python can
do) and `trio` (a trio loop waiting on readable sockets, as zkpy's members do); and the client
either sleeps until its reply comes (as zkpy's client does one write at a time) or, with
`--client-spin`, polls its sockets without sleeping, which spares the client's follower the
cost of waking it (on a VM whose idle vCPUs halt, a send to a sleeping process costs the
sender tens of microseconds) and takes one of the machine's CPUs for the client. Members
always sleep between messages: four processes share the machine's two CPUs. `--no-sync` leaves
the syncs out (the messages alone). Members sync on the event loop, as zkpy does for small
batches; the log files are written with zeros first, as zkpy's log is, so that a sync covers
data only. With `--watch`, a second connection of the client holds a watch on the written
node, and each write is timed until its event arrives there (the follower sends the event
just before the reply), as in the watch workload of `benchmarks.run`.

Where it differs from zkpy, the floor is the faster: the client's follower replies before it
acks (zkpy acks first), and the zeros zkpy writes ahead of its records now and then are left
out (the whole file is zeroed before the run).
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

from benchmarks.ensembles import cpu_times

# message kinds, one byte after the length
REQUEST, FORWARD, PROPOSE, ACK, COMMIT, REPLY, EVENT, LOGGED = range(1, 9)
# the sizes zkpy's frames have for a set of a 100-byte value (benchmarks.timeline) and for the
# data watch event it fires
SIZES = {
    REQUEST: 122,
    FORWARD: 136,
    PROPOSE: 157,
    ACK: 15,
    COMMIT: 15,
    REPLY: 72,
    EVENT: 32,
    LOGGED: 15,
}
SHAPES = ("logged", "early", "zab")
RUNTIMES = ("blocking", "trio")
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
    """What a member does on each message (the same for both runtimes): `send(peer, kind)`.

    Writes are numbered in order. A member's log appends are synchronous, so the leader has
    logged every write it proposed by the time it reads an ack; and each follower acks every
    write in order, so its n-th ack is for write n.
    """

    role: str  # "follower1" (the client's), "leader", "follower2"
    shape: str
    log: Log
    send: Send
    watched: bool = False  # a second connection of the client watches the written node
    proposed: int = 0  # the leader's writes so far
    committed: int = 0  # the leader's last write committed (zab)
    acks: dict[str, int] = field(default_factory=dict)  # the leader's acks from each follower
    logged: int = 0  # a follower's writes logged
    leader_logged: int = 0  # a follower's `Logged` notes from the leader (early)
    answered: int = 0  # the client's follower's writes answered (early)

    def on_message(self, peer: str, kind: int) -> None:
        if kind == REQUEST:
            self.send("leader", FORWARD)
        elif kind == FORWARD:
            self._lead()
        elif kind == PROPOSE:
            self._follow()
        elif kind == LOGGED:
            self.leader_logged += 1
            self._answer_once_logged()
        elif kind == ACK:
            self.acks[peer] = self.acks.get(peer, 0) + 1
            self._maybe_commit()
        elif kind == COMMIT and self.role == "follower1":
            self._answer()

    def _lead(self) -> None:
        self.proposed += 1
        if self.shape == "logged":
            self.log.append()
            self.send("follower1", PROPOSE)
            self.send("follower2", PROPOSE)
            return
        self.send("follower1", PROPOSE)
        self.send("follower2", PROPOSE)
        self.log.append()
        if self.shape == "early":
            self.send("follower1", LOGGED)
            self.send("follower2", LOGGED)

    def _follow(self) -> None:
        self.log.append()
        self.logged += 1
        if self.shape == "logged" and self.role == "follower1":
            self._answer()  # the leader's sync and its own: a quorum
        self._answer_once_logged()
        self.send("leader", ACK)

    def _answer_once_logged(self) -> None:
        """Early: the client's follower answers a write once it and the leader have logged it."""
        if self.shape != "early" or self.role != "follower1":
            return
        if min(self.logged, self.leader_logged) > self.answered:
            self.answered += 1
            self._answer()

    def _maybe_commit(self) -> None:
        """Zab: the latest write commits once the leader and one follower have logged it."""
        if self.shape != "zab" or self.committed == self.proposed:
            return
        if max(self.acks.values(), default=0) >= self.proposed:
            self.committed = self.proposed
            self.send("follower1", COMMIT)
            self.send("follower2", COMMIT)

    def _answer(self) -> None:
        """The watch event first, then the reply (as zkpy sends them)."""
        if self.watched:
            self.send("watcher", EVENT)
        self.send("client", REPLY)


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


# Each child inherits every socket of the run, so a member never sees the end of a stream:
# the parent stops the members when the client is done.


def run_member_blocking(member: Member, sockets: dict[str, socket.socket]) -> None:
    selector = selectors.DefaultSelector()
    frames = {}
    for peer, sock in sockets.items():
        selector.register(sock, selectors.EVENT_READ, peer)
        frames[peer] = Frames()
    while True:
        for key, _ in selector.select():
            peer = key.data
            for kind in frames[peer].feed(os.read(key.fd, 65536)):
                member.on_message(peer, kind)


def run_member_trio(member: Member, sockets: dict[str, socket.socket]) -> None:
    import trio

    async def read_peer(peer: str, sock: socket.socket) -> None:
        frames = Frames()
        while True:
            await trio.lowlevel.wait_readable(sock)
            for kind in frames.feed(os.read(sock.fileno(), 65536)):
                member.on_message(peer, kind)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for peer, sock in sockets.items():
                nursery.start_soon(read_peer, peer, sock)

    trio.run(main)


@dataclass
class Client:
    """Sends a request and waits for its reply, `count` times."""

    runtime: str
    sock: socket.socket
    watcher: socket.socket | None = None  # with a watch: its events arrive here
    spin: bool = False  # poll the sockets without sleeping

    def run(self, count: int) -> list[float]:
        """The latencies in seconds: until the reply, or with a watcher until the event."""
        if self.runtime == "blocking":
            return self._run_blocking(count)
        import trio

        return trio.run(self._run_trio, count)

    def _run_blocking(self, count: int) -> list[float]:
        replies, events, latencies = Frames(), Frames(), []
        for _ in range(count):
            start = time.perf_counter()
            os.write(self.sock.fileno(), FRAMES[REQUEST])
            if self.watcher is not None:
                self._next_frame_blocking(self.watcher, events)
                latencies.append(time.perf_counter() - start)
            self._next_frame_blocking(self.sock, replies)
            if self.watcher is None:
                latencies.append(time.perf_counter() - start)
        return latencies

    def _next_frame_blocking(self, connection: socket.socket, frames: Frames) -> None:
        while True:
            try:  # a blocking read, or with `spin` a poll
                if frames.feed(os.read(connection.fileno(), 65536)):
                    return
            except BlockingIOError:
                continue

    async def _run_trio(self, count: int) -> list[float]:
        replies, events, latencies = Frames(), Frames(), []
        for _ in range(count):
            start = time.perf_counter()
            os.write(self.sock.fileno(), FRAMES[REQUEST])
            if self.watcher is not None:
                await self._next_frame_trio(self.watcher, events)
                latencies.append(time.perf_counter() - start)
            await self._next_frame_trio(self.sock, replies)
            if self.watcher is None:
                latencies.append(time.perf_counter() - start)
        return latencies

    async def _next_frame_trio(self, connection: socket.socket, frames: Frames) -> None:
        import trio

        while True:
            try:
                if frames.feed(os.read(connection.fileno(), 65536)):
                    return
            except BlockingIOError:
                if self.spin:
                    await trio.lowlevel.checkpoint()  # as zkpy's Receiver spins
                else:
                    await trio.lowlevel.wait_readable(connection)


def _pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of a loopback TCP connection, without Nagle, as zkpy's links."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    for sock in (a, b):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return a, b


def _member_process(
    role: str,
    shape: str,
    runtime: str,
    sync: bool,
    log_path: str,
    sockets: dict[str, socket.socket],
) -> None:
    # a forked child inherits its parent's handlers: the one benchmarks.run sets for SIGTERM
    # would raise inside trio's loop when the member is stopped
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for sock in sockets.values():
        sock.setblocking(False)
    member = Member(role, shape, Log(log_path, sync), _sender(sockets), "watcher" in sockets)
    run = run_member_blocking if runtime == "blocking" else run_member_trio
    run(member, sockets)


def _client_process(client: Client, count: int, out: Connection) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as in _member_process
    for sock in (client.sock, client.watcher):
        if sock is not None:  # a blocking loop that sleeps blocks in its reads
            sock.setblocking(client.runtime == "blocking" and not client.spin)
    client.run(WARMUP)
    out.send("warm")
    start = time.process_time()
    latencies = client.run(count)
    out.send((latencies, time.process_time() - start))


def _receive(connection: Connection, timeout_s: float) -> Any:
    if not connection.poll(timeout_s):
        raise RuntimeError(f"the client sent nothing for {timeout_s:.0f} s: a process is stuck")
    return connection.recv()


def _cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """User and system CPU time of these processes together (they need not have exited)."""
    times = [cpu_times(pid) for pid in pids]
    return sum(user for user, _ in times), sum(system for _, system in times)


@dataclass
class Run:
    latencies: list[float]  # seconds, sorted
    member_user: float  # user CPU seconds per write, the three members together
    member_system: float  # system CPU seconds per write, the three members together
    client_cpu: float  # seconds per write


def measure(
    shape: str,
    runtime: str,
    sync: bool,
    count: int,
    directory: str,
    *,
    watch: bool = False,
    client_spin: bool = False,
) -> Run:
    """One run: start the four processes, return the client's latencies (to the reply, or to
    the watch event with `watch`) and the CPU used."""
    context = multiprocessing.get_context("fork")  # the processes inherit the sockets
    client_end, follower_client = _pair()
    follower_leader, leader_follower1 = _pair()
    follower2_leader, leader_follower2 = _pair()
    roles: dict[str, dict[str, socket.socket]] = {
        "follower1": {"client": follower_client, "leader": follower_leader},
        "leader": {"follower1": leader_follower1, "follower2": leader_follower2},
        "follower2": {"leader": follower2_leader},
    }
    watcher_end = None
    if watch:
        watcher_end, roles["follower1"]["watcher"] = _pair()
    client = Client(runtime, client_end, watcher_end, client_spin)
    receive, send = context.Pipe(duplex=False)
    processes = [
        context.Process(
            target=_member_process,
            args=(role, shape, runtime, sync, os.path.join(directory, role), sockets),
            daemon=True,
        )
        for role, sockets in roles.items()
    ]
    processes.append(context.Process(target=_client_process, args=(client, count, send)))
    for process in processes:
        process.start()
    send.close()  # the client's copy is the one left: a client that dies ends the pipe
    deadline_s = 60 + count * 0.01  # a write takes about a millisecond: this means a lost process
    try:
        _receive(receive, deadline_s)  # warmed up
        pids = [process.pid or 0 for process in processes[:-1]]
        user_before, system_before = _cpu_seconds(pids)
        latencies, client_cpu = _receive(receive, deadline_s)
        user_after, system_after = _cpu_seconds(pids)
    finally:
        for process in processes:
            process.terminate()
            process.join()
        receive.close()
        for sock in [client_end, watcher_end, *(s for ss in roles.values() for s in ss.values())]:
            if sock is not None:
                sock.close()
    return Run(
        sorted(latencies),
        (user_after - user_before) / count,
        (system_after - system_before) / count,
        client_cpu / count,
    )


def _row(shape: str, runtime: str, client: str, sync: bool, run: Run) -> str:
    latencies = run.latencies
    p50 = statistics.median(latencies)
    p90 = latencies[int(len(latencies) * 0.9)]
    p99 = latencies[int(len(latencies) * 0.99)]
    members = run.member_user + run.member_system
    return (
        f"{shape:7s} {runtime:9s} {client:7s} {'yes' if sync else 'no':6s} "
        f"{p50 * 1e3:7.3f} {p90 * 1e3:7.3f} {p99 * 1e3:7.3f}"
        f" {members * 1e6:10.0f} ({run.member_user * 1e6:.0f}+{run.member_system * 1e6:.0f})"
        f" {run.client_cpu * 1e6:14.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="writes per run (2000)")
    parser.add_argument("--shape", choices=[*SHAPES, "all"], default="all")
    parser.add_argument("--runtime", choices=[*RUNTIMES, "both"], default="both")
    parser.add_argument(
        "--client-spin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the client polls for its reply instead of sleeping (default: both ways)",
    )
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
    shapes = SHAPES if args.shape == "all" else [args.shape]
    runtimes = RUNTIMES if args.runtime == "both" else [args.runtime]
    spins = [False, True] if args.client_spin is None else [args.client_spin]
    syncs = [True, False] if args.sync is None else [args.sync]
    print(f"one write at a time, until its {'watch event' if args.watch else 'reply'}")
    print(
        f"{'shape':7s} {'runtime':9s} {'client':7s} {'syncs':6s} {'p50 ms':>7s} {'p90 ms':>7s}"
        f" {'p99 ms':>7s} {'members us CPU (user+sys)':>26s} {'client us CPU':>14s}"
    )
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="zkpy-floor-") as directory:
        for sync in syncs:
            for shape in shapes:
                for runtime in runtimes:
                    for spin in spins:
                        run = measure(
                            shape,
                            runtime,
                            sync,
                            args.count,
                            directory,
                            watch=args.watch,
                            client_spin=spin,
                        )
                        print(_row(shape, runtime, "spins" if spin else "sleeps", sync, run))


if __name__ == "__main__":
    main()
