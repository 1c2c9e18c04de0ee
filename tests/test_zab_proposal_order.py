"""The leader sends a forwarded write to the follower it came from before the others: on
loopback each write to a peer link runs the receiver's side of TCP, so the peer queued first
hears the proposal first, and that follower's client is the one waiting for it."""

from __future__ import annotations

import pytest

from tests.test_zab_replica import create, ensemble
from zkpy.zab.messages import EarlyPropose, Forward, LoggedPropose, Propose


@pytest.mark.parametrize("local_commit", [True, False])
def test_a_forwarded_write_is_proposed_to_its_follower_first(local_commit: bool) -> None:
    cluster, leader = ensemble(local_commit=local_commit)
    followers = cluster.followers()
    assert len(followers) == 2
    for n, follower in enumerate(followers):
        cluster.r(follower).submit(1, 40 + n, create(f"/from-{follower}"))
        cluster.take(follower)
        forwarded = cluster.deliver(follower, leader)
        assert isinstance(forwarded, Forward)
        proposed = cluster.take(leader)
        proposals = [
            peer
            for peer, message in proposed.messages
            if isinstance(message, LoggedPropose | Propose | EarlyPropose)
        ]
        assert proposals[0] == follower, f"proposed to {proposals} for a write from {follower}"
        assert sorted(proposals) == sorted(followers)
        cluster.run()
    assert all(f"/from-{f}" in cluster.r(leader).tree for f in followers)
    cluster.assert_identical()
