"""Who a peer URL belongs to: its host, the network group of that host, and its ban key.

Limits that should hold per attacker (address-book buckets, inbound
eviction, bans) cannot be keyed by URL: one host has 65535 ports. They are
keyed by the host, or by its *group* (Bitcoin Core's netgroups): one /16 of
IPv4 or /32 of IPv6 is one group, since an attacker can rent many addresses
inside one block more cheaply than across blocks; a DNS name is grouped by
its last two labels, which one registrant controls.

The shared local host (127.0.0.1, ::1, localhost) is the exception: the
local testnet and the tests run many nodes there, told apart only by port,
so on it the group is the port and the ban key the whole URL. Any process
on that machine could reach the node anyway. Other loopback addresses
(127.0.0.2 and up) are treated like remote hosts, so tests can play an
attacker with a host of its own.
"""

from __future__ import annotations

import ipaddress
import re

SHARED_LOCAL_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
IPV4_GROUP_PREFIX = 16  # bits: Bitcoin Core's /16, one provider's block
IPV6_GROUP_PREFIX = 32  # bits: one allocation to one provider
DNS_GROUP_LABELS = 2  # example.com for a.b.example.com: one registrant

_URL_PARTS = re.compile(r"http://(?P<host>\[[^\]]+\]|[^:/\[\]]+):(?P<port>\d+)")


def split_url(url: str) -> tuple[str, int]:
    """``(host, port)`` of ``http://host:port``; an IPv6 host loses its brackets.

    Raises ``ValueError`` for anything else (listen URLs are validated by
    ``node.p2p.messages.is_listen_url`` before they get here).
    """
    match = _URL_PARTS.fullmatch(url)
    if match is None:
        raise ValueError(f"not a listen URL: {url[:60]!r}")
    return match.group("host").strip("[]").lower(), int(match.group("port"))


def host_of(url: str) -> str:
    return split_url(url)[0]


def is_shared_local(host: str) -> bool:
    return host.lower().strip("[]") in SHARED_LOCAL_HOSTS


def host_group(host: str) -> str:
    """The network group of ``host`` (see the module docstring)."""
    host = host.lower().strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        labels = host.rstrip(".").split(".")
        return "dns:" + ".".join(labels[-DNS_GROUP_LABELS:])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        net = ipaddress.ip_network(f"{ip}/{IPV4_GROUP_PREFIX}", strict=False)
    else:
        net = ipaddress.ip_network(f"{ip}/{IPV6_GROUP_PREFIX}", strict=False)
    return f"ip:{net}"


def url_group(url: str) -> str:
    """The group of a peer URL: its host's group, or the URL itself on the shared local host."""
    host, port = split_url(url)
    if is_shared_local(host):
        return f"local:{port}"
    return host_group(host)


def ban_key(url: str) -> str:
    """What a ban on ``url`` covers: its host, so a new port does not escape it (local: the URL)."""
    host, port = split_url(url)
    return url if is_shared_local(host) else host
