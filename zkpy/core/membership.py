"""The ensemble's membership as the log commits it: who votes, who observes, and where each
member listens.

A change of membership is a transaction (`zkpy.core.txn.Reconfig`) whose data is the whole new
membership in ZooKeeper's dynamic-configuration text, one line per member and a version line:

    server.1=10.0.0.1:2888:2888:participant;10.0.0.1:2181
    server.4=10.0.0.4:2888:2888:observer;10.0.0.4:2181
    version=100000003

Applying it writes that text to `/zookeeper/config`, so the committed membership is part of
the tree: it is in every checkpoint, every snapshot a follower installs, and the answer to a
ZooKeeper client's getConfig. Its version is the zxid that committed it. zkpy has one peer port
per member, so the peer and election ports of a line are the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from zkpy.core.errors import BadArgumentsError

CONFIG_PATH = "/zookeeper/config"
MAX_MEMBER_ID = 0xFFFF  # what the peer handshake carries


@dataclass(frozen=True, slots=True, order=True)
class MemberSpec:
    """One member of a membership: its id, whether it only observes, and its addresses."""

    id: int
    host: str = "127.0.0.1"
    client_port: int = 0
    peer_port: int = 0
    observer: bool = False
    election_port: int = 0  # ZooKeeper's second port, kept as given (0: the peer port)
    client_host: str = ""  # where clients connect, if not `host`

    def line(self) -> str:
        """The member's line of the dynamic-configuration text."""
        role = "observer" if self.observer else "participant"
        election = self.election_port or self.peer_port
        return (
            f"server.{self.id}={self.host}:{self.peer_port}:{election}:{role};"
            f"{self.client_host or self.host}:{self.client_port}"
        )


@dataclass(frozen=True, slots=True)
class Membership:
    """A whole membership and the zxid that committed it (0: not committed, e.g. a TOML's)."""

    members: tuple[MemberSpec, ...]
    version: int = 0

    @property
    def voters(self) -> frozenset[int]:
        """The ids of the members that vote."""
        return frozenset(m.id for m in self.members if not m.observer)

    @property
    def observers(self) -> frozenset[int]:
        """The ids of the members that only observe."""
        return frozenset(m.id for m in self.members if m.observer)

    @property
    def ids(self) -> frozenset[int]:
        """Every member's id."""
        return frozenset(m.id for m in self.members)

    def member(self, member_id: int) -> MemberSpec | None:
        """The member with this id, if any."""
        return next((m for m in self.members if m.id == member_id), None)

    def to_text(self) -> str:
        """ZooKeeper's dynamic-configuration text, the version line last."""
        lines = [m.line() for m in sorted(self.members)]
        lines.append(f"version={self.version:x}")
        return "\n".join(lines)

    def encode(self) -> bytes:
        """The text as stored in `/zookeeper/config`."""
        return self.to_text().encode("utf-8")

    def changed(self, add: Iterable[MemberSpec], remove: Iterable[int], version: int) -> Membership:
        """This membership with `remove` taken out and `add` put in (an added id that is
        already a member replaces it: a role or address change). Raises BadArgumentsError for
        a change that names an unknown member, names one twice, or leaves no voter."""
        adding = list(add)
        removing = list(remove)
        ids = [m.id for m in adding] + removing
        if len(set(ids)) != len(ids):
            raise BadArgumentsError("a reconfig names the same member twice")
        if not adding and not removing:
            raise BadArgumentsError("a reconfig must add or remove a member")
        for member_id in removing:
            if self.member(member_id) is None:
                raise BadArgumentsError(f"member {member_id} is not in the configuration")
        for spec in adding:
            _check_spec(spec)
        gone = set(removing) | {m.id for m in adding}
        members = tuple(sorted([m for m in self.members if m.id not in gone] + adding))
        result = Membership(members, version)
        if not result.voters:
            raise BadArgumentsError("a reconfig may not leave the ensemble without a voter")
        return result

    def replaced(self, members: Iterable[MemberSpec], version: int) -> Membership:
        """The membership made of exactly `members` (ZooKeeper's non-incremental reconfig):
        the members left out are removed, new ones added, and a listed member whose role or
        peer address differs is changed. A listed member keeps its own client address: the
        line a client restates shows the address of the protocol that client speaks (a
        ZooKeeper client sees the member's `zk_port`, `with_client_ports`), not the one the
        membership records. Raises BadArgumentsError as `changed` does."""
        listed = list(members)
        ids = [spec.id for spec in listed]
        if len(set(ids)) != len(ids):
            raise BadArgumentsError("a reconfig names the same member twice")
        changes = []
        for spec in listed:
            current = self.member(spec.id)
            if current is None:
                changes.append(spec)
            elif _peer_side(spec) != _peer_side(current):
                changes.append(_with_client_address(spec, current))
        leaving = sorted(self.ids - set(ids))
        if not changes and not leaving:
            raise BadArgumentsError("a reconfig must change the membership")
        return self.changed(changes, leaving, version)


def _peer_side(spec: MemberSpec) -> tuple[str, int, int, bool]:
    """What a member's line says of it besides its client address."""
    return (spec.host, spec.peer_port, spec.election_port or spec.peer_port, spec.observer)


def _with_client_address(spec: MemberSpec, current: MemberSpec) -> MemberSpec:
    return MemberSpec(
        spec.id,
        spec.host,
        current.client_port,
        spec.peer_port,
        spec.observer,
        spec.election_port,
        current.client_host or current.host,
    )


def _check_spec(spec: MemberSpec) -> None:
    if not 1 <= spec.id <= MAX_MEMBER_ID:
        raise BadArgumentsError(f"member id {spec.id} is not in 1..{MAX_MEMBER_ID}")
    if not spec.host or any(c in spec.host for c in ":;=\n "):
        raise BadArgumentsError(f"bad host {spec.host!r} for member {spec.id}")
    for port in (spec.client_port, spec.peer_port):
        if not 0 < port < 65536:
            raise BadArgumentsError(f"bad port {port} for member {spec.id}")


def with_client_ports(text: bytes, ports: Mapping[int, int]) -> bytes:
    """The dynamic-configuration `text` with the client port of each member in `ports`
    replaced, its client host kept. A member's line names its msgpack client port; ZooKeeper's
    clients (Curator's ensemble tracker, `ZooKeeper.updateServerList` after getConfig) connect
    to the address it names, so the ZooKeeper port shows them its `zk_port` instead. Lines of
    other members (one that joined by reconfig names what the reconfig gave) and anything that
    is not a server line are left as they are."""
    if not ports:
        return text
    lines = text.decode("utf-8", "replace").split("\n")
    for index, line in enumerate(lines):
        key, sep, value = line.partition("=")
        ident = key.removeprefix("server.")
        if not sep or ident == key or not ident.isdigit():
            continue
        port = ports.get(int(ident))
        server, semicolon, client = value.rpartition(";")
        if port is None or not semicolon:
            continue
        host, colon, _port = client.rpartition(":")
        lines[index] = f"{key}={server};{host}{colon}{port}"
    return "\n".join(lines).encode("utf-8")


def parse_member(text: str) -> MemberSpec:
    """`N=HOST:CLIENT_PORT:PEER_PORT[:observer|:participant]`, as `zkpy reconfig --add` takes
    it; raises BadArgumentsError."""
    ident, sep, rest = text.partition("=")
    parts = rest.split(":")
    if not sep or len(parts) not in (3, 4):
        raise BadArgumentsError(f"expected N=HOST:CLIENT_PORT:PEER_PORT[:observer], got {text!r}")
    role = parts[3] if len(parts) == 4 else "participant"
    if role not in ("participant", "observer"):
        raise BadArgumentsError(f"unknown role {role!r} (participant or observer)")
    try:
        spec = MemberSpec(int(ident), parts[0], int(parts[1]), int(parts[2]), role == "observer")
    except ValueError:
        raise BadArgumentsError(f"bad member {text!r}: ids and ports are numbers") from None
    _check_spec(spec)
    return spec


def parse_membership(data: bytes) -> Membership:
    """The membership `Membership.encode` wrote (also ZooKeeper's form: `server.N=HOST:PEER:
    ELECTION[:ROLE][;[HOST:]CLIENT]` lines and `version=HEX`); raises BadArgumentsError."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadArgumentsError("the configuration is not UTF-8") from None
    members: list[MemberSpec] = []
    version = 0
    try:
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            key, _sep, value = line.partition("=")
            if key == "version":
                version = int(value, 16)
                continue
            if not key.startswith("server."):
                raise ValueError(line)
            members.append(_parse_server(int(key[len("server.") :]), value))
    except ValueError:
        raise BadArgumentsError(f"bad configuration line in {text!r}") from None
    return Membership(tuple(sorted(members)), version)


def _parse_server(member_id: int, value: str) -> MemberSpec:
    peers, _sep, client = value.partition(";")
    parts = peers.split(":")
    if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] not in _ROLES):
        raise ValueError(value)
    host, peer_port, election_port = parts[0], int(parts[1]), int(parts[2])
    observer = len(parts) == 4 and parts[3] == "observer"
    client_host, _colon, client_port = client.rpartition(":")
    return MemberSpec(
        member_id,
        host,
        int(client_port) if client_port else 0,
        peer_port,
        observer,
        election_port if election_port != peer_port else 0,
        client_host if client_host != host else "",
    )


_ROLES = ("participant", "observer")


def parse_server_line(text: str) -> MemberSpec:
    """One ``server.N=HOST:PEER_PORT:ELECTION_PORT[:ROLE];[HOST:]CLIENT_PORT`` entry, as
    ZooKeeper's reconfig names joining members; raises BadArgumentsError."""
    key, sep, value = text.strip().partition("=")
    try:
        if not sep or not key.startswith("server."):
            raise ValueError(text)
        spec = _parse_server(int(key[len("server.") :]), value)
    except ValueError:
        raise BadArgumentsError(f"bad server line {text!r}") from None
    _check_spec(spec)
    return spec
