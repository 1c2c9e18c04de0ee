"""ACL checks, made deterministically from a node's ACL and the caller's authenticated ids."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable

from zkpy.core import ipacl
from zkpy.core.errors import AuthFailedError, InvalidACLError
from zkpy.core.types import (
    ACL,
    SHARED_ACL_CAPACITY,
    SHARED_ACL_MAX_WEIGHT,
    Id,
    Perm,
    SmallValueCache,
    acl_weight,
)

KNOWN_SCHEMES = frozenset({"world", "auth", "digest", "ip", "x509", "sasl", "super"})
SUPER_ID = Id("super", "")
DIGEST_ITERATIONS = 10_000


def digest_id(user: str, password: str) -> Id:
    """The identity that ``digest`` authentication as user:password gives, and that a digest ACL
    names: ``user:<base64 PBKDF2-SHA256(password, salt)>``, the salt derived from the user name.

    Deterministic, so a client can write an ACL for a user without asking the server, and
    salted and slow, so an ACL (readable by anyone with READ on the node) does not give the
    password away cheaply. (ZooKeeper uses an unsalted SHA-1 here; zkpy does not copy that.)
    """
    if not user or ":" in user:
        raise AuthFailedError("a digest user name must be non-empty and hold no ':'")
    salt = f"zkpy-digest:{user}".encode()
    derived = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, DIGEST_ITERATIONS)
    return Id("digest", f"{user}:{base64.b64encode(derived).decode('ascii')}")


def digest_id_from_credential(credential: bytes) -> Id:
    """`digest_id` for the ``user:password`` bytes that `add_auth("digest", ...)` sends."""
    try:
        text = credential.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthFailedError("digest credentials must be UTF-8") from None
    user, sep, password = text.partition(":")
    if not sep:
        raise AuthFailedError("digest credentials must be 'user:password'")
    return digest_id(user, password)


def allows(acl: Iterable[ACL], perm: Perm, ids: frozenset[Id]) -> bool:
    """True when some entry grants `perm` to anyone or to one of `ids`; super passes always."""
    if SUPER_ID in ids:
        return True
    bits = int(perm)  # plain ints: IntFlag arithmetic costs a lot on the request path
    for entry in acl:
        if not entry.perms & bits:
            continue
        if entry.id.scheme == "world" and entry.id.id == "anyone":
            return True
        if entry.id in ids:
            return True
        if entry.id.scheme == "ip" and ipacl.matches(entry.id.id, ids):
            return True
    return False


_RESOLVED: SmallValueCache[tuple[tuple[ACL, ...], frozenset[Id]], tuple[ACL, ...]] = (
    SmallValueCache(SHARED_ACL_CAPACITY, SHARED_ACL_MAX_WEIGHT)
)


def resolve(acl: tuple[ACL, ...], ids: frozenset[Id]) -> tuple[ACL, ...]:
    """`_resolve`, remembered for small ACLs and identities (most creates repeat a few)."""
    key = (acl, ids)
    shared = _RESOLVED.get(key)
    if shared is not None:
        return shared
    resolved = _resolve(acl, ids)
    weight = acl_weight(acl) + acl_weight(resolved)
    _RESOLVED.put(key, resolved, weight + sum(len(i.scheme) + len(i.id) for i in ids))
    return resolved


def _resolve(acl: tuple[ACL, ...], ids: frozenset[Id]) -> tuple[ACL, ...]:
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
        if entry.id.scheme == "ip" and ipacl.parse_network(entry.id.id) is None:
            raise InvalidACLError(
                f"an ip ACL id is an address or address/bits, not {entry.id.id[:80]!r}"
            )
        if entry.id.scheme == "auth":
            # a connection's address is who it is, not something it proved: not for `auth`
            real = sorted(
                (i for i in ids if i.scheme not in ("super", "ip")), key=lambda i: (i.scheme, i.id)
            )
            if not real:
                raise InvalidACLError("an 'auth' ACL needs an authenticated caller")
            resolved.extend(ACL(entry.perms, ident) for ident in real)
        else:
            resolved.append(entry)
    return tuple(dict.fromkeys(resolved))
