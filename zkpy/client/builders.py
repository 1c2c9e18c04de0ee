"""The request builders that `Client`, `Transaction` and `Pipeline` all call.

Each checks its arguments the way the server's decoder and prep would, and raises the same
error before anything is sent: `BadArgumentsError` for a bad path, data that is not bytes or a
version out of range, `InvalidACLError` for an ACL that is not a list of `ACL` entries. A bad
argument thus fails that one call and leaves the connection (and every other request on it)
alone, instead of reaching the server as a frame it must refuse as garbage. What they build is
encoded in one place for all three, `zkpy.client.connection.ClientConnection.send_request`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from zkpy.core import paths
from zkpy.core.errors import BadArgumentsError, InvalidACLError
from zkpy.core.membership import MemberSpec, parse_member, parse_server_line
from zkpy.core.nodekind import MAX_TTL_MS
from zkpy.core.requests import (
    AddWatchRequest,
    AuthRequest,
    CheckRequest,
    CreateRequest,
    DeleteRequest,
    ExistsRequest,
    GetACLRequest,
    GetChildrenRequest,
    GetDataRequest,
    MultiOp,
    MultiRequest,
    ReconfigRequest,
    RemoveWatchesRequest,
    SetACLRequest,
    SetDataRequest,
    SyncRequest,
)
from zkpy.core.types import ACL, Id, Perm, WatchMode
from zkpy.wire.client import MAX_MULTI_OPS

MAX_VERSION = 2**31 - 1  # versions are ZooKeeper's signed 32-bit counters


def data(value: object) -> bytes:
    """`value` if it is bytes (a znode's value is bytes: encode text yourself)."""
    if type(value) is bytes:
        return value
    if isinstance(value, bytes):  # a subclass: send plain bytes
        return bytes(value)
    raise BadArgumentsError(f"data must be bytes, not {type(value).__name__}")


def version(value: object) -> int:
    """`value` if it is -1 (any version) or a version a node can have."""
    if type(value) is int and -1 <= value <= MAX_VERSION:
        return value
    raise BadArgumentsError(
        f"version must be -1 (any) or a whole number from 0 to {MAX_VERSION}, not {value!r}"
    )


def acl(entries: object) -> tuple[ACL, ...]:
    """`entries` as a tuple, if it is a non-empty collection of well-formed `ACL` entries."""
    if isinstance(entries, ACL):
        raise InvalidACLError("an ACL is a list of entries, not a single ACL entry")
    if isinstance(entries, str | bytes) or not isinstance(entries, Iterable):
        raise InvalidACLError(f"an ACL is a list of ACL entries, not {type(entries).__name__}")
    checked = tuple(entries)
    if not checked:
        raise InvalidACLError("an ACL must have at least one entry")
    for entry in checked:
        _check_acl_entry(entry)
    return checked


def _check_acl_entry(entry: object) -> None:
    if not isinstance(entry, ACL):
        raise InvalidACLError(f"ACL entries must be zkpy.ACL values, not {type(entry).__name__}")
    if not 0 < entry.perms <= Perm.ALL:
        raise InvalidACLError(f"bad permission bits {entry.perms!r} (1 to {int(Perm.ALL)})")
    ident = entry.id
    if not (isinstance(ident, Id) and type(ident.scheme) is str and type(ident.id) is str):
        raise InvalidACLError(f"an ACL entry's id must be Id(scheme: str, id: str): {ident!r}")


def create(
    path: object,
    value: object,
    entries: object,
    ephemeral: bool = False,
    sequential: bool = False,
    container: bool = False,
    ttl: object = None,
) -> CreateRequest:
    """A create request (``ephemeral`` / ``sequential`` / ``container`` as the flags say, a
    TTL node with ``ttl`` milliseconds), refusing the combinations prep refuses."""
    ttl_ms = 0 if ttl is None else ttl_value(ttl)
    if container and (ephemeral or sequential or ttl_ms):
        raise BadArgumentsError("a container node cannot be ephemeral, sequential or have a ttl")
    if ttl_ms and ephemeral:
        raise BadArgumentsError("an ephemeral node cannot have a ttl")
    return CreateRequest(
        paths.validate(path, sequential=bool(sequential)),
        data(value),
        acl(entries),
        bool(ephemeral),
        bool(sequential),
        bool(container),
        ttl_ms,
    )


def ttl_value(value: object) -> int:
    """`value` if it is a ttl a TTL node may have (milliseconds, 1 to `MAX_TTL_MS`)."""
    if type(value) is int and 0 < value <= MAX_TTL_MS:
        return value
    raise BadArgumentsError(
        f"ttl must be a whole number of milliseconds from 1 to {MAX_TTL_MS}, not {value!r}"
    )


def reconfig(
    add: object, remove: object, from_version: object = -1, new_members: object = None
) -> ReconfigRequest:
    """A reconfig request: members to add (``"N=HOST:CLIENT_PORT:PEER_PORT[:observer]"`` or
    `MemberSpec`), ids to remove, and the membership version to match (-1: any); or, with
    `new_members` (members as for `add`), the whole new membership."""
    members = _members(add, "add")
    if isinstance(remove, (str, bytes)) or not isinstance(remove, Iterable):
        raise BadArgumentsError("remove must be a list of member ids")
    ids = []
    for item in remove:
        if type(item) is not int:
            raise BadArgumentsError(f"a member id to remove must be an int, not {item!r}")
        ids.append(item)
    if type(from_version) is not int or from_version < -1:
        raise BadArgumentsError(f"from_version must be a zxid or -1, not {from_version!r}")
    if new_members is None:
        return ReconfigRequest(members, tuple(ids), from_version)
    if members or ids:
        raise BadArgumentsError("give add and remove, or new_members, not both")
    return ReconfigRequest(
        from_version=from_version, new_members=_members(new_members, "new_members")
    )


def _members(value: object, name: str) -> tuple[MemberSpec, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise BadArgumentsError(f"{name} must be a list of members")
    members = []
    for item in value:
        if isinstance(item, MemberSpec):
            members.append(parse_server_line(item.line()))
        elif isinstance(item, str):
            members.append(parse_member(item))
        else:
            raise BadArgumentsError(f"a member must be a str or MemberSpec, not {item!r}")
    return tuple(members)


def set_data(path: object, value: object, expected: object = -1) -> SetDataRequest:
    """A set_data request; `expected` is the version to match, -1 for any."""
    return SetDataRequest(paths.validate(path), data(value), version(expected))


def delete(path: object, expected: object = -1) -> DeleteRequest:
    """A delete request; `expected` is the version to match, -1 for any."""
    return DeleteRequest(paths.validate(path), version(expected))


def check(path: object, expected: object) -> CheckRequest:
    """A version check, for a multi."""
    return CheckRequest(paths.validate(path), version(expected))


def set_acl(path: object, entries: object, expected: object = -1) -> SetACLRequest:
    """A set_acl request; `expected` is the ACL version to match, -1 for any."""
    return SetACLRequest(paths.validate(path), acl(entries), version(expected))


def get_data(path: object, watch: bool = False) -> GetDataRequest:
    """A get_data request, leaving a data watch if `watch`."""
    return GetDataRequest(paths.validate(path), watch)


def exists(path: object, watch: bool = False) -> ExistsRequest:
    """An exists request, leaving an exist or data watch if `watch`."""
    return ExistsRequest(paths.validate(path), watch)


def get_children(path: object, watch: bool = False) -> GetChildrenRequest:
    """A get_children request, leaving a child watch if `watch`."""
    return GetChildrenRequest(paths.validate(path), watch)


def get_acl(path: object) -> GetACLRequest:
    """A get_acl request."""
    return GetACLRequest(paths.validate(path))


def sync(path: object) -> SyncRequest:
    """A sync request."""
    return SyncRequest(paths.validate(path))


def add_watch(path: object, mode: WatchMode) -> AddWatchRequest:
    """A request for a persistent (or persistent recursive) watch."""
    return AddWatchRequest(paths.validate(path), mode)


def remove_watches(path: object, mode: WatchMode | None) -> RemoveWatchesRequest:
    """A request to remove the watches of `mode` (None: all) on `path`."""
    return RemoveWatchesRequest(paths.validate(path), mode)


def multi(ops: Sequence[MultiOp]) -> MultiRequest:
    """A multi of operations made by the builders above (each already checked)."""
    if len(ops) > MAX_MULTI_OPS:
        raise BadArgumentsError(
            f"a transaction holds at most {MAX_MULTI_OPS} operations, not {len(ops)}"
        )
    return MultiRequest(tuple(ops))


def auth(scheme: object, credential: object) -> AuthRequest:
    """An auth request; the credential is sent as its UTF-8 bytes."""
    if type(scheme) is not str or not scheme:
        raise BadArgumentsError(f"an auth scheme must be a non-empty str, not {scheme!r}")
    if type(credential) is not str:
        raise BadArgumentsError(f"a credential must be a str, not {type(credential).__name__}")
    return AuthRequest(scheme, credential.encode())
