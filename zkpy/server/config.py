"""Settings of one member, with ZooKeeper-like defaults, the limits that protect it, and the
ensemble description read from a TOML file."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from zkpy.core.prep import DEFAULT_MAX_DATA_BYTES
from zkpy.receiver import check_spin
from zkpy.server.wal import MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES, SEGMENT_BYTES
from zkpy.wire.frames import DEFAULT_MAX_FRAME


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or inconsistent."""


@dataclass(frozen=True, slots=True)
class MemberAddress:
    id: int
    host: str
    client_port: int
    peer_port: int
    observer: bool = False


@dataclass(frozen=True, slots=True)
class ServerConfig:
    data_dir: Path = Path("zkpy-data")
    host: str = "127.0.0.1"
    client_port: int = 2181
    server_id: int = 1
    members: tuple[MemberAddress, ...] = ()  # empty: an ensemble of this member alone
    secret: str = ""  # shared by the members; a peer that cannot prove it is refused
    super_digest: str = ""  # "user:<digest>" (zkpy.security.digest_id) that bypasses ACLs
    tls_cert: str = ""  # with tls_key: clients must speak TLS
    tls_key: str = ""
    tls_ca: str = ""  # CA that signs client certificates (x509 ACLs) and members' certificates
    tls_client_auth: str = "optional"  # none / optional / required client certificates
    peer_tls: bool = False  # mutual TLS between members (needs tls_cert, tls_key, tls_ca)
    tick_ms: int = 2000  # sessions may last 2 to 20 ticks, as in ZooKeeper
    peer_tick_ms: int = 100  # the replica's logical tick: pings, election rounds, limits
    init_limit: int = 50  # peer ticks from election to serving
    sync_limit: int = 20  # peer ticks a follower may go unheard (and may not hear the leader)
    max_data_bytes: int = DEFAULT_MAX_DATA_BYTES
    max_frame: int = DEFAULT_MAX_FRAME
    max_peer_frame: int = 1 << 30  # a snapshot travels in one frame
    max_connections: int = 4096
    max_connections_per_address: int = 128  # so that a few addresses cannot take them all
    max_connections_in_handshake: int = 256  # past it, the oldest one still handshaking goes
    max_in_flight_per_connection: int = 10_000
    max_outbox_bytes: int = 64 << 20  # a client that stops reading is cut off past this
    max_watches_per_session: int = 100_000
    max_total_outbox_bytes: int = 512 << 20  # unsent replies of all connections together
    max_total_watch_bytes: int = 256 << 20  # all watches: their paths and bookkeeping
    max_total_pending_bytes: int = 256 << 20  # requests read and not yet answered, together
    max_children_per_reply: int = 500_000  # a bigger get_children fails with TooManyRequests
    handshake_timeout_s: float = 10.0
    checkpoint_every: int = 20_000  # applied txns between checkpoints of the tree
    sync_history: int = 50_000  # recent log entries a leader keeps to sync followers by diff
    log_segment_bytes: int = SEGMENT_BYTES  # disk taken by each new log segment file, up front
    change_log_capacity: int = 100_000  # recent changes kept to replay watches on reconnect
    spin_before_wait_us: int = 200  # a read that finds no bytes tries this long before it sleeps
    fsync: bool = True  # False is UNSAFE and only for tests that prove lost writes are detected

    def __post_init__(self) -> None:
        if not 0 < self.server_id < 256:
            raise ValueError("server id must be between 1 and 255")
        if self.tick_ms <= 0:
            raise ValueError("tick must be positive")
        check_spin(self.spin_before_wait_s, "spin_before_wait_us")
        segment = self.log_segment_bytes
        if type(segment) is not int or not MIN_SEGMENT_BYTES <= segment <= MAX_SEGMENT_BYTES:
            raise ValueError(
                f"log_segment_bytes must be a whole number of bytes from {MIN_SEGMENT_BYTES} "
                f"(1 MiB) to {MAX_SEGMENT_BYTES} (1 GiB), not {segment!r}"
            )
        if self.max_frame < self.max_data_bytes:
            raise ValueError("the frame limit must hold the largest value")
        if self.members and self.server_id not in {m.id for m in self.members}:
            raise ValueError(f"member {self.server_id} is not in the ensemble")
        if self.members and not self.secret and not self.peer_tls:
            raise ValueError("an ensemble needs a shared secret or peer_tls")
        if self.peer_tls and not (self.tls_cert and self.tls_ca):
            raise ValueError("peer_tls needs tls_cert, tls_key and tls_ca")
        _check_limits(self)

    @property
    def spin_before_wait_s(self) -> float:
        return self.spin_before_wait_us / 1e6

    @property
    def voters(self) -> frozenset[int]:
        if not self.members:
            return frozenset({self.server_id})
        return frozenset(m.id for m in self.members if not m.observer)

    @property
    def observers(self) -> frozenset[int]:
        return frozenset(m.id for m in self.members if m.observer)

    def peer(self, member_id: int) -> MemberAddress:
        for member in self.members:
            if member.id == member_id:
                return member
        raise KeyError(member_id)


_LIMITS = (
    "max_connections_in_handshake",
    "max_total_outbox_bytes",
    "max_total_watch_bytes",
    "max_total_pending_bytes",
)


def _check_limits(config: ServerConfig) -> None:
    """The member-wide limits are whole numbers of at least 1."""
    for name in _LIMITS:
        value = getattr(config, name)
        if type(value) is not int or value < 1:
            raise ValueError(f"{name} must be a whole number from 1, not {value!r}")


_MEMBER_KEYS = {"host", "client_port", "peer_port", "data_dir"}
_TOP_KEYS = {f.name for f in fields(ServerConfig)} - {
    "members",
    "server_id",
    "host",
    "client_port",
}


def load_config(path: Path | str, member_id: int, **overrides: Any) -> ServerConfig:
    """Read an ensemble file and return member `member_id`'s settings.

    ```toml
    secret = "change me"
    tick_ms = 200
    data_dir = "zkpy-data"          # member N keeps its data in zkpy-data/member-N
    [members.1]
    host = "127.0.0.1"
    client_port = 2181
    peer_port = 2888
    [observers.4]                   # serves reads, receives the history, does not vote
    host = "127.0.0.1"
    client_port = 2184
    peer_port = 2891
    ```
    """
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    members = _members(document, "members", False) + _members(document, "observers", True)
    if not members:
        raise ConfigError(f"{path} names no [members.N]")
    me = next((m for m in members if m.id == member_id), None)
    if me is None:
        raise ConfigError(f"{path} has no member {member_id}")
    unknown = set(document) - _TOP_KEYS - {"members", "observers"}
    if unknown:
        raise ConfigError(f"{path}: unknown settings {sorted(unknown)}")
    settings: dict[str, Any] = {k: v for k, v in document.items() if k in _TOP_KEYS}
    base = Path(settings.pop("data_dir", "zkpy-data"))
    if not base.is_absolute():
        base = path.parent / base
    member_table = document.get("observers" if me.observer else "members", {})[str(member_id)]
    data_dir = (
        Path(member_table["data_dir"])
        if "data_dir" in member_table
        else base / (f"member-{member_id}")
    )
    settings.update(overrides)
    try:
        return ServerConfig(
            data_dir=data_dir,
            host=me.host,
            client_port=me.client_port,
            server_id=member_id,
            members=tuple(members),
            **settings,
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path}: {err}") from None


def _members(document: dict[str, Any], key: str, observer: bool) -> list[MemberAddress]:
    table = document.get(key, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{key}] must be a table of members")
    found = []
    for name, entry in table.items():
        if not name.isdigit() or not isinstance(entry, dict):
            raise ConfigError(f"[{key}.{name}]: members are [{key}.N] tables with a numeric N")
        unknown = set(entry) - _MEMBER_KEYS
        if unknown:
            raise ConfigError(f"[{key}.{name}]: unknown keys {sorted(unknown)}")
        try:
            found.append(
                MemberAddress(
                    int(name),
                    str(entry.get("host", "127.0.0.1")),
                    int(entry["client_port"]),
                    int(entry["peer_port"]),
                    observer,
                )
            )
        except KeyError as err:
            raise ConfigError(f"[{key}.{name}] lacks {err}") from None
    return found
