"""Memory a client can make a member hold: caches keep only small values, and a member's
connections together hold at most its aggregate limits (outboxes, watches, pending requests)."""

from __future__ import annotations

import gc
import tracemalloc

from zkpy.core import acl as acls
from zkpy.core.types import SHARED_ACL_CAPACITY, Id, acl_from_wire


def _big_acl(tag: str, entries: int = 2000) -> list[list[object]]:
    return [[31, "digest", f"{tag}-user-{index}:{'x' * 40}"] for index in range(entries)]


def test_small_acls_are_shared_and_big_ones_are_not_kept() -> None:
    small = [[31, "world", "anyone"]]
    assert acl_from_wire(small) is acl_from_wire([[31, "world", "anyone"]])
    resolved = acls.resolve(acl_from_wire(small), frozenset())
    assert acls.resolve(acl_from_wire(small), frozenset()) is resolved

    big = _big_acl("shared")
    assert acl_from_wire(big) == acl_from_wire(big)
    assert acl_from_wire(big) is not acl_from_wire(big)
    decoded = acl_from_wire(big)
    assert acls.resolve(decoded, frozenset()) is not acls.resolve(decoded, frozenset())


def test_decoded_acls_of_refused_requests_are_freed() -> None:
    """A unique big ACL (as a refused `set_acl` brings) leaves nothing behind in the caches."""
    gc.collect()
    tracemalloc.start()
    try:
        before, _peak = tracemalloc.get_traced_memory()
        for round_ in range(5):
            decoded = acl_from_wire(_big_acl(f"refused-{round_}"))
            acls.resolve(decoded, frozenset({Id("digest", "me:x")}))
            del decoded
        gc.collect()
        after, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 1 << 20, f"{after - before} bytes stayed"


def test_the_shared_acl_cache_is_bounded() -> None:
    """However many distinct small ACLs arrive, the cache keeps at most its capacity."""
    for index in range(SHARED_ACL_CAPACITY + 10):
        acl_from_wire([[1, "digest", f"u{index}:x"]])
    from zkpy.core import types

    assert len(types._SHARED_ACLS) <= SHARED_ACL_CAPACITY
