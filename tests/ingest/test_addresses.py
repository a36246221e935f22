"""Client addresses: ports dropped, X-Forwarded-For read from the right, one spelling for each address."""

from __future__ import annotations

import pytest

from ingest.addresses import client_address, forwarded_client, without_port


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("10.0.0.1:443", "10.0.0.1"),
        ("[::1]:443", "::1"),
        ("[fe80::1%eth0]:8080", "fe80::1"),  # the zone names an interface of the host that logged it
        ("::1", "::1"),
        ("2001:db8::7", "2001:db8::7"),
        ("10.0.0.1", "10.0.0.1"),
        ("envoy://internal_client_address/", "envoy://internal_client_address/"),
        ("[broken", "[broken"),
        ("[broken:80", "[broken:80"),  # a bracket opened, never closed: kept whole, port and all
        (":80", ""),
        ("10.0.0.1:", "10.0.0.1:"),
        ("10.0.0.1:8x", "10.0.0.1:8x"),
        (443, "443"),  # typed_json_format may log a number
        # one spelling per address: a client is one key for the rules that count clients
        ("2001:DB8::A", "2001:db8::a"),
        ("2001:0db8:0:0:0:0:0:000a", "2001:db8::a"),
        ("[2001:DB8:0::A]:443", "2001:db8::a"),
        ("::ffff:10.0.0.10", "10.0.0.10"),  # a dual-stack server's IPv4 peer (Node.js, Java)
        ("[::ffff:10.0.0.10]:5555", "10.0.0.10"),
        ("::FFFF:198.51.100.7", "198.51.100.7"),
        ("::ffff:10.0.0.10:5555", "10.0.0.10"),  # as Node.js writes an IPv4 peer and its port
        ("2001:db8::1:80", "2001:db8::1:80"),  # an IPv6 address: ":80" may be its last group
        ("fe80::1%eth0", "fe80::1"),
        ("[]", "[]"),
        ("[]:80", "[]:80"),
        ("10.0.0.1:\u0663", "10.0.0.1:\u0663"),  # an Arabic-Indic three is no port
    ],
)
def test_without_port(address: object, host: str) -> None:
    assert without_port(address) == host


@pytest.mark.parametrize(
    ("forwarded_for", "trusted_hops", "client"),
    [
        ("203.0.113.7", 0, "203.0.113.7"),
        # The client wrote the left entry; the gateway appended the peer it saw.
        ("10.9.9.9, 198.51.100.66", 0, "198.51.100.66"),
        ("10.9.9.9,198.51.100.66", 0, "198.51.100.66"),
        # A load balancer in front appended the client, the gateway appended the balancer.
        ("10.9.9.9, 198.51.100.66, 10.0.5.1", 1, "198.51.100.66"),
        ("198.51.100.66, 10.0.5.1", 1, "198.51.100.66"),
        ("10.0.5.1", 1, "10.0.5.1"),  # shorter than the trusted hops: its left-most entry
        ("10.9.9.9, 198.51.100.66:4711", 0, "198.51.100.66"),
        ("10.9.9.9, [2001:db8::7]:443", 0, "2001:db8::7"),
        ("10.9.9.9, 2001:db8::7", 0, "2001:db8::7"),
        ("10.9.9.9, 2001:DB8:0::7", 0, "2001:db8::7"),
        ("10.9.9.9, ::ffff:198.51.100.66", 0, "198.51.100.66"),
        ("198.51.100.66, ", 0, "198.51.100.66"),  # an empty entry is no address
        (" , ", 0, None),
        ("", 0, None),
        # An entry that names no address (a proxy that hides its peer) names no client: not the one left of it.
        ("unknown", 0, None),
        ("10.9.9.9, unknown", 0, None),
        ("10.9.9.9, _hidden", 0, None),
        ("198.51.100.66, unknown", 1, "198.51.100.66"),
    ],
)
def test_forwarded_client_reads_from_the_right(forwarded_for: str, trusted_hops: int, client: str | None) -> None:
    assert forwarded_client(forwarded_for, trusted_hops) == client


@pytest.mark.parametrize(
    ("address", "client"),
    [
        ("10.0.0.7:51234", "10.0.0.7"),
        ("[2001:DB8::7]:443", "2001:db8::7"),
        ("10.0.0.7", "10.0.0.7"),
        # Envoy behind a proxy on a unix socket, a pipe, an internal listener: no client address in the line.
        ("/var/run/envoy/ingress.sock", None),
        ("pipe:/run/front.sock", None),
        ("envoy://internal_client_address/", None),
        ("unknown", None),
    ],
)
def test_client_address_is_an_ip_or_none(address: str, client: str | None) -> None:
    assert client_address(address) == client
