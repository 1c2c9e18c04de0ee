"""ACL helpers in the style kazoo users know.

    acl = make_digest_acl("alice", "s3cret", all=True)
    await zk.create("/private", b"x", acl=[acl])
    await zk.add_auth("digest", "alice:s3cret")

A denied operation raises `zkpy.errors.NoAuthError`.
"""

from __future__ import annotations

from zkpy.core.acl import digest_id
from zkpy.core.types import (
    ACL,
    ANYONE_ID_UNSAFE,
    AUTH_IDS,
    CREATOR_ALL_ACL,
    OPEN_ACL_UNSAFE,
    READ_ACL_UNSAFE,
    Id,
    Perm,
)

Permissions = Perm


def make_acl(
    scheme: str,
    credential: str,
    *,
    read: bool = False,
    write: bool = False,
    create: bool = False,
    delete: bool = False,
    admin: bool = False,
    all: bool = False,  # kazoo's name, though it shadows the builtin
) -> ACL:
    """An ACL entry granting the chosen permissions to ``scheme:credential``."""
    perms = Perm(0)
    if all:
        perms = Perm.ALL
    else:
        for granted, bit in (
            (read, Perm.READ),
            (write, Perm.WRITE),
            (create, Perm.CREATE),
            (delete, Perm.DELETE),
            (admin, Perm.ADMIN),
        ):
            if granted:
                perms |= bit
    return ACL(perms, Id(scheme, credential))


def make_digest_acl_credential(username: str, password: str) -> str:
    """The ``user:hash`` id that `add_auth("digest", "user:password")` gives a session."""
    return digest_id(username, password).id


def make_digest_acl(
    username: str,
    password: str,
    *,
    read: bool = False,
    write: bool = False,
    create: bool = False,
    delete: bool = False,
    admin: bool = False,
    all: bool = False,  # kazoo's name, though it shadows the builtin
) -> ACL:
    """A digest ACL entry for username/password (the password itself is never stored)."""
    return make_acl(
        "digest",
        make_digest_acl_credential(username, password),
        read=read,
        write=write,
        create=create,
        delete=delete,
        admin=admin,
        all=all,
    )


def parse_acl(text: str) -> ACL:
    """Parse the command-line form ``scheme:id:perms`` (perms from "crwda").

    ``world:anyone:cdrwa``, ``auth::rw``, ``digest:user:password:r`` (hashed here),
    ``x509:CN=client,O=Example:r``.
    """
    head, sep, perm_text = text.rpartition(":")
    scheme, sep2, ident = head.partition(":")
    if not sep or not sep2 or not scheme:
        raise ValueError(f"an ACL is scheme:id:perms, not {text!r}")
    letters = {"c": Perm.CREATE, "r": Perm.READ, "w": Perm.WRITE, "d": Perm.DELETE}
    letters["a"] = Perm.ADMIN
    perms = Perm(0)
    for letter in perm_text:
        if letter not in letters:
            raise ValueError(f"unknown permission {letter!r} (use c, r, w, d, a)")
        perms |= letters[letter]
    if scheme == "digest":
        user, sep3, password = ident.partition(":")
        if not sep3:
            raise ValueError("a digest ACL is digest:user:password:perms")
        ident = make_digest_acl_credential(user, password)
    return ACL(perms, Id(scheme, ident))


def format_acl(acl: ACL) -> str:
    """An ACL entry as ``scheme:id:perms``, perms as ZooKeeper's letters (``cdrwa``)."""
    letters = "".join(
        letter
        for letter, bit in (
            ("c", Perm.CREATE),
            ("d", Perm.DELETE),
            ("r", Perm.READ),
            ("w", Perm.WRITE),
            ("a", Perm.ADMIN),
        )
        if acl.perms & bit
    )
    return f"{acl.id.scheme}:{acl.id.id}:{letters}"


__all__ = [
    "ACL",
    "ANYONE_ID_UNSAFE",
    "AUTH_IDS",
    "CREATOR_ALL_ACL",
    "OPEN_ACL_UNSAFE",
    "READ_ACL_UNSAFE",
    "Id",
    "Permissions",
    "format_acl",
    "make_acl",
    "make_digest_acl",
    "make_digest_acl_credential",
    "parse_acl",
]
