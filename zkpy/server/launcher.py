"""Member processes of an ensemble described by one TOML file: `zkpy ensemble`, and the one
way that chaos, the test harness and the benchmarks start, signal, stop and wait for members
(`MemberProcess`)."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import stat
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import trio

from zkpy.server.config import ConfigError, config_from_text, load_config

log = logging.getLogger("zkpy.ensemble")

STOP_GRACE_S = 10.0
EXIT_POLL_S = 0.02  # only where the platform has no pidfd to wait on


def member_args(
    config: Path, member_id: int, log_level: str = "INFO", log_format: str = "text"
) -> list[str]:
    """The `zkpy server` arguments of member `member_id` of the ensemble in `config`."""
    return [
        *("--config", str(config), "--id", str(member_id)),
        *("--log-level", log_level, "--log-format", log_format),
    ]


class MemberProcess:
    """One member's `zkpy server ARGS` process, restartable: usually `member_args(...)`, a
    member of an ensemble described by one TOML file.

    Starting is synchronous (a plain fork and exec), so that tests and benchmarks can start
    members outside a trio loop; waiting for the exit is asynchronous, on a pidfd that becomes
    readable when the process ends (no polling on Linux)."""

    def __init__(
        self, member_id: int, server_args: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> None:
        self.id = member_id
        self.server_args = list(server_args)
        self.env = env
        self.popen: subprocess.Popen[bytes] | None = None
        self.paused = False

    def command(self, server_args: Sequence[str] | None = None) -> list[str]:
        """The command line (with `server_args`, by default the member's own)."""
        args = self.server_args if server_args is None else server_args
        return [sys.executable, "-m", "zkpy", "server", *args]

    @property
    def pid(self) -> int | None:
        """The process id of the latest start, or None before the first."""
        return None if self.popen is None else self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code of the latest start (negative: the signal), or None while it runs."""
        return None if self.popen is None else self.popen.poll()

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited (a paused one is running)."""
        return self.popen is not None and self.popen.poll() is None

    def start(
        self, log_path: Path | None = None, *, server_args: Sequence[str] | None = None
    ) -> None:
        """Start the member (with `server_args` this time, if given), its output appended to
        `log_path` (None: this process's own)."""
        if self.running:
            raise RuntimeError(f"member {self.id} is already running")
        command = self.command(server_args)
        if log_path is None:
            self.popen = subprocess.Popen(command, env=self.env)
        else:
            with open(log_path, "ab") as log:
                self.popen = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, env=self.env
                )
        self.paused = False

    def signal(self, signum: int) -> None:
        """Send `signum` to the running process."""
        if self.popen is None or self.popen.poll() is not None:
            raise RuntimeError(f"member {self.id} is not running")
        self.popen.send_signal(signum)

    def pause(self) -> None:
        """SIGSTOP: the process stays, frozen, as in a long garbage-collection pause."""
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        self.signal(signal.SIGCONT)
        self.paused = False

    async def wait(self) -> int:
        """Wait for the process to exit; return its exit code."""
        popen = self.popen
        if popen is None:
            raise RuntimeError(f"member {self.id} was never started")
        if popen.poll() is None:
            await _wait_exit(popen)
        return popen.wait()

    async def kill9(self) -> None:
        """SIGKILL (works on a paused process too) and wait for the exit."""
        self.signal(signal.SIGKILL)
        await self.wait()
        self.paused = False

    async def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """SIGTERM, a clean stop; SIGKILL if the member has not exited after `grace_s`."""
        if self.running:
            if self.paused:
                self.resume()
            self.signal(signal.SIGTERM)
            with trio.move_on_after(grace_s):
                return await self.wait()
            self.kill()
        return await self.wait()

    def kill(self) -> None:
        """Make sure the process is gone, synchronously (for teardown and finally blocks)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("member %d (pid %d) outlived SIGKILL", self.id, self.popen.pid)
        self.paused = False


async def _wait_exit(popen: subprocess.Popen[bytes]) -> None:
    """Return once `popen` has exited (without reaping it)."""
    try:
        pidfd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):  # not Linux, or an old kernel
        while popen.poll() is None:
            await trio.sleep(EXIT_POLL_S)
        return
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


async def stop_all(members: Iterable[MemberProcess], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every running member at once, then wait; SIGKILL those still up after
    `grace_s`."""
    chosen = [member for member in members if member.popen is not None]
    for member in chosen:
        if member.running:
            if member.paused:
                member.resume()
            member.signal(signal.SIGTERM)
    with trio.move_on_after(grace_s):
        for member in chosen:
            await member.wait()
    for member in chosen:
        member.kill()


def ensure_ensemble_file(
    data_dir: Path,
    size: int,
    observers: int,
    client_port: int,
    peer_port: int,
    tick_ms: int,
    zk_port: int | None = None,
    *,
    admin_port: int = 0,
) -> tuple[Path, list[str]]:
    """Write DATA_DIR/ensemble.toml (or reuse the one there); return it and client addresses.
    With `zk_port`, member N also speaks ZooKeeper's client protocol on zk_port + N - 1;
    with `admin_port`, it serves its admin port on admin_port + N - 1.

    The file holds the peer secret: it is created readable by its owner only (0600)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "ensemble.toml"
    if path.exists():
        _warn_if_readable_by_others(path)
    else:
        lines = [
            "# written by `zkpy ensemble`; every member reads it",
            f'secret = "{secrets.token_hex(16)}"',
            f"tick_ms = {tick_ms}",
            'data_dir = "."',
        ]
        for index in range(size + observers):
            member_id = index + 1
            table = "members" if index < size else "observers"
            lines += [
                "",
                f"[{table}.{member_id}]",
                'host = "127.0.0.1"',
                f"client_port = {client_port + index}",
                f"peer_port = {peer_port + index}",
            ]
            if zk_port is not None:
                lines.append(f"zk_port = {zk_port + index}")
            if admin_port:
                lines.append(f"admin_port = {admin_port + index}")
        _write_private(path, "\n".join(lines) + "\n")
    first = load_config(path, 1)
    if len(first.voters) != size or len(first.observers) != observers:
        raise ConfigError(
            f"{path} describes {len(first.voters)} members and {len(first.observers)} "
            f"observers, not {size} and {observers}: use another --data-dir"
        )
    if zk_port is not None and first.members[0].zk_port != zk_port:
        raise ConfigError(
            f"{path} does not give its first member zk_port {zk_port}: use another --data-dir"
        )
    if admin_port and first.admin_port != admin_port:
        raise ConfigError(
            f"{path} gives member 1 admin_port {first.admin_port or 'none'}, not {admin_port}: "
            "edit it or use another --data-dir"
        )
    addresses = [f"{m.host}:{m.client_port}" for m in first.members]
    return path, addresses


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a new file at `path` that only its owner can read (mode 0600 from its
    creation, so the secret is never readable by others even for a moment), after checking it:
    a layout the members would refuse (ports that overlap) is never left behind for the next
    run to trip over."""
    config_from_text(text, path, 1)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def _warn_if_readable_by_others(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        print(
            f"zkpy ensemble: warning: {path} holds the peer secret and is readable by others "
            f"(mode {mode:04o}); chmod 600 it",
            file=sys.stderr,
        )


async def run_ensemble(config_file: Path, log_level: str, log_format: str = "text") -> int:
    """Run every member of `config_file` as a child process until cancelled, then stop them."""
    ids = sorted(m.id for m in load_config(config_file, 1).members)
    members = [MemberProcess(i, member_args(config_file, i, log_level, log_format)) for i in ids]
    try:
        async with trio.open_nursery() as nursery:
            for member in members:
                member.start()
            for member in members:
                nursery.start_soon(_report_exit, member)
    finally:
        with trio.CancelScope(shield=True):
            await stop_all(members)
    clean = (0, -signal.SIGTERM)
    return 0 if all(m.returncode in clean for m in members if m.popen is not None) else 1


async def _report_exit(member: MemberProcess) -> None:
    code = await member.wait()
    print(f"zkpy ensemble: member {member.id} exited with {code}", file=sys.stderr)
