"""An ensemble on separate network hosts on one Linux machine: one network namespace per
member, with real link faults.

`HostNetwork` makes namespaces PREFIX-1 .. PREFIX-N, each joined by a veth pair to the bridge
PREFIX-br in the root namespace; host N has the address 10.231.0.N and the root namespace (where
the test's client runs) 10.231.0.254, all in 10.231.0.0/24, which nothing routes anywhere else.
Its faults act on the host side of a veth pair, the cable into host N: `link_down` /
`link_up` (`ip link set`), and `delay` (a `tc netem` delay on what the link carries into the
host, so a packet between two hosts is delayed once and a round trip twice). Leaving it removes
everything it made; entering it first removes whatever an earlier run left behind under
the same prefix (namespaces, links, and the processes still inside those namespaces).

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


class NetemUnavailable(RuntimeError):
    """The kernel cannot delay packets: it was built without the netem qdisc."""


class HostNetwork:
    """`hosts` network namespaces on one bridge; see the module docstring."""

    def __init__(self, hosts: int = 3) -> None:
        self.hosts = list(range(1, hosts + 1))

    @staticmethod
    def namespace(host: int) -> str:
        """The name of host `host`'s namespace."""
        return f"{PREFIX}-{host}"

    @staticmethod
    def link(host: int) -> str:
        """The root namespace's end of host `host`'s veth pair (its cable to the bridge)."""
        return f"{PREFIX}-v{host}"

    @staticmethod
    def address(host: int) -> str:
        """Host `host`'s address."""
        return f"{SUBNET}.{host}"

    def exec_prefix(self, host: int) -> list[str]:
        """The command prefix that runs a command on host `host`."""
        return ["ip", "netns", "exec", self.namespace(host)]

    def set_up(self) -> None:
        """Make the bridge, the namespaces and their links (after removing leftovers)."""
        remove_leftovers()
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{ROOT_ADDRESS}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        for host in self.hosts:
            self._add_host(host)

    def _add_host(self, host: int) -> None:
        """Host `host`'s namespace, its veth pair into the bridge, and its address."""
        namespace, link, inner = self.namespace(host), self.link(host), f"{PREFIX}-p{host}"
        _run("ip", "netns", "add", namespace)
        _run("ip", "link", "add", link, "type", "veth", "peer", "name", inner, "netns", namespace)
        _run("ip", "link", "set", link, "master", BRIDGE)
        _run("ip", "link", "set", link, "up")
        _run("ip", "-n", namespace, "addr", "add", f"{self.address(host)}/24", "dev", inner)
        _run("ip", "-n", namespace, "link", "set", inner, "up")
        _run("ip", "-n", namespace, "link", "set", "lo", "up")

    def tear_down(self) -> None:
        """Remove everything made under PREFIX (processes left in the namespaces included)."""
        remove_leftovers()

    def link_down(self, host: int) -> None:
        """Cut host `host`'s cable: nothing reaches it or leaves it."""
        _run("ip", "link", "set", self.link(host), "down")

    def link_up(self, host: int) -> None:
        """Plug host `host`'s cable back in."""
        _run("ip", "link", "set", self.link(host), "up")

    def delay(self, milliseconds: int, hosts: Sequence[int] | None = None) -> None:
        """Delay by `milliseconds` what the links of `hosts` (default: all) carry into their
        host (`tc netem`); 0 removes the delay. Raises NetemUnavailable on a kernel built
        without netem (CONFIG_NET_SCH_NETEM)."""
        for host in self.hosts if hosts is None else hosts:
            link = self.link(host)
            if not milliseconds:
                if "netem" in _run("tc", "qdisc", "show", "dev", link):
                    _run("tc", "qdisc", "del", "dev", link, "root")
                continue
            command = ["tc", "qdisc", "replace", "dev", link, "root", "netem", "delay"]
            done = subprocess.run(
                [*command, f"{milliseconds}ms"], capture_output=True, text=True, check=False
            )
            if "kind is unknown" in done.stderr:
                raise NetemUnavailable("this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM)")
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")

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
