"""ACL checks, made deterministically from a node's ACL and the caller's authenticated ids."""

from __future__ import annotations

from collections.abc import Iterable

from zkpy.core.errors import InvalidACLError
from zkpy.core.types import ACL, Id, Perm

KNOWN_SCHEMES = frozenset({"world", "auth", "digest", "ip", "x509", "super"})
SUPER_ID = Id("super", "")


def allows(acl: Iterable[ACL], perm: Perm, ids: frozenset[Id]) -> bool:
    """True when some entry grants `perm` to anyone or to one of `ids`; super passes always."""
    if SUPER_ID in ids:
        return True
    for entry in acl:
        if not entry.perms & perm:
            continue
        if entry.id.scheme == "world" and entry.id.id == "anyone":
            return True
        if entry.id in ids:
            return True
    return False


def resolve(acl: tuple[ACL, ...], ids: frozenset[Id]) -> tuple[ACL, ...]:
    """Check an ACL given by a client and expand `auth` entries to the caller's ids."""
    if not acl:
        raise InvalidACLError("an ACL must have at least one entry")
    resolved: list[ACL] = []
    for entry in acl:
        if entry.id.scheme not in KNOWN_SCHEMES or entry.id.scheme == "super":
            raise InvalidACLError(f"unknown ACL scheme {entry.id.scheme!r}")
        if not 0 < entry.perms <= Perm.ALL:
            raise InvalidACLError(f"bad permission bits {entry.perms}")
        if entry.id.scheme == "world" and entry.id.id != "anyone":
            raise InvalidACLError("the world scheme has only the id 'anyone'")
        if entry.id.scheme == "auth":
            real = sorted((i for i in ids if i.scheme != "super"), key=lambda i: (i.scheme, i.id))
            if not real:
                raise InvalidACLError("an 'auth' ACL needs an authenticated caller")
            resolved.extend(ACL(entry.perms, ident) for ident in real)
        else:
            resolved.append(entry)
    return tuple(dict.fromkeys(resolved))
