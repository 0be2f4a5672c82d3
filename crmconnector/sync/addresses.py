"""Which IP addresses are public: the media downloader connects to nothing else unless told to.

`ipaddress` alone is not enough: IPv6 forms that embed an IPv4 address (IPv4-mapped ::ffff:a.b.c.d,
IPv4-compatible ::a.b.c.d, 6to4 2002::/16, NAT64 64:ff9b::/96) reach that IPv4 address on many networks,
and some of them count as "global" in Python 3.11, so the embedded address is judged instead.
"""
from __future__ import annotations

import ipaddress

METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def address_problem(address: str) -> str | None:
    """What kind of non-public address this is ("private address", ...), or None for a public one."""
    ip = ipaddress.ip_address(address)
    if ip in METADATA_ADDRESSES:
        return "cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or _nat64(ip) or _compatible(ip)
        if embedded is not None:
            return address_problem(str(embedded))
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_loopback:
        return "loopback address"
    if ip.is_link_local:
        return "link-local address"
    if ip.is_multicast:
        return "multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT:
        return "carrier-grade NAT address"
    if ip.is_private:
        return "private address"
    if not ip.is_global:
        return "non-public address"
    return None


def _nat64(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if any(ip in net for net in NAT64) else None


def _compatible(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The deprecated IPv4-compatible form ::a.b.c.d, which some stacks still route to a.b.c.d."""
    return ipaddress.IPv4Address(int(ip)) if 1 < int(ip) < 2 ** 32 else None
