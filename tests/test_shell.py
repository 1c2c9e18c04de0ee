"""`zkpy.shell`: zkCli.sh's commands over one session, driven as a piped script is, against an
in-process member (the shell runs in a worker thread, as the blocking client must)."""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

import zkpy
import zkpy.sync
from zkpy.core.types import Stat
from zkpy.shell import Shell, parse_quota, run_script, stat_text
from zkpy.testing import RunningServer


@dataclass
class Run:
    out: str
    err: str
    status: int
    session_id: int

    def lines(self) -> list[str]:
        return self.out.splitlines()


async def shell_script(
    address: str, script: str, *, during: Callable[[Shell], object] | None = None, **kw: Any
) -> Run:
    """Pipe `script` into a shell on a new session, as `zkpy shell < script` does; the session
    is closed when the script ends."""

    def body() -> Run:
        out, err = io.StringIO(), io.StringIO()
        with zkpy.sync.connect(address) as zk:
            shell = Shell(zk, out, err, **kw)
            status = run_script(shell, io.StringIO(script))
            if during is not None:
                during(shell)
            shell.close_watches()
            return Run(out.getvalue(), err.getvalue(), status, zk.session_id)

    return await trio.to_thread.run_sync(body)


async def test_an_ephemeral_lasts_as_long_as_the_shell(server: RunningServer) -> None:
    seen: list[Stat | None] = []

    def look_from_another_session(shell: Shell) -> None:
        with zkpy.sync.connect(server.address) as other:
            seen.append(other.exists("/e"))

    run = await shell_script(
        server.address,
        "create -e /e here\nget /e\nls /\ngetEphemerals\n",
        during=look_from_another_session,
    )
    assert run.status == 0, run.err
    assert run.lines() == ["Created /e", "here", "e", "zookeeper", "/e"]
    # Still there after the script's last command, owned by the shell's session ...
    assert seen[0] is not None
    assert seen[0].ephemeral_owner == run.session_id
    # ... and gone once the shell has ended.
    async with zkpy.connect(server.address) as zk:
        assert await zk.exists("/e") is None


async def test_addauth_lasts_for_later_commands(server: RunningServer) -> None:
    run = await shell_script(
        server.address,
        "whoami\n"
        "addauth digest bob:secret\n"
        "create /private v1 digest:bob:secret:cdrwa\n"
        "set /private v2\n"
        "get /private\n"
        "getAcl /private\n"
        "whoami\n",
    )
    assert run.status == 0, run.err
    assert run.lines() == ["Created /private", "v2", run.lines()[2], "digest:bob"]
    assert run.lines()[2].startswith("digest:bob:")
    assert run.lines()[2].endswith(":cdrwa")
    async with zkpy.connect(server.address) as zk:
        with pytest.raises(zkpy.errors.NoAuthError):
            await zk.get("/private")


async def test_get_w_prints_the_event_a_later_command_causes(server: RunningServer) -> None:
    run = await shell_script(
        server.address,
        "create /n 0\nget -w /n\nset /n 1\nls -w /n\ncreate /n/c\nset /n 2\n",
    )
    assert run.status == 0, run.err
    lines = run.lines()
    assert lines[:2] == ["Created /n", "0"]
    assert lines[2].startswith("WATCHER:: CHANGED /n zxid=0x")
    assert lines[3] == "Created /n/c"
    assert lines[4].startswith("WATCHER:: CHILD /n zxid=0x")
    # one-shot: the second set prints no second event for the get -w
    assert len(lines) == 5


async def test_addwatch_and_removewatches(server: RunningServer) -> None:
    run = await shell_script(
        server.address,
        "create /p\n"
        "addWatch -m PERSISTENT_RECURSIVE /p\n"
        "create /p/a\n"
        "set /p/a x\n"
        "removewatches /p\n"
        "set /p/a y\n"
        "get -w /p/a\n"
        "delete /p/a\n"
        "removewatches /p\n",
    )
    events = [line.split()[1:3] for line in run.lines() if line.startswith("WATCHER")]
    # after removewatches, only the get -w's own DELETED event comes: no CHANGED for "y"
    assert events == [["CREATED", "/p/a"], ["CHANGED", "/p/a"], ["DELETED", "/p/a"]]
    assert run.status == 1  # the second removewatches found nothing to remove
    assert run.err.strip() == "zkpy: NoWatcherError: no watcher: /p"


async def test_json_on_every_command_parses(server: RunningServer) -> None:
    script = (
        "create -e /j text\nget -s -w /j\nset /j more\nls -s /\nstat /j\ngetAcl /j\nsync /j\n"
        "getEphemerals\nwhoami\nls -R /j\nhistory\nget /missing\n"
    )
    run = await shell_script(server.address, script, as_json=True)
    results = [json.loads(line) for line in run.lines()]
    assert results[0] == {"created": "/j"}
    assert results[1]["data"] == "text"
    assert results[1]["stat"]["version"] == 0
    assert results[1]["stat"]["ctime_date"].endswith("+00:00")
    assert results[2]["stat"]["version"] == 1
    assert results[3]["watch"]["event"] == "CHANGED"
    assert results[3]["watch"]["path"] == "/j"
    assert results[4]["children"] == ["j", "zookeeper"]
    assert results[-1]["history"] == script.splitlines()[:-1]
    assert json.loads(run.err) == {"error": "NoNodeError", "message": "no node: /missing"}
    assert run.status == 1


async def test_binary_data_is_shown_in_hex(server: RunningServer, tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"\x00\xff\x01")
    run = await shell_script(server.address, f"create /bin @{blob}\nget /bin\ncreate /txt ok\n")
    assert run.lines() == ["Created /bin", "hex:00ff01", "Created /txt"]
    run = await shell_script(server.address, "get /txt\nget /bin\n", data_format="hex")
    assert run.lines() == ["hex:6f6b", "hex:00ff01"]
    run = await shell_script(server.address, "get --json /bin\n")
    assert json.loads(run.out) == {"path": "/bin", "data": None, "data_hex": "00ff01"}


async def test_raw_writes_the_bytes(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        await zk.create("/raw", b"\x00\xfe")

    def body() -> bytes:
        buffer = io.BytesIO()
        out = io.TextIOWrapper(buffer, write_through=True)
        with zkpy.sync.connect(server.address) as zk:
            assert Shell(zk, out, io.StringIO(), data_format="raw").execute("get /raw")
        return buffer.getvalue()

    assert await trio.to_thread.run_sync(body) == b"\x00\xfe\n"


async def test_values_from_standard_input_and_files(server: RunningServer, tmp_path: Path) -> None:
    (tmp_path / "v").write_bytes(b"from a file")

    def body() -> tuple[list[bool], str]:
        out, err = io.StringIO(), io.StringIO()
        with zkpy.sync.connect(server.address) as zk:
            shell = Shell(zk, out, err, stdin=io.BytesIO(b"from stdin"))
            done = [
                shell.execute(["create", "/in", "-"]),
                shell.execute(f"create /f @{tmp_path / 'v'}"),
                shell.execute("create /at @@home"),
                shell.execute("get /in"),
                shell.execute("get /f"),
                shell.execute("get /at"),
                shell.execute(f"create /none @{tmp_path / 'absent'}"),
            ]
            piped = Shell(zk, out, err)  # commands on stdin: "-" cannot be a value too
            done.append(piped.execute("create /dash -"))
        return done, out.getvalue() + err.getvalue()

    done, output = await trio.to_thread.run_sync(body)
    assert done == [True] * 6 + [False, False]
    assert output.splitlines()[3:6] == ["from stdin", "from a file", "@home"]
    assert "cannot read" in output
    assert "carries the commands" in output


async def test_errors_print_one_line_and_the_script_goes_on(server: RunningServer) -> None:
    run = await shell_script(
        server.address,
        "# a comment, skipped\nnonsense\nget\nget -x /\ncreate /a 1 'unclosed\n"
        "delete -v 7 /zookeeper/x\n"
        "create /ok\ncreate -t notanumber /t\nset -v 5 /ok x\nls /ok\n",
    )
    assert run.lines() == ["Created /ok"]
    assert len(run.err.splitlines()) == 7
    assert all(line.startswith("zkpy: ") for line in run.err.splitlines())
    assert "BadVersionError" in run.err.splitlines()[-1]
    assert run.status == 1
    assert (await shell_script(server.address, "ls /ok\nquit\nnonsense\n")).status == 0


async def test_stat_shows_dates_and_versions(server: RunningServer) -> None:
    run = await shell_script(server.address, "create /s\nset -s /s v\ndelete -v 1 /s\n")
    assert run.status == 0, run.err
    fields = dict(line.split(" = ") for line in run.lines()[1:])
    assert fields["version"] == "1"
    assert fields["mtime"].startswith("20")
    assert fields["mtime"].endswith("+00:00")
    assert stat_text(Stat(1, 2, 0, 86_400_000, 0, 0, 0, 0, 0, 0, 3)).splitlines()[2:4] == [
        "ctime = 1970-01-01T00:00:00.000+00:00",
        "mtime = 1970-01-02T00:00:00.000+00:00",
    ]


async def test_tree_commands(server: RunningServer) -> None:
    run = await shell_script(
        server.address,
        "create /t\ncreate /t/b\ncreate /t/a\ncreate /t/a/x\nls -R /t\ndeleteall /t\nls /\n"
        "create /r\ncreate /r/x\nsetAcl -R /r world:anyone:r\ngetAcl /r/x\ndeleteall /r\n"
        "create -c /box\ncreate -t 60000 /ttl\ncreate -s /q-\n",
    )
    lines = run.lines()
    assert lines[4:10] == ["/t", "/t/a", "/t/a/x", "/t/b", "zookeeper", "Created /r"]
    assert lines[11] == "world:anyone:r"
    assert run.err.strip() == "zkpy: NoAuthError: no auth: /r/x"  # read-only parent
    assert lines[12:] == ["Created /box", "Created /ttl", "Created /q-0000000005"]


async def test_completion_of_commands_and_paths(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        await zk.create("/comp/alpha", makepath=True)
        await zk.create("/comp/beta")

    def body() -> list[list[str]]:
        with zkpy.sync.connect(server.address) as zk:
            shell = Shell(zk, io.StringIO(), io.StringIO())
            return [
                shell.complete("get", "get"),
                shell.complete("/comp/a", "ls /comp/a"),
                shell.complete("/co", "get -s /co"),
                shell.complete("/missing/x", "ls /missing/x"),
            ]

    assert await trio.to_thread.run_sync(functools.partial(body)) == [
        ["get ", "getAcl ", "getEphemerals "],
        ["/comp/alpha"],
        ["/comp"],
        [],
    ]


async def test_a_refused_addauth_ends_the_script_with_one_line_each(server: RunningServer) -> None:
    run = await shell_script(server.address, "addauth nosuch x\nls /\nls /\n")
    assert run.out == ""
    assert run.err.splitlines() == [
        "zkpy: AuthFailedError: unknown authentication scheme 'nosuch'",
        "zkpy: the session has ended",
    ]
    assert run.status == 1


async def test_quotas(server: RunningServer) -> None:
    """setquota, listquota and delquota as zkCli.sh has them: the limits in ZooKeeper's text,
    the member's count of the subtree, no quota inside another, a lifted limit, removal."""
    run = await shell_script(
        server.address,
        "create /q 12345\ncreate /q/a xy\nsetquota -n 10 /q\nsetquota -b 100 /q/a\n"
        "create /q/b 1234\nlistquota /q\nsetquota -B 50 /q\ndelquota -n /q\nlistquota /q\n"
        "delquota /q\nlistquota /q\nls /zookeeper/quota\nsetquota -n 0 /q\n"
        "setquota -n 1 /nope\nsetquota /q\n",
    )
    assert run.lines() == [
        "Created /q",
        "Created /q/a",
        "Created /q/b",
        "Output quota for /q count=10,bytes=-1=;byteHardLimit=-1;countHardLimit=-1",
        "Output stat for /q count=3,bytes=11",
        "Output quota for /q count=-1,bytes=-1=;byteHardLimit=50;countHardLimit=-1",
        "Output stat for /q count=3,bytes=11",
    ]
    errors = run.err.splitlines()
    assert len(errors) == 5, errors
    assert "/q/a has a parent /q which has a quota" in errors[0]
    assert "NoNodeError" in errors[1]  # listquota after delquota
    assert "at least 1" in errors[2]
    assert "NoNodeError" in errors[3]
    assert "usage: setquota" in errors[4]
    assert parse_quota(b"count=10,bytes=-1=;byteHardLimit=-1;countHardLimit=2") == {
        "count": 10,
        "bytes": -1,
        "byteHardLimit": -1,
        "countHardLimit": 2,
    }


async def test_a_quota_may_not_hold_another(server: RunningServer) -> None:
    run = await shell_script(
        server.address, "create -p /outer/inner\nsetquota -n 5 /outer/inner\nsetquota -n 9 /outer\n"
    )
    assert run.lines() == ["Created /outer/inner"]
    assert "/outer has a child /outer/inner which has a quota" in run.err
