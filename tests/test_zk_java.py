"""ZooKeeper's Java client and Curator (Debian's `libzookeeper-java` and `libcurator-*-java`)
against a 3-member ensemble's ZooKeeper ports.

The Java programs are in tests/java/, compiled once per module with javac into a temporary
directory. Each prints one line per step; the tests read those lines as they come and check
the tree through zkpy's own client. A JVM takes a while to start, so there are three: the
plain client, and two Curator contenders for one InterProcessMutex and one LeaderLatch."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import zkpy
from tests.ensemble_harness import SESSION_TIMEOUT, Ensemble
from zkpy.testing.ensemble import child_env

JAVA_SOURCES = Path(__file__).parent / "java"
JARS = Path("/usr/share/java")
CLASSPATH_JARS = [
    "curator-recipes.jar",
    "curator-framework.jar",
    "curator-client.jar",
    "zookeeper.jar",
    "zookeeper-jute.jar",
    "guava.jar",
    "slf4j-api.jar",
    "slf4j-nop.jar",  # no logging: the programs' stdout is the test's input
]
INSTALL_HINT = (
    "needs a JDK and Debian's libzookeeper-java, libcurator-{client,framework,recipes}-java "
    "and libslf4j-java (the README's test section)"
)
SESSION_MS = int(SESSION_TIMEOUT * 1000)  # the longest the ensemble's ticks allow
ROUNDS = 60  # mutex rounds per contender


@pytest.fixture(scope="module")
def classpath(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The Java programs compiled into a temporary directory, and that directory on a
    classpath with the jars."""
    javac = shutil.which("javac")
    jars = [JARS / name for name in CLASSPATH_JARS]
    missing = [str(jar) for jar in jars if not jar.exists()]
    assert javac is not None, INSTALL_HINT
    assert shutil.which("java") is not None, INSTALL_HINT
    assert not missing, f"{INSTALL_HINT}; missing: {missing}"
    classes = tmp_path_factory.mktemp("java-classes")
    path = ":".join([str(classes), *map(str, jars)])
    sources = sorted(str(source) for source in JAVA_SOURCES.glob("*.java"))
    subprocess.run(
        [javac, "-d", str(classes), "-cp", path, *sources],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    """One 3-member ensemble with ZooKeeper ports (sessions of up to 4 s) for the module."""
    with Ensemble(tmp_path_factory.mktemp("java"), zk_ports=True) as ens:
        trio.run(ens.start_serving)
        yield ens


def zk_hosts(ensemble: Ensemble) -> str:
    return ",".join(f"127.0.0.1:{member.zk_port}" for member in ensemble.voters)


class Jvm:
    """A running Java program whose stdout (and stderr) the test reads line by line."""

    def __init__(self, name: str, process: trio.Process) -> None:
        self.name = name
        self.process = process
        self.lines: list[str] = []
        self._partial = b""

    async def wait_for(self, prefix: str, timeout: float = 60.0) -> str:
        """The first line so far or to come that starts with `prefix`."""
        stdout = self.process.stdout
        assert stdout is not None
        with trio.move_on_after(timeout):
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                chunk = await stdout.receive_some(65536)
                if not chunk:
                    break
                *complete, self._partial = (self._partial + chunk).split(b"\n")
                self.lines += [line.decode(errors="replace") for line in complete]
        output = "\n".join([*self.lines, self._partial.decode(errors="replace")])
        raise AssertionError(f"{self.name}: no line {prefix!r} within {timeout} s:\n{output}")


class Jvms:
    """The Java programs a test started, by name, on one classpath."""

    def __init__(self, classpath: str) -> None:
        self.classpath = classpath
        self.running: dict[str, Jvm] = {}

    async def start(self, name: str, main_class: str, *args: str) -> Jvm:
        process = await trio.lowlevel.open_process(
            ["java", "-cp", self.classpath, main_class, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=child_env(),
        )
        self.running[name] = Jvm(name, process)
        return self.running[name]


@asynccontextmanager
async def jvms(classpath: str) -> AsyncIterator[Jvms]:
    """A `Jvms`; every program still running is killed on the way out."""
    started = Jvms(classpath)
    try:
        yield started
    finally:
        for jvm in started.running.values():
            jvm.process.kill()
            await jvm.process.wait()


async def test_the_java_client_reads_writes_watches_and_multis(
    ensemble: Ensemble, classpath: str
) -> None:
    async with zkpy.connect(ensemble.addresses()) as zk:
        await zk.create("/java", b"")
        async with jvms(classpath) as java:
            client = await java.start("client", "ZkClientCheck", zk_hosts(ensemble), "/java")
            await client.wait_for("waiting")
            await zk.sync("/java")
            await zk.set("/java/shared", b"from zkpy")  # through the msgpack protocol
            await client.wait_for("bye")
            with trio.fail_after(30):
                assert await client.process.wait() == 0
        assert client.lines == [
            "created /java/node",
            "created /java/seq-0000000001",
            "data v0 version 0",
            "set version 1 length 2",
            "stale set BADVERSION",
            "exists null",
            "event NodeCreated /java/other",
            "exists version 0",
            "event NodeDeleted /java/other",
            "multi | CheckResult | create /java/m | set 2",
            "failed multi BADVERSION | error 0 | error -103",
            "children [m, node, seq-0000000001]",
            "waiting",
            "event NodeDataChanged /java/shared",
            "shared from zkpy",
            "bye",
        ]
        await zk.sync("/java")
        data, stat = await zk.get("/java/node")
        assert (data, stat.version) == (b"v2", 2)
        assert await zk.get("/java/m") == (b"m", await zk.exists("/java/m"))
        assert await zk.exists("/java/never") is None  # the failed multi left nothing
        # the session closed: its ephemeral went with it
        assert sorted(await zk.get_children("/java")) == ["m", "node", "shared"]


async def test_curator_mutex_and_leader_latch_across_two_jvms(
    ensemble: Ensemble, classpath: str
) -> None:
    async with zkpy.connect(ensemble.addresses()) as zk:
        await zk.create("/curator/check", b"free", makepath=True)
        await zk.create("/curator/counter", b"0")
        async with jvms(classpath) as java:
            running = java.running
            for name in ("A", "B"):
                args = (zk_hosts(ensemble), str(SESSION_MS), name, str(ROUNDS), "/curator")
                await java.start(name, "CuratorContender", *args)
            for jvm in running.values():
                await jvm.wait_for(f"{jvm.name} joined", timeout=120)
            lines = [line for jvm in running.values() for line in jvm.lines]
            assert f"A done {ROUNDS}" in lines
            assert f"B done {ROUNDS}" in lines
            assert not [line for line in lines if "overlap" in line or "error" in line]
            await zk.sync("/curator")
            assert (await zk.get("/curator/counter"))[0] == str(2 * ROUNDS).encode()

            leader = await first_leader(running)
            follower = running["B" if leader.name == "A" else "A"]
            assert not [line for line in follower.lines if "leader" in line]
            assert await latch_holder(zk) == leader.name
            killed_at = time.monotonic()
            leader.process.kill()  # SIGKILL: its session ends only by expiring
            await follower.wait_for(f"{follower.name} leader {follower.name}", timeout=30)
            took = time.monotonic() - killed_at
            # its session expires within SESSION_TIMEOUT of its last ping; a tick's slack for
            # the expiry sweep and Curator's watch on its predecessor's node
            assert took < SESSION_TIMEOUT + 2.0
            assert await latch_holder(zk) == follower.name
            locks = await zk.get_children("/curator/lock")
            assert len(locks) == 1


async def first_leader(running: dict[str, Jvm]) -> Jvm:
    """The contender that prints "leader" first (the other waits in the latch)."""
    found: list[Jvm] = []

    async def watch(jvm: Jvm, cancel: trio.CancelScope) -> None:
        await jvm.wait_for(f"{jvm.name} leader")
        found.append(jvm)
        cancel.cancel()

    async with trio.open_nursery() as nursery:
        for jvm in running.values():
            nursery.start_soon(watch, jvm, nursery.cancel_scope)
    assert len(found) == 1, "both contenders say they lead"
    return found[0]


async def latch_holder(zk: zkpy.Client) -> str:
    """The participant id of the LeaderLatch's lowest node: the leader, as Curator sees it."""
    await zk.sync("/curator/leader")
    nodes = await zk.get_children("/curator/leader")
    lowest = min(nodes, key=lambda name: name.rsplit("-", 1)[-1])
    return (await zk.get(f"/curator/leader/{lowest}"))[0].decode()
