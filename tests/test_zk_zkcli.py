"""zkCli.sh, ZooKeeper's own command-line client (Debian's `zookeeper` package), scripted
against a 3-member ensemble's ZooKeeper ports: its answers are ZooKeeper's, and what it writes
is what zkpy's own client reads.

Each script is one zkCli.sh process (one JVM, one session) fed through stdin; the watch test
keeps one running and reads its output as it comes."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import zkpy
from tests.ensemble_harness import Ensemble, Member
from zkpy.core.errors import NoAuthError
from zkpy.core.types import ACL, Id, Perm
from zkpy.testing.ensemble import child_env

ZKCLI = Path("/usr/share/zookeeper/bin/zkCli.sh")
INSTALL_HINT = "zkCli.sh comes with Debian's zookeeper package: apt-get install zookeeper"
# What zkCli.sh prints around every script: banners, logging noise and its own session's
# connect and close events.
NOISE = {
    "Welcome to ZooKeeper!",
    "JLine support is disabled",
    "WATCHER::",
    "WatchedEvent state:SyncConnected type:None path:null",
    "WatchedEvent state:Closed type:None path:null",
    "",
}
STAT_FIELDS = [
    "cZxid",
    "ctime",
    "mZxid",
    "mtime",
    "pZxid",
    "cversion",
    "dataVersion",
    "aclVersion",
    "ephemeralOwner",
    "dataLength",
    "numChildren",
]


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    """One 3-member ensemble with ZooKeeper ports for the whole module (sessions up to 10 s);
    each test works under a path of its own."""
    assert ZKCLI.exists(), INSTALL_HINT
    with Ensemble(tmp_path_factory.mktemp("zkcli"), zk_ports=True, tick_ms=500) as ens:
        trio.run(ens.start_serving)
        yield ens


def server(member: Member) -> str:
    return f"127.0.0.1:{member.zk_port}"


def noise(line: str) -> bool:
    return line in NOISE or line.startswith(("SLF4J:", "Connecting to "))


async def zkcli(member: Member, *commands: str, read_only: bool = False) -> list[str]:
    """Run `commands` in one zkCli.sh session on `member` (`-r`: a read-only one, if
    `read_only`); its output lines (stdout and stderr, in the order written) without the noise.
    Its exit code is 1 if any command failed: the lines say which."""
    script = "".join(f"{command}\n" for command in (*commands, "quit"))
    with trio.fail_after(60):
        done = await trio.run_process(
            ["bash", str(ZKCLI), "-server", server(member), *(["-r"] if read_only else [])],
            stdin=script.encode(),
            capture_stdout=True,
            stderr=subprocess.STDOUT,
            env=child_env(),
            check=False,  # zkCli.sh exits 1 after a command that failed
        )
    return [line for line in done.stdout.decode().splitlines() if not noise(line)]


def stat_lines(lines: list[str]) -> dict[str, str]:
    """The `name = value` lines of a printed Stat."""
    pairs = (line.split(" = ", 1) for line in lines if " = " in line)
    return {name: value for name, value in pairs}


def zk_digest(user: str, password: str) -> str:
    """ZooKeeper's digest identity for user:password."""
    hashed = base64.b64encode(hashlib.sha1(f"{user}:{password}".encode()).digest()).decode()
    return f"{user}:{hashed}"


async def test_create_get_set_ls_stat_delete(ensemble: Ensemble) -> None:
    first, second, third = ensemble.voters
    lines = await zkcli(
        first,
        "create /cli",
        "create /cli/a hello",
        "create -e /cli/a/eph e1",
        "create -s /cli/a/seq- s",
        "get /cli/a",
        "set /cli/a world",
        "get /cli/a",
        "ls /cli/a",
        "stat /cli/a",
        "create /cli/a hello",
        "set -v 7 /cli/a again",
        "delete /cli/nope",
    )
    assert lines[:8] == [
        "Created /cli",
        "Created /cli/a",
        "Created /cli/a/eph",
        "Created /cli/a/seq-0000000001",
        "hello",
        "world",
        "[eph, seq-0000000001]",
        "cZxid = " + lines[7].split(" = ")[1],
    ]
    assert [line.split(" = ")[0] for line in lines[7:18]] == STAT_FIELDS
    stat = stat_lines(lines[7:18])
    assert (stat["dataVersion"], stat["cversion"], stat["numChildren"]) == ("1", "2", "2")
    assert (stat["dataLength"], stat["ephemeralOwner"]) == ("5", "0x0")
    assert lines[18:] == [
        "Node already exists: /cli/a",
        "version No is not valid : /cli/a",
        "Node does not exist: /cli/nope",
    ]
    async with zkpy.connect(second.address) as zk:
        await zk.sync("/cli")
        data, node = await zk.get("/cli/a")
        assert (data, node.version) == (b"world", 1)
        assert f"{node.czxid:#x}" == stat["cZxid"]
        assert await zk.get_children("/cli/a") == ["seq-0000000001"]  # the ephemeral is gone
        assert await zk.get("/cli/a/seq-0000000001") == (
            b"s",
            await zk.exists("/cli/a/seq-0000000001"),
        )
        await zk.create("/cli/b/c/d", b"x", makepath=True)

    lines = await zkcli(
        third,
        "ls -R /cli",
        "getAllChildrenNumber /cli",
        "delete /cli/b",
        "deleteall /cli/b",
        "delete /cli/a/seq-0000000001",
        "sync /cli",
        "ls /cli/a",
    )
    assert lines == [
        "/cli",
        "/cli/a",
        "/cli/b",
        "/cli/a/seq-0000000001",
        "/cli/b/c",
        "/cli/b/c/d",
        "5",
        "Node not empty: /cli/b",
        "Sync is OK",
        "[]",
    ]
    async with zkpy.connect(first.address) as zk:
        await zk.sync("/cli")
        assert await zk.get_children("/cli") == ["a"]


async def test_addauth_digest_and_acls(ensemble: Ensemble) -> None:
    first, second, _third = ensemble.voters
    alice = zk_digest("alice", "secret")
    lines = await zkcli(
        first,
        "addauth digest alice:secret",
        "create /acl data",
        "setAcl /acl auth:alice:secret:cdrwa",
        "getAcl /acl",
        "get /acl",
        "create /acl/open x",
        f"setAcl /acl/open digest:{zk_digest('bob', 'pw')}:c,world:anyone:r",
        "getAcl /acl/open",
        "whoami",
    )
    assert lines == [
        "Created /acl",
        f"'digest,'{alice}",
        ": cdrwa",
        "data",
        "Created /acl/open",
        "'digest,'bob:x",  # the hash hidden from a client without ADMIN, as ZooKeeper does
        ": c",
        "'world,'anyone",
        ": r",
        "Auth scheme: User",
        "digest: alice",
        "ip: 127.0.0.1",
    ]
    assert await zkcli(second, "get /acl", "getAcl /acl") == [
        "Insufficient permission : /acl",
        "Insufficient permission : /acl",
    ]
    assert await zkcli(second, "addauth digest alice:secret", "get /acl") == ["data"]
    async with zkpy.connect(second.address) as zk:
        await zk.sync("/acl")
        with pytest.raises(NoAuthError):
            await zk.get("/acl")
        with pytest.raises(NoAuthError):
            await zk.get_acl("/acl")
        acl, node = await zk.get_acl("/acl/open")  # zkpy's protocol hides no hash (its own
        assert acl == [  # digest scheme is salted PBKDF2: docs/security.md)
            ACL(Perm.CREATE, Id("digest", zk_digest("bob", "pw"))),
            ACL(Perm.READ, Id("world", "anyone")),
        ]
        assert node.aversion == 1


async def test_whoami_names_a_digest_user_without_its_hash(ensemble: Ensemble) -> None:
    """As ZooKeeper's whoAmI: a digest identity by its user name, not user:hash."""
    lines = await zkcli(ensemble.voters[1], "addauth digest carol:pw", "whoami")
    assert lines == ["Auth scheme: User", "digest: carol", "ip: 127.0.0.1"]


async def test_get_w_fires_on_a_write_through_zkpys_client(ensemble: Ensemble) -> None:
    first, second, _third = ensemble.voters
    async with zkpy.connect(second.address) as zk:
        await zk.create("/watched", b"before")
        process = await trio.lowlevel.open_process(
            ["bash", str(ZKCLI), "-server", server(first)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=child_env(),
        )
        stdin, stdout = process.stdin, process.stdout
        assert stdin is not None
        assert stdout is not None
        output = b""

        async def wait_for(line: str) -> None:
            nonlocal output
            with trio.fail_after(30):
                while line not in output.decode(errors="replace").splitlines():
                    chunk = await stdout.receive_some(65536)
                    assert chunk, f"zkCli.sh exited before printing {line!r}:\n{output.decode()}"
                    output += chunk

        try:
            await stdin.send_all(b"get -w /watched\n")
            await wait_for("before")
            await zk.set("/watched", b"after")
            await wait_for("WatchedEvent state:SyncConnected type:NodeDataChanged path:/watched")
            await stdin.send_all(b"get /watched\nquit\n")
            await wait_for("after")
            with trio.fail_after(30):
                assert await process.wait() == 0
        finally:
            process.kill()
            await process.wait()


async def test_setquota_listquota_delquota(ensemble: Ensemble) -> None:
    """zkCli's quota commands: the limits it writes, the stats every member keeps counting
    (ZooKeeper 3.8 keeps them by default and enforces none), and their removal."""
    first, second, _third = ensemble.voters
    lines = await zkcli(
        first,
        "create /q 12345",
        "create /q/a xy",
        "setquota -n 10 /q",
        "setquota -b 100 /q/a",
        "create /q/b 1234",
        "listquota /q",
    )
    assert lines == [
        "Created /q",
        "Created /q/a",
        "/q/a has a parent /q which has a quota",
        "Created /q/b",
        "absolute path is /zookeeper/quota/q/zookeeper_limits",
        "Output quota for /q count=10,bytes=-1=;byteHardLimit=-1;countHardLimit=-1",
        "Output stat for /q count=3,bytes=11",
    ], lines
    async with zkpy.connect(second.address) as zk:
        await zk.sync("/q")
        data, _stat = await zk.get("/zookeeper/quota/q/zookeeper_stats")
        assert data == b"count=3,bytes=11"
    lines = await zkcli(first, "delquota /q", "listquota /q", "create /q/c", "ls /zookeeper/quota")
    assert lines == [
        "absolute path is /zookeeper/quota/q/zookeeper_limits",
        "quota for /q does not exist.",
        "Created /q/c",
        "[]",
    ], lines
