"""Start and stop the ensembles the benchmarks run against, on loopback, in temporary folders.

- `ZkpyEnsemble`: N `zkpy server` members from one TOML file with the members' default settings,
  in a temporary data dir, started by `zkpy.testing.ensemble` (the launcher the test suite and
  `zkpy chaos` use too).
- `ZooKeeperEnsemble`: Apache ZooKeeper from Debian's `zookeeper` package, one JVM per member
  (`QuorumPeerMain`), configured here (no system files are touched).

Both are context managers: leaving the block stops every process they started (SIGTERM, then
SIGKILL after a grace period) and removes the temporary folder.

`Ensemble.pin` pins each member's process to one CPU by its role (`placement`), the same way for
either system: the benchmarks' `--pin` (docs/decisions/0046).
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import trio

from zkpy.client.admin import fetch_status
from zkpy.testing import ensemble as launch
from zkpy.testing.ports import free_ports

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
LEADS = ("leader", "standalone")  # the roles that order writes


class EnsembleError(RuntimeError):
    pass


@dataclass
class Member:
    id: int
    host: str
    port: int
    pid: int
    role: str = "?"
    cpu: int | None = None  # pinned to, by Ensemble.pin

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process (all its threads) in seconds, from /proc/PID/stat; zeros if
    it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # fields 14 and 15 of stat(5)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat; 0.0 if it is gone."""
    return sum(cpu_times(pid))


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used (non-idle time of /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def placement(roles: dict[int, str], cpus: list[int]) -> dict[int, int]:
    """The CPU each member is pinned to: the leader (or a standalone member) alone on the first
    of `cpus`, the other members round robin over the rest (with one CPU, all on it). Members
    that share a CPU then never include the leader, whom the clients' follower waits on in
    every write."""
    leaders = sorted(member for member, role in roles.items() if role in LEADS)
    if not leaders:
        raise ValueError(f"no member leads: {roles}")
    others = sorted(member for member in roles if member not in leaders)
    rest = cpus[1:] or cpus[:1]
    chosen = {member: cpus[0] for member in leaders}
    chosen.update({member: rest[index % len(rest)] for index, member in enumerate(others)})
    return chosen


def pin_process(pid: int, cpu: int) -> None:
    """Pin every thread of process `pid` to `cpu`. A thread inherits its creator's CPUs, so
    the threads are listed again until a pass finds none it has not pinned: one started by a
    thread not pinned yet is caught by the next pass."""
    pinned: set[int] = set()
    while True:
        threads = {int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()} - pinned
        if not threads:
            return
        for thread in threads:
            with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                os.sched_setaffinity(thread, {cpu})
        pinned |= threads


def _stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM the processes, wait, then SIGKILL whatever is left."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(OSError):
                process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


class Ensemble(abc.ABC):
    """What the benchmark needs of an ensemble: members (with roles and pids) to connect to."""

    system = "?"

    def __init__(self, size: int, base_dir: str | None) -> None:
        self.size = size
        self.base_dir = base_dir
        self.members: list[Member] = []
        self.tmp: str | None = None
        self.processes: list[subprocess.Popen[bytes]] = []
        self.log_paths: list[Path] = []

    def __enter__(self) -> Self:
        self.tmp = tempfile.mkdtemp(prefix=f"bench-{self.system}-{self.size}-", dir=self.base_dir)
        try:
            self.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @abc.abstractmethod
    def start(self) -> None:
        """Start every member."""

    @abc.abstractmethod
    def roles(self) -> dict[int, str] | None:
        """Each member's role, or None while the ensemble is not serving yet."""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            for process in self.processes:
                if process.poll() is not None:
                    raise EnsembleError(
                        f"{self.system} exited with {process.returncode} while starting"
                        + self.log_tail()
                    )
            roles = self.roles()
            if roles is not None:
                for member in self.members:
                    member.role = roles[member.id]
                return
            if time.monotonic() > deadline:
                raise EnsembleError(f"{self.system} ensemble not serving after {START_TIMEOUT_S}s")
            time.sleep(0.2)

    def client_targets(self) -> list[Member]:
        """Where benchmark clients connect: the followers, or the only member."""
        followers = [m for m in self.members if m.role == "follower"]
        return followers or list(self.members)

    def counters(self) -> dict[int, dict[str, int]] | None:
        """Per member counters that show group commit (fsynced batches, last zxid), if known."""
        return None

    def cpu(self) -> dict[int, float]:
        return {member.id: cpu_seconds(member.pid) for member in self.members}

    def log_tail(self) -> str:
        text = ""
        for path in self.log_paths:
            with contextlib.suppress(OSError):
                lines = path.read_text(errors="replace").splitlines()[-15:]
                text += f"\n--- {path} ---\n" + "\n".join(lines)
        return text

    def stop(self) -> None:
        try:
            self.stop_members()
        finally:
            self.processes = []
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                self.tmp = None

    def stop_members(self) -> None:
        """Stop every member process: SIGTERM, then SIGKILL after a grace period."""
        _stop_processes(self.processes)

    def pin(self) -> None:
        """Pin each member's process to a CPU by its role (`placement`), kept in its `cpu`;
        the clients the benchmarks start are left to the scheduler."""
        cpus = sorted(os.sched_getaffinity(0))
        chosen = placement({member.id: member.role for member in self.members}, cpus)
        for member in self.members:
            try:
                pin_process(member.pid, chosen[member.id])
            except FileNotFoundError:
                raise EnsembleError(f"{self.system} member {member.id} has exited") from None
            member.cpu = chosen[member.id]

    def describe(self) -> str:
        return ", ".join(
            f"{m.id}:{m.role}@{m.port}" + ("" if m.cpu is None else f" cpu {m.cpu}")
            for m in self.members
        )


class ZkpyEnsemble(Ensemble):
    system = "zkpy"
    launched: launch.Ensemble | None = None

    def start(self) -> None:
        assert self.tmp is not None
        self.launched = launch.Ensemble(Path(self.tmp), self.size, fast=False, log_level="WARNING")
        self._launch()

    def restart(self) -> float:
        """Stop every member (SIGTERM), start them again on the same data and ports, and return
        the seconds from the start until every member serves again."""
        self.stop_members()
        started = time.monotonic()
        self._launch()
        self.wait_ready()
        return time.monotonic() - started

    def _launch(self) -> None:
        assert self.launched is not None
        self.launched.start_all()
        self.members = [
            Member(member.id, HOST, member.client_port, member.pid or 0)
            for member in self.launched.members.values()
        ]

    def stop_members(self) -> None:
        if self.launched is not None:
            trio.run(self.launched.stop_all, STOP_GRACE_S)

    def wait_ready(self) -> None:
        assert self.launched is not None
        for member in self.launched.members.values():
            if not member.running:
                raise EnsembleError(
                    f"zkpy member {member.id} exited with {member.process.returncode} while "
                    f"starting{self.log_tail()}"
                )
        super().wait_ready()

    def log_tail(self) -> str:
        if self.launched is None:
            return ""
        return "".join(
            f"\n--- member {m.id} ---\n" + "\n".join(m.log().splitlines()[-15:])
            for m in self.launched.members.values()
        )

    def statuses(self) -> dict[int, dict[str, Any]]:
        async def gather() -> dict[int, dict[str, Any]]:
            statuses = {}
            for member in self.members:
                statuses[member.id] = await fetch_status(member.host, member.port, timeout=2.0)
            return statuses

        return trio.run(gather)

    def counters(self) -> dict[int, dict[str, int]] | None:
        try:
            statuses = self.statuses()
        except Exception:
            return None
        return {
            member_id: {
                "batches": int(status.get("batches", 0)),
                "zxid_counter": int(status.get("last_zxid", 0)) & 0xFFFFFFFF,
            }
            for member_id, status in statuses.items()
        }

    def roles(self) -> dict[int, str] | None:
        try:
            statuses = self.statuses()
        except Exception:
            return None
        if not all(s.get("serving") for s in statuses.values()):
            return None
        roles = {member_id: str(s.get("role")) for member_id, s in statuses.items()}
        if self.size > 1 and sorted(roles.values()).count("leader") != 1:
            return None
        return roles


def find_zookeeper() -> tuple[str, list[str]] | None:
    """(java, classpath jars) of an installed Apache ZooKeeper (Debian's package), or None."""
    java = shutil.which("java")
    jar = Path("/usr/share/java/zookeeper.jar")
    installed = Path("/usr/share/zookeeper").is_dir() or shutil.which("zkServer.sh") is not None
    if java is None or not installed or not jar.exists():
        return None
    jars = [str(jar)]
    simple = Path("/usr/share/java/slf4j-simple.jar")  # a logger binding, for errors
    if simple.exists():
        jars.append(str(simple))
    return java, jars


def zookeeper_version() -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "zookeeper"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def four_letter(host: str, port: int, command: bytes, timeout: float = 2.0) -> str:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(command)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


class ZooKeeperEnsemble(Ensemble):
    """Apache ZooKeeper, one JVM per member; durable like zkpy (forceSync=yes, the default)."""

    system = "zookeeper"
    heap = "1g"

    def start(self) -> None:
        assert self.tmp is not None
        found = find_zookeeper()
        if found is None:
            raise EnsembleError("Apache ZooKeeper is not installed (apt-get install zookeeper)")
        java, jars = found
        ports = free_ports(3 * self.size, consecutive=True)
        client_base, quorum_base, election_base = ports[:: self.size]
        servers = [
            f"server.{i}={HOST}:{quorum_base + i - 1}:{election_base + i - 1}"
            for i in range(1, self.size + 1)
        ]
        for member_id in range(1, self.size + 1):
            home = Path(self.tmp) / f"member-{member_id}"
            data = home / "data"
            data.mkdir(parents=True)
            (data / "myid").write_text(f"{member_id}\n")
            config = [
                "tickTime=2000",
                "initLimit=10",
                "syncLimit=5",
                f"dataDir={data}",
                f"clientPort={client_base + member_id - 1}",
                f"clientPortAddress={HOST}",
                "maxClientCnxns=0",
                "admin.enableServer=false",
                "4lw.commands.whitelist=srvr,ruok,mntr",
                "forceSync=yes",
            ]
            if self.size > 1:
                config += servers
            (home / "zoo.cfg").write_text("\n".join(config) + "\n")
            log_path = home / "zookeeper.log"
            self.log_paths.append(log_path)
            command = [
                java,
                f"-Xmx{self.heap}",
                f"-Xms{self.heap}",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-Dzookeeper.admin.enableServer=false",
                "-cp",
                ":".join([str(home), *jars]),
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                str(home / "zoo.cfg"),
            ]
            with log_path.open("ab") as log:
                process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
            self.processes.append(process)
            self.members.append(Member(member_id, HOST, client_base + member_id - 1, process.pid))

    def roles(self) -> dict[int, str] | None:
        roles = {}
        for member in self.members:
            try:
                reply = four_letter(member.host, member.port, b"srvr")
            except OSError:
                return None
            mode = [line for line in reply.splitlines() if line.startswith("Mode:")]
            if not mode:
                return None
            roles[member.id] = mode[0].split(":", 1)[1].strip()
        if self.size > 1 and list(roles.values()).count("leader") != 1:
            return None
        return roles


SYSTEMS: dict[str, type[Ensemble]] = {"zkpy": ZkpyEnsemble, "zookeeper": ZooKeeperEnsemble}
