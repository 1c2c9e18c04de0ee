"""SASL DIGEST-MD5 on the ZooKeeper port, as ZooKeeper's JAAS digest setup offers it: the
mechanism (RFC 2831's own example, then pure-sasl, kazoo's library), the users file and its
checks, and kazoo authenticating, being refused, and the `sasl` ACL scheme."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from kazoo.client import KazooClient
from kazoo.exceptions import AuthFailedError as KazooAuthFailed
from kazoo.exceptions import ConnectionClosedError, NoAuthError
from kazoo.security import make_acl
from puresasl.client import SASLClient

from tests.conftest import wait_until
from tests.test_zk_kazoo import RawJute, closed_without_a_word, kz, started, stopped, zk_port
from zkpy.cli import main
from zkpy.core.errors import AuthFailedError
from zkpy.server.config import config_from_text
from zkpy.server.zk_clients import load_sasl_users
from zkpy.testing import RunningServer, running_server
from zkpy.testing.ports import free_port
from zkpy.wire import jute, sasl
from zkpy.wire.jute import SaslRequest

USERS = {"super": "super_secret", "jaasuser": "jaas_password"}
DIRECTIVES = ("username", "nonce", "cnonce", "nc", "qop", "digest-uri", "response", "realm")


def test_rfc_2831s_example_exchange() -> None:
    """RFC 2831 section 4: chris/secret, imap on elwood.innosoft.com."""
    server = sasl.DigestMD5Server(
        {"chris": "secret"},
        "OA6MG9tEQGm2hh",
        realm="elwood.innosoft.com",
        digest_uri="imap/elwood.innosoft.com",
    )
    assert b'nonce="OA6MG9tEQGm2hh"' in server.step(b"")
    response = (
        b'charset=utf-8,username="chris",realm="elwood.innosoft.com",nonce="OA6MG9tEQGm2hh",'
        b'nc=00000001,cnonce="OA6MHXh6VqTrRk",digest-uri="imap/elwood.innosoft.com",'
        b"response=d388dad90d4bbd760a152321f2143af7,qop=auth"
    )
    assert server.step(response) == b"rspauth=ea40f60335c427b5527b84dbabcdfffd"
    assert server.user == "chris"


def exchange(server: sasl.DigestMD5Server, user: str, password: str) -> None:
    client = SASLClient("zk-sasl-md5", "zookeeper", "DIGEST-MD5", username=user, password=password)
    challenge = server.step(client.process(None) or b"")
    final = server.step(client.process(challenge))
    client.process(final)  # checks rspauth
    assert client.complete


def test_pure_sasl_authenticates_and_a_wrong_password_fails() -> None:
    server = sasl.DigestMD5Server(USERS, "n0nce")
    exchange(server, "jaasuser", "jaas_password")
    assert server.user == "jaasuser"
    with pytest.raises(AuthFailedError):
        exchange(sasl.DigestMD5Server(USERS, "n0nce"), "jaasuser", "wrong")
    with pytest.raises(AuthFailedError):
        exchange(sasl.DigestMD5Server(USERS, "n0nce"), "nobody", "jaas_password")


@pytest.mark.parametrize(
    "response",
    [
        b"",
        b'username="jaasuser"',
        b'username="jaasuser",nonce="other",nc=00000001,cnonce="c",'
        b'digest-uri="zookeeper/zk-sasl-md5",response=00',
        b'username="jaasuser",username="super"',
        b'username="unterminated',
        b"x" * 5000,
    ],
)
def test_a_malformed_response_is_auth_failed(response: bytes) -> None:
    server = sasl.DigestMD5Server(USERS, "n0nce")
    server.step(b"")
    with pytest.raises(AuthFailedError):
        server.step(response)
    assert not server.complete


def test_a_client_first_token_and_a_third_step_fail() -> None:
    with pytest.raises(AuthFailedError):
        sasl.DigestMD5Server(USERS, "n").step(b"username=x")
    server = sasl.DigestMD5Server(USERS, "n0nce")
    exchange(server, "super", "super_secret")
    with pytest.raises(AuthFailedError):
        server.step(b"")


def users_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "sasl-users"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_users_file_is_checked(tmp_path: Path) -> None:
    path = users_file(tmp_path, "# users\n\nsuper:super_secret\njaasuser:jaas:password\n")
    assert load_sasl_users(path) == {"super": "super_secret", "jaasuser": "jaas:password"}
    path.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        load_sasl_users(path)
    with pytest.raises(ValueError, match="line 1: not user:password"):
        load_sasl_users(users_file(tmp_path, "nopassword\n"))
    with pytest.raises(ValueError, match="sasl_users_file"):
        load_sasl_users(tmp_path / "missing")


@pytest.fixture
async def member(tmp_path: Path) -> AsyncIterator[RunningServer]:
    path = users_file(tmp_path, "".join(f"{u}:{p}\n" for u, p in USERS.items()))
    async with running_server(
        tmp_path / "data",
        tick_ms=500,
        zk_port=free_port(),
        sasl_users_file=str(path),
        sasl_super_user="super",
    ) as server:
        yield server


def sasl_client(member: RunningServer, user: str, password: str) -> KazooClient:
    options = {"mechanism": "DIGEST-MD5", "username": user, "password": password}
    return KazooClient(hosts=f"127.0.0.1:{zk_port(member)}", timeout=5, sasl_options=options)


async def test_kazoo_authenticates_with_sasl_and_the_acl_holds(member: RunningServer) -> None:
    client = sasl_client(member, "jaasuser", "jaas_password")
    await kz(client.start, timeout=10)
    anonymous = await started(member)
    try:
        acl = make_acl("sasl", credential="jaasuser", all=True)
        await kz(client.create, "/private", b"s", acl=(acl,))
        assert (await kz(client.get, "/private"))[0] == b"s"
        with pytest.raises(NoAuthError):
            await kz(anonymous.get, "/private")
        await kz(client.create, "/mine", b"", acl=(make_acl("auth", "", all=True),))
        acls, _stat = await kz(client.get_acls, "/mine")
        assert [(entry.id.scheme, entry.id.id) for entry in acls] == [("sasl", "jaasuser")]
    finally:
        await stopped(anonymous)
        await stopped(client)


async def test_the_sasl_super_user_passes_every_acl(member: RunningServer) -> None:
    owner = sasl_client(member, "jaasuser", "jaas_password")
    root = sasl_client(member, "super", "super_secret")
    await kz(owner.start, timeout=10)
    await kz(root.start, timeout=10)
    try:
        await kz(owner.create, "/p", b"x", acl=(make_acl("sasl", "jaasuser", all=True),))
        assert (await kz(root.get, "/p"))[0] == b"x"
    finally:
        await stopped(owner)
        await stopped(root)


async def start_refused(client: KazooClient) -> None:
    """Start `client`, whose SASL step the member will refuse. kazoo's start() returns once the
    session is made, before SASL ends; if AUTH_FAILED has already closed the client by the time
    start() looks, it reports a time-out instead, so either outcome is a start here."""
    try:
        await kz(client.start, timeout=10)
    except client.handler.timeout_exception:
        assert not client.connected


def auth_failed(caplog: pytest.LogCaptureFixture) -> bool:
    """kazoo met AUTHFAILED while it connected (its start() returns before SASL ends, and the
    state it then takes, AUTH_FAILED, is soon CLOSED)."""
    return any("AUTH_FAILED" in record.getMessage() for record in caplog.records)


async def test_a_bad_response_is_answered_auth_failed_then_closed(member: RunningServer) -> None:
    conn = await RawJute.open(member)
    try:
        await conn.send(1, jute.OP_SASL, SaslRequest(b""))
        _xid, _zxid, err, reader = await conn.reply()
        assert err == 0
        assert b"zk-sasl-md5" in reader.buffer()
        bad = b'username="jaasuser",nonce="x",nc=00000001,cnonce="c",response=00'
        assert (await conn.request(2, jute.OP_SASL, SaslRequest(bad)))[::2] == (2, -115)
        assert await closed_without_a_word(conn.stream)
    finally:
        await conn.stream.aclose()


@pytest.mark.parametrize(("user", "password"), [("jaasuser", "bad"), ("baduser", "x")])
async def test_a_wrong_password_is_auth_failed(
    member: RunningServer, user: str, password: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = sasl_client(member, user, password)
    try:
        await start_refused(client)
        await wait_until(lambda: auth_failed(caplog), what="kazoo's AUTH_FAILED")
        with pytest.raises((KazooAuthFailed, ConnectionClosedError)):
            await kz(client.exists, "/")
    finally:
        await stopped(client)


async def test_a_member_without_users_refuses_sasl(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server(tmp_path / "data", tick_ms=500, zk_port=free_port()) as member:
        client = sasl_client(member, "jaasuser", "jaas_password")
        try:
            await start_refused(client)
            await wait_until(lambda: auth_failed(caplog), what="kazoo's AUTH_FAILED")
        finally:
            await stopped(client)


def test_zkpy_server_refuses_a_users_file_others_may_read(tmp_path: Path) -> None:
    path = users_file(tmp_path, "jaasuser:jaas_password\n", mode=0o644)
    args = ["server", "--data-dir", str(tmp_path / "d"), "--zk-port", "0"]
    result = CliRunner().invoke(main, [*args, "--sasl-users-file", str(path)])
    assert result.exit_code == 2
    assert "chmod 600" in result.output
    result = CliRunner(env={"ZKPY_SASL_USERS_FILE": str(path)}).invoke(main, args)
    assert result.exit_code == 2
    assert "chmod 600" in result.output


def test_the_ensemble_file_names_the_users_file_relative_to_itself(tmp_path: Path) -> None:
    text = (
        'secret = "s"\nsasl_users_file = "users"\nsasl_super_user = "super"\n'
        "[members.1]\nclient_port = 2181\npeer_port = 2888\nzk_port = 2281\n"
    )
    config = config_from_text(text, tmp_path / "ensemble.toml", 1)
    assert config.sasl_users_file == str(tmp_path / "users")
    assert config.sasl_super_user == "super"


@settings(max_examples=300, deadline=None)
@given(
    tokens=st.lists(
        st.one_of(
            st.binary(max_size=300),
            st.lists(
                st.tuples(
                    st.sampled_from(DIRECTIVES),
                    st.binary(max_size=40),
                    st.booleans(),
                ),
                max_size=10,
            ).map(
                lambda items: b",".join(
                    name.encode() + b"=" + (b'"' + value + b'"' if quoted else value)
                    for name, value, quoted in items
                )
            ),
        ),
        max_size=4,
    )
)
def test_any_tokens_fail_only_with_auth_failed(tokens: list[bytes]) -> None:
    """Nothing a client sends makes the mechanism raise anything but AUTHFAILED."""
    server = sasl.DigestMD5Server(USERS, "n0nce")
    for token in [b"", *tokens]:
        try:
            answer = server.step(token)
        except AuthFailedError:
            return
        assert isinstance(answer, bytes)


def test_zkpy_ensemble_hands_the_users_file_to_its_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The members are `zkpy server` child processes: they read it from the environment."""
    path = users_file(tmp_path, "jaasuser:jaas_password\n")
    seen: list[str | None] = []

    async def members_run(config_file: Path, log_level: str, log_format: str = "text") -> int:
        seen.append(os.environ.get("ZKPY_SASL_USERS_FILE"))
        return 0

    monkeypatch.setattr("zkpy.server.launcher.run_ensemble", members_run)
    monkeypatch.setenv("ZKPY_SASL_USERS_FILE", "")  # restored (unset) after the test
    monkeypatch.delenv("ZKPY_SASL_USERS_FILE")
    args = ["ensemble", "--size", "1", "--data-dir", str(tmp_path / "e")]
    args += ["--client-port", str(free_port()), "--peer-port", str(free_port())]
    result = CliRunner().invoke(main, [*args, "--sasl-users-file", str(path)])
    assert result.exit_code == 0, result.output
    assert seen == [str(path.resolve())]
