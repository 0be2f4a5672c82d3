"""Which addresses count as public: every IPv6 form that embeds an IPv4 address is judged by that address."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crmconnector.sync.addresses import address_problem

ipv4 = st.integers(min_value=0, max_value=2 ** 32 - 1).map(ipaddress.IPv4Address)
NON_PUBLIC = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4")]


def _embeddings(v4: ipaddress.IPv4Address) -> list[str]:
    n = int(v4)
    return [f"::ffff:{v4}",                                        # IPv4-mapped
            str(ipaddress.IPv6Address((0x2002 << 112) | (n << 80))),  # 6to4
            str(ipaddress.IPv6Address((0x64FF9B << 96) | n))]         # NAT64


@given(ipv4)
def test_an_embedded_ipv4_address_is_judged_like_the_address_itself(v4: ipaddress.IPv4Address) -> None:
    verdict = address_problem(str(v4))
    for form in _embeddings(v4):
        assert address_problem(form) == verdict, form


@given(st.sampled_from(NON_PUBLIC), st.integers(min_value=0, max_value=2 ** 32 - 1))
def test_every_address_of_a_non_public_range_is_refused(network: ipaddress.IPv4Network, offset: int) -> None:
    address = network[offset % network.num_addresses]
    assert address_problem(str(address)) is not None
    assert all(address_problem(form) is not None for form in _embeddings(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8",
                                     "2a00:1450:4001:80b::200e"])
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(address) is None


@pytest.mark.parametrize(("address", "kind"), [
    ("fd00:ec2::254", "cloud metadata address"),
    ("fe80::1", "link-local address"),
    ("fc00::1", "private address"),
    ("ff02::1", "multicast address"),
    ("::", "unspecified address"),
    ("::1", "loopback address"),
    ("2001:db8::1", "private address"),
    ("192.0.2.1", "private address"),
])
def test_ipv6_and_reserved_kinds(address: str, kind: str) -> None:
    assert address_problem(address) == kind
