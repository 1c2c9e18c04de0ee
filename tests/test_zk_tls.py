"""TLS on the ZooKeeper port, as ZooKeeper's secureClientPort: kazoo with `use_ssl=True` and a
client certificate gets the `x509` identity, the certificate's subject as ZooKeeper prints it
(RFC 2253, most specific first), and a client that does not speak TLS gets nowhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.security import make_acl

from tests.test_security import pki  # noqa: F401 (the certificates' fixture)
from tests.test_zk_kazoo import kz, stopped, zk_port
from zkpy.testing import RunningServer, running_server
from zkpy.testing.ports import free_port


def tls_client(
    member: RunningServer, ca: str, cert: str | None = None, **kwargs: Any
) -> KazooClient:
    return KazooClient(
        hosts=f"127.0.0.1:{zk_port(member)}",
        timeout=5,
        use_ssl=True,
        ca=ca,
        certfile=cert,
        keyfile=cert,
        **kwargs,
    )


async def test_kazoo_over_tls_with_an_x509_identity(
    tmp_path: Path,
    pki: dict[str, str],  # noqa: F811
) -> None:
    async with running_server(
        tmp_path / "data",
        tick_ms=500,
        zk_port=free_port(),
        tls_cert=pki["server_cert"],
        tls_ca=pki["ca"],
    ) as member:
        alice = tls_client(member, pki["ca"], pki["client_cert"])
        anonymous = tls_client(member, pki["ca"])
        await kz(alice.start, timeout=10)
        await kz(anonymous.start, timeout=10)
        try:
            subject = pki["client_subject"]
            assert subject.startswith("CN=alice,")
            await kz(alice.create, "/alice", b"a", acl=(make_acl("x509", subject, all=True),))
            assert (await kz(alice.get, "/alice"))[0] == b"a"
            with pytest.raises(NoAuthError):
                await kz(anonymous.get, "/alice")
            await kz(alice.create, "/mine", b"", acl=(make_acl("auth", "", all=True),))
            acls, _stat = await kz(alice.get_acls, "/mine")
            assert ("x509", subject) in [(entry.id.scheme, entry.id.id) for entry in acls]
        finally:
            await stopped(alice)
            await stopped(anonymous)
        plain = KazooClient(hosts=f"127.0.0.1:{zk_port(member)}", timeout=1)
        try:
            with pytest.raises(KazooTimeoutError):
                await kz(plain.start, timeout=3)
        finally:
            await stopped(plain)
