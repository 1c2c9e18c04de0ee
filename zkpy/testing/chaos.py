"""`zkpy chaos`: a real ensemble on loopback, a concurrent workload, injected faults, and a check
of the recorded history, Jepsen-style, on one machine.

Every peer link runs through a proxy (`zkpy.testing.proxy`) that the nemesis controls. Nemeses:
kill (kill -9 and restart, the leader half of the time), pause (SIGSTOP / SIGCONT: a long GC
pause), partition (random halves, isolate the leader, a one-way cut, a bridge), delay (slow
links), drop (reset links: what a lost packet does to TCP), client-pause (stop a client process
past its session timeout), power (kill -9 every member at once), reconfig (remove voters down to
three, then add them back: 5 -> 3 -> 5 with `--size 5`). Afterwards everything is healed (every
member back in the membership), the ensemble must converge, and the history is checked:
linearizability of the registers (per key), uniqueness and order of sequential names, no
acknowledged write lost, no watch event missed, no ephemeral outliving its session, and identical
final state on every member.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import sys
import tempfile
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

import zkpy
from zkpy.core.acl import digest_id
from zkpy.core.membership import CONFIG_PATH, parse_membership
from zkpy.server.wal import MIN_SEGMENT_BYTES
from zkpy.testing.ensemble import Ensemble, Member
from zkpy.testing.ports import free_ports
from zkpy.testing.proxy import LinkProxy
from zkpy.testing.workload import EPHEMERALS, REGISTERS, SEQUENCES

log = logging.getLogger("zkpy.chaos")

NEMESES = ("kill", "pause", "partition", "delay", "drop", "client-pause", "power", "reconfig")
RECONFIG_FLOOR = 3  # the reconfig nemesis removes voters down to this many
SESSION_TIMEOUT_S = 4.0
CHAOS_SETTINGS: dict[str, Any] = {
    "tick_ms": 200,
    "peer_tick_ms": 50,
    "sync_limit": 20,
    "init_limit": 60,
    # every restart starts a segment, and rolling over under faults is worth testing
    "log_segment_bytes": MIN_SEGMENT_BYTES,
}


@dataclass(slots=True)
class ChaosOptions:
    """What `zkpy chaos` runs: the ensemble, the workload, the faults and the seed."""

    size: int = 3
    seconds: float = 60.0
    nemeses: tuple[str, ...] = ("kill", "pause", "partition")
    seed: int = 0
    clients: int = 3
    workers: int = 4
    keys: int = 5
    interval_s: float = 2.0  # quiet time between faults
    fault_s: float = 3.0  # how long a fault lasts
    workdir: Path | None = None
    fsync: bool = True  # False is UNSAFE: the run must then find lost writes


@dataclass(slots=True)
class Report:
    """What a run did and found: the faults, the outcomes and every violation."""

    seed: int
    workdir: str
    outcomes: dict[str, int] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    lost_writes: list[str] = field(default_factory=list)
    checked_keys: int = 0
    history_files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No violation and no lost write."""
        return not self.violations and not self.lost_writes

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (report.json)."""
        return {
            "ok": self.ok,
            "seed": self.seed,
            "workdir": self.workdir,
            "outcomes": self.outcomes,
            "faults": self.faults,
            "violations": self.violations,
            "lost_writes": self.lost_writes,
            "checked_keys": self.checked_keys,
            "history_files": self.history_files,
        }


class Chaos:
    """One chaos run; see the module docstring."""

    def __init__(self, options: ChaosOptions) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        workdir = options.workdir or Path(tempfile.mkdtemp(prefix="zkpy-chaos-"))
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.report = Report(options.seed, str(workdir))
        self.proxy = LinkProxy()
        self.members: dict[int, Member] = {}
        self.configs: dict[int, Path] = {}
        self.clients: list[trio.Process] = []
        self._layout()

    # ---- the ensemble ------------------------------------------------------------------------

    def _layout(self) -> None:
        """The members on free ports, and one TOML file per member in which every peer is
        reached through the proxy of that directed link."""
        size = self.options.size
        ids = list(range(1, size + 1))
        secret = f"chaos-{self.options.seed}-{self.rng.getrandbits(64):x}"
        self.admin = ("chaos", secret)  # the super user, for the reconfig nemesis
        self.ensemble = Ensemble(
            self.workdir,
            size,
            secret=secret,
            fast=False,
            log_level="INFO",
            fsync=self.options.fsync,  # False is UNSAFE: the run must then find lost writes
            super_digest=digest_id(*self.admin).id,
            **CHAOS_SETTINGS,
        )
        self.members = self.ensemble.members
        taken = [port for m in self.members.values() for port in (m.client_port, m.peer_port)]
        links = iter(free_ports(size * (size - 1), besides=taken))
        for me in ids:
            via: dict[int, int] = {}
            for other in ids:
                if other != me:
                    via[other] = next(links)
                    self.proxy.add(me, other, via[other], self.members[other].peer_port)
            path = self.workdir / f"member-{me}.toml"
            self.configs[me] = self.ensemble.write_config(path, secret, peer_ports=via)

    @property
    def hosts(self) -> str:
        """The client connection string of every member."""
        return ",".join(f"127.0.0.1:{m.client_port}" for m in self.members.values())

    def start_member(self, member: Member) -> None:
        """Start (or restart) `member` from its own TOML file (peers through the proxy)."""
        member.start(self.configs[member.id])

    async def status(self, member: Member) -> dict[str, Any] | None:
        """`member`'s status, or None if it is down, paused or does not answer."""
        if not member.running or member.paused:
            return None
        return await member.status()

    async def leader(self) -> Member | None:
        """The first member that says it leads and serves, if any."""
        for member in self.members.values():
            status = await self.status(member)
            if status is not None and status.get("role") == "leader" and status.get("serving"):
                return member
        return None

    async def wait_converged(self, timeout: float = 30.0) -> bool:
        """Every member serving, all at the same last zxid."""
        with trio.move_on_after(timeout):
            while True:
                statuses = [await self.status(m) for m in self.members.values()]
                if all(s is not None and s.get("serving") for s in statuses):
                    zxids = {s["committed_zxid"] for s in statuses if s is not None}
                    if len(zxids) == 1:
                        return True
                await trio.sleep(0.2)
        return False

    # ---- faults ------------------------------------------------------------------------------

    async def _victim(self) -> Member:
        if self.rng.random() < 0.5:
            leader = await self.leader()
            if leader is not None:
                return leader
        alive = [m for m in self.members.values() if m.running and not m.paused]
        return self.rng.choice(alive or list(self.members.values()))

    async def inject(self, nemesis: str) -> None:
        """Apply one fault for `fault_s`, then heal it."""
        faults = {
            "kill": self._kill,
            "power": self._power,
            "pause": self._pause,
            "partition": self._partition_and_heal,
            "delay": self._delay,
            "drop": self._drop,
            "client-pause": self._pause_a_client,
            "reconfig": self._reconfig,
        }
        fault = faults.get(nemesis)
        if fault is None:
            raise ValueError(f"unknown nemesis {nemesis!r} (known: {', '.join(NEMESES)})")
        await fault(self.options.fault_s)

    async def _kill(self, fault_s: float) -> None:
        victim = await self._victim()
        if victim.running:
            self.note(f"kill -9 member {victim.id}")
            await victim.process.kill9()
        await trio.sleep(fault_s)
        self.start_member(victim)
        self.note(f"restart member {victim.id}")

    async def _power(self, fault_s: float) -> None:
        self.note("kill -9 every member at once (a power cut)")
        for member in self.members.values():
            if member.running:
                await member.process.kill9()
        await trio.sleep(fault_s)
        for member in self.members.values():
            self.start_member(member)
        self.note("restart every member")

    async def _pause(self, fault_s: float) -> None:
        victim = await self._victim()
        if victim.running:
            self.note(f"SIGSTOP member {victim.id}")
            victim.process.pause()
            await trio.sleep(fault_s)
            victim.process.resume()
            self.note(f"SIGCONT member {victim.id}")

    async def _partition_and_heal(self, fault_s: float) -> None:
        await self._partition()
        await trio.sleep(fault_s)
        self.proxy.heal_all()
        self.note("heal")

    async def _delay(self, fault_s: float) -> None:
        for link in self.proxy.links.values():
            if self.rng.random() < 0.5:
                link.delay_s = self.rng.uniform(0.01, 0.1)
        self.note("delay random links by 10-100 ms")
        await trio.sleep(fault_s)
        self.proxy.heal_all()

    async def _drop(self, fault_s: float) -> None:
        links = list(self.proxy.links.values())
        for link in self.rng.sample(links, max(1, len(links) // 3)):
            link.reset()
        self.note("reset a third of the links")
        await trio.sleep(fault_s)

    async def _pause_a_client(self, fault_s: float) -> None:
        # client 0 hosts the watcher: pausing it past its timeout would end the watch
        candidates = self.clients[1:] or self.clients
        alive = [c for c in candidates if c.returncode is None]
        if alive:
            victim_client = self.rng.choice(alive)
            self.note(f"SIGSTOP client pid {victim_client.pid} past its session timeout")
            victim_client.send_signal(signal.SIGSTOP)
            await trio.sleep(SESSION_TIMEOUT_S * 1.5 + 1)
            victim_client.send_signal(signal.SIGCONT)

    async def _reconfig(self, fault_s: float) -> None:
        """Remove voters down to RECONFIG_FLOOR (the leader among them half of the time), or
        add every member that is out back; a refusal (no quorum in sync, another change in
        flight) is part of the game and only noted."""
        current = await self._membership()
        if current is None:
            self.note("reconfig: no member answers")
        else:
            outside = sorted(set(self.members) - current)
            removable = sorted(current)
            if outside and (len(current) <= RECONFIG_FLOOR or self.rng.random() < 0.5):
                await self._change(add=outside)
            elif len(removable) > RECONFIG_FLOOR:
                count = self.rng.randint(1, len(removable) - RECONFIG_FLOOR)
                leader = await self.leader()
                chosen = self.rng.sample(removable, count)
                if leader is not None and leader.id not in chosen and self.rng.random() < 0.5:
                    chosen[0] = leader.id
                await self._change(remove=sorted(chosen))
        await trio.sleep(fault_s)

    async def _membership(self) -> set[int] | None:
        """The ids of the membership in force (every member before the first change)."""
        with trio.move_on_after(10):
            try:
                async with self._admin_session() as zk:
                    await zk.sync("/")
                    if not await zk.exists(CONFIG_PATH):
                        return set(self.members)
                    data, _stat = await zk.get(CONFIG_PATH)
                    return set(parse_membership(data).ids)
            except (zkpy.errors.ZkError, OSError) as err:
                log.info("reading the membership: %s", err)
        return None

    async def _change(self, add: Sequence[int] = (), remove: Sequence[int] = ()) -> bool:
        """One reconfig; True if it committed."""
        adds = [
            f"{i}=127.0.0.1:{self.members[i].client_port}:{self.members[i].peer_port}" for i in add
        ]
        what = f"reconfig: add {list(add)} remove {list(remove)}"
        with trio.move_on_after(15):
            try:
                async with self._admin_session() as zk:
                    data, _stat = await zk.reconfig(add=adds, remove=remove)
                voters = sorted(parse_membership(data).voters)
                self.note(f"{what}: voters now {voters}")
                return True
            except (zkpy.errors.ZkError, OSError) as err:
                self.note(f"{what}: refused or lost ({type(err).__name__})")
                return False
        self.note(f"{what}: no answer within 15 s")
        return False

    def _admin_session(self) -> AbstractAsyncContextManager[zkpy.Client]:
        return zkpy.connect(
            self.hosts,
            session_timeout=10.0,
            connect_timeout=5.0,
            auth=[("digest", ":".join(self.admin))],
        )

    async def _restore_membership(self) -> None:
        """Add back every member the reconfig nemesis left out, for the final checks."""
        if "reconfig" not in self.options.nemeses:
            return
        with trio.move_on_after(60):
            while True:
                current = await self._membership()
                if current is not None:
                    outside = sorted(set(self.members) - current)
                    if not outside or await self._change(add=outside):
                        return
                await trio.sleep(1.0)
        self.report.violations.append("the membership could not be restored after healing")

    async def _partition(self) -> None:
        ids = sorted(self.members)
        kind = self.rng.choice(["halves", "isolate-leader", "one-way", "bridge"])
        if kind == "isolate-leader":
            leader = await self.leader()
            side = {leader.id if leader else self.rng.choice(ids)}
        elif kind == "bridge" and len(ids) >= 3:
            shuffled = self.rng.sample(ids, len(ids))
            bridge, rest = shuffled[0], shuffled[1:]
            left, right = set(rest[: len(rest) // 2]), set(rest[len(rest) // 2 :])
            for a in left:
                for b in right:
                    self.proxy.links[(a, b)].block()
                    self.proxy.links[(b, a)].block()
            self.note(f"bridge partition: {sorted(left)} | {bridge} | {sorted(right)}")
            return
        elif kind == "one-way":
            a, b = self.rng.sample(ids, 2)
            self.proxy.links[(a, b)].block()
            self.note(f"one-way cut {a} -> {b}")
            return
        else:
            side = set(self.rng.sample(ids, len(ids) // 2))
        for a in side:
            for b in ids:
                if b not in side:
                    self.proxy.links[(a, b)].block()
                    self.proxy.links[(b, a)].block()
        self.note(f"partition {sorted(side)} from the rest ({kind})")

    def note(self, text: str) -> None:
        """Record a fault in the report and the log."""
        self.report.faults.append(text)
        log.info("nemesis: %s", text)

    # ---- the run -----------------------------------------------------------------------------

    async def run(self) -> Report:
        """Start everything, inject faults until the time is up, heal, check; the report."""
        options = self.options
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.proxy.run)
                for member in self.members.values():
                    self.start_member(member)
                if not await self.wait_converged(timeout=30):
                    self.report.violations.append("the ensemble did not start serving")
                    nursery.cancel_scope.cancel()
                    return self.report
                await self._start_clients()
                deadline = trio.current_time() + options.seconds
                while trio.current_time() < deadline:
                    await trio.sleep(options.interval_s)
                    if trio.current_time() >= deadline:
                        break
                    await self.inject(self.rng.choice(options.nemeses))
                await self._heal_everything()
                await self._restore_membership()
                await self._wait_clients(options.seconds + 30)
                if not await self.wait_converged():
                    self.report.violations.append("the ensemble did not converge after healing")
                final = await self._final_reads()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._stop_all()
        (self.workdir / "final.json").write_text(json.dumps(final, indent=1))
        self._analyze(final)
        (self.workdir / "report.json").write_text(json.dumps(self.report.as_dict(), indent=2))
        return self.report

    async def _start_clients(self) -> None:
        for index in range(self.options.clients):
            out = self.workdir / f"client-{index}.jsonl"
            self.report.history_files.append(str(out))
            command = [
                sys.executable,
                "-m",
                "zkpy.testing.workload",
                "--hosts",
                self.hosts,
                "--out",
                str(out),
                "--seconds",
                str(self.options.seconds),
                "--seed",
                str(self.options.seed * 1000 + index),
                "--process",
                str(index),
                "--keys",
                str(self.options.keys),
                "--workers",
                str(self.options.workers),
                "--resource-dir",
                str(self.workdir),
            ]
            with open(self.workdir / f"client-{index}.log", "ab") as log_file:
                self.clients.append(
                    await trio.lowlevel.open_process(command, stdout=log_file, stderr=log_file)
                )

    async def _heal_everything(self) -> None:
        self.proxy.heal_all()
        for member in self.members.values():
            if member.paused:
                member.process.resume()
            if not member.running:
                self.start_member(member)
        for client in self.clients:
            if client.returncode is None:
                client.send_signal(signal.SIGCONT)

    async def _wait_clients(self, timeout: float) -> None:
        with trio.move_on_after(timeout):
            for client in self.clients:
                await client.wait()
        for client in self.clients:
            if client.returncode is None:
                self.report.violations.append(f"client pid {client.pid} did not finish")
                client.kill()

    async def _final_reads(self) -> dict[int, dict[str, Any]]:
        """Each member's own view of the final state (after a sync)."""
        views: dict[int, dict[str, Any]] = {}
        # sessions of the clients are closed; those of killed ones expire after their timeout
        await trio.sleep(SESSION_TIMEOUT_S * 1.5)
        for member in self.members.values():
            try:
                async with zkpy.connect(
                    f"127.0.0.1:{member.client_port}", session_timeout=10.0, connect_timeout=5.0
                ) as zk:
                    await zk.sync("/")
                    views[member.id] = await _final_view(zk)
            except (zkpy.errors.ZkError, OSError) as err:
                self.report.violations.append(f"member {member.id} unreadable at the end: {err}")
        return views

    async def _stop_all(self) -> None:
        for member in self.members.values():
            if member.running:
                await member.process.kill9()  # SIGKILL ends a paused process too
        for client in self.clients:
            if client.returncode is None:
                client.send_signal(signal.SIGCONT)
                client.kill()
                await client.wait()

    # ---- checking ----------------------------------------------------------------------------

    def _analyze(self, final: dict[int, dict[str, Any]]) -> None:
        from zkpy.testing.history import analyze

        analyze(self.report, self.report.history_files, final)


async def _final_view(zk: zkpy.Client) -> dict[str, Any]:
    """One member's registers, sequences and ephemerals. A folder that is missing (a member
    that lost writes it had acknowledged, as an unsafe run can) holds nothing: the history
    checks then report each write it lost, instead of the member being unreadable."""

    async def children(path: str) -> list[str]:
        try:
            return sorted(await zk.get_children(path))
        except zkpy.errors.NoNodeError:
            return []

    view: dict[str, Any] = {"registers": {}, "zxid": 0}
    for key in await children(REGISTERS):
        data, stat = await zk.get(f"{REGISTERS}/{key}")
        view["registers"][key] = [data.decode(), stat.version, stat.mzxid]
    view["sequences"] = await children(SEQUENCES)
    view["ephemerals"] = await children(EPHEMERALS)
    return view


def run_chaos(options: ChaosOptions) -> Report:
    """Run one chaos run to its end (blocking) and return its report."""
    return trio.run(Chaos(options).run)


def print_report(report: Report, out: Any = sys.stdout) -> None:
    """Print `report` for a person: the faults, the checks, OK or FAILED."""
    print(f"zkpy chaos, seed {report.seed}, history in {report.workdir}", file=out)
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items()))
    print(f"operations: {outcomes or 'none'}", file=out)
    print(f"faults injected ({len(report.faults)}):", file=out)
    for fault in report.faults:
        print(f"  {fault}", file=out)
    print(f"keys checked for linearizability: {report.checked_keys}", file=out)
    print(f"acknowledged writes lost: {len(report.lost_writes)}", file=out)
    for lost in report.lost_writes[:20]:
        print(f"  {lost}", file=out)
    print(f"violations: {len(report.violations)}", file=out)
    for violation in report.violations[:50]:
        print(f"  {violation}", file=out)
    print("OK" if report.ok else "FAILED", file=out)


def parse_nemeses(text: str) -> tuple[str, ...]:
    """The nemeses named in a comma-separated list; ValueError for an unknown one."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in NEMESES]
    if unknown or not names:
        raise ValueError(f"unknown nemesis {unknown} (known: {', '.join(NEMESES)})")
    return names


__all__: Sequence[str] = [
    "NEMESES",
    "Chaos",
    "ChaosOptions",
    "Report",
    "parse_nemeses",
    "print_report",
    "run_chaos",
]
