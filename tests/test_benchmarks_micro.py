"""The pure-core replication micro-benchmark moves real writes through all three replicas."""

from __future__ import annotations

from benchmarks.micro import ZabBench, bench_peer, bench_zab
from zkpy.core.requests import SetDataRequest


def test_each_batch_of_sets_is_applied_on_every_replica() -> None:
    bench = ZabBench(b"first")
    bench.requests = [SetDataRequest(r.path, f"v-{r.path}".encode()) for r in bench.requests]

    assert bench.sets() == ZabBench.BATCH

    for replica in bench.replicas.values():
        assert replica is not None
        for request in bench.requests:
            node = replica.tree.get(request.path)
            assert node is not None
            assert (node.data, node.version) == (request.data, 1)
    assert bench.leader_time > 0
    assert bench.follower_time > 0


def test_the_zab_group_reports_the_leader_and_a_follower() -> None:
    rows = bench_zab(0.02, b"x" * 10)

    assert [(row.group, row.unit) for row in rows] == [("zab", "sets/s")] * 2
    assert all(row.rate > 0 for row in rows)


def test_the_peer_group_encodes_and_decodes_every_message_it_names() -> None:
    rows = bench_peer(0.001, b"x" * 10)

    forwards = [row.name for row in rows if row.name.startswith("Forward")]
    assert forwards == [
        "Forward (1 set, 10 B) encode+decode",
        "Forward (64 sets, 10 B) encode+decode",
    ]
    assert all(row.rate > 0 for row in rows)
