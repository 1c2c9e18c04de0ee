"""Real ensembles of `zkpy server --config F --id N` processes on loopback, for the end-to-end
tests in tests/test_ensemble_*.py.

`Ensemble` writes one TOML file for N voting members and M observers on free ports, starts,
stops (SIGTERM), kills (SIGKILL), pauses (SIGSTOP) and resumes (SIGCONT) member processes with
their logs captured to files, and waits for members by polling their status with a deadline.
Use it as a context manager: on the way out every process it started is killed, whatever
happened.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

import zkpy
from tests.conftest import child_env
from zkpy.client.admin import fetch_status
from zkpy.core.errors import ZkError
from zkpy.server.wal import MIN_SEGMENT_BYTES

# Fast settings: a peer tick of 50 ms, a follower gives up on a silent leader after 10 ticks
# (0.5 s); sessions may last 2..20 ticks of 200 ms, i.e. 0.4 .. 4 s.
FAST_SETTINGS: dict[str, Any] = {
    "tick_ms": 200,
    "peer_tick_ms": 50,
    "init_limit": 40,
    "sync_limit": 10,
    "log_segment_bytes": MIN_SEGMENT_BYTES,  # 64 MiB per member would fill the disk in a run
}
SESSION_TIMEOUT = 4.0  # the longest these settings allow

# Ports below the kernel's ephemeral range, so that no outgoing connection (a peer link, a
# client) can be given the port of a member that is down at the moment and is to restart.
_PORT_RANGE = (12000, 32000)


def free_ports(count: int, *, consecutive: bool = False) -> list[int]:
    """`count` loopback ports that are free now, outside the ephemeral range; with
    `consecutive`, a run of adjacent ports (for `zkpy ensemble`, which numbers them itself)."""
    for _attempt in range(200):
        if consecutive:
            base = random.randrange(_PORT_RANGE[0], _PORT_RANGE[1] - count)
            candidates = list(range(base, base + count))
        else:
            candidates = random.sample(range(*_PORT_RANGE), count)
        held: list[socket.socket] = []
        try:
            for port in candidates:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return candidates
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError("no free ports found")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def poll(
    condition: Any,
    *,
    timeout: float,
    interval: float = 0.02,
    what: str = "condition",
) -> Any:
    """Call `condition()` (sync or async) until it returns something truthy, and return that;
    fail after `timeout` seconds."""
    with trio.move_on_after(timeout):
        while True:
            result = condition()
            if hasattr(result, "__await__"):
                result = await result
            if result:
                return result
            await trio.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def try_status(host: str, port: int, timeout: float = 1.0) -> dict[str, Any] | None:
    """A member's status, or None if it does not answer (down, stopped, not listening yet)."""
    try:
        return await fetch_status(host, port, timeout=timeout)
    except (OSError, trio.TooSlowError, ZkError, ValueError):
        return None


class Member:
    """One member (voter or observer) of an `Ensemble`: its ports and its process."""

    def __init__(self, ensemble: Ensemble, member_id: int, observer: bool) -> None:
        self.ensemble = ensemble
        self.id = member_id
        self.observer = observer
        self.client_port, self.peer_port = 0, 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.logs: list[Path] = []
        self.paused = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def data_dir(self) -> Path:
        return self.ensemble.root / "data" / f"member-{self.id}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, config: Path | None = None) -> None:
        """Start the member's process (from `config`, by default the ensemble's file)."""
        assert not self.running, f"member {self.id} is already running"
        self.starts += 1
        log_path = self.ensemble.root / f"member-{self.id}-run-{self.starts}.log"
        self.logs.append(log_path)
        command = [
            sys.executable,
            "-m",
            "zkpy",
            "server",
            "--config",
            str(config or self.ensemble.config_path),
            "--id",
            str(self.id),
            "--log-level",
            self.ensemble.log_level,
        ]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=child_env()
            )
        self.paused = False

    def log(self) -> str:
        """Everything every run of this member has logged so far."""
        return "".join(
            f"----- {path.name}\n{path.read_text(errors='replace')}"
            for path in self.logs
            if path.exists()
        )

    def signal(self, signum: int) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"member {self.id} is not up"
        self.proc.send_signal(signum)

    async def wait_exit(self, timeout: float = 15.0) -> int:
        proc = self.proc
        assert proc is not None
        await poll(
            lambda: proc.poll() is not None, timeout=timeout, what=f"member {self.id} to exit"
        )
        return proc.returncode

    async def stop(self) -> int:
        """SIGTERM (a clean stop) and wait for the exit; returns the exit code."""
        if self.paused:
            self.resume()
        self.signal(signal.SIGTERM)
        return await self.wait_exit()

    async def kill9(self) -> float:
        """SIGKILL; returns the monotonic time just before the signal was sent."""
        at = time.monotonic()
        self.signal(signal.SIGKILL)
        await self.wait_exit()
        self.paused = False
        return at

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """Make sure the process is gone (teardown): SIGKILL works on a stopped process too."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    async def status(self, timeout: float = 1.0) -> dict[str, Any] | None:
        return await try_status("127.0.0.1", self.client_port, timeout)

    async def wait_serving(self, timeout: float = 20.0) -> dict[str, Any]:
        """Poll the member's status until it says it serves; fail if the process exits."""

        async def serving() -> dict[str, Any] | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"member {self.id} exited with {self.proc.returncode}:\n{self.log()}"
                )
            status = await self.status()
            return status if status is not None and status.get("serving") else None

        try:
            found: dict[str, Any] = await poll(
                serving, timeout=timeout, interval=0.05, what=f"member {self.id} to serve"
            )
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.log()}") from None
        return found


class Ensemble:
    """An ensemble described by one TOML file under `root`; see the module docstring."""

    def __init__(
        self,
        root: Path,
        members: int = 3,
        observers: int = 0,
        *,
        secret: str = "e2e-secret",
        **settings: Any,
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.secret = secret
        self.log_level = os.environ.get("ZKPY_E2E_LOG_LEVEL", "INFO")
        self.settings = {**FAST_SETTINGS, **settings}
        self.members: dict[int, Member] = {}
        count = members + observers
        ports = free_ports(2 * count)
        for index in range(count):
            member = Member(self, index + 1, observer=index >= members)
            member.client_port, member.peer_port = ports[2 * index], ports[2 * index + 1]
            self.members[member.id] = member
        self.config_path = self.write_config(self.root / "ensemble.toml", secret)

    def write_config(self, path: Path, secret: str) -> Path:
        """Write this ensemble's TOML file (with `secret`) at `path`; the data directory is
        always ROOT/data/member-N."""
        lines = [f'secret = "{secret}"', f'data_dir = "{self.root / "data"}"']
        lines += [f"{key} = {value!r}" for key, value in self.settings.items()]
        for member in self.members.values():
            table = "observers" if member.observer else "members"
            lines += [
                "",
                f"[{table}.{member.id}]",
                'host = "127.0.0.1"',
                f"client_port = {member.client_port}",
                f"peer_port = {member.peer_port}",
            ]
        path.write_text("\n".join(lines) + "\n")
        return path

    # ---- whole-ensemble operations ---------------------------------------------------------

    def __getitem__(self, member_id: int) -> Member:
        return self.members[member_id]

    def __enter__(self) -> Ensemble:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill_all()
        if kind is not None and not issubclass(kind, KeyboardInterrupt):
            # Shown by pytest with the failure: the end of every member's log.
            for member in self.members.values():
                tail = "\n".join(member.log().splitlines()[-40:])
                print(f"===== member {member.id} (ports {member.client_port}/{member.peer_port})")
                print(tail)

    def kill_all(self) -> None:
        for member in self.members.values():
            member.kill()

    @property
    def voters(self) -> list[Member]:
        return [m for m in self.members.values() if not m.observer]

    @property
    def running(self) -> list[Member]:
        return [m for m in self.members.values() if m.running and not m.paused]

    def addresses(self, members: Iterable[Member] | None = None) -> str:
        chosen = self.members.values() if members is None else members
        return ",".join(m.address for m in chosen)

    def start_all(self) -> None:
        for member in self.members.values():
            member.start()

    async def wait_all_serving(self, timeout: float = 25.0) -> dict[int, dict[str, Any]]:
        statuses: dict[int, dict[str, Any]] = {}
        for member in self.running:
            statuses[member.id] = await member.wait_serving(timeout)
        return statuses

    async def start_serving(self, timeout: float = 25.0) -> Member:
        """Start every member, wait until they all serve; return the leader."""
        self.start_all()
        await self.wait_all_serving(timeout)
        return await self.leader()

    async def leader(self, timeout: float = 15.0) -> Member:
        """The one running member that says it leads and serves (and that the others follow)."""

        async def find() -> Member | None:
            leaders = []
            for member in self.running:
                status = await member.status()
                if status is None:
                    return None
                if status["role"] == "leader" and status["serving"]:
                    leaders.append(member)
            return leaders[0] if len(leaders) == 1 else None

        found: Member = await poll(find, timeout=timeout, interval=0.05, what="one leader")
        return found

    async def statuses(self) -> dict[int, dict[str, Any]]:
        """The status of every running member (each must answer)."""
        found = {}
        for member in self.running:
            status = await member.status()
            assert status is not None, f"member {member.id} does not answer"
            found[member.id] = status
        return found

    async def followers(self) -> list[Member]:
        leader = await self.leader()
        return [m for m in self.voters if m is not leader and m.running]

    async def wait_converged(self, timeout: float = 15.0) -> int:
        """Wait until every running member serves and has logged and applied the same last
        zxid; return it."""

        async def converged() -> int | None:
            zxids = set()
            for member in self.running:
                status = await member.status()
                if status is None or not status["serving"]:
                    return None
                zxids.add((status["last_zxid"], status["committed_zxid"]))
            if len(zxids) != 1:
                return None
            last, committed = zxids.pop()
            return last if last == committed else None

        zxid: int = await poll(
            converged, timeout=timeout, interval=0.05, what="members to converge"
        )
        return zxid


@asynccontextmanager
async def connect_to(
    members: Member | Sequence[Member], *, session_timeout: float = SESSION_TIMEOUT, **kw: Any
) -> AsyncIterator[zkpy.Client]:
    """A session with the given member(s) only."""
    chosen = [members] if isinstance(members, Member) else list(members)
    async with zkpy.connect(
        ",".join(m.address for m in chosen), session_timeout=session_timeout, **kw
    ) as zk:
        yield zk


async def read_tree(member: Member, path: str) -> dict[str, bytes]:
    """After a sync on `member`, the data of every node under `path` (recursively), read from
    that member alone; keys are full paths."""
    async with connect_to(member) as zk:
        await zk.sync(path)
        found: dict[str, bytes] = {}

        async def walk(node: str) -> None:
            data, _stat = await zk.get(node)
            found[node] = data
            for child in await zk.get_children(node):
                await walk(f"{node.rstrip('/')}/{child}")

        if await zk.exists(path) is not None:
            await walk(path)
        return found


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
