"""The `zkpy` command: run a member, and shell commands against a running ensemble."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import trio

import zkpy
from zkpy.core.errors import ZkError
from zkpy.server.config import ServerConfig
from zkpy.server.storage import StorageError
from zkpy.wire.frames import DEFAULT_MAX_FRAME

T = TypeVar("T")

DEFAULT_SERVER = "127.0.0.1:2181"


def _server_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--server",
        "-s",
        default=lambda: os.environ.get("ZKPY_SERVER", DEFAULT_SERVER),
        show_default="$ZKPY_SERVER or 127.0.0.1:2181",
        help="Comma-separated host:port list of the ensemble.",
    )(func)


def _timeout_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--timeout", default=10.0, show_default=True, help="Session timeout in seconds."
    )(func)


@click.group()
@click.version_option(zkpy.__version__, prog_name="zkpy")
def main() -> None:
    """zkpy: a ZooKeeper-style coordination service."""


async def _until_signal(run: Callable[[], Awaitable[None]]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    logging.getLogger("zkpy").info(
                        "%s received: stopping", signal.Signals(signum).name
                    )
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            await run()
            nursery.cancel_scope.cancel()


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("zkpy-data"),
    show_default=True,
    help="Where the member keeps its LMDB data.",
)
@click.option("--client-port", default=2181, show_default=True, help="Port for clients.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--tick-ms", default=2000, show_default=True, help="Tick; sessions last 2-20 ticks.")
@click.option("--max-data-bytes", default=1 << 20, show_default=True, help="Largest znode value.")
@click.option("--log-level", default="INFO", show_default=True)
def server(
    data_dir: Path, client_port: int, host: str, tick_ms: int, max_data_bytes: int, log_level: str
) -> None:
    """Run one member in the foreground (Ctrl-C or SIGTERM stops it cleanly)."""
    from zkpy.server.main import serve

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = ServerConfig(
            data_dir=data_dir,
            host=host,
            client_port=client_port,
            tick_ms=tick_ms,
            max_data_bytes=max_data_bytes,
            max_frame=max(max_data_bytes + (64 << 10), DEFAULT_MAX_FRAME),
        )
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    try:
        trio.run(_until_signal, lambda: serve(config))
    except StorageError as err:
        click.echo(f"zkpy: {err}", err=True)
        sys.exit(2)
    except OSError as err:
        click.echo(f"zkpy: cannot serve on {host}:{client_port}: {err}", err=True)
        sys.exit(2)


def _run_client(server: str, timeout: float, body: Callable[[zkpy.Client], Awaitable[T]]) -> T:
    async def run() -> T:
        async with zkpy.connect(server, session_timeout=timeout, connect_timeout=timeout) as zk:
            return await body(zk)

    try:
        return trio.run(run)
    except ZkError as err:
        click.echo(f"zkpy: {type(err).__name__}: {err}", err=True)
        sys.exit(1)
    except (OSError, ValueError) as err:
        click.echo(f"zkpy: {err}", err=True)
        sys.exit(1)


def _format_stat(stat: zkpy.Stat) -> str:
    return "\n".join(
        f"{name} = {value:#x}"
        if name.endswith("zxid") or name == "ephemeral_owner"
        else f"{name} = {value}"
        for name, value in (
            (field, getattr(stat, field)) for field in zkpy.Stat.__dataclass_fields__
        )
    )


@main.command(name="ls")
@click.argument("path")
@_server_option
@_timeout_option
def ls_command(path: str, server: str, timeout: float) -> None:
    """List the children of PATH."""

    async def body(zk: zkpy.Client) -> None:
        for child in await zk.get_children(path):
            click.echo(child)

    _run_client(server, timeout, body)


@main.command()
@click.argument("path")
@_server_option
@_timeout_option
def get(path: str, server: str, timeout: float) -> None:
    """Print the data of PATH."""

    async def body(zk: zkpy.Client) -> None:
        data, _stat = await zk.get(path)
        click.echo(data.decode("utf-8", "backslashreplace"))

    _run_client(server, timeout, body)


@main.command(name="set")
@click.argument("path")
@click.argument("data")
@click.option("--version", "expected", default=-1, help="Only if the node has this version.")
@_server_option
@_timeout_option
def set_command(path: str, data: str, expected: int, server: str, timeout: float) -> None:
    """Set the data of PATH."""

    async def body(zk: zkpy.Client) -> None:
        stat = await zk.set(path, data.encode(), expected)
        click.echo(f"version {stat.version}")

    _run_client(server, timeout, body)


@main.command()
@click.argument("path")
@click.argument("data", default="")
@click.option("--ephemeral", "-e", is_flag=True, help="Delete it when this command's session ends.")
@click.option("--sequential", "-S", is_flag=True, help="Append a 10-digit sequence number.")
@click.option("--makepath", "-p", is_flag=True, help="Create missing parents.")
@_server_option
@_timeout_option
def create(
    path: str,
    data: str,
    ephemeral: bool,
    sequential: bool,
    makepath: bool,
    server: str,
    timeout: float,
) -> None:
    """Create PATH with optional DATA; prints the created path."""

    async def body(zk: zkpy.Client) -> None:
        created = await zk.create(
            path, data.encode(), ephemeral=ephemeral, sequential=sequential, makepath=makepath
        )
        click.echo(created)

    _run_client(server, timeout, body)


@main.command()
@click.argument("path")
@click.option("--version", "expected", default=-1, help="Only if the node has this version.")
@click.option("--recursive", "-r", is_flag=True, help="Delete the whole subtree.")
@_server_option
@_timeout_option
def delete(path: str, expected: int, recursive: bool, server: str, timeout: float) -> None:
    """Delete PATH."""

    async def body(zk: zkpy.Client) -> None:
        await zk.delete(path, expected, recursive=recursive)

    _run_client(server, timeout, body)


@main.command()
@click.argument("path")
@_server_option
@_timeout_option
def stat(path: str, server: str, timeout: float) -> None:
    """Print the Stat of PATH."""

    async def body(zk: zkpy.Client) -> None:
        found = await zk.exists(path)
        if found is None:
            raise zkpy.errors.NoNodeError(path=path)
        click.echo(_format_stat(found))

    _run_client(server, timeout, body)


@main.command()
@click.argument("path")
@click.option("--recursive", "-r", is_flag=True, help="Watch the whole subtree.")
@click.option("--count", "-n", default=0, help="Stop after this many events (0: never).")
@_server_option
@_timeout_option
def watch(path: str, recursive: bool, count: int, server: str, timeout: float) -> None:
    """Print one line per event on PATH until interrupted."""

    async def body(zk: zkpy.Client) -> None:
        seen = 0
        async with zk.watch(path, recursive=recursive) as events:
            click.echo(f"watching {path}", err=True)
            async for event in events:
                click.echo(f"{event.type.name} {event.path} {event.zxid:#x}")
                sys.stdout.flush()
                seen += 1
                if count and seen >= count:
                    return

    async def run() -> None:
        await _until_signal(
            lambda: _client_session(server, timeout, body),
        )

    try:
        trio.run(run)
    except ZkError as err:
        click.echo(f"zkpy: {type(err).__name__}: {err}", err=True)
        sys.exit(1)
    except (OSError, ValueError) as err:
        click.echo(f"zkpy: {err}", err=True)
        sys.exit(1)


async def _client_session(
    server: str, timeout: float, body: Callable[[zkpy.Client], Awaitable[None]]
) -> None:
    async with zkpy.connect(server, session_timeout=timeout, connect_timeout=timeout) as zk:
        await body(zk)


if __name__ == "__main__":
    main()
