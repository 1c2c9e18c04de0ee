"""TLS contexts for clients, servers and peer links, from certificate files (standard `ssl`)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

_RDN_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


def client_context(
    ca: str | Path | None = None,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
    *,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A context for `zkpy.connect(..., tls=...)`: trust `ca` (else the system's), and present
    `certfile`/`keyfile` when the server asks for a client certificate (x509 ACLs)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.check_hostname = check_hostname
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile)
    return context


def server_context(
    certfile: str | Path,
    keyfile: str | Path | None,
    ca: str | Path | None,
    client_auth: str = "optional",
) -> ssl.SSLContext:
    """The client port's context. `client_auth`: "none", "optional" or "required"."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    if ca is not None:
        context.load_verify_locations(ca)
    modes = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
    try:
        context.verify_mode = modes[client_auth]
    except KeyError:
        raise ValueError(f"tls_client_auth must be one of {sorted(modes)}") from None
    return context


def peer_contexts(
    certfile: str | Path, keyfile: str | Path | None, ca: str | Path
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(outgoing, incoming) contexts for mutual TLS between members: both sides present a
    certificate signed by the ensemble's CA and check the other's."""
    outgoing = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    outgoing.check_hostname = False  # members are named by id and proven by the CA
    outgoing.load_cert_chain(certfile, keyfile)
    incoming = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    incoming.verify_mode = ssl.CERT_REQUIRED
    incoming.load_cert_chain(certfile, keyfile)
    return outgoing, incoming


def subject_of(peercert: dict[str, Any] | None) -> str | None:
    """A certificate subject in RFC 4514 form (most specific first): ``CN=alice,O=Example``."""
    if not peercert or "subject" not in peercert:
        return None
    parts = []
    for rdn in reversed(peercert["subject"]):
        parts.append("+".join(f"{_RDN_NAMES.get(key, key)}={_escape(value)}" for key, value in rdn))
    return ",".join(parts) or None


def _escape(value: str) -> str:
    escaped = "".join("\\" + ch if ch in ',+"\\<>;' else ch for ch in value)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    if escaped.endswith(" "):
        escaped = escaped[:-1] + "\\ "
    return escaped
