"""The `zkpy` command: run a member, and shell commands against a running ensemble."""

from __future__ import annotations

import functools
import logging
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import trio

import zkpy
from zkpy import security, tls
from zkpy.core.errors import ZkError
from zkpy.errors import single_error
from zkpy.server.config import ServerConfig, load_config
from zkpy.server.main import LOG_FORMATS
from zkpy.server.settings import MAX_PORT, SETTINGS
from zkpy.server.storage import StorageError
from zkpy.server.wal import MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES, SEGMENT_BYTES
from zkpy.wire.frames import DEFAULT_MAX_FRAME

T = TypeVar("T")

DEFAULT_SERVER = "127.0.0.1:2181"
SASL_USERS_ENV = "ZKPY_SASL_USERS_FILE"


def _setting_range(name: str) -> click.IntRange:
    """The range an option that feeds the setting `name` takes (see zkpy.server.settings)."""
    setting = SETTINGS[name]
    return click.IntRange(int(setting.low), int(setting.high))


PORT = click.IntRange(1, MAX_PORT)


def _server_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--server",
        default=lambda: os.environ.get("ZKPY_SERVER", DEFAULT_SERVER),
        show_default="$ZKPY_SERVER or 127.0.0.1:2181",
        help="Comma-separated host:port list of the ensemble.",
    )(func)


@click.group()
@click.version_option(zkpy.__version__, prog_name="zkpy")
def main() -> None:
    """zkpy: a ZooKeeper-style coordination service."""


async def _until_signal(run: Callable[[], Awaitable[None]]) -> None:
    """Run until done or SIGINT/SIGTERM. An error from `run` comes out as itself, not wrapped
    in an ExceptionGroup, so that callers can catch StorageError, ZkError, OSError ..."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
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
        except BaseExceptionGroup as group:
            raise single_error(group) from None


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("zkpy-data"),
    show_default=True,
    help="Where the member keeps its LMDB data (standalone; see --config).",
)
@click.option(
    "--client-port",
    type=_setting_range("client_port"),
    default=2181,
    show_default=True,
    help="Port for clients (0: any free port).",
)
@click.option(
    "--zk-port",
    type=_setting_range("zk_port"),
    default=None,
    help="Also serve ZooKeeper's client protocol on this port (0: any free port).",
)
@click.option(
    "--admin-port",
    type=_setting_range("admin_port"),
    default=None,
    help="Port for HTTP /metrics, /health and /status (default: none; with --config, the "
    "file's admin_port).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--tick-ms",
    type=_setting_range("tick_ms"),
    default=2000,
    show_default=True,
    help="Tick; sessions last 2-20 ticks.",
)
@click.option(
    "--max-data-bytes",
    type=_setting_range("max_data_bytes"),
    default=1 << 20,
    show_default=True,
    help="Largest znode value.",
)
@click.option(
    "--log-segment-bytes",
    type=click.IntRange(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES),
    default=SEGMENT_BYTES,
    show_default=True,
    help="Disk each new log segment file takes up front (1 MiB to 1 GiB).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Ensemble file (TOML); run member --id of it. Overrides the options above.",
)
@click.option(
    "--id",
    "member_id",
    type=_setting_range("server_id"),
    default=None,
    help="This member's id in --config.",
)
@click.option("--tls-cert", default="", help="Certificate file: clients must speak TLS.")
@click.option("--tls-key", default="", help="Key file for --tls-cert.")
@click.option("--tls-ca", default="", help="CA file that signs client certificates (x509 ACLs).")
@click.option(
    "--tls-client-auth",
    type=click.Choice(["none", "optional", "required"]),
    default="optional",
    show_default=True,
)
@click.option(
    "--super-digest",
    default="",
    help="A digest id (user:hash) that bypasses ACLs (visible in ps: prefer the next two).",
)
@click.option(
    "--super-digest-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Read the super digest from this file (or set ZKPY_SUPER_DIGEST).",
)
@click.option(
    "--sasl-users-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    envvar=SASL_USERS_ENV,
    help="user:password lines (mode 0600) for SASL DIGEST-MD5 on the ZooKeeper port.",
)
@click.option(
    "--sasl-super-user", default="", help="The SASL user that bypasses ACLs (none by default)."
)
@click.option("--log-level", default="INFO", show_default=True)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    help="json: one JSON object per line (time, level, logger, message).",
)
def server(
    data_dir: Path,
    client_port: int,
    zk_port: int | None,
    admin_port: int | None,
    host: str,
    tick_ms: int,
    max_data_bytes: int,
    log_segment_bytes: int,
    config_file: Path | None,
    member_id: int | None,
    tls_cert: str,
    tls_key: str,
    tls_ca: str,
    tls_client_auth: str,
    super_digest: str,
    super_digest_file: Path | None,
    sasl_users_file: Path | None,
    sasl_super_user: str,
    log_level: str,
    log_format: str,
) -> None:
    """Run one member in the foreground (Ctrl-C or SIGTERM stops it cleanly).

    Without --config it is an ensemble of one. With --config FILE --id N it is member N of the
    ensemble that FILE describes.
    """
    from zkpy.server.main import ListenError, configure_logging, serve
    from zkpy.server.zk_clients import load_sasl_users

    configure_logging(log_level, log_format)
    super_digest = _super_digest(super_digest, super_digest_file)
    try:
        if config_file is not None:
            if member_id is None:
                raise click.UsageError("--config needs --id")
            overrides: dict[str, Any] = {"super_digest": super_digest} if super_digest else {}
            if sasl_users_file is not None:
                overrides["sasl_users_file"] = str(sasl_users_file.resolve())
            if sasl_super_user:
                overrides["sasl_super_user"] = sasl_super_user
            if zk_port is not None:
                overrides["zk_port"] = zk_port
            if admin_port is not None:
                overrides["admin_port"] = admin_port
            config = load_config(config_file, member_id, **overrides)
        else:
            config = ServerConfig(
                data_dir=data_dir,
                host=host,
                client_port=client_port,
                zk_port=zk_port,
                admin_port=admin_port or 0,
                tick_ms=tick_ms,
                max_data_bytes=max_data_bytes,
                max_frame=max(max_data_bytes + (64 << 10), DEFAULT_MAX_FRAME),
                log_segment_bytes=log_segment_bytes,
                tls_cert=tls_cert,
                tls_key=tls_key,
                tls_ca=tls_ca,
                tls_client_auth=tls_client_auth,
                super_digest=super_digest,
                sasl_users_file="" if sasl_users_file is None else str(sasl_users_file),
                sasl_super_user=sasl_super_user,
            )
        if config.sasl_users_file:
            load_sasl_users(config.sasl_users_file)  # a bad file is a usage error, now
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    try:
        trio.run(_until_signal, lambda: serve(config))
    except StorageError as err:
        click.echo(f"zkpy: {err}", err=True)
        sys.exit(2)
    except ListenError as err:
        click.echo(f"zkpy: {err.strerror}", err=True)
        sys.exit(2)
    except OSError as err:
        click.echo(f"zkpy: member {config.server_id} stopped: {err}", err=True)
        sys.exit(2)


@main.command()
@click.option(
    "--size", type=click.IntRange(1, 255), default=3, show_default=True, help="Voting members."
)
@click.option(
    "--observers",
    type=click.IntRange(0, 254),
    default=0,
    show_default=True,
    help="Non-voting members.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("zkpy-data"),
    show_default=True,
    help="Holds ensemble.toml and member-N/ for each member.",
)
@click.option(
    "--client-port", type=PORT, default=2181, show_default=True, help="First client port."
)
@click.option("--peer-port", type=PORT, default=2888, show_default=True, help="First peer port.")
@click.option(
    "--zk-port",
    type=PORT,
    default=None,
    help="First port for ZooKeeper's client protocol (member N: ZK_PORT+N-1); none by default.",
)
@click.option(
    "--admin-port",
    type=PORT,
    default=None,
    help="First admin port (HTTP /metrics, /health, /status): member N on BASE+N-1.",
)
@click.option(
    "--tick-ms",
    type=_setting_range("tick_ms"),
    default=2000,
    show_default=True,
    help="Tick; sessions last 2-20 ticks.",
)
@click.option(
    "--sasl-users-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="user:password lines (mode 0600) for SASL on the ZooKeeper ports of every member.",
)
@click.option("--log-level", default="WARNING", show_default=True, help="Members' log level.")
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    help="Members' log format (json: one JSON object per line).",
)
def ensemble(
    size: int,
    observers: int,
    data_dir: Path,
    client_port: int,
    peer_port: int,
    zk_port: int | None,
    admin_port: int | None,
    tick_ms: int,
    sasl_users_file: Path | None,
    log_level: str,
    log_format: str,
) -> None:
    """Run a local ensemble: SIZE member processes (client ports CLIENT_PORT, +1, ...).

    Prints the connection string; Ctrl-C or SIGTERM stops every member cleanly. The layout is
    kept in DATA_DIR/ensemble.toml, so running the same command again restarts the same ensemble.
    """
    from zkpy.server.launcher import ensure_ensemble_file, run_ensemble

    count = size + observers
    if count > 255:
        raise click.UsageError("an ensemble has at most 255 members and observers")
    firsts = [("--client-port", client_port), ("--peer-port", peer_port)]
    if zk_port is not None:
        firsts.append(("--zk-port", zk_port))
    if admin_port is not None:
        firsts.append(("--admin-port", admin_port))
    for option, first in firsts:
        if first + count - 1 > MAX_PORT:
            raise click.UsageError(f"{option} {first} leaves no room for {count} ports")
    try:
        config_file, addresses = ensure_ensemble_file(
            data_dir,
            size,
            observers,
            client_port,
            peer_port,
            tick_ms,
            zk_port,
            admin_port=admin_port or 0,
        )
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    if sasl_users_file is not None:  # the members (child processes) read it from there
        os.environ[SASL_USERS_ENV] = str(sasl_users_file.resolve())
    click.echo(",".join(addresses))
    if zk_port is not None:
        zk_addresses = ",".join(f"127.0.0.1:{zk_port + index}" for index in range(count))
        click.echo(f"ZooKeeper clients: {zk_addresses}", err=True)
    sys.stdout.flush()
    code = trio.run(_until_signal_value, lambda: run_ensemble(config_file, log_level, log_format))
    sys.exit(code)


SUPER_DIGEST_ENV = "ZKPY_SUPER_DIGEST"


def _super_digest(given: str, file: Path | None) -> str:
    """The super digest from --super-digest, --super-digest-file or $ZKPY_SUPER_DIGEST (at
    most one of them), checked to look like ``user:hash``; "" for none."""
    sources: list[tuple[str, str]] = []
    if given:
        logging.getLogger("zkpy").warning(
            "--super-digest shows in the process list: prefer --super-digest-file or $%s",
            SUPER_DIGEST_ENV,
        )
        sources.append(("--super-digest", given))
    if file is not None:
        try:
            sources.append(("--super-digest-file", file.read_text().strip()))
        except (OSError, UnicodeDecodeError) as err:
            raise click.BadParameter(str(err), param_hint="--super-digest-file") from None
    from_env = os.environ.get(SUPER_DIGEST_ENV, "").strip()
    if from_env:
        sources.append((f"${SUPER_DIGEST_ENV}", from_env))
    if len(sources) > 1:
        names = " and ".join(name for name, _value in sources)
        raise click.UsageError(f"the super digest is given twice ({names}): give it once")
    if not sources:
        return ""
    name, value = sources[0]
    user, sep, digest = value.partition(":")
    if not (user and sep and digest) or any(c.isspace() for c in value):
        raise click.UsageError(
            f"{name} must be a digest id user:hash (zkpy.security.make_digest_acl_credential)"
        )
    return value


async def _until_signal_value(run: Callable[[], Awaitable[int]]) -> int:
    result = 0

    async def body() -> None:
        nonlocal result
        result = await run()

    await _until_signal(body)
    return result


@main.command()
@_server_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(server: str, as_json: bool) -> None:
    """Show each member's role, epoch, last zxid, connections and outstanding requests.

    Exits 0 when every member named in --server serves clients in a quorum, 1 when one of them
    does not (or cannot be reached); the members they name are shown but not judged.
    """
    import json

    from zkpy.client.admin import gather_statuses
    from zkpy.client.client import parse_hosts

    try:
        named = [f"{host}:{port}" for host, port in parse_hosts(server)]
    except ValueError as err:
        click.echo(f"zkpy: {err}", err=True)
        sys.exit(1)

    answers = trio.run(gather_statuses, named)
    if as_json:
        click.echo(json.dumps(answers, indent=2))
    else:
        click.echo(
            f"{'member':<22}{'id':>3} {'role':<10}{'epoch':>6} {'last zxid':>14} "
            f"{'conns':>6} {'outstanding':>12}"
        )
        for address, found in answers.items():
            if isinstance(found, str):
                click.echo(f"{address:<22}    {found}")
                continue
            role = "read-only" if found.get("read_only") else found["role"]
            click.echo(
                f"{address:<22}{found['server_id']:>3} {role:<10}{found['epoch']:>6} "
                f"{found['last_zxid']:>#14x} {found['connections']:>6} "
                f"{found['outstanding']:>12}"
            )
    if not all(_serves(answers.get(address)) for address in named):
        sys.exit(1)


def _serves(found: dict[str, Any] | str | None) -> bool:
    """Whether a member's status says it serves clients (a str: it was unreachable)."""
    return isinstance(found, dict) and found.get("serving") is True


@main.command()
@click.option("--size", default=3, show_default=True, help="Voting members.")
@click.option("--time", "seconds", default=60.0, show_default=True, help="Seconds of faults.")
@click.option(
    "--nemesis",
    default="kill,pause,partition",
    show_default=True,
    help="Comma-separated: kill, pause, partition, delay, drop, client-pause, power, reconfig.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the faults and workload.")
@click.option("--clients", default=3, show_default=True, help="Client processes.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where data, logs and the history go (default: a new temporary folder).",
)
@click.option(
    "--unsafe-no-fsync",
    is_flag=True,
    help="UNSAFE test switch: members do not fsync; with kill -9 the run must find lost writes.",
)
def chaos(
    size: int,
    seconds: float,
    nemesis: str,
    seed: int,
    clients: int,
    workdir: Path | None,
    unsafe_no_fsync: bool,
) -> None:
    """Run a real ensemble under faults, check the recorded history, and report.

    Exits non-zero on any violation (or lost acknowledged write); keeps the history files.
    """
    from zkpy.testing.chaos import ChaosOptions, parse_nemeses, print_report, run_chaos

    try:
        nemeses = parse_nemeses(nemesis)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--nemesis") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    options = ChaosOptions(
        size=size,
        seconds=seconds,
        nemeses=nemeses,
        seed=seed,
        clients=clients,
        workdir=workdir,
        fsync=not unsafe_no_fsync,
    )
    report = run_chaos(options)
    print_report(report)
    sys.exit(0 if report.ok else 1)


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How the shell commands reach the ensemble: --server, --timeout, --auth, --tls-*,
    --read-only."""

    server: str
    timeout: float
    auth: tuple[str, ...]
    tls_ca: str | None
    tls_cert: str | None
    tls_key: str | None
    read_only: bool = False

    def context(self) -> ssl.SSLContext | None:
        """The TLS context to connect with, None when no TLS option was given."""
        if not (self.tls_ca or self.tls_cert):
            return None
        return tls.client_context(self.tls_ca, self.tls_cert, self.tls_key)


def _client_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the connection options to a shell command; it receives them as `conn`."""

    @functools.wraps(func)
    def wrapper(
        *args: Any,
        server: str,
        timeout: float,
        auth: tuple[str, ...],
        tls_ca: str | None,
        tls_cert: str | None,
        tls_key: str | None,
        read_only: bool,
        **kwargs: Any,
    ) -> Any:
        conn = ClientOptions(server, timeout, auth, tls_ca, tls_cert, tls_key, read_only)
        return func(*args, conn=conn, **kwargs)

    for option in reversed(
        [
            _server_option,
            click.option(
                "--timeout", default=10.0, show_default=True, help="Session timeout in seconds."
            ),
            click.option(
                "--auth",
                multiple=True,
                metavar="USER:PASSWORD",
                help="Authenticate (digest) before the command; may be repeated.",
            ),
            click.option("--tls-ca", type=click.Path(dir_okay=False, exists=True), help="CA file."),
            click.option(
                "--tls-cert", type=click.Path(dir_okay=False, exists=True), help="Client cert."
            ),
            click.option(
                "--tls-key", type=click.Path(dir_okay=False, exists=True), help="Client key."
            ),
            click.option(
                "--read-only",
                is_flag=True,
                help="A member without a quorum may answer: reads only (zkCli.sh -r).",
            ),
        ]
    ):
        wrapper = option(wrapper)
    return wrapper


@asynccontextmanager
async def _session(conn: ClientOptions) -> AsyncIterator[zkpy.Client]:
    async with zkpy.connect(
        conn.server,
        session_timeout=conn.timeout,
        connect_timeout=conn.timeout,
        auth=[("digest", credential) for credential in conn.auth],
        tls=conn.context(),
        read_only=conn.read_only,
    ) as zk:
        yield zk


def _run_client(conn: ClientOptions, body: Callable[[zkpy.Client], Awaitable[T]]) -> T:
    """Run `body` in a session; an error prints one line on stderr and exits 1."""

    async def run() -> T:
        async with _session(conn) as zk:
            return await body(zk)

    try:
        return trio.run(run)
    except ZkError as err:
        click.echo(f"zkpy: {type(err).__name__}: {err}", err=True)
        sys.exit(1)
    except (OSError, ValueError, ssl.SSLError) as err:
        click.echo(f"zkpy: {err}", err=True)
        sys.exit(1)
    except Exception as err:  # a bug, not the user's input: still one line, not a traceback
        click.echo(f"zkpy: unexpected {type(err).__name__}: {err}", err=True)
        sys.exit(1)


def _format_stat(stat: zkpy.Stat) -> str:
    return "\n".join(
        f"{name} = {value:#x}"
        if name.endswith("zxid") or name == "ephemeral_owner"
        else f"{name} = {value}"
        for name, value in stat._asdict().items()
    )


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per result.")
@click.option(
    "--hex", "data_format", flag_value="hex", help="Show data in hex (default: text, or hex:...)."
)
@click.option("--raw", "data_format", flag_value="raw", help="Write data bytes as they are.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@_client_options
def shell(
    command: tuple[str, ...], as_json: bool, data_format: str | None, conn: ClientOptions
) -> None:
    """zkCli.sh's commands over one session (ephemerals and addauth last as long as it does).

    With COMMAND (`zkpy shell ls -s /`) run that one command; else read commands from the
    terminal (history, Tab completion) or, when standard input is not a terminal, one per line
    from it. Exits 1 if any command failed. See docs/shell.md.
    """
    import zkpy.sync
    from zkpy.shell import run_shell

    try:
        zk = zkpy.sync.connect(
            conn.server,
            session_timeout=conn.timeout,
            connect_timeout=conn.timeout,
            auth=[("digest", credential) for credential in conn.auth],
            tls=conn.context(),
            read_only=conn.read_only,
        )
    except (ZkError, OSError, ValueError, ssl.SSLError) as err:
        click.echo(f"zkpy: {err}", err=True)
        sys.exit(1)
    with zk:
        code = run_shell(
            zk,
            list(command),
            conn.server,
            as_json=as_json,
            data_format="hex"
            if data_format == "hex"
            else "raw"
            if data_format == "raw"
            else "auto",
            identities=[("digest", credential) for credential in conn.auth],
        )
    sys.exit(code)


@main.command()
@click.option(
    "--add",
    "adds",
    multiple=True,
    metavar="N=HOST:CLIENT_PORT:PEER_PORT[:observer]",
    help="A member to add (or an existing one's new role or address); repeatable.",
)
@click.option("--remove", "removes", multiple=True, type=int, metavar="N", help="Repeatable.")
@click.option(
    "--member",
    "members",
    multiple=True,
    metavar="N=HOST:CLIENT_PORT:PEER_PORT[:observer]",
    help="The whole new membership, one --member each (in place of --add and --remove): "
    "members left out are removed. Repeatable.",
)
@click.option(
    "--from-version",
    default=-1,
    help="Only if the membership version (the version line of /zookeeper/config) is this.",
)
@_client_options
def reconfig(
    adds: tuple[str, ...],
    removes: tuple[int, ...],
    members: tuple[str, ...],
    from_version: int,
    conn: ClientOptions,
) -> None:
    """Add and remove members of a running ensemble, or give its whole new membership (needs
    --auth as the super user); prints the new membership. Start a new member first, with an
    ensemble file that lists it."""
    if members and (adds or removes):
        raise click.UsageError("give --member, or --add and --remove, not both")
    if not adds and not removes and not members:
        raise click.UsageError("give at least one --add or --remove, or the members with --member")
    new_members = members or None

    async def body(zk: zkpy.Client) -> None:
        data, _stat = await zk.reconfig(adds, removes, from_version, new_members)
        click.echo(data.decode("utf-8", "backslashreplace"))

    _run_client(conn, body)


@main.command(name="ls")
@click.argument("path")
@_client_options
def ls_command(path: str, conn: ClientOptions) -> None:
    """List the children of PATH."""

    async def body(zk: zkpy.Client) -> None:
        for child in await zk.get_children(path):
            click.echo(child)

    _run_client(conn, body)


@main.command()
@click.argument("path")
@_client_options
def get(path: str, conn: ClientOptions) -> None:
    """Print the data of PATH."""

    async def body(zk: zkpy.Client) -> None:
        data, _stat = await zk.get(path)
        click.echo(data.decode("utf-8", "backslashreplace"))

    _run_client(conn, body)


@main.command(name="set")
@click.argument("path")
@click.argument("data")
@click.option("--version", "expected", default=-1, help="Only if the node has this version.")
@_client_options
def set_command(path: str, data: str, expected: int, conn: ClientOptions) -> None:
    """Set the data of PATH."""

    async def body(zk: zkpy.Client) -> None:
        stat = await zk.set(path, data.encode(), expected)
        click.echo(f"version {stat.version}")

    _run_client(conn, body)


@main.command()
@click.argument("path")
@click.argument("data", default="")
@click.option("--ephemeral", "-e", is_flag=True, help="Delete it when this command's session ends.")
@click.option("--sequential", "-S", is_flag=True, help="Append a 10-digit sequence number.")
@click.option("--makepath", "-p", is_flag=True, help="Create missing parents.")
@click.option(
    "--acl",
    "acl_texts",
    multiple=True,
    metavar="SCHEME:ID:PERMS",
    help="ACL entry (world:anyone:cdrwa, digest:user:password:rw, auth::cdrwa ...); repeatable.",
)
@_client_options
def create(
    path: str,
    data: str,
    ephemeral: bool,
    sequential: bool,
    makepath: bool,
    acl_texts: tuple[str, ...],
    conn: ClientOptions,
) -> None:
    """Create PATH with optional DATA; prints the created path."""
    acl = _parse_acls(acl_texts) if acl_texts else None

    async def body(zk: zkpy.Client) -> None:
        created = await zk.create(
            path,
            data.encode(),
            acl=acl,
            ephemeral=ephemeral,
            sequential=sequential,
            makepath=makepath,
        )
        click.echo(created)

    _run_client(conn, body)


@main.command()
@click.argument("path")
@click.option("--version", "expected", default=-1, help="Only if the node has this version.")
@click.option("--recursive", "-r", is_flag=True, help="Delete the whole subtree.")
@_client_options
def delete(path: str, expected: int, recursive: bool, conn: ClientOptions) -> None:
    """Delete PATH."""

    async def body(zk: zkpy.Client) -> None:
        await zk.delete(path, expected, recursive=recursive)

    _run_client(conn, body)


@main.command()
@click.argument("path")
@_client_options
def stat(path: str, conn: ClientOptions) -> None:
    """Print the Stat of PATH."""

    async def body(zk: zkpy.Client) -> None:
        found = await zk.exists(path)
        if found is None:
            raise zkpy.errors.NoNodeError(path=path)
        click.echo(_format_stat(found))

    _run_client(conn, body)


def _parse_acls(texts: tuple[str, ...]) -> list[zkpy.ACL]:
    try:
        return [security.parse_acl(text) for text in texts]
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


@main.command()
@click.argument("path")
@_client_options
def getacl(path: str, conn: ClientOptions) -> None:
    """Print the ACL of PATH, one scheme:id:perms entry per line."""

    async def body(zk: zkpy.Client) -> None:
        acl, _stat = await zk.get_acl(path)
        for entry in acl:
            click.echo(security.format_acl(entry))

    _run_client(conn, body)


@main.command()
@click.argument("path")
@click.argument("acl_texts", nargs=-1, required=True, metavar="SCHEME:ID:PERMS...")
@click.option("--version", "expected", default=-1, help="Only if the ACL has this version.")
@_client_options
def setacl(path: str, acl_texts: tuple[str, ...], expected: int, conn: ClientOptions) -> None:
    """Replace the ACL of PATH (world:anyone:r digest:alice:secret:cdrwa x509:CN=app:rw ...)."""
    acl = _parse_acls(acl_texts)

    async def body(zk: zkpy.Client) -> None:
        stat = await zk.set_acl(path, acl, expected)
        click.echo(f"aversion {stat.aversion}")

    _run_client(conn, body)


@main.command()
@click.argument("path")
@click.option("--recursive", "-r", is_flag=True, help="Watch the whole subtree.")
@click.option("--count", "-n", default=0, help="Stop after this many events (0: never).")
@_client_options
def watch(path: str, recursive: bool, count: int, conn: ClientOptions) -> None:
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

    async def until_interrupted(zk: zkpy.Client) -> None:
        await _until_signal(lambda: body(zk))

    _run_client(conn, until_interrupted)


@main.command()
@click.option(
    "--server",
    default=lambda: os.environ.get("ZKPY_SERVER", DEFAULT_SERVER),
    show_default="$ZKPY_SERVER or 127.0.0.1:2181",
    help="host:port of the member to back up.",
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="File to write."
)
@click.option(
    "--auth",
    envvar="ZKPY_BACKUP_AUTH",
    metavar="USER:PASSWORD",
    help="The super user's credentials, if the member has a super digest ($ZKPY_BACKUP_AUTH).",
)
@click.option("--timeout", default=600.0, show_default=True, help="Seconds for the whole backup.")
@click.option("--tls-ca", type=click.Path(dir_okay=False, exists=True), help="CA file.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True), help="Client cert.")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True), help="Client key.")
def backup(
    server: str,
    out: Path,
    auth: str | None,
    timeout: float,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Write a consistent snapshot of a running member (its tree at one zxid) to --out.

    The file is written to OUT.partial, verified, and renamed to OUT."""
    from zkpy.server.backup import BackupFormatError, fetch_backup

    host, _sep, port = server.rpartition(":")
    context = tls.client_context(tls_ca, tls_cert, tls_key) if tls_ca or tls_cert else None
    try:
        taken = trio.run(
            functools.partial(
                fetch_backup, host, int(port), out, auth=auth, timeout=timeout, ssl_context=context
            )
        )
    except (OSError, ValueError, trio.TooSlowError, ZkError, BackupFormatError) as err:
        click.echo(f"zkpy: backup from {server} failed: {err}", err=True)
        sys.exit(1)
    click.echo(
        f"{out}: zxid {taken.zxid:#x}, {len(taken.nodes)} nodes, {len(taken.sessions)} "
        f"sessions, {taken.size} bytes"
    )


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The new (absent or empty) data directory of a member.",
)
def restore(file: Path, data_dir: Path) -> None:
    """Seed a member's data directory from a backup FILE (verified whole first)."""
    from zkpy.server.backup import BackupFormatError
    from zkpy.server.backup import restore as restore_backup

    try:
        restored = restore_backup(file, data_dir)
    except (OSError, BackupFormatError, StorageError) as err:
        click.echo(f"zkpy: restore refused, nothing written: {err}", err=True)
        sys.exit(1)
    click.echo(
        f"{data_dir}: restored zxid {restored.zxid:#x} (epoch {restored.zxid >> 32}), "
        f"{len(restored.nodes)} nodes, {len(restored.sessions)} sessions"
    )


@main.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inspect(data_dir: Path, as_json: bool) -> None:
    """Summarise a stopped member's DATA_DIR and check it as a starting member would.

    Exits 1 if the directory is damaged or not a zkpy data directory."""
    import json

    from zkpy.server.backup import inspect as inspect_dir

    report = inspect_dir(data_dir)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_inspection(report)
    if not report["ok"]:
        sys.exit(1)


def _print_inspection(report: dict[str, Any]) -> None:
    click.echo(f"data directory   {report['data_dir']}")
    if "last_zxid" in report:
        log = report["log"]
        click.echo(f"last zxid        {report['last_zxid']:#x}")
        click.echo(
            f"epochs           accepted {report['accepted_epoch']}, "
            f"current {report['current_epoch']}"
        )
        click.echo(
            f"checkpoint       zxid {report['checkpoint_zxid']:#x}, "
            f"{report['checkpoint_nodes']} nodes, {report['checkpoint_sessions']} sessions, "
            f"data.mdb {report['checkpoint_file_bytes']} bytes"
        )
        unsealed = ", ".join(str(seq) for seq in log["unsealed"]) or "none"
        click.echo(
            f"log              generation {log['generation']}, {log['segments']} segments, "
            f"zxids {log['first_zxid']:#x}..{log['last_zxid']:#x}, {log['bytes']} bytes, "
            f"unsealed: {unsealed}"
        )
    if report["ok"]:
        click.echo("checks           passed")
    else:
        click.echo(f"checks           FAILED: {report['error']}")


if __name__ == "__main__":
    main()
