"""A process that knows the members but not the cluster secret is refused by them."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.ensemble_harness import Ensemble, connect_to, poll, read_tree

WATCH_IMPOSTOR_S = 3.0  # longer than init_limit (40 x 50 ms): several election attempts


async def test_member_with_another_secret_is_refused(tmp_path: Path) -> None:
    with Ensemble(tmp_path) as ens:
        leader = await ens.start_serving()
        victim = (await ens.followers())[0]
        honest = [m for m in ens.voters if m is not victim]
        async with connect_to(leader) as zk:
            await zk.create("/before", b"")
        assert await victim.stop() == 0

        # Same members, same ports, another secret; it runs as the stopped member.
        impostor_config = ens.write_config(tmp_path / "impostor.toml", "not-the-secret")
        victim.start(impostor_config)
        for member in honest:
            await poll(
                lambda m=member: "refused a peer connection" in m.log(),
                timeout=10,
                what=f"member {member.id} to refuse the impostor",
            )

        # It never serves, and the ensemble keeps serving (two of three is a quorum) while
        # nothing reaches the impostor.
        first = await victim.status()
        assert first is not None
        assert not first["serving"]
        written = 0
        with trio.move_on_after(WATCH_IMPOSTOR_S):
            while True:
                async with connect_to(honest) as zk:
                    await zk.create(f"/during-{written}", b"")
                written += 1
                status = await victim.status()
                assert victim.running, victim.log()
                assert status is not None, "the impostor stopped answering"
                assert not status["serving"], status
                assert status["role"] == "looking", status
                assert status["last_zxid"] == first["last_zxid"], status
                assert status["epoch"] == first["epoch"], status
        assert written > 0
        for member in honest:
            tree = await read_tree(member, "/")
            assert {f"/during-{index}" for index in range(written)} <= set(tree)
            status = await member.status()
            assert status is not None
            assert status["serving"], status
        assert "refused" in victim.log()
