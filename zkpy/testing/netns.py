"""An ensemble on separate network hosts on one Linux machine: one network namespace per
member, with real link faults.

`HostNetwork` makes namespaces PREFIX-1 .. PREFIX-N, each joined by a cable to the bridge
PREFIX-br in the root namespace; host N has the address 10.231.0.N and the root namespace (where
the test's client runs) 10.231.0.254, all in 10.231.0.0/24, which nothing routes anywhere else.
Its faults act on the bridge's end of the cable into host N: `link_down` / `link_up` (`ip link
set`), and `delay` (on what the cable carries into the host, so a packet between two hosts is
delayed once and a round trip twice). A cable is a veth pair delayed by `tc netem`, or, where
the kernel has no netem, a pair of TAP devices that `zkpy.testing.netns_cables` joins and
delays in user space. Leaving it removes everything it made; entering it first removes
whatever an earlier run left behind under the same prefix (namespaces, links, and the
processes still inside those namespaces).

`NetnsEnsemble` is an `Ensemble` whose member N is `zkpy server --config F --id N` run in
namespace N by `ip netns exec`, with host 10.231.0.N in the shared TOML file; every member
listens on the same ports, on its own address, as on separate machines. It needs root.

    with HostNetwork(3) as network, NetnsEnsemble(tmp_path, network) as ensemble:
        leader = await ensemble.start_serving()
        network.link_down(leader.id)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from zkpy.server.launcher import MemberProcess
from zkpy.testing.ensemble import (
    FAST_SETTINGS,
    Ensemble,
    Member,
    _toml,
    child_env,
    try_status,
)

PREFIX = "zkpyns"
SUBNET = "10.231.0"
BRIDGE = f"{PREFIX}-br"
ROOT_ADDRESS = f"{SUBNET}.254"
CLIENT_PORT = 2181
PEER_PORT = 2888


def unavailable() -> str | None:
    """Why namespaces cannot be made here (not root, no `ip` or `tc`, no `ip netns`), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable: {probe.stderr.strip()}"
    return None


def _run(*command: str) -> str:
    """Run an iproute2 command; fail with its error output."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return done.stdout


def _ours(names: Sequence[str]) -> list[str]:
    """The names made by this module (PREFIX-...)."""
    return [name for name in names if name.startswith(f"{PREFIX}-")]


def remove_leftovers() -> None:
    """Remove every namespace and link named PREFIX-..., killing the processes still inside
    those namespaces first (members of an earlier run that ended without its teardown)."""
    namespaces = _ours([line.split()[0] for line in _run("ip", "netns", "list").splitlines()])
    for namespace in namespaces:
        for pid in _run("ip", "netns", "pids", namespace).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                continue
    # Links first: a namespace's veth ends go some time after the namespace itself.
    links = [line.split(": ")[1].split("@")[0] for line in _run("ip", "-o", "link").splitlines()]
    for link in _ours(links):
        done = subprocess.run(["ip", "link", "delete", link], capture_output=True, check=False)
        if done.returncode != 0 and link in _run("ip", "-o", "link"):
            raise RuntimeError(f"cannot delete link {link}: {done.stderr.decode().strip()}")
    for namespace in namespaces:
        _run("ip", "netns", "delete", namespace)


def netem_available() -> bool:
    """Whether this kernel can delay packets with netem (tried in a scratch namespace)."""
    probe = f"{PREFIX}-probe"
    _run("ip", "netns", "add", probe)
    try:
        command = ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]
        tried = subprocess.run(["ip", "netns", "exec", probe, *command], capture_output=True)
        return tried.returncode == 0
    finally:
        _run("ip", "netns", "delete", probe)


class HostNetwork:
    """`hosts` network namespaces on one bridge; see the module docstring. Its cables are veth
    pairs delayed by netem, or, with `tap_cables` (by default: when the kernel has no netem),
    TAP pairs joined by a `zkpy.testing.netns_cables` process that delays them itself."""

    def __init__(self, hosts: int = 3, *, tap_cables: bool | None = None) -> None:
        self.hosts = list(range(1, hosts + 1))
        self.tap_cables = tap_cables
        self.cables: subprocess.Popen[str] | None = None

    @property
    def cable_kind(self) -> str:
        """What the cables are, for reports."""
        return "TAP pairs (userspace delay)" if self.tap_cables else "veth pairs (netem delay)"

    @staticmethod
    def namespace(host: int) -> str:
        """The name of host `host`'s namespace."""
        return f"{PREFIX}-{host}"

    @staticmethod
    def link(host: int) -> str:
        """The root namespace's end of host `host`'s cable to the bridge."""
        return f"{PREFIX}-v{host}"

    @staticmethod
    def inner_link(host: int) -> str:
        """Host `host`'s end of its cable, in its namespace."""
        return f"{PREFIX}-p{host}"

    @staticmethod
    def address(host: int) -> str:
        """Host `host`'s address."""
        return f"{SUBNET}.{host}"

    def exec_prefix(self, host: int) -> list[str]:
        """The command prefix that runs a command on host `host`."""
        return ["ip", "netns", "exec", self.namespace(host)]

    def set_up(self) -> None:
        """Make the bridge, the namespaces and their cables (after removing leftovers)."""
        remove_leftovers()
        if self.tap_cables is None:
            self.tap_cables = not netem_available()
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{ROOT_ADDRESS}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        if self.tap_cables:
            self._start_cables()
        for host in self.hosts:
            self._add_host(host)

    def _start_cables(self) -> None:
        """Start the process that makes and joins the TAP pairs; wait until they exist."""
        pairs = [f"{self.link(host)}:{self.inner_link(host)}" for host in self.hosts]
        self.cables = subprocess.Popen(
            [sys.executable, "-m", "zkpy.testing.netns_cables", *pairs],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        self._expect_from_cables("ready")

    def _expect_from_cables(self, word: str) -> None:
        """Read the cables process's next line, which must be `word`."""
        assert self.cables is not None and self.cables.stdout is not None
        line = self.cables.stdout.readline().strip()
        if line != word:
            raise RuntimeError(f"the cables process said {line!r}, not {word!r}")

    def _add_host(self, host: int) -> None:
        """Host `host`'s namespace, its cable into the bridge, and its address."""
        namespace, link, inner = self.namespace(host), self.link(host), self.inner_link(host)
        _run("ip", "netns", "add", namespace)
        if self.tap_cables:
            _run("ip", "link", "set", inner, "netns", namespace)
        else:
            _run("ip", "link", "add", link, "type", "veth", "peer", "name", inner)
            _run("ip", "link", "set", inner, "netns", namespace)
        _run("ip", "link", "set", link, "master", BRIDGE)
        _run("ip", "link", "set", link, "up")
        _run("ip", "-n", namespace, "addr", "add", f"{self.address(host)}/24", "dev", inner)
        _run("ip", "-n", namespace, "link", "set", inner, "up")
        _run("ip", "-n", namespace, "link", "set", "lo", "up")

    def tear_down(self) -> None:
        """Stop the cables process, then remove everything made under PREFIX (processes left
        in the namespaces included)."""
        cables, self.cables = self.cables, None
        if cables is not None:
            if cables.stdin is not None:
                cables.stdin.close()  # its signal to exit
            try:
                cables.wait(timeout=5)
            except subprocess.TimeoutExpired:
                cables.kill()
                cables.wait()
            if cables.stdout is not None:
                cables.stdout.close()
        remove_leftovers()

    def link_down(self, host: int) -> None:
        """Cut host `host`'s cable: nothing reaches it or leaves it."""
        _run("ip", "link", "set", self.link(host), "down")

    def link_up(self, host: int) -> None:
        """Plug host `host`'s cable back in."""
        _run("ip", "link", "set", self.link(host), "up")

    def delay(self, milliseconds: int) -> None:
        """Delay by `milliseconds` what every cable carries into its host (so a packet between
        two hosts waits once, a round trip twice); 0 removes the delay."""
        if self.cables is not None and self.cables.stdin is not None:
            self.cables.stdin.write(f"{milliseconds}\n")
            self.cables.stdin.flush()
            self._expect_from_cables("ok")
            return
        for host in self.hosts:
            link = self.link(host)
            if milliseconds:
                _run("tc", "qdisc", "replace", "dev", link, "root", "netem", "delay",
                     f"{milliseconds}ms")  # fmt: skip
            elif "netem" in _run("tc", "qdisc", "show", "dev", link):
                _run("tc", "qdisc", "del", "dev", link, "root")

    def __enter__(self) -> HostNetwork:
        try:
            self.set_up()
        except BaseException:
            self.tear_down()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.tear_down()


class NamespacedProcess(MemberProcess):
    """A member process started in a network namespace (`ip netns exec` execs the command
    itself, so the process id and its signals are the member's own)."""

    def __init__(
        self,
        member_id: int,
        server_args: Sequence[str],
        prefix: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(member_id, server_args, env=env)
        self.prefix = list(prefix)

    def command(self, server_args: Sequence[str] | None = None) -> list[str]:
        """The member's command line, run through the namespace's prefix."""
        return [*self.prefix, *super().command(server_args)]


class NetnsMember(Member):
    """A member on its own host of a `HostNetwork`."""

    def __init__(self, ensemble: NetnsEnsemble, member_id: int) -> None:
        super().__init__(ensemble, member_id, observer=False)
        self.host = ensemble.network.address(member_id)
        self.client_port, self.peer_port = CLIENT_PORT, PEER_PORT
        prefix = ensemble.network.exec_prefix(member_id)
        self.process = NamespacedProcess(member_id, self.server_args(), prefix, env=child_env())

    @property
    def address(self) -> str:
        """host:port of its client listener, on its own host."""
        return f"{self.host}:{self.client_port}"

    async def status(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """Its status (asked over the network), or None if it does not answer."""
        return await try_status(self.host, self.client_port, timeout)


class NetnsEnsemble(Ensemble):
    """Voting member N on host N of `network`, one TOML file for all; see the module
    docstring. `settings` are TOML settings over FAST_SETTINGS."""

    def __init__(
        self,
        root: Path,
        network: HostNetwork,
        *,
        secret: str = "netns-secret",
        log_level: str | None = None,
        **settings: Any,
    ) -> None:
        # Not Ensemble.__init__: that one lays members out on free loopback ports.
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.network = network
        self.secret = secret
        self.log_level = log_level or os.environ.get("ZKPY_E2E_LOG_LEVEL", "INFO")
        self.settings = {**FAST_SETTINGS, **settings}
        self.config_path = self.root / "ensemble.toml"
        self.members: dict[int, Member] = {}
        for host in network.hosts:
            self.members[host] = NetnsMember(self, host)
        self.write_config(self.config_path, secret)

    def write_config(
        self, path: Path, secret: str, peer_ports: Mapping[int, int] | None = None
    ) -> Path:
        """Write the shared TOML file, each member with its own host's address (and
        `peer_ports` in place of the common peer port for some)."""
        lines = [f'secret = "{secret}"', f'data_dir = "{self.root / "data"}"']
        lines += [f"{key} = {_toml(value)}" for key, value in self.settings.items()]
        for member in self.members.values():
            lines += [
                "",
                f"[members.{member.id}]",
                f'host = "{self.network.address(member.id)}"',
                f"client_port = {member.client_port}",
                f"peer_port = {(peer_ports or {}).get(member.id, member.peer_port)}",
            ]
        path.write_text("\n".join(lines) + "\n")
        return path
