"""Value types shared by the core, the wire and the client: Stat, ACL, zxid helpers."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Generic, NamedTuple, TypeVar


def make_zxid(epoch: int, counter: int) -> int:
    """A zxid: the epoch in the high 32 bits, the counter in the low 32."""
    return (epoch << 32) | counter


def zxid_epoch(zxid: int) -> int:
    """The epoch of a zxid: which leader's term committed it."""
    return zxid >> 32


def zxid_counter(zxid: int) -> int:
    """The counter of a zxid: its place in its epoch."""
    return zxid & 0xFFFFFFFF


class Stat(NamedTuple):
    """The metadata of a znode, with ZooKeeper's eleven fields.

    czxid / mzxid: the zxid that created / last modified the node; pzxid: the zxid that last
    changed its children; ctime / mtime: milliseconds since the epoch; version / cversion /
    aversion: changes to data / children / ACL; ephemeral_owner: the owning session id, 0 if
    persistent (negative for a container or TTL node: see `zkpy.core.nodekind`); data_length
    and num_children.

    A named tuple, like kazoo's ZnodeStat: every read and write returns one, and a tuple is made
    several times faster than a frozen dataclass.
    """

    czxid: int
    mzxid: int
    ctime: int
    mtime: int
    version: int
    cversion: int
    aversion: int
    ephemeral_owner: int
    data_length: int
    num_children: int
    pzxid: int

    @property
    def created(self) -> float:
        """Creation time in seconds since the epoch (kazoo's name)."""
        return self.ctime / 1000.0

    @property
    def last_modified(self) -> float:
        """Modification time in seconds since the epoch (kazoo's name)."""
        return self.mtime / 1000.0

    @property
    def children_count(self) -> int:
        """The number of children (kazoo's name)."""
        return self.num_children

    @property
    def data_version(self) -> int:
        """The data version (kazoo's name)."""
        return self.version

    @property
    def owner_session_id(self) -> int | None:
        """The owning session of an ephemeral node, None for any other (kazoo's name)."""
        return self.ephemeral_owner if self.ephemeral_owner > 0 else None

    def to_wire(self) -> list[int]:
        """The eleven fields as a list, as the wire protocol carries them."""
        return list(self)


class Perm(IntFlag):
    """ACL permissions, with ZooKeeper's bit values."""

    READ = 1
    WRITE = 2
    CREATE = 4
    DELETE = 8
    ADMIN = 16
    ALL = 31


@dataclass(frozen=True, slots=True)
class Id:
    """An identity: a scheme (``world``, ``digest``, ``ip``, ``x509`` ...) and an id in it."""

    scheme: str
    id: str


@dataclass(frozen=True, slots=True)
class ACL:
    """One access control entry: permissions granted to an identity (scheme:id)."""

    perms: int
    id: Id

    def __post_init__(self) -> None:
        object.__setattr__(self, "perms", int(self.perms))  # Perm flags become plain ints

    def to_wire(self) -> list[object]:
        """The ``[perms, scheme, id]`` form of the wire protocol."""
        return [int(self.perms), self.id.scheme, self.id.id]

    @classmethod
    def from_wire(cls, fields: list[object]) -> ACL:
        """Parse the ``[perms, scheme, id]`` form, raising ValueError on any other shape."""
        perms, scheme, ident = fields
        if (
            not isinstance(perms, int)
            or isinstance(perms, bool)
            or not isinstance(scheme, str)
            or not isinstance(ident, str)
        ):
            raise TypeError("ACL entry must be [perms:int, scheme:str, id:str]")
        return cls(perms, Id(scheme, ident))


def acl_from_wire(fields: Iterable[Sequence[object]]) -> tuple[ACL, ...]:
    """Decode a wire ACL (a list of [perms, scheme, id]); equal small ACLs share one value.

    Every create carries an ACL and every member decodes it several times (request, log record,
    checkpoint), almost always the same few: building new objects each time was a fifth of a
    follower's time in a create benchmark. Only small ACLs are shared (`SmallValueCache`): a
    big one from a client would otherwise stay in memory after its request was refused.
    Raises TypeError or ValueError on a bad shape.
    """
    # decoded as tuples (`use_list=False`), the ACL is already the key
    key = fields if type(fields) is tuple else tuple(tuple(entry) for entry in fields)
    shared = _SHARED_ACLS.get(key)  # unhashable parts (a map, a list): TypeError, a bad shape
    if shared is not None:
        return shared
    acl = tuple(ACL.from_wire(list(entry)) for entry in key)
    _SHARED_ACLS.put(key, acl, acl_weight(acl))
    return acl


def acl_weight(acl: Iterable[ACL]) -> int:
    """About how many bytes an ACL holds beyond its entries' objects: its ids' characters."""
    return sum(len(entry.id.scheme) + len(entry.id.id) for entry in acl)


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SmallValueCache(Generic[K, V]):
    """A cache that keeps only small values, at most `capacity` of them, and starts over when
    full. It exists to share the few ACLs that nearly every request carries, and holds at most
    about `capacity * max_weight` bytes of them whatever clients send: a big value (an ACL of
    many entries, perhaps of a request that is then refused) is never kept, so it is freed with
    its request. A hit costs one dict lookup; only a miss is weighed."""

    __slots__ = ("_entries", "capacity", "max_weight")

    def __init__(self, capacity: int, max_weight: int) -> None:
        self._entries: dict[K, V] = {}
        self.capacity = capacity
        self.max_weight = max_weight

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The value kept for `key`, or None."""
        return self._entries.get(key)

    def put(self, key: K, value: V, weight: int) -> None:
        """Keep `value` if its `weight` (about its size in bytes) is at most `max_weight`."""
        if weight > self.max_weight:
            return
        if len(self._entries) >= self.capacity:
            self._entries.clear()
        self._entries[key] = value


SHARED_ACL_CAPACITY = 4096
SHARED_ACL_MAX_WEIGHT = 512  # characters of ids: a few digest or x509 entries
_SHARED_ACLS: SmallValueCache[tuple[tuple[object, ...], ...], tuple[ACL, ...]] = SmallValueCache(
    SHARED_ACL_CAPACITY, SHARED_ACL_MAX_WEIGHT
)


ANYONE_ID_UNSAFE = Id("world", "anyone")
AUTH_IDS = Id("auth", "")
OPEN_ACL_UNSAFE: tuple[ACL, ...] = (ACL(Perm.ALL, ANYONE_ID_UNSAFE),)
CREATOR_ALL_ACL: tuple[ACL, ...] = (ACL(Perm.ALL, AUTH_IDS),)
READ_ACL_UNSAFE: tuple[ACL, ...] = (ACL(Perm.READ, ANYONE_ID_UNSAFE),)


class EventType(IntEnum):
    """What a watch event announces. Numbers are ZooKeeper's."""

    CREATED = 1
    DELETED = 2
    CHANGED = 3
    CHILD = 4


class WatchMode(IntEnum):
    """Kinds of watch registration. One-shot modes are set by reads; the others by add_watch."""

    DATA = 1  # get: fires on CHANGED / DELETED
    EXIST = 2  # exists on a missing node: fires on CREATED
    CHILD = 3  # get_children: fires on CHILD / DELETED
    PERSISTENT = 4  # every event on the path, CHILD included, until removed
    PERSISTENT_RECURSIVE = 5  # CREATED / DELETED / CHANGED on the path and everything below it


@dataclass(frozen=True, slots=True)
class WatchedEvent:
    """A watch event: what happened, to which path, at which zxid."""

    type: EventType
    path: str
    zxid: int
