"""Zab scenarios written as readable transcripts: tests/testdata/zab/*.txt.

Each file is a list of commands, each followed by `----` and the output it must print, blocks
separated by a blank line; lines starting with `#` are comments. The commands drive replicas of
the pure core (the `Cluster` of test_zab_replica.py: FIFO links, a simulated disk per member,
every Ready's durable parts written before its messages are queued):

    start VOTERS... [observers IDS...] [setting=value ...]   members boot; nothing is delivered
    elect                   deliver, pump and tick until every member that is up serves
    submit M OP ARGS...     a local client's write at M (session 1): `session` opens session 1,
                            `create PATH [DATA]`, `set PATH DATA`, `delete PATH`; not yet pumped
    ready M                 take one Ready from M, make it durable, queue its messages
    deliver A->B [N]        hand the next N (default: all) queued messages on A->B to B
    drop A->B               lose every message queued on A->B (nobody is told)
    hold A->B / release A->B  messages on A->B wait on the link / may be delivered again
    stabilize               pump every member and deliver until nothing moves
    tick [N] [only IDS...]  N ticks of every member (or those listed), stabilizing after each
    crash M / restart M     M stops (its disk survives, its links break) / boots from its disk
    cut A B / heal          messages between A and B vanish, both ends told / links work again
    status                  every member's role, epoch, log, applied point and znodes

`stabilize`, `tick` and `restart` print the messages delivered meanwhile, except election
notifications and heartbeats. Zxids print as epoch:counter.

Set ZKPY_REWRITE_TESTDATA=1 to rewrite the expected output in the files from what the commands
print now (then read the diff before committing it).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_zab_replica import Cluster
from zkpy.core.requests import (
    CreateRequest,
    CreateSessionRequest,
    DeleteRequest,
    SetDataRequest,
    WriteRequest,
)
from zkpy.core.txn import (
    AttachSession,
    CloseSession,
    Create,
    CreateSession,
    Delete,
    ErrorTxn,
    Op,
    SetData,
    TxnRecord,
)
from zkpy.core.types import OPEN_ACL_UNSAFE
from zkpy.zab.messages import (
    Ack,
    AckEpoch,
    AckNewLeader,
    Commit,
    EarlyPropose,
    FollowerInfo,
    Forward,
    Logged,
    LoggedPropose,
    NewEpoch,
    NewLeader,
    Notification,
    PeerMessage,
    Ping,
    Propose,
    SyncDone,
    SyncRequest,
    UpToDate,
)
from zkpy.zab.ready import Ready

TESTDATA = Path(__file__).parent / "testdata" / "zab"
REWRITE = os.environ.get("ZKPY_REWRITE_TESTDATA") == "1"
SESSION = 1
QUIET = (Notification, Ping)  # election chatter and heartbeats: not printed by stabilize/tick


# ---- describing values -------------------------------------------------------------------------


def z(zxid: int) -> str:
    return f"{zxid >> 32}:{zxid & 0xFFFFFFFF}"


def describe_op(op: Op) -> str:
    match op:
        case Create(path, data):
            return f"create {path}={(data or b'').decode()}"
        case SetData(path, data):
            return f"set {path}={(data or b'').decode()}"
        case Delete(path):
            return f"delete {path}"
        case CreateSession(session_id):
            return f"open session {session_id}"
        case CloseSession(session_id):
            return f"close session {session_id}"
        case AttachSession(session_id):
            return f"attach session {session_id}"
        case ErrorTxn(code):
            return f"error {code}"
    return type(op).__name__


def records(items: tuple[TxnRecord, ...] | list[TxnRecord]) -> str:
    return "[" + ", ".join(f"{z(r.zxid)} {describe_op(r.op)}" for r in items) + "]"


def describe(message: PeerMessage) -> str:
    match message:
        case Propose(items) | LoggedPropose(items) | EarlyPropose(items):
            return f"{type(message).__name__} {records(items)}"
        case Ack(zxid) | Commit(zxid) | UpToDate(zxid) | Logged(zxid):
            return f"{type(message).__name__} {z(zxid)}"
        case FollowerInfo(accepted, last, committed, observer):
            role = " observer" if observer else ""
            return f"FollowerInfo{role} accepted={accepted} last={z(last)} applied={z(committed)}"
        case NewEpoch(epoch):
            return f"NewEpoch {epoch}"
        case AckEpoch(current, last, committed):
            return f"AckEpoch current={current} last={z(last)} applied={z(committed)}"
        case NewLeader(epoch, mode, truncate_after, snapshot, items):
            how = mode.name
            if snapshot is not None:
                how += f" snapshot@{z(snapshot.zxid)}"
            if how == "TRUNC":
                how += f" after={z(truncate_after)}"
            return f"NewLeader epoch={epoch} {how} {records(items)}"
        case AckNewLeader(epoch, last):
            return f"AckNewLeader epoch={epoch} last={z(last)}"
        case Forward(writes):
            return f"Forward {len(writes)} writes"
        case SyncRequest() | SyncDone():
            return type(message).__name__
    return repr(message)


# ---- the interpreter ---------------------------------------------------------------------------


class Scenario:
    """Runs one command at a time against a Cluster and returns what it prints."""

    def __init__(self) -> None:
        self.cluster: Cluster | None = None
        self.cxid = 0
        self.printed: list[str] = []

    @property
    def c(self) -> Cluster:
        assert self.cluster is not None, "start the members first"
        return self.cluster

    def run(self, line: str) -> str:
        words = shlex.split(line)
        handler: Callable[[list[str]], None] = getattr(self, "do_" + words[0].replace("-", "_"))
        self.printed = []
        handler(words[1:])
        return "\n".join(self.printed) if self.printed else "ok"

    def out(self, text: str) -> None:
        self.printed.append(text)

    def delivered(self, source: int, target: int, message: PeerMessage) -> None:
        if not isinstance(message, QUIET):
            self.out(f"{source}->{target} {describe(message)}")

    # ---- commands ------------------------------------------------------------------------------

    def do_start(self, args: list[str]) -> None:
        split = args.index("observers") if "observers" in args else len(args)
        voters = [int(a) for a in args[:split] if a.isdigit()]
        observers = [int(a) for a in args[split:] if a.isdigit()]
        assert voters == list(range(1, len(voters) + 1)), "voters are 1..n"
        assert observers == list(range(len(voters) + 1, len(voters) + len(observers) + 1))
        settings = {
            key: value == "true" if value in ("true", "false") else int(value)
            for key, value in (a.split("=") for a in args if "=" in a)
        }
        self.cluster = StepCluster(self.delivered, len(voters), len(observers), **settings)

    def do_elect(self, args: list[str]) -> None:
        self.c.run()
        self.c.settle()
        self.printed = []
        self.do_status([])

    def do_submit(self, args: list[str]) -> None:
        member, kind, *rest = args
        self.cxid += 1
        self.c.r(int(member)).submit(SESSION, self.cxid, request(kind, rest))

    def do_ready(self, args: list[str]) -> None:
        member = int(args[0])
        self.print_ready(member, self.c.take(member))

    def print_ready(self, member: int, ready: Ready) -> None:
        if ready.epochs is not None:
            self.out(f"epochs accepted={ready.epochs[0]} current={ready.epochs[1]}")
        if ready.install is not None:
            self.out(f"install snapshot@{z(ready.install.zxid)}")
        if ready.truncate_after is not None:
            self.out(f"truncate after {z(ready.truncate_after)}")
        if ready.persist:
            self.out(f"persist {records(ready.persist)}")
        early, late = ready.split_messages()
        for target, message in early:
            self.out(f"send {member}->{target} {describe(message)}")
        for target, message in late:
            self.out(f"send {member}->{target} {describe(message)}  (once durable)")
        if ready.committed:
            self.out(f"apply {records(ready.committed)}")
        for session_id, cxid in ready.rejected:
            self.out(f"reject session {session_id} request {cxid}")

    def do_deliver(self, args: list[str]) -> None:
        source, target = (int(x) for x in args[0].split("->"))
        queue = self.c.links.get((source, target))
        count = int(args[1]) if len(args) > 1 else len(queue or ())
        for _ in range(count):
            self.c.deliver(source, target)

    def do_drop(self, args: list[str]) -> None:
        source, target = (int(x) for x in args[0].split("->"))
        for message in self.c.links.pop((source, target), ()):
            self.out(f"lost {source}->{target} {describe(message)}")

    def do_hold(self, args: list[str]) -> None:
        source, target = (int(x) for x in args[0].split("->"))
        self.c.held[(source, target)] = lambda message: True

    def do_release(self, args: list[str]) -> None:
        source, target = (int(x) for x in args[0].split("->"))
        del self.c.held[(source, target)]

    def do_stabilize(self, args: list[str]) -> None:
        for i in self.c.alive:
            self.c.pump(i)
        self.c.run()

    def do_tick(self, args: list[str]) -> None:
        count = int(args[0]) if args and args[0].isdigit() else 1
        only = [int(a) for a in args[args.index("only") + 1 :]] if "only" in args else None
        self.c.tick(count, only)

    def do_crash(self, args: list[str]) -> None:
        self.c.crash(int(args[0]))

    def do_restart(self, args: list[str]) -> None:
        self.c.restart(int(args[0]))

    def do_cut(self, args: list[str]) -> None:
        self.c.cut(int(args[0]), int(args[1]))

    def do_heal(self, args: list[str]) -> None:
        self.c.heal()

    def do_status(self, args: list[str]) -> None:
        cluster = self.c
        for i in cluster.ids:
            replica = cluster.replicas[i]
            if replica is None:
                self.out(f"{i}: down")
                continue
            state = "serving" if replica.serving else replica.phase.value
            tree = replica.tree
            nodes = " ".join(
                f"{path}={(node.data or b'').decode()}"
                for path in sorted(tree.nodes)
                if path != "/" and not path.startswith("/zookeeper")
                for node in (tree.nodes[path],)
            )
            self.out(
                f"{i}: {replica.role} {state} epoch={replica.current_epoch}"
                f" logged={z(replica.last_logged)} applied={z(tree.last_zxid)}"
                + (f" {nodes}" if nodes else "")
            )


class StepCluster(Cluster):
    """A Cluster that leaves the first election to the transcript's `elect` and reports every
    message it delivers."""

    def __init__(
        self,
        delivered: Callable[[int, int, PeerMessage], None],
        voters: int,
        observers: int,
        **settings: int,
    ) -> None:
        self._booting = True
        self._delivered = delivered
        super().__init__(voters, observers, disks=None, **settings)

    def deliver(self, source: int, target: int) -> PeerMessage:
        message = super().deliver(source, target)
        self._delivered(source, target, message)
        return message

    def run(self, limit: int = 20_000) -> None:
        if self._booting:
            self._booting = False  # Cluster.__init__ runs the network once: not yet
            return
        super().run(limit)


def request(kind: str, args: list[str]) -> WriteRequest:
    match kind, args:
        case "session", []:
            return CreateSessionRequest(SESSION, 60_000, b"pw")
        case "create", [path]:
            return CreateRequest(path, b"", OPEN_ACL_UNSAFE)
        case "create", [path, data]:
            return CreateRequest(path, data.encode(), OPEN_ACL_UNSAFE)
        case "set", [path, data]:
            return SetDataRequest(path, data.encode())
        case "delete", [path]:
            return DeleteRequest(path)
    raise ValueError(f"unknown write: {kind} {args}")


# ---- the files ---------------------------------------------------------------------------------


@dataclass
class Block:
    comments: list[str]
    command: str
    expected: str


def parse(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    comments: list[str] = []
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            comments.append(line)
            i += 1
            continue
        assert lines[i + 1] == "----", f"line {i + 2}: a command is followed by ----"
        j = i + 2
        while j < len(lines) and lines[j].strip():
            j += 1
        blocks.append(Block(comments, line, "\n".join(lines[i + 2 : j])))
        comments = []
        i = j
    return blocks


def render(blocks: list[Block], outputs: list[str]) -> str:
    parts: list[str] = []
    for block, output in zip(blocks, outputs, strict=True):
        parts += block.comments
        parts += [block.command, "----", output]
    return "\n".join(parts) + "\n"


@pytest.mark.parametrize("path", sorted(TESTDATA.glob("*.txt")), ids=lambda p: p.stem)
def test_scenario(path: Path) -> None:
    blocks = parse(path.read_text())
    scenario = Scenario()
    outputs = [scenario.run(block.command) for block in blocks]
    if REWRITE:
        path.write_text(render(blocks, outputs))
        return
    for block, output in zip(blocks, outputs, strict=True):
        assert output == block.expected, f"{path.name}: {block.command}"
