"""A member cut off from the other two (both SIGSTOPped) acknowledges nothing; once they are
back, each write attempted meanwhile is either wholly there or wholly absent."""

from __future__ import annotations

import time
from pathlib import Path

import trio

from tests.ensemble_harness import Ensemble, connect_to, read_tree
from zkpy.core.errors import ConnectionLossError

CUT_OFF_S = 3.0  # how long the minority member is left alone


async def test_minority_member_acknowledges_no_write(tmp_path: Path) -> None:
    with Ensemble(tmp_path) as ens:
        leader = await ens.start_serving()
        lonely = (await ens.followers())[0]
        others = [m for m in ens.voters if m is not lonely]
        assert leader in others

        attempts: list[int] = []
        outcomes: list[tuple[int, str]] = []
        async with connect_to(lonely) as zk:
            await zk.create("/cut", b"")
            await zk.create("/cut/before", b"acknowledged while whole")
            for member in others:
                member.pause()
            cut_at = time.monotonic()

            # Keep trying atomic writes of three nodes each until the deadline: none may succeed.
            with trio.move_on_after(CUT_OFF_S):
                while True:
                    attempt = len(attempts) + 1
                    attempts.append(attempt)
                    tx = zk.transaction()
                    for part in "abc":
                        tx.create(f"/cut/w{attempt}-{part}", f"{attempt}{part}".encode())
                    try:
                        result = await tx.commit()
                    except ConnectionLossError as err:
                        outcomes.append((attempt, f"ConnectionLoss after {_since(cut_at)}: {err}"))
                        continue
                    outcomes.append((attempt, f"SUCCESS {result!r} after {_since(cut_at)}"))
            print(f"\nwhile cut off: {outcomes}")
            assert attempts, "no write was attempted"
            assert not any(text.startswith("SUCCESS") for _a, text in outcomes), outcomes

            # Alone, the member has stopped serving (it drops its clients and refuses new ones).
            status = await lonely.status()
            assert status is not None
            assert not status["serving"], status
            assert status["role"] == "looking", status

            for member in others:
                member.resume()

        await ens.wait_all_serving()
        await ens.leader()
        zxid = await ens.wait_converged()
        assert zxid > 0
        trees = {m.id: await read_tree(m, "/cut") for m in ens.voters}
        assert all(tree == trees[leader.id] for tree in trees.values()), trees
        tree = trees[leader.id]
        assert tree["/cut/before"] == b"acknowledged while whole"
        present = []
        for attempt in attempts:
            parts = {part: tree.get(f"/cut/w{attempt}-{part}") for part in "abc"}
            found = [part for part, data in parts.items() if data is not None]
            assert found in ([], ["a", "b", "c"]), f"write {attempt} is half there: {parts}"
            if found:
                present.append(attempt)
                assert parts == {p: f"{attempt}{p}".encode() for p in "abc"}
        print(f"attempted {attempts}, applied in full: {present}, absent: the rest")

        # The ensemble serves again, through the member that was cut off too.
        async with connect_to(lonely) as zk:
            await zk.create("/cut/after", b"whole again")
        for member in ens.voters:
            assert await read_tree(member, "/cut/after") == {"/cut/after": b"whole again"}


def _since(start: float) -> str:
    return f"{time.monotonic() - start:.2f} s"
