"""ZooKeeper's quotas as its 3.8 servers keep them by default: clients (zkCli's setquota and
delquota) write the limits under /zookeeper/quota, and every member counts the nodes and
bytes of each quota's subtree into its stats node, the same way from the same records."""

from __future__ import annotations

import pytest

from tests.test_core_session_moves import OWNER_A, S1, Leader
from zkpy.core.errors import Code
from zkpy.core.requests import (
    CloseSessionRequest,
    CreateRequest,
    CreateSessionRequest,
    DeleteRequest,
    MultiRequest,
    SetDataRequest,
    WriteRequest,
)
from zkpy.core.tree import DataTree
from zkpy.core.types import OPEN_ACL_UNSAFE as OPEN

LIMITS = "/zookeeper/quota/app/zookeeper_limits"
STATS = "/zookeeper/quota/app/zookeeper_stats"


def stats_of(leader: Leader, path: str = STATS) -> bytes | None:
    node = leader.tree.get(path)
    assert node is not None
    return node.data


def ok(leader: Leader, *requests: WriteRequest) -> None:
    for request in requests:
        assert leader.run(request, OWNER_A) == Code.OK, request


def set_quota(leader: Leader, root: str = "/app", stats: bytes = b"count=0,bytes=0") -> None:
    """What zkCli's `setquota -n 10 /app` writes (a null node on the way, as Java sends)."""
    quota = f"/zookeeper/quota{root}"
    ok(
        leader,
        CreateRequest(quota, None, OPEN),
        CreateRequest(f"{quota}/zookeeper_limits", b"count=10,bytes=-1", OPEN),
        CreateRequest(f"{quota}/zookeeper_stats", stats, OPEN),
    )


@pytest.fixture
def leader() -> Leader:
    found = Leader()
    ok(
        found,
        CreateSessionRequest(S1, 10_000, b"pw"),
        CreateRequest("/app", b"12345", OPEN),
        CreateRequest("/app/a", b"xy", OPEN),
        CreateRequest("/other", b"zzz", OPEN),
    )
    return found


def test_the_stats_count_the_subtree_from_the_start(leader: Leader) -> None:
    set_quota(leader)
    assert stats_of(leader) == b"count=2,bytes=7"
    assert leader.tree.quotas == {"/app"}


def test_every_write_in_the_subtree_is_counted_and_no_other(leader: Leader) -> None:
    set_quota(leader)
    ok(
        leader,
        CreateRequest("/app/b", b"1234", OPEN),  # +1 node, +4 bytes
        SetDataRequest("/app", b"1"),  # 5 bytes -> 1
        SetDataRequest("/app/a", None),  # null data counts 0 bytes
        CreateRequest("/other/c", b"ignored", OPEN),
        SetDataRequest("/other", b"ignored too"),
        MultiRequest((CreateRequest("/app/m", b"mm", OPEN), DeleteRequest("/app/b"))),
    )
    assert stats_of(leader) == b"count=3,bytes=3"
    node = leader.tree.get(STATS)
    assert node is not None
    assert (node.version, node.mzxid) == (0, node.czxid), "counted in place, as ZooKeeper does"


def test_ephemeral_nodes_leave_the_count_with_their_session(leader: Leader) -> None:
    set_quota(leader)
    ok(leader, CreateRequest("/app/e", b"eee", OPEN, ephemeral=True))
    assert stats_of(leader) == b"count=3,bytes=10"
    ok(leader, CloseSessionRequest())
    assert stats_of(leader) == b"count=2,bytes=7"


def test_the_nearest_quota_counts_a_node(leader: Leader) -> None:
    set_quota(leader)
    set_quota(leader, "/app/a")
    ok(leader, CreateRequest("/app/a/deep", b"123", OPEN))
    assert stats_of(leader, "/zookeeper/quota/app/a/zookeeper_stats") == b"count=2,bytes=5"
    assert stats_of(leader) == b"count=2,bytes=7"


def test_a_removed_quota_counts_no_more(leader: Leader) -> None:
    set_quota(leader)
    ok(leader, DeleteRequest(LIMITS), CreateRequest("/app/b", b"", OPEN))
    assert leader.tree.quotas == set()
    assert stats_of(leader) == b"count=2,bytes=7"


def test_stats_a_client_overwrote_are_counted_again(leader: Leader) -> None:
    set_quota(leader)
    ok(leader, SetDataRequest(STATS, b"garbage"), CreateRequest("/app/b", b"", OPEN))
    assert stats_of(leader) == b"count=3,bytes=7"
    ok(leader, SetDataRequest(STATS, b"count=100,bytes=1=;extra=1"))
    ok(leader, CreateRequest("/app/c", b"", OPEN))
    assert stats_of(leader) == b"count=101,bytes=1"


def test_a_quota_on_a_missing_path_or_the_root_counts_nothing(leader: Leader) -> None:
    set_quota(leader, "/nothing")
    assert stats_of(leader, "/zookeeper/quota/nothing/zookeeper_stats") == b"count=0,bytes=0"
    ok(leader, CreateRequest("/nothing", b"ab", OPEN))
    assert stats_of(leader, "/zookeeper/quota/nothing/zookeeper_stats") == b"count=1,bytes=2"
    ok(
        leader,
        CreateRequest("/zookeeper/quota/zookeeper_limits", b"count=1", OPEN),
        CreateRequest("/zookeeper/quota/zookeeper_stats", b"count=0,bytes=0", OPEN),
    )
    assert "/" not in leader.tree.quotas
    assert stats_of(leader, "/zookeeper/quota/zookeeper_stats") == b"count=0,bytes=0"


def test_a_restored_tree_keeps_counting(leader: Leader) -> None:
    set_quota(leader)
    tree = leader.tree
    restored = DataTree.from_checkpoint(tree.last_zxid, tree.iter_snapshot(), tree.iter_sessions())
    assert restored.quotas == {"/app"}
    assert restored.digest() == tree.digest()
    delta = tree.take_checkpoint()
    assert STATS in dict(delta.node_puts)
