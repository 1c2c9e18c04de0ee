"""Real ensembles of `zkpy server --config F --id N` processes on loopback, for end-to-end
tests and benchmarks.

`Ensemble` writes one TOML file for N voting members and M observers on free ports
(`zkpy.testing.ports`), and starts, stops (SIGTERM), kills (SIGKILL), pauses (SIGSTOP) and
resumes (SIGCONT) member processes (`zkpy.server.launcher.MemberProcess`) with their logs
captured to files; it waits for members by polling their status with a deadline. Use it as a
context manager: on the way out every process it started is killed, whatever happened.

    with Ensemble(tmp_path) as ensemble:
        leader = await ensemble.start_serving()
        async with zkpy.connect(ensemble.addresses()) as zk:
            ...
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

import zkpy
from zkpy.client.admin import fetch_status
from zkpy.core.errors import ZkError
from zkpy.server.launcher import MemberProcess, member_args, stop_all
from zkpy.server.wal import MIN_SEGMENT_BYTES
from zkpy.testing.ports import free_ports

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
IMPORT_ROOT = Path(zkpy.__file__).resolve().parents[1]


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child that must import this same zkpy (the checkout
    under test, not an installed copy) and must not pick up a default server address."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(IMPORT_ROOT), env.get("PYTHONPATH")]))
    env.pop("ZKPY_SERVER", None)
    env.update(extra)
    return env


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


def _toml(value: Any) -> str:
    """A setting's value as TOML: booleans are lowercase; numbers and strings as Python
    writes them (single-quoted strings are TOML's literal strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


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
        self.zk_port: int | None = None  # ZooKeeper's client protocol (Ensemble zk_ports=True)
        self.admin_port = 0  # none unless the Ensemble was made with admin_ports=True
        self.process = MemberProcess(member_id, self.server_args(), env=child_env())
        self.starts = 0
        self.logs: list[Path] = []

    @property
    def address(self) -> str:
        """host:port of its client listener."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def data_dir(self) -> Path:
        """Its data directory, ROOT/data/member-N."""
        return self.ensemble.root / "data" / f"member-{self.id}"

    @property
    def running(self) -> bool:
        """Whether its process is up (paused or not)."""
        return self.process.running

    @property
    def paused(self) -> bool:
        """Whether its process is stopped by SIGSTOP."""
        return self.process.paused

    @property
    def pid(self) -> int | None:
        """The process id of its latest start."""
        return self.process.pid

    def server_args(self, config: Path | None = None) -> list[str]:
        """Its `zkpy server` arguments (from `config`, by default the ensemble's file)."""
        ensemble = self.ensemble
        return member_args(config or ensemble.config_path, self.id, ensemble.log_level)

    def start(self, config: Path | None = None) -> None:
        """Start the member's process (from `config`, by default the ensemble's file)."""
        assert not self.running, f"member {self.id} is already running"
        self.starts += 1
        log_path = self.ensemble.root / f"member-{self.id}-run-{self.starts}.log"
        self.logs.append(log_path)
        self.process.start(log_path, server_args=self.server_args(config))

    def log(self) -> str:
        """Everything every run of this member has logged so far."""
        return "".join(
            f"----- {path.name}\n{path.read_text(errors='replace')}"
            for path in self.logs
            if path.exists()
        )

    def signal(self, signum: int) -> None:
        """Send `signum` to the running process."""
        assert self.running, f"member {self.id} is not up"
        self.process.signal(signum)

    async def wait_exit(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit; fail after `timeout` seconds."""
        with trio.move_on_after(timeout):
            return await self.process.wait()
        raise AssertionError(f"timed out after {timeout} s waiting for member {self.id} to exit")

    async def stop(self) -> int:
        """SIGTERM (a clean stop) and wait for the exit; returns the exit code."""
        if self.paused:
            self.resume()
        self.signal(signal.SIGTERM)
        return await self.wait_exit()

    async def kill9(self) -> float:
        """SIGKILL; returns the monotonic time just before the signal was sent."""
        at = time.monotonic()
        assert self.running, f"member {self.id} is not up"
        with trio.fail_after(15.0):
            await self.process.kill9()
        return at

    def pause(self) -> None:
        """SIGSTOP: frozen, as in a long garbage-collection pause."""
        assert self.running, f"member {self.id} is not up"
        self.process.pause()

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        assert self.running, f"member {self.id} is not up"
        self.process.resume()

    def kill(self) -> None:
        """Make sure the process is gone (teardown): SIGKILL works on a stopped process too."""
        self.process.kill()

    async def status(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """Its status, or None if it does not answer."""
        return await try_status("127.0.0.1", self.client_port, timeout)

    async def wait_serving(self, timeout: float = 20.0) -> dict[str, Any]:
        """Poll the member's status until it says it serves; fail if the process exits."""

        async def serving() -> dict[str, Any] | None:
            code = self.process.returncode
            if code is not None:
                raise AssertionError(f"member {self.id} exited with {code}:\n{self.log()}")
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
        fast: bool = True,
        log_level: str | None = None,
        zk_ports: bool = False,
        admin_ports: bool = False,
        **settings: Any,
    ) -> None:
        """Lay out `members` voters and `observers` observers on free ports and write the TOML
        file; start nothing yet. `settings` are TOML settings over FAST_SETTINGS (short ticks,
        small log segments) or, with `fast=False`, over the members' own defaults. The members'
        log level is `log_level`, else $ZKPY_E2E_LOG_LEVEL, else INFO. With `zk_ports` every
        member also serves ZooKeeper's client protocol, and with `admin_ports` HTTP /metrics,
        /health and /status, each on a free port of its own."""
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.secret = secret
        self.log_level = log_level or os.environ.get("ZKPY_E2E_LOG_LEVEL", "INFO")
        self.settings = {**(FAST_SETTINGS if fast else {}), **settings}
        self.config_path = self.root / "ensemble.toml"
        self.members: dict[int, Member] = {}
        count = members + observers
        ports = free_ports((2 + zk_ports + admin_ports) * count)
        for index in range(count):
            member = Member(self, index + 1, observer=index >= members)
            member.client_port, member.peer_port = ports[2 * index], ports[2 * index + 1]
            extra = 2 * count + index
            if zk_ports:
                member.zk_port = ports[extra]
                extra += count
            if admin_ports:
                member.admin_port = ports[extra]
            self.members[member.id] = member
        self.write_config(self.config_path, secret)

    def write_config(
        self, path: Path, secret: str, peer_ports: Mapping[int, int] | None = None
    ) -> Path:
        """Write this ensemble's TOML file (with `secret`) at `path`; the data directory is
        always ROOT/data/member-N. `peer_ports` replaces some members' peer ports: where one
        member reaches the others (through a proxy, say)."""
        lines = [f'secret = "{secret}"', f'data_dir = "{self.root / "data"}"']
        lines += [f"{key} = {_toml(value)}" for key, value in self.settings.items()]
        for member in self.members.values():
            table = "observers" if member.observer else "members"
            peer_port = (peer_ports or {}).get(member.id, member.peer_port)
            lines += [
                "",
                f"[{table}.{member.id}]",
                'host = "127.0.0.1"',
                f"client_port = {member.client_port}",
                f"peer_port = {peer_port}",
            ]
            if member.zk_port is not None:
                lines.append(f"zk_port = {member.zk_port}")
            if member.admin_port:
                lines.append(f"admin_port = {member.admin_port}")
        path.write_text("\n".join(lines) + "\n")
        return path

    # ---- whole-ensemble operations ---------------------------------------------------------

    def __getitem__(self, member_id: int) -> Member:
        """The member with id `member_id`."""
        return self.members[member_id]

    def __enter__(self) -> Ensemble:
        """The ensemble itself; nothing starts until asked."""
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Kill every member; after a failure, print the end of each one's log."""
        self.kill_all()
        if kind is not None and not issubclass(kind, KeyboardInterrupt):
            # Shown by pytest with the failure: the end of every member's log.
            for member in self.members.values():
                tail = "\n".join(member.log().splitlines()[-40:])
                print(f"===== member {member.id} (ports {member.client_port}/{member.peer_port})")
                print(tail)

    def kill_all(self) -> None:
        """SIGKILL every member still up, synchronously."""
        for member in self.members.values():
            member.kill()

    async def stop_all(self, grace_s: float = 15.0) -> None:
        """Stop every member cleanly (SIGTERM, all at once); SIGKILL those still up after
        `grace_s`."""
        await stop_all([member.process for member in self.members.values()], grace_s)

    @property
    def voters(self) -> list[Member]:
        """The voting members."""
        return [m for m in self.members.values() if not m.observer]

    @property
    def running(self) -> list[Member]:
        """The members whose process is up and not paused."""
        return [m for m in self.members.values() if m.running and not m.paused]

    def addresses(self, members: Iterable[Member] | None = None) -> str:
        """The client connection string of `members` (default: all)."""
        chosen = self.members.values() if members is None else members
        return ",".join(m.address for m in chosen)

    def start_all(self) -> None:
        """Start every member's process."""
        for member in self.members.values():
            member.start()

    async def wait_all_serving(self, timeout: float = 25.0) -> dict[int, dict[str, Any]]:
        """Wait until every running member serves; return their statuses."""
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
        """The running voters other than the leader."""
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
