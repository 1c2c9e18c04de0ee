"""Micro-benchmarks of zkpy's pure core (and its LMDB log): how much one CPU core can do.

    python -m benchmarks micro [--seconds 1] [--value-size 100] [--dir DIR] [--json OUT.json]

Rows (each a rate per second of one Python thread, after a short warm-up):

- client frames: encode_request + FrameDecoder.feed + decode_request of set/get requests, and
  encode_reply + feed + decode_server_frame of their replies (zkpy.wire.frames, zkpy.wire.client);
- prep: Prep.prepare of create / set / multi requests against the tree plus the in-flight overlay
  (zkpy.core.prep);
- apply: DataTree.apply of the records prep made (zkpy.core.tree);
- log records: encode_record + decode_record (zkpy.core.txn), the bytes the log and peers carry;
- peer messages: encode_message + decode_message of Propose (1 and 64 records), Ack, Commit and
  Forward (zkpy.wire.peer);
- zab: sets replicated through three `Replica`s of the pure core (a leader and two followers,
  established by the simulator without faults), batches of 128 as a pipelined client sends
  them, every message through the peer codec: the leader's work per set (prep, log, apply,
  counting acks) and one follower's (decode, log, commit, apply), no storage and no trio. Set
  beside a running member's CPU per set, it tells the core's share from the shell's;
- group commit: Storage.append of batches of 1, 16 and 256 records, one write and one
  fsync per batch (zkpy.server.storage), in a temporary directory (under --dir if given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/micro.py`: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zkpy.core.prep import Prep
from zkpy.core.requests import (
    CreateRequest,
    CreateSessionRequest,
    GetDataRequest,
    MultiRequest,
    SetDataRequest,
)
from zkpy.core.tree import DataTree
from zkpy.core.txn import SetData, TxnRecord, decode_record, encode_record
from zkpy.core.types import OPEN_ACL_UNSAFE, Id, Stat
from zkpy.server.storage import Storage
from zkpy.testing.sim import Faults, Simulation
from zkpy.wire import client as wire
from zkpy.wire import peer
from zkpy.wire.frames import FrameDecoder
from zkpy.zab.messages import Ack, Commit, Forward, ForwardedWrite, Propose, ServerState
from zkpy.zab.replica import Ready, Replica

CHUNK = 1000
SESSION = 0x1234


@dataclass
class Row:
    group: str
    name: str
    rate: float  # units per second
    unit: str
    note: str = ""


def timed(run_chunk: Callable[[], int], seconds: float) -> float:
    """Call `run_chunk` (which returns how many units it did) until `seconds` have passed,
    after one warm-up call; return units per second."""
    run_chunk()
    units = 0
    start = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds:
        units += run_chunk()
        elapsed = time.perf_counter() - start
    return units / elapsed


# ---- client frames ----------------------------------------------------------------------------


def bench_frames(seconds: float, value: bytes) -> list[Row]:
    rows = []
    set_requests = [SetDataRequest(f"/bench/k{i % 256}", value) for i in range(CHUNK)]
    get_requests = [GetDataRequest(f"/bench/k{i % 256}", False) for i in range(CHUNK)]

    def request_round_trip(requests: list[Any]) -> Callable[[], int]:
        def chunk() -> int:
            stream = b"".join(
                wire.encode_request(xid, request) for xid, request in enumerate(requests, 1)
            )
            for frame in FrameDecoder().feed(stream):
                wire.decode_request(frame)
            return len(requests)

        return chunk

    rows.append(
        Row(
            "client frames",
            f"set request ({len(value)} B) encode+decode",
            timed(request_round_trip(set_requests), seconds),
            "frames/s",
            "encode_request, FrameDecoder.feed, decode_request",
        )
    )
    rows.append(
        Row(
            "client frames",
            "get request encode+decode",
            timed(request_round_trip(get_requests), seconds),
            "frames/s",
        )
    )
    stat = Stat(5, 9, 1, 2, 3, 0, 0, 0, len(value), 0, 5).to_wire()

    def reply_round_trip(body: Any) -> Callable[[], int]:
        def chunk() -> int:
            stream = b"".join(
                wire.encode_reply(xid, 0x100000000 + xid, 0, body) for xid in range(1, CHUNK + 1)
            )
            for frame in FrameDecoder().feed(stream):
                _xid, _zxid, _error, decoded = wire.decode_server_frame(frame)
                wire.stat_in(decoded if len(decoded) == 11 else decoded[1])
            return CHUNK

        return chunk

    rows.append(
        Row(
            "client frames",
            "set reply (Stat) encode+decode",
            timed(reply_round_trip(stat), seconds),
            "frames/s",
            "encode_reply, feed, decode_server_frame, stat_in",
        )
    )
    rows.append(
        Row(
            "client frames",
            f"get reply ({len(value)} B + Stat) encode+decode",
            timed(reply_round_trip([value, stat]), seconds),
            "frames/s",
        )
    )
    return rows


# ---- prep and apply ---------------------------------------------------------------------------


class CoreBench:
    """One tree and its prep, fed the way the leader feeds them: prep a batch, then apply it."""

    def __init__(self, value: bytes) -> None:
        self.value = value
        self.tree = DataTree()
        self.prep = Prep(self.tree)
        self.zxid = 1 << 32
        self.created = 0
        self.prep_time = 0.0
        self.apply_time = 0.0
        self._run([CreateSessionRequest(SESSION, 10_000, b"x" * 16)])
        self._run([CreateRequest("/bench", b"", OPEN_ACL_UNSAFE)])
        self._run([CreateRequest(f"/bench/k{i}", value, OPEN_ACL_UNSAFE) for i in range(256)])
        self.prep_time = self.apply_time = 0.0

    def _run(self, requests: list[Any]) -> int:
        ids = frozenset({Id("ip", "127.0.0.1")})
        start = time.perf_counter()
        records = []
        for cxid, request in enumerate(requests, 1):
            self.zxid += 1
            records.append(
                self.prep.prepare(
                    request, zxid=self.zxid, session_id=SESSION, cxid=cxid, now_ms=1, ids=ids
                )
            )
        middle = time.perf_counter()
        for record in records:
            result = self.tree.apply(record)
            if result.result.error:
                raise RuntimeError(f"benchmark request failed: {record} -> {result.result}")
        self.prep.applied(self.zxid)
        end = time.perf_counter()
        self.prep_time += middle - start
        self.apply_time += end - middle
        return len(requests)

    def creates(self) -> int:
        base = self.created
        self.created += CHUNK
        return self._run(
            [
                CreateRequest(f"/bench/c{base + i}", self.value, OPEN_ACL_UNSAFE)
                for i in range(CHUNK)
            ]
        )

    def sets(self) -> int:
        return self._run([SetDataRequest(f"/bench/k{i % 256}", self.value) for i in range(CHUNK)])

    def multis(self) -> int:
        requests = [
            MultiRequest(
                tuple(SetDataRequest(f"/bench/k{(4 * i + j) % 256}", self.value) for j in range(4))
            )
            for i in range(CHUNK // 4)
        ]
        return self._run(requests)


def bench_core(seconds: float, value: bytes) -> list[Row]:
    rows = []
    for name, method in (("create", "creates"), ("set", "sets"), ("multi of 4 sets", "multis")):
        core = CoreBench(value)
        run: Callable[[], int] = getattr(core, method)
        run()  # warm-up
        core.prep_time = core.apply_time = 0.0
        units = 0
        while core.prep_time + core.apply_time < seconds:
            units += run()
        rows.append(Row("core", f"prep {name}", units / core.prep_time, "txns/s", "Prep.prepare"))
        rows.append(
            Row("core", f"apply {name}", units / core.apply_time, "txns/s", "DataTree.apply")
        )
    return rows


# ---- log records and peer messages ------------------------------------------------------------


def set_record(zxid: int, value: bytes) -> TxnRecord:
    return TxnRecord(
        zxid, SESSION, zxid & 0xFFFF, 1_700_000_000_000, SetData("/bench/k1", value, 7)
    )


def bench_peer(seconds: float, value: bytes) -> list[Row]:
    rows = []
    records = [set_record((1 << 32) + i, value) for i in range(CHUNK)]

    def record_chunk() -> int:
        for record in records:
            decode_record(encode_record(record))
        return CHUNK

    rows.append(
        Row(
            "log records",
            f"set record ({len(value)} B) encode+decode",
            timed(record_chunk, seconds),
            "records/s",
            "encode_record, decode_record",
        )
    )

    def message_rows(name: str, messages: list[Any], per_message: int) -> None:
        def chunk() -> int:
            for message in messages:
                peer.decode_message(peer.encode_message(message))
            return len(messages)

        rate = timed(chunk, seconds)
        note = f"= {rate * per_message:,.0f} records/s" if per_message > 1 else ""
        rows.append(Row("peer messages", name, rate, "msgs/s", note))

    message_rows("Propose (1 record) encode+decode", [Propose((r,)) for r in records], 1)
    batches = [Propose(tuple(records[i : i + 64])) for i in range(0, CHUNK - 63, 64)]
    message_rows("Propose (64 records) encode+decode", batches, 64)
    message_rows("Ack encode+decode", [Ack((1 << 32) + i) for i in range(CHUNK)], 1)
    message_rows("Commit encode+decode", [Commit((1 << 32) + i) for i in range(CHUNK)], 1)
    ids = frozenset({Id("ip", "127.0.0.1")})
    writes: list[ForwardedWrite] = [
        (SESSION, i, SetDataRequest(f"/bench/k{i % 256}", value), ids, 0) for i in range(CHUNK)
    ]
    message_rows(
        f"Forward (1 set, {len(value)} B) encode+decode", [Forward((w,)) for w in writes], 1
    )
    forward_batches = [Forward(tuple(writes[i : i + 64])) for i in range(0, CHUNK - 63, 64)]
    message_rows(f"Forward (64 sets, {len(value)} B) encode+decode", forward_batches, 64)
    return rows


# ---- the replicas of the pure core --------------------------------------------------------------


class ZabBench:
    """A leader and two followers of the pure core, established without faults; `sets()` moves
    one batch of sets through them, timing the leader's and one follower's part."""

    BATCH = 128

    def __init__(self, value: bytes) -> None:
        # run without chaos, only these three act: no delays, no repeated votes
        sim = Simulation(
            1, faults=Faults(delay_ms=(0, 0), duplicate_notification=0, disk_ms=(0, 0))
        )
        sim.run_until(5_000, chaos=False, load=False)
        self.replicas = {i: member.replica for i, member in sim.members.items()}
        leaders = [
            i
            for i, r in self.replicas.items()
            if r is not None and r.state is ServerState.LEADING and r.serving
        ]
        if len(leaders) != 1:
            raise RuntimeError("the simulated ensemble elected no leader")
        self.leader = leaders[0]
        self.followers = [i for i in self.replicas if i != self.leader]
        self.leader_time = self.follower_time = 0.0
        self._cxid = 0
        self._batch([CreateSessionRequest(SESSION, 30_000, b"p" * 16)], session_id=0)
        keys = [f"/k{i}" for i in range(self.BATCH)]
        self._batch([CreateRequest(key, b"", OPEN_ACL_UNSAFE) for key in keys])
        self.requests = [SetDataRequest(key, value) for key in keys]

    def _replica(self, member: int) -> Replica:
        replica = self.replicas[member]
        assert replica is not None
        return replica

    def _apply(self, member: int, ready: Ready) -> None:
        replica = self._replica(member)
        for record in ready.committed:  # no client of these waits on the replicas timed here
            replica.apply(record, stats=False)

    def _batch(self, requests: list[Any], session_id: int = SESSION) -> None:
        leader = self._replica(self.leader)
        start = time.perf_counter()
        for request in requests:
            self._cxid += 1
            leader.submit(session_id, self._cxid, request)
        ready = leader.take_ready()
        self._apply(self.leader, ready)
        leader_part = time.perf_counter() - start
        wires = [(target, peer.encode_message(m)) for target, m in ready.messages]
        answers: list[tuple[int, bytes]] = []
        for member in self.followers:
            start = time.perf_counter()
            follower = self._replica(member)
            for target, raw in wires:
                if target == member:
                    follower.receive(self.leader, peer.decode_message(raw))
            for _ in range(2):  # the Ready to persist, then the one that commits it
                follow_ready = follower.take_ready()
                self._apply(member, follow_ready)
                answers += [(member, peer.encode_message(m)) for _, m in follow_ready.messages]
            if member == self.followers[0]:
                self.follower_time += time.perf_counter() - start
        start = time.perf_counter()
        for member, raw in answers:
            leader.receive(member, peer.decode_message(raw))
        self._apply(self.leader, leader.take_ready())
        self.leader_time += leader_part + time.perf_counter() - start

    def sets(self) -> int:
        self._batch(self.requests)
        return len(self.requests)


def bench_zab(seconds: float, value: bytes) -> list[Row]:
    bench = ZabBench(value)
    bench.sets()  # warm-up
    bench.leader_time = bench.follower_time = 0.0
    units = 0
    while bench.leader_time + bench.follower_time < seconds:
        units += bench.sets()
    note = "Replica: submit/receive, take_ready, apply"
    return [
        Row("zab", "leader's part of a set", units / bench.leader_time, "sets/s", note),
        Row("zab", "a follower's part of a set", units / bench.follower_time, "sets/s", note),
    ]


# ---- group commit ------------------------------------------------------------------------------


def bench_storage(seconds: float, value: bytes, directory: str | None) -> list[Row]:
    rows = []
    raw = encode_record(set_record(1 << 32, value))
    for batch_size in (1, 16, 256):
        with (
            tempfile.TemporaryDirectory(dir=directory, prefix="zkpy-micro-") as tmp,
            Storage.open(Path(tmp) / "data", sync=True) as storage,
        ):
            zxid = 1 << 32
            batches = 0
            storage.append([(zxid, raw)])  # warm-up: the first commit grows the file
            start = time.perf_counter()
            elapsed = 0.0
            while elapsed < seconds:
                storage.append([(zxid + i, raw) for i in range(1, batch_size + 1)])
                zxid += batch_size
                batches += 1
                elapsed = time.perf_counter() - start
        rows.append(
            Row(
                "group commit",
                f"Storage.append, batches of {batch_size}",
                batches * batch_size / elapsed,
                "proposals/s",
                f"{batches / elapsed:,.0f} fsyncs/s",
            )
        )
    return rows


# ---- main ------------------------------------------------------------------------------------


def machine_info(directory: str | None) -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "data_dir": directory or tempfile.gettempdir(),
    }


def print_table(rows: list[Row]) -> None:
    width = max(len(row.name) for row in rows)
    print(f"{'group':<14} {'benchmark':<{width}} {'per second':>14}  {'unit':<12} note")
    for row in rows:
        print(f"{row.group:<14} {row.name:<{width}} {row.rate:>14,.0f}  {row.unit:<12} {row.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per row (default 1)")
    parser.add_argument("--value-size", type=int, default=100, help="bytes per value")
    parser.add_argument("--dir", default=None, help="parent of the temporary LMDB directory")
    parser.add_argument(
        "--only",
        default="frames,core,peer,zab,storage",
        help="comma-separated groups to run: frames, core, peer, zab, storage",
    )
    parser.add_argument("--json", dest="json_out", default=None, help="write results here")
    args = parser.parse_args(argv)
    value = os.urandom(args.value_size)
    groups = {g.strip() for g in args.only.split(",") if g.strip()}
    rows: list[Row] = []
    if "frames" in groups:
        rows += bench_frames(args.seconds, value)
    if "core" in groups:
        rows += bench_core(args.seconds, value)
    if "peer" in groups:
        rows += bench_peer(args.seconds, value)
    if "zab" in groups:
        rows += bench_zab(args.seconds, value)
    if "storage" in groups:
        rows += bench_storage(args.seconds, value, args.dir)
    print_table(rows)
    if args.json_out:
        document = {
            "machine": machine_info(args.dir),
            "value_size": args.value_size,
            "seconds_per_row": args.seconds,
            "rows": [asdict(row) for row in rows],
        }
        Path(args.json_out).write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
