"""`zkpy backup` of a running ensemble and `zkpy restore` into a new one, end to end."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

import zkpy
from zkpy.server.backup import read_backup
from zkpy.testing.ensemble import Ensemble, child_env


async def zkpy_cli(*args: str) -> str:
    """Run `python -m zkpy ARGS...` and return its stdout; fail on a non-zero exit."""
    result = await trio.run_process(
        [sys.executable, "-m", "zkpy", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=child_env(),
    )
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout.decode()


async def test_a_new_ensemble_restored_from_a_backup_serves_all_of_it(tmp_path: Path) -> None:
    expected: dict[str, bytes] = {}
    backup_file = tmp_path / "nightly.zkb"
    with Ensemble(tmp_path / "old") as old:
        old.start_all()
        await old.wait_all_serving()
        async with zkpy.connect(old.addresses()) as zk:
            await zk.create("/app", b"root of the app")
            for index in range(200):
                path = f"/app/item{index:03d}"
                expected[path] = bytes([index % 256]) * (index % 40)
                await zk.create(path, expected[path])
            await zk.set("/app", b"changed")
            expected["/app"] = b"changed"
            follower = (await old.followers())[0]
            await zk.sync("/app")
            await old.wait_converged()
            await zkpy_cli("backup", "--server", follower.address, "--out", str(backup_file))
        await old.stop_all()
    backup = read_backup(backup_file)

    with Ensemble(tmp_path / "new") as new:
        for member in new.voters:
            await zkpy_cli("restore", str(backup_file), "--data-dir", str(member.data_dir))
        new.start_all()
        statuses = await new.wait_all_serving()
        assert sorted(status["role"] for status in statuses.values()) == [
            "follower",
            "follower",
            "leader",
        ]
        assert all(status["epoch"] > backup.zxid >> 32 for status in statuses.values())
        for member in new.voters:
            async with zkpy.connect(member.address) as zk:
                children = await zk.get_children("/app")
                assert sorted(f"/app/{name}" for name in children) == sorted(
                    path for path in expected if path != "/app"
                )
                for path, data in expected.items():
                    assert (await zk.get(path))[0] == data
        async with zkpy.connect(new.addresses()) as zk:
            await zk.create("/app/after-restore", b"")
        assert (await new.wait_converged()) > backup.zxid
