"""Settings of one member, with ZooKeeper-like defaults, the limits that protect it, and the
ensemble description read from a TOML file."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from zkpy.core.prep import DEFAULT_MAX_DATA_BYTES
from zkpy.server.settings import MAX_PORT, check_settings
from zkpy.server.wal import SEGMENT_BYTES
from zkpy.wire.frames import DEFAULT_MAX_FRAME


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or inconsistent."""


@dataclass(frozen=True, slots=True)
class MemberAddress:
    """One member of the ensemble: where clients and peers reach it (`zk_port`: ZooKeeper's
    clients, None for no such listener), and whether it only observes (gets every write but
    does not vote)."""

    id: int
    host: str
    client_port: int
    peer_port: int
    observer: bool = False
    zk_port: int | None = None


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything one member runs with: its own address and data, the ensemble, the limits
    that protect it and the tuning knobs. Every field is checked when it is made."""

    data_dir: Path = Path("zkpy-data")
    host: str = "127.0.0.1"
    client_port: int = 2181
    zk_port: int | None = None  # ZooKeeper's client protocol (0: any free port); None: off
    admin_port: int = 0  # HTTP /metrics, /health, /status (zkpy.server.admin); 0: none
    server_id: int = 1
    members: tuple[MemberAddress, ...] = ()  # empty: an ensemble of this member alone
    secret: str = ""  # shared by the members; a peer that cannot prove it is refused
    super_digest: str = ""  # "user:<digest>" (zkpy.security.digest_id) that bypasses ACLs
    sasl_users_file: str = ""  # user:password lines for SASL DIGEST-MD5 on zk_port; "": none
    sasl_super_user: str = ""  # the SASL user that bypasses ACLs (zookeeper.superUser)
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
    sync_history_bytes: int = 128 << 20  # and at most this many bytes of them
    log_segment_bytes: int = SEGMENT_BYTES  # disk taken by each new log segment file, up front
    change_log_capacity: int = 100_000  # recent changes kept to replay watches on reconnect
    spin_before_wait_us: int = 200  # a read that finds no bytes tries this long before it sleeps
    stay_awake_us: int = 400  # a follower whose clients wait on the leader stays awake this long
    yield_background_work: bool = True  # work no client waits on lets waiting processes go first
    background_slice_us: int = 20_000  # the scheduler slice of that work (Linux 6.12+); 0: as is
    container_check_interval_ms: int = 60_000  # how often the leader reaps container/TTL nodes
    read_only_mode: bool = True  # without a quorum, serve the clients that ask for read-only
    read_only_after_ms: int = 2000  # how long without a quorum before it does
    fsync: bool = True  # False is UNSAFE and only for tests that prove lost writes are detected

    def __post_init__(self) -> None:
        check_settings(self)  # each setting's type and range; what follows relates settings
        if self.max_frame < self.max_data_bytes:
            raise ValueError("the frame limit must hold the largest value")
        if self.zk_port and self.zk_port == self.client_port:
            raise ValueError(f"zk_port and client_port are both {self.zk_port}")
        if self.members and self.server_id not in {m.id for m in self.members}:
            raise ValueError(f"member {self.server_id} is not in the ensemble")
        if self.members and not self.secret and not self.peer_tls:
            raise ValueError("an ensemble needs a shared secret or peer_tls")
        if self.peer_tls and not (self.tls_cert and self.tls_ca):
            raise ValueError("peer_tls needs tls_cert, tls_key and tls_ca")

    @property
    def stay_awake_s(self) -> float:
        """`stay_awake_us` in seconds."""
        return self.stay_awake_us / 1e6

    @property
    def spin_before_wait_s(self) -> float:
        """`spin_before_wait_us` in seconds, as trio counts time."""
        return self.spin_before_wait_us / 1e6

    @property
    def voters(self) -> frozenset[int]:
        """The ids of the voting members (this member alone when no ensemble is given)."""
        if not self.members:
            return frozenset({self.server_id})
        return frozenset(m.id for m in self.members if not m.observer)

    @property
    def observers(self) -> frozenset[int]:
        """The ids of the observers."""
        return frozenset(m.id for m in self.members if m.observer)

    def peer(self, member_id: int) -> MemberAddress:
        """The address of member `member_id`; KeyError if the ensemble has no such member."""
        for member in self.members:
            if member.id == member_id:
                return member
        raise KeyError(member_id)


_MEMBER_KEYS = {"host", "client_port", "peer_port", "zk_port", "data_dir", "admin_port"}
_TOP_KEYS = {f.name for f in fields(ServerConfig)} - {
    "members",
    "server_id",
    "host",
    "client_port",
    "zk_port",
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
    zk_port = 2281                  # optional: ZooKeeper's client protocol too
    admin_port = 8081               # optional: HTTP /metrics, /health, /status
    [observers.4]                   # serves reads, receives the history, does not vote
    host = "127.0.0.1"
    client_port = 2184
    peer_port = 2891
    ```
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err}") from None
    return config_from_text(text, path, member_id, **overrides)


def config_from_text(text: str, path: Path, member_id: int, **overrides: Any) -> ServerConfig:
    """`load_config` for the text of the ensemble file at `path` (not read)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    try:
        return _config(document, path, member_id, overrides)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path}: {err}") from None


def _config(
    document: dict[str, Any], path: Path, member_id: int, overrides: dict[str, Any]
) -> ServerConfig:
    """`load_config` for a parsed document; raises ValueError naming what is wrong."""
    members = _members(document, "members", False) + _members(document, "observers", True)
    if not members:
        raise ValueError("names no [members.N]")
    _check_distinct(members)
    me = next((m for m in members if m.id == member_id), None)
    if me is None:
        raise ValueError(f"has no member {member_id}")
    unknown = set(document) - _TOP_KEYS - {"members", "observers"}
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    settings: dict[str, Any] = {k: v for k, v in document.items() if k in _TOP_KEYS}
    base = Path(_text(settings.pop("data_dir", "zkpy-data"), "data_dir"))
    if not base.is_absolute():
        base = path.parent / base
    table = "observers" if me.observer else "members"
    member_table = document[table][str(member_id)]
    data_dir = (
        Path(_text(member_table["data_dir"], f"[{table}.{member_id}] data_dir"))
        if "data_dir" in member_table
        else base / (f"member-{member_id}")
    )
    settings["zk_port"] = me.zk_port
    users_file = settings.get("sasl_users_file")
    if isinstance(users_file, str) and users_file and not Path(users_file).is_absolute():
        settings["sasl_users_file"] = str(path.parent / users_file)  # beside the file
    if "admin_port" in member_table:  # per member, over a top-level admin_port for all
        settings["admin_port"] = _port(member_table, "admin_port", f"[{table}.{member_id}]")
    settings.update(overrides)
    return ServerConfig(
        data_dir=data_dir,
        host=me.host,
        client_port=me.client_port,
        server_id=member_id,
        members=tuple(members),
        **settings,
    )


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, not {value!r}")
    return value


def _port(entry: dict[str, Any], key: str, where: str) -> int:
    if key not in entry:
        raise ValueError(f"{where} lacks {key!r}")
    value = entry[key]
    if type(value) is not int or not 1 <= value <= MAX_PORT:
        raise ValueError(
            f"{where} {key} must be a whole number from 1 to {MAX_PORT}, not {value!r}"
        )
    return value


def _members(document: dict[str, Any], key: str, observer: bool) -> list[MemberAddress]:
    table = document.get(key, {})
    if not isinstance(table, dict):
        raise ValueError(f"[{key}] must be a table of members")
    found = []
    for name, entry in table.items():
        where = f"[{key}.{name}]"
        if not name.isdigit() or not 1 <= int(name) <= 255 or not isinstance(entry, dict):
            raise ValueError(f"{where}: members are [{key}.N] tables with N from 1 to 255")
        unknown = set(entry) - _MEMBER_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        host = _text(entry.get("host", "127.0.0.1"), f"{where} host")
        client_port = _port(entry, "client_port", where)
        peer_port = _port(entry, "peer_port", where)
        zk_port = _port(entry, "zk_port", where) if "zk_port" in entry else None
        found.append(MemberAddress(int(name), host, client_port, peer_port, observer, zk_port))
    return found


def _check_distinct(members: list[MemberAddress]) -> None:
    """No two members share an id, and no two ports of the ensemble the same address."""
    ids: set[int] = set()
    addresses: dict[tuple[str, int], str] = {}
    for member in members:
        if member.id in ids:
            raise ValueError(f"member {member.id} is both a voting member and an observer")
        ids.add(member.id)
        ports = [("client_port", member.client_port), ("peer_port", member.peer_port)]
        if member.zk_port is not None:
            ports.append(("zk_port", member.zk_port))
        for kind, port in ports:
            owner = f"member {member.id}'s {kind}"
            other = addresses.setdefault((member.host, port), owner)
            if other != owner:
                raise ValueError(f"{owner} and {other} are both {member.host}:{port}")
