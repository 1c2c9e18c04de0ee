"""ZooKeeper's four-letter words, as ZooKeeper 3.8 prints them (monitoring tools parse them).

A word is a connection's first 4 bytes on the ZooKeeper port, sent in place of a handshake
(`zkpy.server.zk_clients.JuteDialect.command`); the answer is the whole reply, after which the
connection closes. Each word is a function of the member and its client connections.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import time
from collections.abc import Callable
from typing import Any

from zkpy.server.admin import disk_usage
from zkpy.server.clients import ClientConnection
from zkpy.server.metrics import MeteredCodec
from zkpy.server.node import Member
from zkpy.wire import jute

ZOOKEEPER_VERSION = "3.8.0-zkpy"
"""The version the four-letter words report: the ZooKeeper release whose protocol is served."""

NOT_SERVING = "This ZooKeeper instance is not currently serving requests\n"
_LAST_OPS = {
    jute.OP_PING: "PING",
    jute.OP_CREATE_SESSION: "SESS",
    jute.OP_CLOSE_SESSION: "CLOS",
    jute.OP_CREATE: "CREA",
    jute.OP_CREATE2: "CREA",
    jute.OP_CREATE_CONTAINER: "CREA",
    jute.OP_CREATE_TTL: "CREA",
    jute.OP_DELETE: "DELE",
    jute.OP_SET_DATA: "SETD",
    jute.OP_SET_ACL: "SETA",
    jute.OP_CHECK: "CHEC",
    jute.OP_MULTI: "MULT",
    jute.OP_MULTI_READ: "MLTR",
    jute.OP_SYNC: "SYNC",
    jute.OP_EXISTS: "EXIS",
    jute.OP_GET_DATA: "GETD",
    jute.OP_GET_ACL: "GETA",
    jute.OP_GET_CHILDREN: "GETC",
    jute.OP_GET_CHILDREN2: "GETC",
    jute.OP_GET_ALL_CHILDREN_NUMBER: "GETACN",
    jute.OP_GET_EPHEMERALS: "GETE",
    jute.OP_SET_WATCHES: "SETW",
    jute.OP_SET_WATCHES2: "STW2",
    jute.OP_CHECK_WATCHES: "CHKW",
    jute.OP_REMOVE_WATCHES: "REMW",
    jute.OP_ADD_WATCH: "ADDW",
    jute.OP_WHO_AM_I: "HOMI",
    jute.OP_RECONFIG: "RECO",
    jute.OP_SASL: "SASL",
    jute.OP_AUTH: "AUTH",
}
"""The operation names ZooKeeper's `cons` prints as `lop` (its FinalRequestProcessor's)."""


READ_ONLY_LINE = "READ-ONLY mode; serving only read-only clients\n"
"""The line ZooKeeper's `srvr` and `stat` add under the version in read-only mode."""


def _mode(status: dict[str, Any]) -> str:
    if status["read_only"]:
        return "read-only"
    role = str(status["role"])
    return role if role in ("leader", "follower", "observer", "standalone") else "looking"


def _answers(status: dict[str, Any]) -> bool:
    """Whether the member answers clients: it serves, or it serves read-only clients."""
    return bool(status["serving"] or status["read_only"])


def _version_lines(status: dict[str, Any]) -> str:
    return f"Zookeeper version: {ZOOKEEPER_VERSION}\n" + (
        READ_ONLY_LINE if status["read_only"] else ""
    )


def _ms(seconds: float) -> int:
    """A latency in whole milliseconds, as ZooKeeper reports them."""
    return 0 if seconds == math.inf else int(seconds * 1000)


def _average_ms(member: Member) -> float:
    """The average of every answered request's latency in whole ms, to 4 places, as
    ZooKeeper averages them."""
    metrics = member.metrics
    return round(metrics.latency_ms_sum / metrics.answered, 4) if metrics.answered else 0.0


def _latencies(member: Member) -> str:
    """ZooKeeper's `min/avg/max` over every request answered (ms)."""
    metrics = member.metrics
    return f"{_ms(metrics.latency_min)}/{_average_ms(member)}/{_ms(metrics.latency_max)}"


def _server_stats(member: Member, status: dict[str, Any]) -> str:
    """ZooKeeper's ServerStats lines, shared by `srvr` and `stat`."""
    return (
        f"Latency min/avg/max: {_latencies(member)}\n"
        f"Received: {member.metrics.received}\n"
        f"Sent: {member.metrics.sent}\n"
        f"Connections: {status['connections']}\n"
        f"Outstanding: {status['outstanding']}\n"
        f"Zxid: {status['committed_zxid']:#x}\n"
        f"Mode: {_mode(status)}\n"
        f"Node count: {status['znodes']}\n"
    )


def _srvr(member: Member, connections: list[ClientConnection]) -> str:
    status = member.status()
    if not _answers(status):
        return NOT_SERVING
    return _version_lines(status) + _server_stats(member, status)


def _stat_word(member: Member, connections: list[ClientConnection]) -> str:
    status = member.status()
    if not _answers(status):
        return NOT_SERVING
    clients = "".join(_connection_line(conn, brief=True) + "\n" for conn in connections)
    return f"{_version_lines(status)}Clients:\n{clients}\n{_server_stats(member, status)}"


def _peer_address(conn: ClientConnection) -> str:
    """``/host:port`` of the client, as Java prints a socket address."""
    stream: Any = conn.stream
    while hasattr(stream, "transport_stream"):  # TLS over the socket
        stream = stream.transport_stream
    try:
        host, port = stream.socket.getpeername()[:2]
    except (AttributeError, OSError):
        return "/?"
    return f"/{host}:{port}"


def _connection_line(conn: ClientConnection, brief: bool = False) -> str:
    """One connection as ZooKeeper's `dumpConnectionInfo` prints it (ms and hex zxids)."""
    codec = conn.rules.codec
    if not isinstance(codec, MeteredCodec):
        return f" {_peer_address(conn)}[1](queued={conn.rules.queued})"
    line = (
        f" {_peer_address(conn)}[1](queued={conn.rules.queued},recved={codec.received},"
        f"sent={codec.sent}"
    )
    session_id = conn.session_id
    if brief or not session_id:
        return line + ")"
    now, clock = time.time(), time.perf_counter()
    last_response = codec.last_response or clock
    average = codec.latency_ms_sum // codec.answered if codec.answered else 0
    fields = [
        f"sid={session_id:#x}",
        f"lop={_LAST_OPS.get(codec.last_opcode, 'NA')}",
        f"est={int(codec.established * 1000)}",
        f"to={conn.rules.timeout_ms}",
    ]
    if codec.last_xid >= 0:
        fields.append(f"lcxid={codec.last_xid:#x}")
    fields += [
        f"lzxid={codec.last_zxid & 0xFFFFFFFFFFFFFFFF:#x}",
        f"lresp={int((now - (clock - last_response)) * 1000) if codec.last_response else 0}",
        f"llat={_ms(codec.last_latency)}",
        f"minlat={_ms(codec.latency_min)}",
        f"avglat={average}",
        f"maxlat={_ms(codec.latency_max)}",
    ]
    return f"{line},{','.join(fields)})"


def _cons(member: Member, connections: list[ClientConnection]) -> str:
    if not member.status()["serving"]:
        return NOT_SERVING
    return "".join(_connection_line(conn) + "\n" for conn in connections) + "\n"


def _dump(member: Member, connections: list[ClientConnection]) -> str:
    """Sessions (with their timeouts), ephemeral nodes by session, and connections."""
    if not member.status()["serving"]:
        return NOT_SERVING
    tree = member.tree
    lines = ["SessionTracker dump:", f"Global Sessions({len(tree.sessions)}):"]
    for session_id in sorted(tree.sessions):
        lines.append(f"{session_id:#x}\t{tree.sessions[session_id].timeout_ms}ms")
    owners = {owner: paths for owner, paths in tree.ephemerals.items() if paths}
    lines += ["ephemeral nodes dump:", f"Sessions with Ephemerals ({len(owners)}):"]
    for owner in sorted(owners):
        lines.append(f"{owner:#x}:")
        lines += [f"\t{path}" for path in sorted(owners[owner])]
    lines += ["Connections dump:", f"Connections ({len(connections)}):"]
    for conn in connections:
        lines.append(f"\tip: {_peer_address(conn)} sessionId: {conn.session_id:#x}")
    return "\n".join(lines) + "\n"


def _watched(member: Member, connections: list[ClientConnection]) -> dict[int, set[str]]:
    """The paths each session watches here (one connection serves a session)."""
    found: dict[int, set[str]] = {}
    for conn in connections:
        paths_watched = {path for _mode, path in member.watches.registrations(conn.id)}
        if paths_watched and conn.session_id:
            found.setdefault(conn.session_id, set()).update(paths_watched)
    return found


def _wchs(member: Member, connections: list[ClientConnection]) -> str:
    watched = _watched(member, connections)
    paths_watched = set().union(*watched.values()) if watched else set()
    total = sum(len(member.watches.registrations(conn.id)) for conn in connections)
    return (
        f"{len(watched)} connections watching {len(paths_watched)} paths\nTotal watches:{total}\n"
    )


def _wchc(member: Member, connections: list[ClientConnection]) -> str:
    watched = _watched(member, connections)
    lines = []
    for session_id in sorted(watched):
        lines.append(f"{session_id:#x}")
        lines += [f"\t{path}" for path in sorted(watched[session_id])]
    return "".join(line + "\n" for line in lines)


def _wchp(member: Member, connections: list[ClientConnection]) -> str:
    by_path: dict[str, set[int]] = {}
    for session_id, watched_paths in _watched(member, connections).items():
        for path in watched_paths:
            by_path.setdefault(path, set()).add(session_id)
    lines = []
    for path in sorted(by_path):
        lines.append(path)
        lines += [f"\t{session_id:#x}" for session_id in sorted(by_path[path])]
    return "".join(line + "\n" for line in lines)


def _mntr(member: Member, connections: list[ClientConnection]) -> str:
    status = member.status()
    metrics = member.metrics
    values = {
        "zk_version": ZOOKEEPER_VERSION,
        "zk_server_state": _mode(status),
        "zk_avg_latency": _average_ms(member),
        "zk_max_latency": _ms(metrics.latency_max),
        "zk_min_latency": _ms(metrics.latency_min),
        "zk_packets_received": metrics.received,
        "zk_packets_sent": metrics.sent,
        "zk_num_alive_connections": status["connections"],
        "zk_outstanding_requests": status["outstanding"],
        "zk_znode_count": status["znodes"],
        "zk_watch_count": status["watches"],
        "zk_ephemerals_count": sum(len(p) for p in member.tree.ephemerals.values()),
        "zk_global_sessions": status["sessions"],
        "zk_local_sessions": len(member.read_only_mode),
        "zk_quorum_size": len(member.config.voters) or 1,
        "zk_open_file_descriptor_count": _open_files(),
        "zk_max_file_descriptor_count": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "zk_uptime": status["uptime_ms"],
    }
    return "".join(f"{key}\t{value}\n" for key, value in values.items())


def _open_files() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def _conf(member: Member, connections: list[ClientConnection]) -> str:
    config = member.config
    bounds = member.bounds
    values = {
        "clientPort": config.zk_port,
        "dataDir": config.data_dir,
        "tickTime": config.tick_ms,
        "maxClientCnxns": config.max_connections_per_address,
        "minSessionTimeout": bounds.min_ms,
        "maxSessionTimeout": bounds.max_ms,
        "serverId": config.server_id,
    }
    return "".join(f"{key}={value}\n" for key, value in values.items())


def _envi(member: Member, connections: list[ClientConnection]) -> str:
    values = {
        "zookeeper.version": ZOOKEEPER_VERSION,
        "host.name": member.config.host,
        "python.version": platform.python_version(),
        "os.name": platform.system(),
        "user.dir": os.getcwd(),
    }
    return "Environment:\n" + "".join(f"{key}={value}\n" for key, value in values.items())


def _srst(member: Member, connections: list[ClientConnection]) -> str:
    if not _answers(member.status()):
        return NOT_SERVING
    member.metrics.reset_server_stats()
    return "Server stats reset.\n"


def _crst(member: Member, connections: list[ClientConnection]) -> str:
    if not _answers(member.status()):
        return NOT_SERVING
    for conn in connections:
        codec = conn.rules.codec
        if isinstance(codec, MeteredCodec):
            codec.reset_stats()
    return "Connection stats reset.\n"


def _dirs(member: Member, connections: list[ClientConnection]) -> str:
    """The bytes of the checkpoint (ZooKeeper's data dir holds its snapshots) and of the log
    segments (its log dir holds its transaction logs)."""
    if not _answers(member.status()):
        return NOT_SERVING
    log_bytes, checkpoint_bytes = disk_usage(member.config.data_dir)
    return f"datadir_size: {checkpoint_bytes}\nlogdir_size: {log_bytes}\n"


def _isro(member: Member, connections: list[ClientConnection]) -> str:
    """`rw` serving, `ro` in read-only mode, `null` neither (ZooKeeper's answers): what
    kazoo and the Java client ask, while connected read-only, to find a member that takes
    writes."""
    status = member.status()
    if status["serving"]:
        return "rw"
    return "ro" if status["read_only"] else "null"


FOUR_LETTER_WORDS: dict[bytes, Callable[[Member, list[ClientConnection]], str]] = {
    b"ruok": lambda member, connections: "imok",
    b"srvr": _srvr,
    b"stat": _stat_word,
    b"mntr": _mntr,
    b"conf": _conf,
    b"isro": _isro,
    b"envi": _envi,
    b"cons": _cons,
    b"dump": _dump,
    b"wchs": _wchs,
    b"wchc": _wchc,
    b"wchp": _wchp,
    b"srst": _srst,
    b"crst": _crst,
    b"dirs": _dirs,
}
