"""SASL DIGEST-MD5 (RFC 2831), the server's side, as ZooKeeper's JAAS digest setup offers it.

Pure: the nonce is an input, the user table a mapping of user name to password. The exchange
over ZooKeeper's `sasl` request (opcode 102) takes two steps:

1. the client sends an empty token; the server answers with its `challenge` (realm
   ``zk-sasl-md5``, the nonce, qop ``auth``, charset utf-8, algorithm md5-sess);
2. the client sends its digest-response; `DigestMD5Server.verify` checks it against the user's
   password and answers ``rspauth=...``, which proves to the client that the server knows the
   password too. The authenticated identity is the user name.

Only qop ``auth`` is offered (no integrity or confidentiality layer), as ZooKeeper's clients
use it. Anything malformed or wrong raises `AuthFailedError`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from zkpy.core.errors import AuthFailedError

REALM = "zk-sasl-md5"  # ZooKeeper's fixed server name and realm for DIGEST-MD5
SERVICE = "zookeeper"
DIGEST_URI = f"{SERVICE}/{REALM}"
MAX_RESPONSE_BYTES = 4096  # RFC 2831: a digest-response is at most 4096 bytes


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def _hex(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).hexdigest().encode("ascii")


def parse_directives(text: bytes) -> dict[str, bytes]:
    """The ``name=value`` directives of a digest message (values plain or quoted, with
    backslash escapes); AuthFailedError on a repeated directive or a broken quote."""
    directives: dict[str, bytes] = {}
    pos = 0
    size = len(text)
    while pos < size:
        while pos < size and text[pos] in b" \t,":
            pos += 1
        if pos >= size:
            break
        equals = text.find(b"=", pos)
        if equals < 0:
            raise AuthFailedError("a SASL directive has no value")
        name = text[pos:equals].strip().decode("ascii", "replace").lower()
        value, pos = _value(text, equals + 1)
        if name in directives:
            raise AuthFailedError(f"the SASL directive {name!r} is repeated")
        directives[name] = value
    return directives


def _value(text: bytes, pos: int) -> tuple[bytes, int]:
    """One directive's value from `pos`, and where the next directive starts."""
    if pos < len(text) and text[pos : pos + 1] == b'"':
        out = bytearray()
        pos += 1
        while pos < len(text):
            char = text[pos : pos + 1]
            if char == b"\\" and pos + 1 < len(text):
                out += text[pos + 1 : pos + 2]
                pos += 2
            elif char == b'"':
                return bytes(out), pos + 1
            else:
                out += char
                pos += 1
        raise AuthFailedError("a quoted SASL value does not end")
    end = text.find(b",", pos)
    end = len(text) if end < 0 else end
    return text[pos:end].strip(), end


class DigestMD5Server:
    """One connection's DIGEST-MD5 exchange; `users` maps a user name to its password. The
    realm and digest-uri are ZooKeeper's unless given."""

    def __init__(
        self,
        users: Mapping[str, str],
        nonce: str,
        realm: str = REALM,
        digest_uri: str = DIGEST_URI,
    ) -> None:
        self._users = users
        self._nonce = nonce
        self._realm = realm
        self._digest_uri = digest_uri
        self._challenged = False
        self.user: str | None = None  # set once the client has proved its password

    @property
    def complete(self) -> bool:
        """The client has authenticated."""
        return self.user is not None

    def step(self, token: bytes) -> bytes:
        """The answer to the client's next token: the challenge, then ``rspauth``."""
        if self.complete:
            raise AuthFailedError("the SASL exchange is already complete")
        if not self._challenged:
            if token:
                raise AuthFailedError("DIGEST-MD5 starts with an empty token from the client")
            self._challenged = True
            return self.challenge()
        return self.verify(token)

    def challenge(self) -> bytes:
        """The digest-challenge (RFC 2831 2.1.1)."""
        return (
            f'realm="{self._realm}",nonce="{self._nonce}",qop="auth",charset=utf-8,'
            "algorithm=md5-sess"
        ).encode()

    def verify(self, token: bytes) -> bytes:
        """Check a digest-response (RFC 2831 2.1.2); the ``rspauth`` answer if it is right.
        Every failure reads the same to the client: AuthFailedError."""
        if len(token) > MAX_RESPONSE_BYTES:
            raise AuthFailedError("a DIGEST-MD5 response is at most 4096 bytes")
        fields = parse_directives(token)
        user_raw = fields.get("username")
        if user_raw is None:
            raise AuthFailedError("the DIGEST-MD5 response names no user")
        charset = fields.get("charset", b"").lower()
        encoding = "utf-8" if charset == b"utf-8" else "latin-1"
        try:
            user = user_raw.decode(encoding)
        except UnicodeDecodeError:
            raise AuthFailedError("the DIGEST-MD5 user name is not text") from None
        self._check_fields(fields, user)
        password = self._users.get(user)
        if password is None:
            raise AuthFailedError("SASL authentication failed")
        try:
            secret = f"{user}:{self._realm}:{password}".encode(encoding)
        except UnicodeEncodeError:
            raise AuthFailedError("SASL authentication failed") from None
        expected = self._digest(fields, secret, b"AUTHENTICATE:")
        if not hmac.compare_digest(expected, fields.get("response", b"")):
            raise AuthFailedError("SASL authentication failed")
        self.user = user
        return b"rspauth=" + self._digest(fields, secret, b":")

    def _check_fields(self, fields: dict[str, bytes], user: str) -> None:
        if fields.get("nonce") != self._nonce.encode("ascii"):
            raise AuthFailedError("the DIGEST-MD5 response answers another nonce")
        if fields.get("realm", self._realm.encode()) != self._realm.encode():
            raise AuthFailedError(f"the DIGEST-MD5 realm is {self._realm!r}")
        if fields.get("qop", b"auth") != b"auth":
            raise AuthFailedError("only the DIGEST-MD5 qop 'auth' is offered")
        if fields.get("nc") != b"00000001":
            raise AuthFailedError("a DIGEST-MD5 response is the first (nc 00000001)")
        if not fields.get("cnonce"):
            raise AuthFailedError("the DIGEST-MD5 response has no cnonce")
        if fields.get("digest-uri") != self._digest_uri.encode():
            raise AuthFailedError(f"the DIGEST-MD5 digest-uri is {self._digest_uri!r}")
        authzid = fields.get("authzid")
        if authzid is not None and authzid != user.encode("utf-8"):
            raise AuthFailedError("a SASL user may not act as another (authzid)")

    def _digest(self, fields: dict[str, bytes], secret: bytes, a2_prefix: bytes) -> bytes:
        """The response value (RFC 2831 2.1.2.1): the client's with A2 "AUTHENTICATE:uri",
        the server's rspauth with A2 ":uri"."""
        a1 = _md5(secret) + b":" + fields["nonce"] + b":" + fields["cnonce"]
        if "authzid" in fields:
            a1 += b":" + fields["authzid"]
        a2 = a2_prefix + fields["digest-uri"]
        qop = fields.get("qop", b"auth")
        return _hex(
            b":".join([_hex(a1), fields["nonce"], fields["nc"], fields["cnonce"], qop, _hex(a2)])
        )
