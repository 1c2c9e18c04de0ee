"""What a znode's `ephemeral_owner` says about its kind, encoded as ZooKeeper 3.6 does, so that
ZooKeeper clients read the same Stat.

- 0: a persistent node;
- a positive number: an ephemeral node, owned by that session (session ids are never negative);
- `CONTAINER_OWNER` (the lowest signed 64-bit number, 0x8000000000000000): a container, deleted
  by the leader once it has had a child and has none left;
- 0xFF00000000000000 | ttl, as a signed 64-bit number: a TTL node, deleted by the leader once it
  has no children and has not been modified for `ttl` milliseconds.

The kind lives in the field the checkpoint, the snapshot and the log already store, so it
survives restarts with no change of format.
"""

from __future__ import annotations

CONTAINER_OWNER = -(1 << 63)
_TTL_MARK = 0xFF << 56  # the top byte of a TTL node's owner, read as unsigned
_TTL_VALUE_MASK = (1 << 40) - 1
MAX_TTL_MS = _TTL_VALUE_MASK  # ZooKeeper's limit: the 40 bits below the reserved ones


def ttl_owner(ttl_ms: int) -> int:
    """The `ephemeral_owner` of a TTL node with `ttl_ms`; ValueError if it is out of range."""
    if not 0 < ttl_ms <= MAX_TTL_MS:
        raise ValueError(f"a ttl must be from 1 to {MAX_TTL_MS} milliseconds, not {ttl_ms}")
    return (_TTL_MARK | ttl_ms) - (1 << 64)


def is_session_owner(owner: int) -> bool:
    """Whether `owner` names a session: the node is ephemeral."""
    return owner > 0


def is_container(owner: int) -> bool:
    """Whether `owner` marks a container node."""
    return owner == CONTAINER_OWNER


def ttl_of(owner: int) -> int:
    """The TTL in milliseconds that `owner` carries, 0 if the node is not a TTL node."""
    if owner >= 0 or owner == CONTAINER_OWNER or (owner + (1 << 64)) >> 56 != 0xFF:
        return 0
    return owner & _TTL_VALUE_MASK


def is_reapable(owner: int) -> bool:
    """Whether the leader may reap the node: a container or a TTL node."""
    return owner < 0 and (owner == CONTAINER_OWNER or ttl_of(owner) > 0)
