"""Start one member: open its data directory, recover, join the ensemble and serve clients."""

from __future__ import annotations

import gc
import json
import logging
import time
from functools import partial
from typing import Any

import trio

from zkpy.errors import single_error
from zkpy.server.admin import serve_admin
from zkpy.server.clients import ClientServer
from zkpy.server.config import ServerConfig
from zkpy.server.node import Member
from zkpy.server.peers import PeerNetwork, peer_rows
from zkpy.server.storage import Storage
from zkpy.server.zk_clients import JuteDialect, SaslUsers, load_sasl_users

log = logging.getLogger("zkpy.server")


# The cyclic garbage collector's thresholds in a member: allocations before a young collection,
# young collections per middle one, middle ones per full one (Python's defaults: 700, 10, 10).
# Young and middle collections stay short and frequent. Full collections walk every znode, and
# under pipelined writes they came often (each batch's objects are promoted) while finding next
# to nothing, so they now come a hundred times less often. A bigger young generation is worse:
# objects that live for a batch pile up in it and each young collection walks them all.
# Measured in docs/decisions/0005.
GC_THRESHOLDS = (700, 10, 1000)


LOG_FORMATS = ("text", "json")
TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: time (UTC, ISO 8601 with milliseconds),
    level, logger, message, and the traceback as `exception` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, object] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Log to standard error at `level`, as text lines or JSON lines (`LOG_FORMATS`)."""
    handler = logging.StreamHandler()
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_LOG_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler])


class ListenError(OSError):
    """A member could not listen on one of its addresses; the message names which."""


def _listen_error(err: BaseException, what: str, host: str, port: int) -> ListenError | None:
    """A ListenError naming host:port for a listener whose start failed with an OSError (trio
    may deliver it in exception groups), or None for any other failure."""
    cause = single_error(err) if isinstance(err, BaseExceptionGroup) else err
    if not isinstance(cause, OSError):
        return None
    reason = cause.strerror or str(cause)
    return ListenError(cause.errno, f"cannot listen for {what} on {host}:{port}: {reason}")


def _freeze_recovered_objects() -> None:
    """Move everything alive after recovery (the code, the recovered tree) out of the cyclic
    garbage collector's sight, and make its passes rarer (`GC_THRESHOLDS`). None of it is
    cyclic garbage, and a full collection would otherwise walk every znode again each time the
    younger generations fill up: tens of milliseconds per pass for a big tree, stalling every
    client of the member."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _start_admin(nursery: trio.Nursery, member: Member, config: ServerConfig) -> None:
    """Serve the admin port (`zkpy.server.admin`) in `nursery`."""
    try:
        await nursery.start(serve_admin, member, config.host, config.admin_port)
    except (OSError, BaseExceptionGroup) as err:
        busy = _listen_error(err, "admin requests", config.host, config.admin_port)
        if busy is None:
            raise
        raise busy from err


async def serve(config: ServerConfig, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run one member until cancelled. `task_status.started()` reports the bound client port."""
    storage = await trio.to_thread.run_sync(
        lambda: Storage.open(
            config.data_dir, sync=config.fsync, segment_bytes=config.log_segment_bytes
        )
    )
    try:
        member = await trio.to_thread.run_sync(Member, config, storage)
        _freeze_recovered_objects()
        clients = ClientServer(member)
        async with trio.open_nursery() as nursery:
            try:
                listeners = await nursery.start(
                    lambda task_status: trio.serve_tcp(
                        clients.handle,
                        config.client_port,
                        host=config.host,
                        task_status=task_status,
                    )
                )
            except (OSError, BaseExceptionGroup) as err:
                busy = _listen_error(err, "clients", config.host, config.client_port)
                if busy is None:
                    raise
                raise busy from err
            port = listeners[0].socket.getsockname()[1]
            member.client_port = port
            zk_port = await _listen_zk(nursery, clients, config)
            if config.members:
                peers = PeerNetwork(config, member.peer_messages, member.peer_down, member.output)
                member.send_to_peer = peers.send
                member.membership_changed = lambda m: peers.update_members(peer_rows(m))
                if member.replica.config.membership is not None:
                    peers.update_members(peer_rows(member.replica.config.membership))
                me = config.peer(config.server_id)
                try:
                    await nursery.start(peers.run)
                except (OSError, BaseExceptionGroup) as err:
                    busy = _listen_error(err, "peers", me.host, me.peer_port)
                    if busy is None:
                        raise
                    raise busy from err
            await nursery.start(member.run)
            nursery.start_soon(member.run_ticks)
            nursery.start_soon(member.stay_awake)
            if config.admin_port:
                await _start_admin(nursery, member, config)
            log.info(
                "zkpy member %d listening for clients on %s:%d%s, data in %s, last zxid %#x",
                config.server_id,
                config.host,
                port,
                "" if zk_port is None else f" (ZooKeeper's protocol on {zk_port})",
                config.data_dir,
                member.replica.last_logged,
            )
            task_status.started(port)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(storage.close)


async def _listen_zk(
    nursery: trio.Nursery, clients: ClientServer, config: ServerConfig
) -> int | None:
    """Start the listener for ZooKeeper's client protocol, if `zk_port` is set; its port."""
    if config.zk_port is None:
        return None
    users = load_sasl_users(config.sasl_users_file) if config.sasl_users_file else {}
    zk_ports = {member.id: member.zk_port for member in config.members if member.zk_port}
    dialect = JuteDialect(SaslUsers(users, config.sasl_super_user), clients, zk_ports)
    handler = partial(clients.handle, dialect=dialect)
    try:
        listeners = await nursery.start(
            partial(trio.serve_tcp, handler, config.zk_port, host=config.host)
        )
    except (OSError, BaseExceptionGroup) as err:
        busy = _listen_error(err, "ZooKeeper clients", config.host, config.zk_port)
        if busy is None:
            raise
        raise busy from err
    port: int = listeners[0].socket.getsockname()[1]
    zk_ports[config.server_id] = port
    return port
