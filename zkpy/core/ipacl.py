"""The ``ip`` ACL scheme: an entry's id is an address (``10.0.0.7``, ``::1``) or a network in
CIDR form (``10.0.0.0/8``, ``fd00::/8``), and it matches a connection whose peer address lies in
it. Each client connection carries the identity ``ip:<its peer address>``.

As in ZooKeeper, an address with host bits under the prefix (``10.1.2.3/8``) names the whole
network, and an IPv4 client reached over an IPv6 socket (``::ffff:10.0.0.7``) counts as its
IPv4 address. Ids are checked when an ACL is set; a malformed one is an InvalidACL.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from zkpy.core.types import Id

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_ID_CHARS = 64  # the longest valid id (a full IPv6 address with a prefix) is shorter


def parse_network(ident: str) -> Network | None:
    """The network an ``ip`` ACL id names, or None if it is not an address or CIDR network."""
    if not ident or len(ident) > MAX_ID_CHARS or ident != ident.strip():
        return None
    try:
        network = ipaddress.ip_network(ident, strict=False)
    except ValueError:
        return None
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.scope_id:
        return None  # a zone (fe80::1%eth0) names a link, not an address range
    return network


def parse_address(text: str) -> Address | None:
    """A connection's peer address, its IPv6 zone dropped and an IPv4-mapped one unwrapped."""
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def matches(ident: str, ids: Iterable[Id]) -> bool:
    """True when the ``ip`` ACL id `ident` covers the address of one of the `ip` identities."""
    network = parse_network(ident)
    if network is None:
        return False
    for held in ids:
        if held.scheme == "ip":
            address = parse_address(held.id)
            if address is not None and address in network:
                return True
    return False
