"""`zkpy ensemble`: a local ensemble of member processes, described by one TOML file."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import stat
import sys
from pathlib import Path

import trio

from zkpy.server.config import ConfigError, config_from_text, load_config

log = logging.getLogger("zkpy.ensemble")

STOP_GRACE_S = 10.0


def ensure_ensemble_file(
    data_dir: Path,
    size: int,
    observers: int,
    client_port: int,
    peer_port: int,
    tick_ms: int,
) -> tuple[Path, list[str]]:
    """Write DATA_DIR/ensemble.toml (or reuse the one there); return it and client addresses.

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
        _write_private(path, "\n".join(lines) + "\n")
    first = load_config(path, 1)
    if len(first.voters) != size or len(first.observers) != observers:
        raise ConfigError(
            f"{path} describes {len(first.voters)} members and {len(first.observers)} "
            f"observers, not {size} and {observers}: use another --data-dir"
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


async def run_ensemble(config_file: Path, log_level: str) -> int:
    """Run every member of `config_file` as a child process until cancelled, then stop them."""
    ids = sorted(m.id for m in load_config(config_file, 1).members)
    processes: dict[int, trio.Process] = {}
    try:
        async with trio.open_nursery() as nursery:
            for member_id in ids:
                command = [
                    sys.executable,
                    "-m",
                    "zkpy",
                    "server",
                    "--config",
                    str(config_file),
                    "--id",
                    str(member_id),
                    "--log-level",
                    log_level,
                ]
                processes[member_id] = await trio.lowlevel.open_process(command)
            for member_id, process in processes.items():
                nursery.start_soon(_report_exit, member_id, process)
    finally:
        with trio.CancelScope(shield=True):
            await _stop_all(processes)
    return 0 if all(p.returncode in (0, -signal.SIGTERM) for p in processes.values()) else 1


async def _report_exit(member_id: int, process: trio.Process) -> None:
    code = await process.wait()
    print(f"zkpy ensemble: member {member_id} exited with {code}", file=sys.stderr)


async def _stop_all(processes: dict[int, trio.Process]) -> None:
    for process in processes.values():
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    with trio.move_on_after(STOP_GRACE_S):
        for process in processes.values():
            await process.wait()
    for process in processes.values():
        if process.returncode is None:
            process.kill()
            await process.wait()
